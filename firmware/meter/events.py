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
# 200-249: remote commands. A rejected command logs CMD_REJECTED + its ack code (see
# meter/commands.py), rate-limited; their names are built host-side (simulator/scenario.py).
CMD_REJECTED = const(200)

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
