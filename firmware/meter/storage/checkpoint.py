# What the meter keeps on its data filesystem (LittleFS), built to survive a power cut at
# any instant with bounded flash wear:
# - EnergyStore: the energy checkpoint. Two slot files written in turn, each record with a
#   sequence number and a CRC, so a write torn by a cut leaves the other slot intact and the
#   newest valid record wins at boot. LittleFS keeps these small files inline in its
#   metadata, so a checkpoint is one short metadata commit, not a block copy.
# - the last-gasp journal: records on a raw flash partition outside LittleFS kept erased
#   ahead of the writer, so saving in the hold-up is one short program and never an erase.
# - meter.storage.ring.Ring (loaded only while used): the logs and profiles.
import struct
from binascii import crc32

from micropython import const

FLAG_LAST_GASP = const(1)  # written by the power-fail handler: power went at `time`
# A last-gasp journal record: the LittleFS energy checkpoint's seq it follows, import kWh,
# mWh, export kWh, mWh, time, flags; padded to 32 bytes with the CRC32 of the rest at 28.
JOURNAL_FMT = "<IIIIIIB"


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

    def save(self, *fields):
        self.seq += 1
        buf = self._buf
        struct.pack_into("<I", buf, 0, self.seq)
        struct.pack_into(self._fmt, buf, 4, *fields)
        struct.pack_into("<I", buf, self._size, crc32(memoryview(buf)[: self._size]))
        with self._fs.open(self._paths[self.seq & 1], "wb") as f:
            f.write(buf)

    def load(self):
        """(fields of the newest valid record or None, slots found damaged); the next save
        continues its sequence. A missing slot file is not damage (never written yet)."""
        best = None
        best_seq = -1
        bad = 0
        size = self._size
        for path in self._paths:
            try:
                with self._fs.open(path, "rb") as f:
                    data = f.read()
            except OSError:
                continue
            if (len(data) != size + 4
                    or crc32(data[:size]) != struct.unpack_from("<I", data, size)[0]):
                bad += 1
                continue
            seq = struct.unpack_from("<I", data, 0)[0]
            if seq > best_seq:
                best_seq = seq
                best = struct.unpack_from(self._fmt, data, 4)
        if best is not None:
            self.seq = best_seq
        return best, bad


class EnergyStore:
    def __init__(self, fs, journal=None):
        # import kWh, import mWh, export kWh, export mWh, meter time, flags
        self._energy = Slots(fs, "/energy", "<IIIIIB")
        # the profile period in progress: start time, import and export Wh at its start;
        # the billing month's maximum demand: W and its time; the block profile's head
        self._period = Slots(fs, "/period", "<IIIIII")
        self.bad_slots = 0
        self.flags = 0
        self.period = [0, 0, 0]
        self.demand = [0, 0]
        self.profile_head = 0
        # Last gasps go to a raw flash partition outside LittleFS, kept erased ahead of the
        # writer (meter.storage.restore erases spent sectors at boot, on mains): a last gasp is one
        # 32-byte program, under a millisecond, never an erase, so it fits the hold-up
        # whatever LittleFS would be doing. [device, next slot, erased slots from there,
        # slots, record buffer, and meter.storage.restore's boot-time working state]; none free
        # until meter.storage.restore has looked at it.
        self.journal = None
        if journal is not None:
            self.journal = [journal, 0, 0, 0, bytearray(32), None, None, 0]

    def save(self, imp, exp, now, flags=0):
        imwh = imp.total_mwh()
        emwh = exp.total_mwh()
        self._energy.save(imp.kwh, imwh, exp.kwh, emwh, now, flags)
        imp.saved(imp.kwh, imwh)
        exp.saved(exp.kwh, emwh)

    def last_gasp(self, imp, exp, now):
        """The power-fail handler's save: a journal record if there is room, else (no
        journal partition) a LittleFS checkpoint, which may need an erase."""
        j = self.journal
        if j is None or j[2] <= 0:
            return self.save(imp, exp, now, FLAG_LAST_GASP)
        buf = j[4]
        imwh = imp.total_mwh()
        emwh = exp.total_mwh()
        struct.pack_into(JOURNAL_FMT, buf, 0, self._energy.seq, imp.kwh, imwh,
                         exp.kwh, emwh, now, FLAG_LAST_GASP)
        struct.pack_into("<I", buf, 28, crc32(memoryview(buf)[:28]))
        n = j[1]
        j[1] = (n + 1) % j[3]
        j[2] -= 1
        j[0].writeblocks(n >> 7, buf, (n & 127) << 5)  # 128 slots of 32 bytes a block
        imp.saved(imp.kwh, imwh)
        exp.saved(exp.kwh, emwh)

    def save_period(self):
        p = self.period
        d = self.demand
        self._period.save(p[0], p[1], p[2], d[0], d[1], self.profile_head)
