# Emulated SPI NOR flash data partition, as a MicroPython block device (the extended
# interface vfs.VfsLfs2 uses: readblocks/writeblocks with offsets, ioctl erase).
# The contents live in a host file, so they stay out of the MicroPython heap.
# It counts program and erase operations per block and can lose power mid-write.

from simulator.device.shim import PowerCut

BLOCK_SIZE = 4096
IOCTL_SYNC = 3
IOCTL_BLOCK_COUNT = 4
IOCTL_BLOCK_SIZE = 5
IOCTL_BLOCK_ERASE = 6
_ERASED = b"\xff" * 256


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

    def cut_power(self):
        self.fh.flush()
        if self.world is not None:
            self.world.powered = False
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
        if torn:
            length = length // 2  # the write is torn: only its first half lands
        self.fh.seek(block * BLOCK_SIZE + offset)
        self.fh.write(buf[:length] if length < len(buf) else buf)
        self.bytes_written += length
        if torn:
            self.cut_power()

    def erase(self, block: int):
        self.check_power()
        if self.on_op is not None:
            self.on_op("E", block, 0, None)
        if self.next_op_cuts():
            self.cut_power()  # power gone before the erase: the block keeps its data
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
