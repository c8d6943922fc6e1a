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
        self.feedback = feedback  # Pin reading 1 while the contact is closed, or None
        self.pulse_ms = pulse_ms
        self.hbridge = hbridge
        self.retries = 2
        self.ops = [0] * 6  # ticks of the latest operations: the rate limit's ring
        self._n = 0  # operations recorded so far (capped at the ring size)
        self._i = 0

    def busy(self):
        """Why an operation now would exceed the rate limit, or None."""
        ring = self.ops
        clock = self._clock
        if self._n == len(ring) and clock.ticks_diff(clock.ticks_ms(), ring[self._i]) < 60000:
            return "rate limit: %d operations per minute" % len(ring)
        return None

    def switch(self, close, limited=True):
        """Move the contact; (0, "ok") or (1, reason) after the retries, (2, reason) when
        the rate limit refuses. With no feedback the pulse is assumed to have worked."""
        clock = self._clock
        if limited:
            reason = self.busy()
            if reason is not None:
                return 2, reason
            ring = self.ops
            ring[self._i] = clock.ticks_ms()
            self._i = (self._i + 1) % len(ring)
            self._n = min(self._n + 1, len(ring))
        on = self._a if close else self._b
        off = self._b if close else self._a
        fb = self.feedback
        for _ in range(1 + self.retries):
            try:
                off.value(0)
                if self.hbridge:
                    clock.sleep_ms(_DEAD_MS)
                on.value(1)
                clock.sleep_ms(self.pulse_ms)
            finally:
                on.value(0)
                off.value(0)
            if fb is None or fb.value() == close:
                return 0, "ok"
        return 1, "relay stuck " + ("open" if close else "closed")
