# The device end of the simulator's wire, for firmware running in its own process (real
# MicroPython): the emulated world lives in the host, and every bus access, pin level and
# sleep travels over one loopback socket. Only what the firmware needs back waits for a
# reply; pin writes are posted. The flash image is read straight from its host file.
import struct

from simulator.device.power import PowerCut, ScenarioEnd

OK = 0
CUT = 1
END = 2
HEAP_SAMPLE_MS = 60_000


class RemoteUart:
    def __init__(self, world, uart_id):
        self.world = world
        self.uart_id = uart_id

    def any(self):
        if not self.world.uart_rx_pending:
            return 0  # the last advance said nothing is waiting on any UART
        return struct.unpack("<H", self.world.call(b"U", bytes((self.uart_id, 0))))[0]

    def read(self, nbytes=-1):
        data = self.world.call(b"U", bytes((self.uart_id, 1)))
        return data or None

    def write(self, data):
        self.world.call(b"U", bytes((self.uart_id, 2)) + bytes(data))
        return len(data)


class RemoteFlash:
    """Block device: reads come from the image file, programs and erases go to the host,
    which may cut the power in the middle of one."""

    def __init__(self, world, path, block_count):
        self.world = world
        self.block_count = block_count
        self.fh = open(path, "rb")

    def readblocks(self, block, buf, offset=0):
        self.world.check_power()
        self.fh.seek(block * 4096 + offset)
        self.fh.readinto(buf)

    def writeblocks(self, block, buf, offset=None):
        if offset is None:
            self.ioctl(6, block)
            offset = 0
        self.world.call(b"F", struct.pack("<HH", block, offset) + bytes(buf))

    def ioctl(self, op, arg):
        if op == 4:
            return self.block_count
        if op == 5:
            return 4096
        if op == 6:
            self.world.call(b"E", struct.pack("<H", arg))
        return 0


class RemoteWorld:
    """Stands in for simulator.device.world.World inside the firmware's process."""

    def __init__(self, sock):
        self.sock = sock
        self.dead = 0  # CUT or END once the host has said so: nothing runs after that
        self.head = bytearray(3)
        self.uarts = {}
        self.uart_rx_pending = 1  # unknown until the first advance: ask
        self.next_heap_sample = 0
        hello = self.call(b"H", b"")
        self.now_ms, self.boot_ms, self.unix_base, blocks = struct.unpack("<qqqH", hello[:26])
        self.unique_id = hello[26:32]
        self.reset_cause = hello[32]
        self.flash_label = "meterdata"
        self.flash = RemoteFlash(self, hello[33:].decode(), blocks)

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
        return data

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

    def pin_write(self, pin_id, level):
        self.post(b"W", bytes((pin_id, level)))

    def pin_read(self, pin_id):
        return self.call(b"R", bytes((pin_id,)))[0]

    def spi_transfer(self, bus_id, mode, tx, rx):
        polarity, phase, baudrate = mode
        reply = self.call(b"S", struct.pack("<BBBI", bus_id, polarity, phase, baudrate) + tx)
        rx[:] = reply

    def uart(self, uart_id):
        port = self.uarts.get(uart_id)
        if port is None:
            port = RemoteUart(self, uart_id)
            self.uarts[uart_id] = port
        return port

    def set_unix(self, unix):
        reply = self.call(b"T", struct.pack("<q", unix))
        self.unix_base = struct.unpack("<q", reply)[0]

    def network_up(self):
        return self.call(b"N", b"")[0] == 1

    def watchdog_start(self, timeout_ms):
        self.post(b"D", struct.pack("<I", timeout_ms))

    def watchdog_feed(self):
        self.post(b"D", struct.pack("<I", 0))

    def request_reset(self):
        self.call(b"X", b"")
