# Emulated latching (bistable) supply relay, at the pin level. Lives host-side in the World.
#
# Two variants share one model: two coils (pin A energises the set/close coil, pin B the
# reset/open coil) or one coil behind an H-bridge (A high + B low drives current one way and
# closes, B high + A low the other way and opens). The contact only moves when a coil is
# energised for at least `min_pulse_ms` (shorter pulses do not overcome the magnet); it stays
# where it is without power. Driving both coils, or both bridge legs, at once is recorded as a
# coil conflict (and moves nothing). An auxiliary contact reports the position on an input pin
# (1 = closed). Faults: a welded contact never moves again; an open coil never pulls.


class LatchingRelay:
    def __init__(self, world, pin_a: int, pin_b: int, feedback_pin: int = -1,
                 hbridge: bool = False, min_pulse_ms: int = 20, closed: bool = True):
        self.world = world
        self.pin_a = pin_a
        self.pin_b = pin_b
        self.feedback_pin = feedback_pin
        self.hbridge = hbridge
        self.min_pulse_ms = min_pulse_ms
        self.closed = closed
        self.a = 0
        self.b = 0
        self.drive = 0  # +1 closing, -1 opening, 0 idle (or conflict)
        self.since = 0  # virtual ms the current drive began
        self.welded = False
        self.coil_open = False
        self.operations = 0  # contact movements
        self.pulses = 0  # energisations of a coil (whatever their effect)
        self.coil_conflicts = 0
        self.conflict = False
        self.max_pulse_ms = 0
        self.pulse_log = []  # (start ms, length ms, +1/-1) of every energisation
        world.listen_pin(pin_a, self._on_a)
        world.listen_pin(pin_b, self._on_b)
        if feedback_pin >= 0:
            world.external_pins.add(feedback_pin)
        self._publish()

    def _publish(self):
        self.world.supply_on = self.closed
        if self.feedback_pin >= 0:
            self.world.pins[self.feedback_pin] = 1 if self.closed else 0

    def _on_a(self, level):
        self.a = level
        self._update()

    def _on_b(self, level):
        self.b = level
        self._update()

    def _update(self):
        both = bool(self.a and self.b)
        if both and not self.conflict:
            self.coil_conflicts += 1
        self.conflict = both
        if both:
            drive = 0
        elif self.a:
            drive = 1
        elif self.b:
            drive = -1
        else:
            drive = 0
        if drive != self.drive:
            self._end()
            self.drive = drive
            self.since = self.world.now_ms
            if drive:
                self.pulses += 1

    def _end(self):
        """The current energisation ends now: move the contact if it lasted long enough."""
        if not self.drive:
            return
        length = self.world.now_ms - self.since
        self.pulse_log.append((self.since, length, self.drive))
        if length > self.max_pulse_ms:
            self.max_pulse_ms = length
        if length < self.min_pulse_ms or self.coil_open or self.welded:
            return
        target = self.drive > 0
        if target != self.closed:
            self.closed = target
            self.operations += 1
            self._publish()

    def release(self):
        """The board lost power (or reset): its outputs float low, the coils de-energise."""
        self._end()
        self.a = 0
        self.b = 0
        self.drive = 0
        self.conflict = False

    def weld(self):
        self.welded = True

    def open_coil(self):
        self.coil_open = True

    def shock(self):
        """A mechanical shock knocks the contact over without any coil current."""
        if not self.welded:
            self.closed = not self.closed
            self._publish()
