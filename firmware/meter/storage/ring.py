# A log of fixed-size CRC'd records in a few segment files of at most one flash block each
# (writing in the middle of a bigger LittleFS file rewrites its tail). Record n lives in slot
# (n - 1) % capacity and carries n, so stale and damaged slots are told apart from current
# ones and skipped. Imported when a log is written or read, then let go
# (meter.runtime.overlays.unload).
import struct
from binascii import crc32


class Ring:
    def __init__(self, fs, path, fmt, capacity, per_file, rolls=True, hint=0):
        self._fs = fs
        self._path = path
        self._fmt = fmt
        self._psize = struct.calcsize(fmt)
        self.size = self._psize + 8  # n(4) payload crc(4)
        self.capacity = capacity
        self._per_file = per_file
        self._rolls = rolls
        self._buf = bytearray(self.size)
        self.bad = 0  # damaged records met while reading
        self.n = self._find_head(hint)

    def _file(self, index):
        return self._path + "." + str(index)

    def _valid(self, buf):
        p = self._psize + 4
        return crc32(memoryview(buf)[:p]) == struct.unpack_from("<I", buf, p)[0]

    def _scan(self, index, first_only):
        """The largest valid n in one segment file (its first valid one if first_only)."""
        best = 0
        buf = self._buf
        try:
            f = self._fs.open(self._file(index), "rb")
        except OSError:
            return 0
        try:
            while f.readinto(buf) == self.size:
                if not self._valid(buf):
                    self.bad += 1
                    continue
                n = struct.unpack_from("<I", buf, 0)[0]
                if first_only:
                    return n
                if n > best:
                    best = n
        finally:
            f.close()
        return best

    def _probe(self, n, f=None):
        """True if record n is in its slot, intact (f: its segment file, already open)."""
        slot = (n - 1) % self.capacity
        buf = self._buf
        try:
            if f is None:
                with self._fs.open(self._file(slot // self._per_file), "rb") as g:
                    return self._probe(n, g)
            f.seek((slot % self._per_file) * self.size)
            if f.readinto(buf) != self.size:
                return False
        except OSError:
            return False
        if not self._valid(buf):
            self.bad += 1
            return False
        return struct.unpack_from("<I", buf, 0)[0] == n

    def _find_head(self, hint):
        # A hint (the head as last saved elsewhere) is checked and walked forward: a cut
        # may have landed records after it was saved. Otherwise scan.
        if hint > 0 and self._probe(hint):
            while self._probe(hint + 1):
                hint += 1
            return hint
        files = (self.capacity + self._per_file - 1) // self._per_file
        if files == 1:
            return self._scan(0, False)
        newest = -1
        first = 0
        for i in range(files):
            n = self._scan(i, True)
            if n > first:
                first = n
                newest = i
        if newest < 0:
            return 0
        return self._scan(newest, False)

    def append(self, *fields):
        """Write the next record; False (nothing written) when full and not rolling over."""
        if not self._rolls and self.n >= self.capacity:
            return False
        n = self.n + 1
        buf = self._buf
        struct.pack_into("<I", buf, 0, n)
        struct.pack_into(self._fmt, buf, 4, *fields)
        p = self._psize + 4
        struct.pack_into("<I", buf, p, crc32(memoryview(buf)[:p]))
        slot = (n - 1) % self.capacity
        path = self._file(slot // self._per_file)
        try:
            f = self._fs.open(path, "r+b")
        except OSError:
            f = self._fs.open(path, "wb")
        try:
            f.seek((slot % self._per_file) * self.size)
            f.write(buf)
        finally:
            f.close()
        self.n = n
        return True

    def segment(self, n):
        """Which segment file record n is in."""
        return ((n - 1) % self.capacity) // self._per_file

    def get(self, n, f=None):
        """Record n's payload tuple if its slot holds it intact, else None. f: its segment
        file, already open (see segment())."""
        if n < 1 or n > self.n or n <= self.n - self.capacity:
            return None
        if not self._probe(n, f):
            return None
        return struct.unpack_from(self._fmt, self._buf, 4)
