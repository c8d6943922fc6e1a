# The device end of the simulator's wire, for firmware running in its own process (real
# MicroPython): the emulated world lives in the host, and every bus access, pin level and
# sleep travels over one loopback socket. Only what the firmware needs back waits for a
# reply; pin writes are posted. The flash image is read straight from its host file.
import struct

from simulator.device.shim import PowerCut, ScenarioEnd

OK = 0
CUT = 1
END = 2
HEAP_SAMPLE_MS = 60_000


def meter_counts():
    """The live meter's link at the end of a run: [published, delivered, backlog], from
    meter.app.current (None when no meter is running). Attributes a link may not have yet
    count 0; a backlog that cannot be read now is -1."""
    import sys

    app = sys.modules.get("meter.app")
    link = getattr(getattr(app, "current", None), "link", None)
    if getattr(app, "current", None) is None:
        return None
    if link is None:
        return [0, 0, 0]
    backlog = getattr(link, "backlog", None)
    try:
        backlog = backlog() if backlog is not None else 0
    except BaseException:  # noqa: B036 - the firmware stopped mid-way: unknown
        backlog = -1
    return [getattr(link, "published", 0), getattr(link, "delivered", 0), backlog]


class RemoteFlash:
    """Block device: reads come from the image file, programs and erases go to the host,
    which may cut the power in the middle of one."""

    def __init__(self, world, path, block_count):
        self.world = world
        self.block_count = block_count
        self.fh = open(path, "rb")
        self.program = bytearray(7)  # op, size, block, offset
        self.erase = bytearray(5)  # op, size, block: programs and erases allocate
        # nothing, as a board's flash driver (C) does not, so they also work where the heap
        # is locked: a file closed by the collector's finaliser flushes from there

    def readblocks(self, block, buf, offset=0):
        self.world.check_power()
        self.fh.seek(block * 4096 + offset)
        self.fh.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            self.ioctl(6, block)
            offset = 0
        struct.pack_into("<BHHH", self.program, 0, 0x46, 4 + len(buf), block, offset)  # F
        self.world.call_frame(self.program, buf)

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return 4096
        if op == 6:
            struct.pack_into("<BHH", self.erase, 0, 0x45, 2, arg)  # E
            self.world.call_frame(self.erase, None)
        return 0


class RemoteWorld:
    """Stands in for simulator.device.world.World inside the firmware's process."""

    def __init__(self, sock):
        self.sock = sock
        self.dead = 0  # CUT or END once the host has said so: nothing runs after that
        self.head = bytearray(3)
        self.uart_rx_pending = 1  # unknown until the first advance: ask
        self.next_heap_sample = 0
        hello = self.call(b"H", b"")
        self.now_ms, self.boot_ms, self.unix_base, blocks = struct.unpack("<qqqH", hello[:26])
        self.unique_id = hello[26:32]
        self.reset_cause = hello[32]
        self.power_fail_pin = hello[33] or None  # None: no power-fail detector fitted
        self.flash = RemoteFlash(self, hello[34:].decode(), blocks)

    def _recv_into(self, buf):
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.sock.readinto(view[got:])
            if not n:
                raise PowerCut()  # the host went away: as good as a power cut
            got += n

    def check_power(self):
        if self.dead == CUT:
            raise PowerCut()
        if self.dead == END:
            raise ScenarioEnd()

    def post(self, op, payload):
        self.check_power()
        self.sock.write(op + struct.pack("<H", len(payload)) + payload)

    def call(self, op, payload):
        self.post(op, payload)
        head = self.head
        self._recv_into(head)
        size = head[1] | (head[2] << 8)
        data = bytearray(size)
        if size:
            self._recv_into(data)
        if head[0] != OK:
            self.dead = head[0]
            self.check_power()
        if op == b"T":
            self.unix_base = struct.unpack("<q", data)[0]  # the RTC was just set
        return data

    def call_frame(self, frame, data):
        """call() for a header built in place (RemoteFlash) and its data, allocating
        nothing: the reply must be empty."""
        self.check_power()
        sock = self.sock
        sock.write(frame)
        if data is not None:
            sock.write(data)
        head = self.head
        got = sock.readinto(head)
        if got != 3:  # a short read (rare: the rest follows)
            if not got:
                raise PowerCut()
            self._recv_into(memoryview(head)[got:])
        if head[0] != OK:
            self.dead = head[0]
            self.check_power()
        if head[1] or head[2]:
            raise OSError(5)  # EIO: a reply where none is due

    def send_counts(self):
        """After the end: the link counts to the host (op Y); reading the backlog may read
        the flash, so the world is live again for that one call."""
        self.dead = 0
        try:
            counts = meter_counts()
            if counts is not None:
                self.call(b"Y", struct.pack("<iii", *counts))
        except BaseException:  # noqa: B036 - the run is over whatever happens
            pass

    # --- what the shims use -----------------------------------------------------------
    def advance(self, ms):
        heap = 0
        if self.now_ms >= self.next_heap_sample:
            import gc

            gc.collect()
            heap = gc.mem_alloc()
            self.next_heap_sample = self.now_ms + HEAP_SAMPLE_MS
        reply = self.call(b"A", struct.pack("<II", ms, heap))
        self.now_ms, self.unix_base, self.uart_rx_pending, fired = struct.unpack("<qqHh", reply)
        return fired

    def pin_irq(self, pin_id, trigger):
        self.post(b"Q", bytes((pin_id, trigger)))

    def now_unix(self):
        return self.unix_base + self.now_ms // 1000
