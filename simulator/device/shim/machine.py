# `machine` for the simulated board: pins, SPI, UART, RTC, WDT, reset.
from simulator.device.shim import world

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
        if level is None:
            return world().pin_read(self.id)
        world().pin_write(self.id, 1 if level else 0)
        return None

    def irq(self, handler=None, trigger=3, hard=False):
        """A soft IRQ, as on the ESP32 port: the handler runs in the firmware's thread at the
        next chance, which includes the middle of a sleep (see vtime.sleep_ms)."""
        IRQ_HANDLERS[self.id] = (self, handler)
        world().pin_irq(self.id, trigger if handler is not None else 0)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, level=None):
        return self.value(level)


class SPI:
    MSB = 0

    def __init__(self, bus_id, baudrate=1_000_000, polarity=0, phase=0, bits=8, firstbit=0,
                 sck=None, mosi=None, miso=None):
        self.bus_id = bus_id
        self.mode = (polarity, phase, baudrate)

    def init(self, baudrate=1_000_000, polarity=0, phase=0, **kwargs):
        self.mode = (polarity, phase, baudrate)

    def write_readinto(self, wbuf, rbuf):
        world().spi_transfer(self.bus_id, self.mode, wbuf, rbuf)

    def write(self, wbuf):
        sink = bytearray(len(wbuf))
        world().spi_transfer(self.bus_id, self.mode, wbuf, sink)

    def readinto(self, rbuf, write=0):
        tx = bytes([write]) * len(rbuf)
        world().spi_transfer(self.bus_id, self.mode, tx, rbuf)

    def read(self, nbytes, write=0):
        rbuf = bytearray(nbytes)
        self.readinto(rbuf, write)
        return bytes(rbuf)

    def deinit(self):
        pass


class UART:
    def __init__(self, uart_id, baudrate=9600, **kwargs):
        self.port = world().uart(uart_id)

    def any(self):
        return self.port.any()

    def read(self, nbytes=-1):
        return self.port.read(nbytes)

    def write(self, data):
        return self.port.write(data)


class RTC:
    def datetime(self, dt=None):
        import time

        w = world()
        if dt is None:
            t = time.gmtime(w.now_unix())
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        year, month, day, _weekday, hour, minute, second, _sub = dt
        from simulator.device.timeutil import unix_from_fields

        w.set_unix(unix_from_fields(year, month, day, hour, minute, second))
        return None


class WDT:
    def __init__(self, id=0, timeout=5000):
        world().watchdog_start(timeout)

    def feed(self):
        world().watchdog_feed()


def reset():
    # A software reset ends this boot like a power cycle does, but keeps the supply on.
    world().request_reset()


def reset_cause():
    return world().reset_cause


def unique_id():
    return world().unique_id


def freq(hz=None):
    return 240_000_000


def idle():
    pass
