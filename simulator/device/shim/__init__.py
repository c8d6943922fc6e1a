# MicroPython's hardware modules for the simulated board, in ONE module: the runner installs
# it in sys.modules as `machine`, `esp32` and `network`, and boards use it as their `time`
# source (virtual time). One module, because on the MicroPython unix port every module and
# class costs heap of its own, and the firmware shares a 64 KiB heap with this layer.
# Runs on CPython and MicroPython. Every hardware access is one operation of the simulator's
# wire (see World.call): `call` waits for the answer, `post` does not. In-process the World
# answers directly; in a MicroPython process a RemoteWorld carries it over a socket.
# It carries only what the firmware uses (each method costs heap on MicroPython): add the
# MicroPython API a driver needs when the driver comes.

import struct

WORLD = [None]  # the world the shims talk to; one meter per process


def world():
    w = WORLD[0]
    if w is None:
        raise RuntimeError("no simulated world attached")
    return w


class PowerCut(BaseException):
    """Mains went away: the firmware loses its RAM at this very instruction."""


class ScenarioEnd(BaseException):
    """The scenario is over and its final readout has been taken."""


# --- machine --------------------------------------------------------------------------
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5


IRQ_HANDLERS = {}  # pin id -> (Pin, handler) armed with Pin.irq


def run_irq(pin_id):
    entry = IRQ_HANDLERS.get(pin_id)
    if entry is not None and entry[1] is not None:
        entry[1](entry[0])


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    IRQ_FALLING = 2
    IRQ_RISING = 1

    def __init__(self, pin_id, mode=-1, pull=-1, value=None):
        self.id = pin_id
        self.mode = mode
        self.pull = pull
        if value is not None:
            self.value(value)

    def value(self, level=None):
        w = WORLD[0] or world()
        if level is None:
            return w.pin_read(self.id)
        w.pin_write(self.id, 1 if level else 0)
        return None

    def irq(self, handler=None, trigger=3, hard=False):
        """A soft IRQ, as on the ESP32 port: the handler runs in the firmware's thread at the
        next chance, which includes the middle of a sleep (see sleep_ms)."""
        IRQ_HANDLERS[self.id] = (self, handler)
        world().pin_irq(self.id, trigger if handler is not None else 0)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


class SPI:
    MSB = 0

    def __init__(self, bus_id, baudrate=1_000_000, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self.bus_id = bus_id
        self.mode = (polarity, phase, baudrate)

    def init(self, baudrate=1_000_000, polarity=0, phase=0, **kwargs):
        self.mode = (polarity, phase, baudrate)

    def write_readinto(self, wbuf, rbuf):
        (WORLD[0] or world()).spi(self.bus_id, self.mode, wbuf, rbuf)


class UART:
    def __init__(self, uart_id, baudrate=9600, **kwargs):
        self.id = uart_id

    def any(self):
        w = world()
        if not w.uart_rx_pending:
            return 0  # as of the last sleep nothing waits on any UART: save a round trip
        return struct.unpack("<H", w.call(b"U", bytes((self.id, 0))))[0]

    def read(self, nbytes=-1):
        return world().call(b"U", bytes((self.id, 1))) or None

    def write(self, data):
        world().call(b"U", bytes((self.id, 2)) + bytes(data))
        return len(data)


class RTC:
    def datetime(self, dt=None):
        import time

        w = world()
        if dt is None:
            t = time.gmtime(w.now_unix())
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        year, month, day, _weekday, hour, minute, second, _sub = dt
        # days from civil (as simulator/device/timeutil.py, inlined: importing that module
        # here would charge its code to the firmware's heap when a time_sync sets the RTC)
        y = year - 1 if month <= 2 else year
        doy = (153 * ((month + 9) % 12) + 2) // 5 + day - 1
        days = (y // 400) * 146097 + (y % 400) * 365 + (y % 400) // 4 - (y % 400) // 100 + doy
        unix = (days - 719468) * 86400 + hour * 3600 + minute * 60 + second
        w.call(b"T", struct.pack("<q", unix))
        return None


class WDT:
    def __init__(self, id=0, timeout=5000):
        world().post(b"D", struct.pack("<I", timeout))

    def feed(self):
        world().post(b"D", struct.pack("<I", 0))


def reset():
    # A software reset ends this boot like a power cycle does, but keeps the supply on.
    world().call(b"X", b"")


def reset_cause():
    return world().reset_cause


def unique_id():
    return world().unique_id


# --- esp32 ----------------------------------------------------------------------------
class Partition:
    """A data partition of the board's flash chip, as a block device (readblocks/writeblocks
    with offsets, ioctl), like esp32.Partition: block numbers are the partition's own."""

    TYPE_APP = 0
    TYPE_DATA = 1
    # The simulated board's data flash (256 KiB, boards/esp32_atm90e26.py): label ->
    # (first 4 KiB block of the chip, blocks)
    TABLE = {"meterdata": (0, 62), "lastgasp": (62, 2)}

    def __init__(self, flash, label="meterdata"):
        self.flash = flash
        self.first, self.count = Partition.TABLE[label]

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None):
        if type == Partition.TYPE_DATA and label in Partition.TABLE:
            return [Partition(world().flash, label)]
        return []

    def _at(self, block):
        if not 0 <= block < self.count:
            raise OSError(22)  # EINVAL: outside the partition
        return self.first + block

    def readblocks(self, block, buf, offset=0):
        self.flash.readblocks(self._at(block), buf, offset)

    def writeblocks(self, block, buf, offset=None):
        self.flash.writeblocks(self._at(block), buf, offset)

    def ioctl(self, op, arg):
        if op == 4:
            return self.count
        if op == 6:
            arg = self._at(arg)
        return self.flash.ioctl(op, arg)


# --- network --------------------------------------------------------------------------
STA_IF = 0
AP_IF = 1


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface
        self.enabled = False

    def active(self, state=None):
        if state is None:
            return self.enabled
        self.enabled = bool(state)
        return None

    def connect(self, ssid=None, key=None, **kwargs):
        world().check_power()

    def disconnect(self):
        pass

    def isconnected(self):
        return self.enabled and world().call(b"N", b"")[0] == 1

    def config(self, *args, **kwargs):
        if args and args[0] == "mac":
            return world().unique_id
        return None


# --- time (virtual) -------------------------------------------------------------------
_TICKS_PERIOD = 1 << 30
_TICKS_HALF = _TICKS_PERIOD // 2


def ticks_ms():
    w = world()
    return (w.now_ms - w.boot_ms) & (_TICKS_PERIOD - 1)


def ticks_add(ticks, delta):
    return (ticks + delta) & (_TICKS_PERIOD - 1)


def ticks_diff(end, start):
    diff = (end - start) & (_TICKS_PERIOD - 1)
    return diff - _TICKS_PERIOD if diff >= _TICKS_HALF else diff


def sleep_ms(ms):
    w = world()
    end = w.now_ms + ms
    while ms > 0:
        fired = w.advance(ms)
        if fired < 0:
            return
        # An armed pin IRQ interrupted the sleep: its handler runs, then the sleep goes on.
        run_irq(fired)
        ms = end - w.now_ms


def time():
    # Seconds since 1970 from the board's battery-backed RTC.
    return world().now_unix()


def gmtime(secs=None):
    import time as host_time

    return host_time.gmtime(world().now_unix() if secs is None else secs)
