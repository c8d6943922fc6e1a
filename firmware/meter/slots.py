# A small record kept in two alternating files, each with a sequence number and a CRC: a
# write torn by a power cut leaves the other file intact and the newest valid one wins.
import struct
from binascii import crc32


class Slots:
    def __init__(self, fs, base, fmt):
        self._fs = fs
        self._paths = (base + ".a", base + ".b")
        self._fmt = "<I" + fmt
        self._size = struct.calcsize(self._fmt)
        self._buf = bytearray(self._size + 4)
        self.seq = 0

    def load(self):
        """The newest valid record's values (without the sequence number), or None."""
        best = None
        for path in self._paths:
            try:
                with self._fs.open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            size = self._size
            if len(data) != size + 4 or crc32(data[:size]) != struct.unpack_from(
                "<I", data, size
            )[0]:
                continue
            rec = struct.unpack(self._fmt, data[:size])
            if best is None or rec[0] > best[0]:
                best = rec
        if best is None:
            return None
        self.seq = best[0]
        return best[1:]

    def save(self, *values):
        self.seq += 1
        buf = self._buf
        struct.pack_into(self._fmt, buf, 0, self.seq, *values)
        struct.pack_into("<I", buf, self._size, crc32(memoryview(buf)[: self._size]))
        with self._fs.open(self._paths[self.seq & 1], "wb") as f:
            f.write(buf)
