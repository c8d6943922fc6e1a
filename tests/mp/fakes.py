# The tests' stand-ins for a meter's filesystem and time, written once in the Python both
# runtimes run: the MicroPython check scripts here import them, and tests/conftest.py hands
# the same classes to the CPython tests.
import os
import time

from meter.runtime.clock import METER_EPOCH_UNIX

START = 1767225600  # 2026-01-01T00:00:00Z


class DirFS:
    """The data filesystem's interface (open, rename, remove, mkdir) over a directory; counts
    the files opened."""

    def __init__(self, root):
        self.root = str(root).rstrip("/")
        self.opens = 0

    def _p(self, path):
        return self.root + "/" + path.lstrip("/")

    def open(self, path, mode="r"):
        self.opens += 1
        return open(self._p(path), mode)

    def rename(self, a, b):
        os.rename(self._p(a), self._p(b))

    def remove(self, path):
        os.remove(self._p(path))

    def mkdir(self, path):
        os.mkdir(self._p(path))


class FakeTime:
    """A `time`-like source (what a board hands meter.runtime.clock.Clock), counting from
    1970 at `unix`; it moves only by sleep_ms. Ticks wrap at 2**30 as on a board."""

    PERIOD = 0x40000000

    def __init__(self, unix=START):
        self.ms = 0
        self.base = unix

    def ticks_ms(self):
        return self.ms % self.PERIOD

    def ticks_add(self, t, d):
        return (t + d) % self.PERIOD

    def ticks_diff(self, a, b):
        d = (a - b) % self.PERIOD
        return d - self.PERIOD if d >= self.PERIOD // 2 else d

    def sleep_ms(self, ms):
        self.ms += ms

    def time(self):
        return self.base + self.ms // 1000

    def gmtime(self, secs=None):
        return time.gmtime(self.time() if secs is None else secs)


class FakeClock:
    """A meter clock (meter.runtime.clock.Clock's interface) set by hand: `t` Unix seconds,
    `ms` ticks that sleep_ms advances (and the seconds with them); valid() is `is_valid`."""

    def __init__(self, unix=METER_EPOCH_UNIX, valid=True):
        self.t = unix
        self.ms = 0
        self.is_valid = valid

    def now(self):
        return self.t - METER_EPOCH_UNIX + self.ms // 1000

    def unix(self):
        return self.now() + METER_EPOCH_UNIX

    def valid(self):
        return self.is_valid

    def ticks_ms(self):
        return self.ms

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, t, d):
        return t + d

    def sleep_ms(self, ms):
        self.ms += ms
