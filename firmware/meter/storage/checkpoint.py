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

_CLOCK_SET = const(8)  # block flag: the clock was set in the period (meter.storage.profiles)
FLAG_LAST_GASP = const(1)  # written by the power-fail handler: power went at `time`
# A last-gasp journal record: the LittleFS energy checkpoint's seq it follows, import kWh,
# mWh, export kWh, mWh, time, flags; padded to 32 bytes with the CRC32 of the rest at 28.
JOURNAL_FMT = "<IIIIIIB"
# EnergyStore.journal, the journal's state in one list by these indices (meter/storage/
# restore.py names them alike; a test keeps the two in step):
_J_DEV = const(0)  # the raw flash partition
_J_NEXT = const(1)  # the next slot to program
_J_ROOM = const(2)  # erased slots from there (0: none free until restore has looked)
_J_SLOTS = const(3)  # slots in the partition
_J_BUF = const(4)  # the 32-byte record buffer
_J_FOLD = const(5)  # restore: the newest record, to fold into LittleFS
_J_ERASE = const(6)  # restore: the blocks to erase
_J_ROOM_AFTER = const(7)  # restore: the room once they are erased


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


class Period:
    """The load-profile period in progress, its one owner: written by meter.storage.profiles
    (and its own two methods below), read back from flash by meter.storage.restore, saved by
    EnergyStore.save_period (start, registers at the start, demand, head)."""

    def __init__(self):
        self.start = 0  # meter (wall) time it began: periods end at wall-clock multiples
        self.end = 0  # ... and when it ends (0: not begun)
        self.imp_wh = 0  # the registers at its start
        self.exp_wh = 0
        self.demand_w = 0  # the billing month's maximum demand, and its time
        self.demand_at = 0
        self.head = 0  # records in the block profile's ring (its n)
        self.v_sum = 0  # V and I samples for the period's averages, and their count
        self.i_sum = 0
        self.samples = 0
        self.sample_at = 0  # clock.mono() when the next sample is due
        self.flags = 0  # block flags so far (meter.storage.profiles)

    def sample(self, inst, mono):
        """One V/I sample, every 30 s (on the monotonic clock)."""
        self.sample_at = mono + 30
        self.v_sum += inst[0]
        self.i_sum += inst[1]
        self.samples += 1

    def clock_set(self, now, unset, period_s):
        """The clock was set (time_sync): the period keeps its end (a forward step closes it
        at the next poll, marked partial; a backward one lengthens it, so block records stay
        in strictly increasing time), is flagged, and takes a sample at the next poll. If the
        clock was not set, the period began at a meaningless time: a new one begins now, with
        no record for the old one (its energy counts in the new one). True: to be saved."""
        self.sample_at = 0
        self.flags |= _CLOCK_SET
        if unset:
            self.start = now - now % period_s
            self.end = self.start + period_s
        return unset


class EnergyStore:
    def __init__(self, fs, journal=None):
        # import kWh, import mWh, export kWh, export mWh, meter time, flags
        self._energy = Slots(fs, "/energy", "<IIIIIB")
        # the profile period in progress (Period): start time, import and export Wh at its
        # start; the billing month's maximum demand: W and its time; the block profile's head
        self._period = Slots(fs, "/period", "<IIIIII")
        self.bad_slots = 0
        self.flags = 0
        self.period = Period()
        # Last gasps go to a raw flash partition outside LittleFS, kept erased ahead of the
        # writer (meter.storage.restore erases spent sectors at boot, on mains): a last gasp is one
        # 32-byte program, under a millisecond, never an erase, so it fits the hold-up
        # whatever LittleFS would be doing. Its state: a list by the _J_ indices above.
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
        if j is None or j[_J_ROOM] <= 0:
            return self.save(imp, exp, now, FLAG_LAST_GASP)
        buf = j[_J_BUF]
        imwh = imp.total_mwh()
        emwh = exp.total_mwh()
        struct.pack_into(JOURNAL_FMT, buf, 0, self._energy.seq, imp.kwh, imwh,
                         exp.kwh, emwh, now, FLAG_LAST_GASP)
        struct.pack_into("<I", buf, 28, crc32(memoryview(buf)[:28]))
        n = j[_J_NEXT]
        j[_J_NEXT] = (n + 1) % j[_J_SLOTS]
        j[_J_ROOM] -= 1
        j[_J_DEV].writeblocks(n >> 7, buf, (n & 127) << 5)  # 128 slots of 32 bytes a block
        imp.saved(imp.kwh, imwh)
        exp.saved(exp.kwh, emwh)

    def save_period(self):
        p = self.period
        self._period.save(p.start, p.imp_wh, p.exp_wh, p.demand_w, p.demand_at, p.head)
