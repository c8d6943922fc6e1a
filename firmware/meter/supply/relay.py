# Latching (bistable) supply relay driver. The board builds the pins and chooses the variant:
# two coils (pin a pulls the contact closed, pin b opens it) or one coil behind an H-bridge
# (a high/b low closes, b high/a low opens). Both are driven the same way here: one output at
# a time, the other forced low first, both low on every way out. A pulse is a synchronous
# sleep on the clock, so nothing else (the network included) can stretch it.
# An optional auxiliary contact (feedback pin, 1 = closed) tells where the contact really is.
from micropython import const

_DEAD_MS = const(2)  # H-bridge: both legs off this long before the other leg turns on


class Relay:
    def __init__(self, clock, wiring, ring, retries=2):
        """wiring: (pin a, pin b, feedback pin or None, pulse ms, hbridge) from the board;
        ring: [count, next, ticks...] of the latest operations, kept by the caller."""
        self._clock = clock
        self._a, self._b, self.feedback, self.pulse_ms, self.hbridge = wiring
        self._ring = ring
        self.retries = retries

    def busy(self):
        """Why an operation now would exceed the rate limit, or None."""
        ring = self._ring
        size = len(ring) - 2
        clock = self._clock
        if ring[0] == size and clock.ticks_diff(clock.ticks_ms(), ring[2 + ring[1]]) < 60000:
            return "rate limit: %d operations per minute" % size
        return None

    def switch(self, close, limited=True):
        """Move the contact; (0, "ok") or (1, reason) after the retries, (2, reason) when
        the rate limit refuses. With no feedback the pulse is assumed to have worked."""
        clock = self._clock
        if limited:
            reason = self.busy()
            if reason is not None:
                return 2, reason
            ring = self._ring
            size = len(ring) - 2
            ring[2 + ring[1]] = clock.ticks_ms()
            ring[1] = (ring[1] + 1) % size
            ring[0] = min(ring[0] + 1, size)
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
