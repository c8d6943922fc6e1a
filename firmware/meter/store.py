# Energy checkpoints on the data filesystem. Two slot files are written in turn, each record
# carrying a sequence number and a CRC, so a write torn by a power cut leaves the other slot
# intact and the newest valid record wins at boot.
import struct
from binascii import crc32

from micropython import const

_FORMAT = "<IIIIII"  # seq, import kWh, import mWh, export kWh, export mWh, meter time
_SIZE = const(24)
_SLOTS = ("/energy.a", "/energy.b")


class EnergyStore:
    def __init__(self, fs):
        self._fs = fs
        self._buf = bytearray(_SIZE + 4)
        self.seq = 0

    def load(self, imp, exp):
        """Restore the newest valid checkpoint into the registers; returns the slot's time or
        None when there is none. Corrupt slots are skipped (reported in bad_slots)."""
        best = None
        self.bad_slots = 0
        for path in _SLOTS:
            try:
                with self._fs.open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if len(data) != _SIZE + 4 or crc32(data[:_SIZE]) != struct.unpack_from(
                "<I", data, _SIZE
            )[0]:
                self.bad_slots += 1
                continue
            rec = struct.unpack(_FORMAT, data[:_SIZE])
            if best is None or rec[0] > best[0]:
                best = rec
        if best is None:
            return None
        self.seq = best[0]
        imp.set(best[1], best[2])
        exp.set(best[3], best[4])
        return best[5]

    def save(self, imp, exp, now):
        self.seq += 1
        buf = self._buf
        struct.pack_into(
            _FORMAT, buf, 0, self.seq, imp.kwh, imp.total_mwh(), exp.kwh, exp.total_mwh(), now
        )
        struct.pack_into("<I", buf, _SIZE, crc32(memoryview(buf)[:_SIZE]))
        with self._fs.open(_SLOTS[self.seq & 1], "wb") as f:
            f.write(buf)
