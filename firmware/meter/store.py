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
        self.flags = 0
        self.period = [0, 0, 0]
        self.demand = [0, 0]
        self.profile_head = 0

    def load(self, imp, exp):
        """Restore the newest valid checkpoint into the registers (meter.restore); returns
        its time or None."""
        from meter.restore import load_energy

        return load_energy(self, imp, exp)

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
    except (AttributeError, KeyError):  # MicroPython says KeyError
        pass
