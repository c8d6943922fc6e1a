# Emulated SPI NOR flash data partition, as a MicroPython block device (the extended
# interface vfs.VfsLfs2 uses: readblocks/writeblocks with offsets, ioctl erase).
# The contents live in a host file, so they stay out of the MicroPython heap.
# It counts program and erase operations per block and can lose power mid-write.
#
# Time: flash operations take no virtual time while mains is present (the simulator's time
# only moves in sleeps, which keeps runs deterministic and the same on both runtimes), but
# while the board runs on its supply capacitor after the power-fail edge (World.holdup)
# every program and erase uses up its typical duration of the hold-up, and one that would
# end after the supply dies is cut there (the program torn, the erase not done).

from simulator.device.shim import PowerCut

BLOCK_SIZE = 4096
IOCTL_SYNC = 3
IOCTL_BLOCK_COUNT = 4
IOCTL_BLOCK_SIZE = 5
IOCTL_BLOCK_ERASE = 6
_ERASED = b"\xff" * 256
# Typical timings of a W25Q-class SPI NOR flash (Winbond W25Q32/W25Q64/W25Q128 datasheets,
# the ESP32 modules' usual flash): page program tPP 0.7 ms typ (3 ms max) per 256-byte
# page, sector erase tSE 45 ms typ (400 ms max) per 4 KiB sector.
PAGE_SIZE = 256
PAGE_PROGRAM_US = 700
SECTOR_ERASE_US = 45_000


def program_us(offset: int, length: int) -> int:
    """Typical time to program `length` bytes at `offset`: one tPP per page touched."""
    if length <= 0:
        return 0
    pages = (offset + length - 1) // PAGE_SIZE - offset // PAGE_SIZE + 1
    return pages * PAGE_PROGRAM_US


class FlashChip:
    def __init__(self, path: str, block_count: int, world=None):
        self.path = path
        self.block_count = block_count
        self.world = world
        self.erases = [0] * block_count
        self.bytes_written = 0
        self.ops = 0  # programs plus erases: the points where power can be cut
        self.cut_at_op = 0  # 1-based op number at which to cut power; 0 = never
        self.on_op = None  # optional callable(kind "P"/"E", block, offset, data) before an op
        self.fh = None
        self.open_image()

    def open_image(self):
        try:
            self.fh = open(self.path, "r+b")
        except OSError:
            self.fh = open(self.path, "w+b")
            for _ in range(self.block_count * BLOCK_SIZE // len(_ERASED)):
                self.fh.write(_ERASED)
            self.fh.flush()

    def close(self):
        if self.fh is not None:
            self.fh.close()
            self.fh = None

    def check_power(self):
        if self.world is not None:
            self.world.check_power()

    def next_op_cuts(self) -> bool:
        self.ops += 1
        return self.cut_at_op and self.ops == self.cut_at_op

    def takes(self, us: int) -> bool:
        """The operation uses `us` of the hold-up if the board is on it; False if the
        supply dies before the operation ends."""
        return self.world is None or self.world.flash_time(us)

    def supply_dies(self):
        """The hold-up ran out during this operation: the rest of the outage passes."""
        self.fh.flush()
        self.world.holdup_runs_out()
        if self.world.on_power_cut is not None:
            self.world.on_power_cut()
        raise PowerCut()

    def cut_power(self):
        self.fh.flush()
        if self.world is not None:
            self.world.powered = False
            if self.world.on_power_cut is not None:
                self.world.on_power_cut()
        raise PowerCut()

    # --- block device protocol ----------------------------------------------------
    def readblocks(self, block: int, buf, offset: int = 0):
        self.check_power()
        self.fh.seek(block * BLOCK_SIZE + offset)
        self.fh.readinto(buf)

    def writeblocks(self, block: int, buf, offset=None):
        self.check_power()
        if offset is None:
            # The simple interface: erase the block(s) first, then program.
            self.erase(block)
            offset = 0
        length = len(buf)
        if self.on_op is not None:
            self.on_op("P", block, offset, buf)
        torn = self.next_op_cuts()
        dies = not torn and not self.takes(program_us(offset, length))
        if torn or dies:
            length = length // 2  # the write is torn: only its first half lands
        self.fh.seek(block * BLOCK_SIZE + offset)
        self.fh.write(buf[:length] if length < len(buf) else buf)
        self.bytes_written += length
        if dies:
            self.supply_dies()
        if torn:
            self.cut_power()

    def erase(self, block: int):
        self.check_power()
        if self.on_op is not None:
            self.on_op("E", block, 0, None)
        if self.next_op_cuts():
            self.cut_power()  # power gone before the erase: the block keeps its data
        if not self.takes(SECTOR_ERASE_US):
            self.supply_dies()  # the hold-up ends before the erase does: it does not happen
        self.fh.seek(block * BLOCK_SIZE)
        for _ in range(BLOCK_SIZE // len(_ERASED)):
            self.fh.write(_ERASED)  # in small pieces: a 4 KiB buffer would strain a 64 KiB heap
        self.erases[block] += 1

    def ioctl(self, op: int, arg):
        if op == IOCTL_BLOCK_COUNT:
            return self.block_count
        if op == IOCTL_BLOCK_SIZE:
            return BLOCK_SIZE
        if op == IOCTL_BLOCK_ERASE:
            self.erase(arg)
            return 0
        if op == IOCTL_SYNC:
            self.fh.flush()
            return 0
        return 0

    def total_erases(self) -> int:
        total = 0
        for count in self.erases:
            total += count
        return total
