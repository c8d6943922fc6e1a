# The event log: a ring of fixed-size records (meter time, code, CRC) in one file, so an
# event costs one small write and a torn record is detected and skipped.
import struct
from binascii import crc32

from micropython import const

POWER_UP = const(1)
CONFIG_REJECTED = const(2)
IC_REINIT = const(3)
STORE_CORRUPT = const(4)
IC_FAULT = const(5)
# Supply control (150-199): CONTROL + cause * 3 + resulting state (meter/transition.py).
CONTROL = const(150)
RELAY_FAULT = const(170)
RELAY_REASSERTED = const(171)
LIMITER_LOCKOUT = const(172)
# Metering (100-149); their names live host-side (simulator/scenario.py), off the heap.
READ_REJECTED = const(100)  # an impossible or unconfirmed IC read, never added
BUS_FAULT = const(101)  # the IC's bus is stuck (all zeros or all ones)
BUS_RESTORED = const(102)
TAMPER_NEUTRAL = const(103)  # neutral current differs from live current
TAMPER_NEUTRAL_END = const(104)
REVERSE_FLOW = const(105)  # export on an import-only meter
REVERSE_FLOW_END = const(106)
CALIB_LOADED = const(107)
CALIB_BAD = const(108)  # calibration file unreadable or its checksums wrong: defaults used

NAMES = {
    POWER_UP: "power_up",
    CONFIG_REJECTED: "config_rejected",
    IC_REINIT: "ic_reinitialised",
    STORE_CORRUPT: "store_corrupt",
    IC_FAULT: "ic_fault",
}

_PATH = "/events.log"
_REC = const(16)  # seq(4) time(4) code(2) pad(2) crc(4)
_CAPACITY = const(50)


class EventLog:
    def __init__(self, fs):
        self._fs = fs
        self._buf = bytearray(_REC)
        self.seq = 0
        for seq, _t, _code in self.records():
            if seq > self.seq:
                self.seq = seq

    def log(self, now, code):
        self.seq += 1
        buf = self._buf
        struct.pack_into("<IIHH", buf, 0, self.seq, now, code, 0)
        struct.pack_into("<I", buf, 12, crc32(memoryview(buf)[:12]))
        try:
            f = self._fs.open(_PATH, "r+b")
        except OSError:
            f = self._fs.open(_PATH, "wb")
        try:
            f.seek(((self.seq - 1) % _CAPACITY) * _REC)
            f.write(buf)
        finally:
            f.close()

    def records(self):
        """Yield (seq, meter time, code) for every valid record, in file order."""
        try:
            f = self._fs.open(_PATH, "rb")
        except OSError:
            return
        buf = bytearray(_REC)
        try:
            while True:
                n = f.readinto(buf)
                if not n or n < _REC:
                    break
                if crc32(memoryview(buf)[:12]) != struct.unpack_from("<I", buf, 12)[0]:
                    continue
                seq, t, code, _pad = struct.unpack_from("<IIHH", buf, 0)
                yield seq, t, code
        finally:
            f.close()
