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
    """Two times from one tick count. mono(): seconds since boot, never stepped: every
    deadline and interval runs on it (checkpoints, telemetry, retries, the limiter).
    now(): meter (wall) time = mono() + one offset, which only set() moves (time_sync):
    what records carry, and what profile periods, expiry and the calendar follow."""

    def __init__(self, source):
        self._src = source
        # Embedded ports count time.time() from 2000, the unix port from 1970.
        self._epoch_offset = _EPOCH_2000_TO_UNIX if source.gmtime(0)[0] == 2000 else 0
        self._base_ticks = source.ticks_ms()
        self._mono = 0
        s = source.time() + self._epoch_offset - METER_EPOCH_UNIX
        self._offset = s if 0 <= s <= MAX_S else 0

    def ticks_ms(self):
        return self._src.ticks_ms()

    def ticks_diff(self, end, start):
        return self._src.ticks_diff(end, start)

    def ticks_add(self, ticks, delta):
        return self._src.ticks_add(ticks, delta)

    def sleep_ms(self, ms):
        self._src.sleep_ms(ms)

    def mono(self):
        """Seconds since boot, advanced from ticks (wrap-safe) without allocating."""
        src = self._src
        whole = src.ticks_diff(src.ticks_ms(), self._base_ticks) // 1000
        if whole:
            self._mono += whole
            self._base_ticks = src.ticks_add(self._base_ticks, whole * 1000)
        return self._mono

    def now(self):
        """Meter seconds (since 2020-01-01 UTC)."""
        s = self.mono() + self._offset
        if s > MAX_S:  # 2053: start over at 0, invalid (as above)
            self._offset = -self._mono
            s = 0
        return s

    def valid(self):
        return self.now() > VALID_AFTER

    def unix(self):
        return self.now() + METER_EPOCH_UNIX

    def set(self, unix):
        """Step meter time to `unix` (Unix seconds), the RTC with it so a reset keeps it;
        returns the step. Only the offset moves: no deadline (all on mono()) fires early or
        late. The caller checks the range (meter time 0 ... MAX_S)."""
        step = unix - self.unix()
        import machine

        t = self._src.gmtime(unix - self._epoch_offset)  # the source's own epoch
        machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))
        self._offset += step
        return step
