# The firmware's one time seam. The board hands over a `time`-like source (the real `time`
# module on a board, virtual time in the simulator); nothing else reads ticks or the RTC.
from micropython import const

# Meter time counts seconds from 2020-01-01T00:00:00Z: it stays a small int (< 2**30)
# until 2054, where Unix seconds would already need a long int on a 31-bit ESP32 int.
METER_EPOCH_UNIX = const(1577836800)
_EPOCH_2000_TO_UNIX = const(946684800)
# A clock that reads earlier than 2024-01-01 has lost its time (RTC reset to its epoch).
VALID_AFTER = const(126230400)
# An RTC outside 2020-01-01 ... 2053-06-29 (meter time 0 ... MAX_S: an ESP32 small int, with
# room for a timer 194 days ahead) is taken as meter time 0 and counts on from there: invalid
# (before 2024) until a time_sync, but never negative or huge, so every timer and record
# works (README "clock-unset rule").
MAX_S = const(0x3EFFFFFF)


class Clock:
    def __init__(self, source):
        self._src = source
        # Embedded ports count time.time() from 2000, the unix port from 1970.
        self._epoch_offset = _EPOCH_2000_TO_UNIX if source.gmtime(0)[0] == 2000 else 0
        self._base_ticks = source.ticks_ms()
        s = source.time() + self._epoch_offset - METER_EPOCH_UNIX
        self._base_s = s if 0 <= s <= MAX_S else 0

    def ticks_ms(self):
        return self._src.ticks_ms()

    def ticks_diff(self, end, start):
        return self._src.ticks_diff(end, start)

    def ticks_add(self, ticks, delta):
        return self._src.ticks_add(ticks, delta)

    def sleep_ms(self, ms):
        self._src.sleep_ms(ms)

    def now(self):
        """Meter seconds (since 2020-01-01 UTC), advanced from ticks without allocating."""
        ticks = self._src.ticks_ms()
        whole = self._src.ticks_diff(ticks, self._base_ticks) // 1000
        if whole:
            self._base_s += whole
            self._base_ticks = self._src.ticks_add(self._base_ticks, whole * 1000)
            if self._base_s > MAX_S:  # 2053: start over at 0, invalid (as above)
                self._base_s = 0
        return self._base_s

    def valid(self):
        return self.now() > VALID_AFTER

    def unix(self):
        return self.now() + METER_EPOCH_UNIX
