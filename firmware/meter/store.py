# What the meter keeps on its data filesystem (LittleFS), built to survive a power cut at
# any instant with bounded flash wear:
# - EnergyStore: the energy checkpoint. Two slot files written in turn, each record with a
#   sequence number and a CRC, so a write torn by a cut leaves the other slot intact and the
#   newest valid record wins at boot. LittleFS keeps these small files inline in its
#   metadata, so a checkpoint is one short metadata commit, not a block copy.
# - Journal: the last gasp's records, on a raw flash partition outside LittleFS kept erased
#   ahead of the writer, so saving in the hold-up is one short program and never an erase.
# - meter.ring.Ring (loaded only while used): the logs and profiles.
import struct
from binascii import crc32

from micropython import const

FLAG_LAST_GASP = const(1)  # written by the power-fail handler: power went at `time`
JOURNAL_FMT = "<IIIIIIB"  # energy slot seq, import kWh, mWh, export kWh, mWh, time, flags
JOURNAL_SLOT = const(32)  # bytes: the record, padding, CRC32 of what precedes it at 28
JOURNAL_PER_BLOCK = const(128)


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


class Journal:
    """Last-gasp records on a raw flash partition (NOR: a program only clears bits, so a
    slot is written once after an erase). The last gasp programs the next erased 32-byte
    slot: one page program, under a millisecond, never an erase, so it fits the hold-up
    whatever LittleFS would be doing. Each record carries the sequence number of the
    LittleFS energy checkpoint it follows and a CRC (a torn one is skipped). At boot
    meter.restore finds the newest, folds it into LittleFS, sets where the next one goes
    and erases spent sectors, while mains is there."""

    def __init__(self, bdev):
        self.bdev = bdev
        self.slots = bdev.ioctl(4, 0) * JOURNAL_PER_BLOCK
        self.next = 0
        self.free = 0  # erased slots from `next` on: none until meter.restore has looked
        self.buf = bytearray(JOURNAL_SLOT)

    def save(self, seq, imp, exp, now, flags):
        if self.free <= 0:
            return False
        buf = self.buf
        struct.pack_into(JOURNAL_FMT, buf, 0, seq, imp.kwh, imp.total_mwh(), exp.kwh,
                         exp.total_mwh(), now, flags)
        struct.pack_into("<I", buf, 28, crc32(memoryview(buf)[:28]))
        n = self.next
        self.next = (n + 1) % self.slots
        self.free -= 1
        self.bdev.writeblocks(n // JOURNAL_PER_BLOCK, buf, (n % JOURNAL_PER_BLOCK) * JOURNAL_SLOT)
        return True


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
        self.journal = Journal(journal) if journal is not None else None

    def load(self, imp, exp):
        """Restore the newest valid checkpoint into the registers (meter.restore); returns
        its time or None."""
        from meter.restore import load_energy

        return load_energy(self, imp, exp)

    def save(self, imp, exp, now, flags=0):
        self._energy.save(imp.kwh, imp.total_mwh(), exp.kwh, exp.total_mwh(), now, flags)

    def last_gasp(self, imp, exp, now):
        """The power-fail handler's save: a journal record if there is room, else (no
        journal partition) a LittleFS checkpoint, which may need an erase."""
        j = self.journal
        if j is None or not j.save(self._energy.seq, imp, exp, now, FLAG_LAST_GASP):
            self.save(imp, exp, now, FLAG_LAST_GASP)

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
    except (AttributeError, KeyError):  # MicroPython says KeyError
        pass
