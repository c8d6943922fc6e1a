# What the meter keeps on its data filesystem (LittleFS), built to survive a power cut at
# any instant with bounded flash wear:
# - EnergyStore: the energy checkpoint. Two slot files written in turn, each record with a
#   sequence number and a CRC, so a write torn by a cut leaves the other slot intact and the
#   newest valid record wins at boot. LittleFS keeps these small files inline in its
#   metadata, so a checkpoint is one short metadata commit, not a block copy.
# - meter.ring.Ring (loaded only while used): the logs and profiles.
import struct
from binascii import crc32

from micropython import const

FLAG_LAST_GASP = const(1)  # written by the power-fail handler: power went at `time`


class Slots:
    """A record kept in two slot files written in turn, each with a sequence number and a
    CRC: a write torn by a power cut leaves the other slot intact, the newest valid one
    wins. Records stay <= 32 bytes so LittleFS keeps them inline in its metadata: a save is
    one short metadata commit, not a block copy and an erase."""

    def __init__(self, fs, path, fmt):
        self._fs = fs
        self._paths = (path + ".a", path + ".b")
        self._fmt = fmt
        self._size = struct.calcsize(fmt) + 4  # seq first
        self._buf = bytearray(self._size + 4)
        self.seq = 0
        self.bad = 0

    def load(self):
        """The newest valid record's fields, or None. Damaged slots are counted in bad."""
        best = None
        best_seq = -1
        size = self._size
        for path in self._paths:
            try:
                with self._fs.open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if len(data) != size + 4 or crc32(data[:size]) != struct.unpack_from(
                "<I", data, size
            )[0]:
                self.bad += 1
                continue
            seq = struct.unpack_from("<I", data, 0)[0]
            if seq > best_seq:
                best_seq = seq
                best = struct.unpack_from(self._fmt, data, 4)
        if best is not None:
            self.seq = best_seq
        return best

    def save(self, *fields):
        self.seq += 1
        buf = self._buf
        struct.pack_into("<I", buf, 0, self.seq)
        struct.pack_into(self._fmt, buf, 4, *fields)
        struct.pack_into("<I", buf, self._size, crc32(memoryview(buf)[: self._size]))
        with self._fs.open(self._paths[self.seq & 1], "wb") as f:
            f.write(buf)


class EnergyStore:
    def __init__(self, fs):
        # import kWh, import mWh, export kWh, export mWh, meter time, flags
        self._energy = Slots(fs, "/energy", "<IIIIIB")
        # the profile period in progress: start time, import and export Wh at its start;
        # the billing month's maximum demand: W and its time; the block profile's head
        self._period = Slots(fs, "/period", "<IIIIII")
        self.bad_slots = 0
        self.time = 0
        self.flags = 0
        self.period = [0, 0, 0]
        self.demand = [0, 0]
        self.profile_head = 0

    def load(self, imp, exp):
        """Restore the newest valid checkpoint into the registers; returns its time or None
        when there is none. Damaged slots are skipped (counted in bad_slots)."""
        rec = self._period.load()
        if rec is not None:
            self.period = [rec[0], rec[1], rec[2]]
            self.demand = [rec[3], rec[4]]
            self.profile_head = rec[5]
        best = self._energy.load()
        self.bad_slots = self._energy.bad + self._period.bad
        if best is None:
            return None
        imp.set(best[0], best[1])
        exp.set(best[2], best[3])
        self.time = best[4]
        self.flags = best[5]
        return best[4]

    def save(self, imp, exp, now, flags=0):
        self._energy.save(imp.kwh, imp.total_mwh(), exp.kwh, exp.total_mwh(), now, flags)

    def save_period(self):
        p = self.period
        d = self.demand
        self._period.save(p[0], p[1], p[2], d[0], d[1], self.profile_head)


def unload(name):
    """Let a rarely used module (meter.<name>) go again, so its code is in the heap only
    while it is used: ring, profile, maint."""
    import sys

    sys.modules.pop("meter." + name, None)
    import meter

    try:
        delattr(meter, name)
    except AttributeError:
        pass
