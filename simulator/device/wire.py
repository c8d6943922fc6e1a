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
OUT_SIZE = 96  # the queue of posted operations, with room for a call's frame
IN_SIZE = 3 + 32  # a fixed-size answer with its head: the advance's 28 bytes, SPI frames
FRAME_ROOM = 42  # the largest call frame built in place: an SPI transfer of 32 bytes
LEVELS = OUT_SIZE
REACTIVE = LEVELS + 8


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
    """Stands in for simulator.device.world.World inside the firmware's process.

    Posted operations (pin writes, IRQ arming, the watchdog) are queued in one buffer, as a
    board's drivers write registers without waiting, and go out in one write with the next
    operation that waits for an answer: the host applies them in order before that one, at
    the same virtual time (time only moves inside a call), so the world sees what it saw
    when each went out on its own. The hot operations (SPI frames, pin reads and writes, the
    sleep) allocate nothing."""

    def __init__(self, sock, hello=True):
        self.sock = sock
        self.dead = 0  # CUT or END once the host has said so: nothing runs after that
        # the queue of posted operations, then the call itself; after it, at LEVELS the pin
        # levels, at REACTIVE the pins whose writes may move others (one buffer: each object
        # and attribute costs the firmware's heap)
        self.out = bytearray(REACTIVE + 8)
        self.queued = 0
        self.inb = bytearray(IN_SIZE)  # fixed-size answers (SPI frame, pin read, advance)
        self.uart_rx_pending = 1  # unknown until the first advance: ask
        # Pin levels (bit mask of pins 0-63) as the last advance or pin read left them: the
        # world moves a pin only while time passes or when a reactive pin is written, so
        # until then a pin read needs no round trip, as a board reads its GPIO register.
        self.fresh = False
        self.next_heap_sample = 0
        if not hello:
            return
        hello = self.call(b"H", b"")
        self.now_ms, self.boot_ms, self.unix_base, blocks = struct.unpack("<qqqH", hello[:26])
        self.unique_id = hello[26:32]
        self.reset_cause = hello[32]
        self.power_fail_pin = hello[33] or None  # None: no power-fail detector fitted
        self.out[REACTIVE:] = hello[34:42]  # pins whose writes move others (relay coils)
        self.flash = RemoteFlash(self, hello[42:].decode(), blocks)

    def _recv_into(self, buf):
        view = memoryview(buf)
        got = 0
        while got < len(buf):
            n = self.sock.readinto(view[got:])
            if not n:
                raise PowerCut()  # the host went away: as good as a power cut
            got += n

    def _read(self, buf, size):
        """Exactly `size` bytes into the start of buf; allocates only on a short read."""
        got = self.sock.readinto(buf, size)
        if got != size:
            if not got:
                raise PowerCut()
            self._recv_into(memoryview(buf)[got:size])

    def check_power(self):
        if self.dead == CUT:
            raise PowerCut()
        if self.dead == END:
            raise ScenarioEnd()

    def flush(self):
        """Send what is queued (the posted operations and a call's own frame)."""
        if self.queued:
            self.sock.write(self.out, self.queued)
            self.queued = 0

    def _room(self, size):
        """Where a frame of `size` payload bytes goes in the queue (flushed first if full);
        -1 when it is larger than the queue (it goes out on its own)."""
        if self.queued + 3 + size > OUT_SIZE:
            self.flush()
            if 3 + size > OUT_SIZE:
                return -1
        at = self.queued
        out = self.out
        out[at + 1] = size & 0xFF
        out[at + 2] = size >> 8
        self.queued = at + 3 + size
        return at

    def post(self, op, payload):
        self.check_power()
        self.fresh = False
        at = self._room(len(payload))
        if at < 0:
            self.sock.write(op + struct.pack("<H", len(payload)) + payload)
            return
        self.out[at] = op[0]
        self.out[at + 3:self.queued] = payload

    def _answer(self):
        """The head of the host's answer to the call just flushed: its payload size."""
        head = self.inb
        self._read(head, 3)
        if head[0] != OK:
            self.dead = head[0]
        return head[1] | (head[2] << 8)

    def _fixed(self, size):
        """Flush, and read the answer to a call whose answer has `size` bytes always (the
        host pads it on a cut or at the end), head and all in one read, into self.inb; the
        payload starts at 3."""
        self.flush()
        inb = self.inb
        self._read(inb, 3 + size)
        if inb[0] != OK:
            self.dead = inb[0]
            self.check_power()
        if inb[1] | (inb[2] << 8) != size:
            raise OSError(5)  # EIO: not the answer this call has
        return inb

    def call(self, op, payload):
        self.post(op, payload)  # not fresh: the world may move pins for it
        self.flush()
        size = self._answer()
        data = bytearray(size)
        if size:
            self._recv_into(data)
        self.check_power()
        if op == b"T":
            self.unix_base = struct.unpack("<q", data)[0]  # the RTC was just set
        return data

    def call_frame(self, frame, data):
        """call() for a header built in place (RemoteFlash) and its data, allocating
        nothing: the reply must be empty."""
        self.check_power()
        self.fresh = False  # a flash operation may outlast the hold-up: time moves
        self.flush()
        sock = self.sock
        sock.write(frame)
        if data is not None:
            sock.write(data)
        if self._answer():
            raise OSError(5)  # EIO: a reply where none is due
        self.check_power()

    # --- the hot operations, as the in-process World has them ---------------------------
    def pin_write(self, pin_id, level):
        if self.dead:
            self.check_power()
        at = self.queued
        if at > OUT_SIZE - 5 - FRAME_ROOM:  # keep room for a call's frame
            self.flush()
            at = 0
        out = self.out
        out[at] = 0x57  # W
        out[at + 1] = 2
        out[at + 2] = 0
        out[at + 3] = pin_id
        out[at + 4] = level
        self.queued = at + 5
        if pin_id > 63 or (out[REACTIVE + (pin_id >> 3)] >> (pin_id & 7)) & 1:
            self.fresh = False
        elif level:
            out[LEVELS + (pin_id >> 3)] |= 1 << (pin_id & 7)
        else:
            out[LEVELS + (pin_id >> 3)] &= ~(1 << (pin_id & 7))

    def pin_read(self, pin_id):
        if self.fresh and pin_id < 64:
            self.check_power()
            return (self.out[LEVELS + (pin_id >> 3)] >> (pin_id & 7)) & 1
        self.check_power()
        at = self._room(1)
        self.out[at] = 0x52  # R
        self.out[at + 3] = pin_id
        inb = self._fixed(9)
        self._levels(inb, 4)
        return inb[3]

    def _levels(self, inb, at):
        out = self.out
        for i in range(8):
            out[LEVELS + i] = inb[at + i]
        self.fresh = True

    def spi(self, bus_id, mode, wbuf, rbuf):
        """One SPI transfer: wbuf out, rbuf filled with what MISO carried (as World.spi)."""
        if self.dead:
            self.check_power()
        n = len(wbuf)
        if n > FRAME_ROOM - 10 or len(rbuf) != n:
            polarity, phase, baudrate = mode
            head = struct.pack("<BBBI", bus_id, polarity, phase, baudrate)
            rbuf[:] = self.call(b"S", head + bytes(wbuf))
            return
        at = self.queued
        if at + 10 + n > OUT_SIZE:
            self.flush()
            at = 0
        out = self.out
        out[at] = 0x53  # S
        out[at + 1] = 7 + n
        out[at + 2] = 0
        struct.pack_into("<BBBI", out, at + 3, bus_id, mode[0], mode[1], mode[2])
        end = at + 10 + n
        out[at + 10:end] = wbuf
        self.sock.write(out, end)
        self.queued = 0
        inb = self.inb
        self._read(inb, 3 + n)
        if inb[0] != OK:
            self.dead = inb[0]
            self.check_power()
        if inb[1] != n or inb[2]:
            raise OSError(5)  # EIO: not a frame's answer
        for i in range(n):
            rbuf[i] = inb[3 + i]

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
        self.check_power()
        at = self._room(8)
        self.out[at] = 0x41  # A
        struct.pack_into("<II", self.out, at + 3, ms, heap)
        reply = self._fixed(28)
        self.now_ms, self.unix_base, self.uart_rx_pending, fired = struct.unpack_from(
            "<qqHh", reply, 3)
        self._levels(reply, 23)
        return fired

    def pin_irq(self, pin_id, trigger):
        self.check_power()
        at = self._room(2)
        out = self.out
        out[at] = 0x51  # Q
        out[at + 3] = pin_id
        out[at + 4] = trigger

    def now_unix(self):
        return self.unix_base + self.now_ms // 1000
