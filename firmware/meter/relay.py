# Latching (bistable) supply relay driver. The board builds the pins and chooses the variant:
# two coils (pin a pulls the contact closed, pin b opens it) or one coil behind an H-bridge
# (a high/b low closes, b high/a low opens). Both are driven the same way here: one output at
# a time, the other forced low first, both low on every way out. A pulse is a synchronous
# sleep on the clock, so nothing else (the network included) can stretch it.
# An optional auxiliary contact (feedback pin, 1 = closed) tells where the contact really is.
from micropython import const

_DEAD_MS = const(2)  # H-bridge: both legs off this long before the other leg turns on


class Relay:
    def __init__(self, clock, pin_a, pin_b, feedback=None, pulse_ms=100, hbridge=False):
        self._clock = clock
        self._a = pin_a
        self._b = pin_b
        self._fb = feedback
        self.pulse_ms = pulse_ms
        self.hbridge = hbridge
        self.retries = 2
        self.fault = False
        self.ops = [0] * 6  # ticks of the latest operations: the rate limit's ring
        self._n = 0  # operations recorded so far (capped at the ring size)
        self._i = 0

    def sense(self):
        """True/False from the auxiliary contact, None when the board has none."""
        if self._fb is None:
            return None
        return self._fb.value() == 1

    def busy(self):
        """Why an operation now would exceed the rate limit, or None."""
        ring = self.ops
        if self._n < len(ring):
            return None
        clock = self._clock
        if clock.ticks_diff(clock.ticks_ms(), ring[self._i]) < 60000:
            return "rate limit: %d operations per minute" % len(ring)
        return None

    def _pulse(self, close):
        on = self._a if close else self._b
        off = self._b if close else self._a
        clock = self._clock
        try:
            off.value(0)
            if self.hbridge:
                clock.sleep_ms(_DEAD_MS)
            on.value(1)
            clock.sleep_ms(self.pulse_ms)
        finally:
            on.value(0)
            off.value(0)

    def switch(self, close, limited=True):
        """Move the contact; (0, "ok") or (1, reason) after the retries, (2, reason) when
        the rate limit refuses. With no feedback the pulse is assumed to have worked."""
        if limited:
            reason = self.busy()
            if reason is not None:
                return 2, reason
            ring = self.ops
            ring[self._i] = self._clock.ticks_ms()
            self._i = (self._i + 1) % len(ring)
            if self._n < len(ring):
                self._n += 1
        for _ in range(1 + self.retries):
            self._pulse(close)
            now = self.sense()
            if now is None or now == close:
                self.fault = False
                return 0, "ok"
        self.fault = True
        return 1, "relay stuck " + ("open" if close else "closed")
