# Analog Devices ADE7953 single-phase metering IC over SPI (CPOL 1, CPHA 1, <= 1 MHz).
# A frame is a 16-bit address, 0x80 to read or 0x00 to write, then the data MSB first; the
# data width follows the address range (0x0xx 8, 0x1xx 16, 0x2xx 24, 0x3xx 32 bits).
# Same interface as the ATM90E26 driver.
from micropython import const

_CONFIG = const(0x102)
_PERIOD = const(0x10E)
_UNLOCK = const(0x0FE)
_SETTING = const(0x120)
_SETTING_VALUE = const(0x0030)
_AWATT = const(0x312)
_AVAR = const(0x314)
_IRMSA = const(0x31A)
_IRMSB = const(0x31B)
_VRMS = const(0x31C)
_AENERGYA = const(0x31E)
_RENERGYA = const(0x320)
_LAST_RWDATA_32 = const(0x3FF)
_LAST_RWDATA_16 = const(0x1FF)

# Calibration registers the record may set, as (address, reset value).
CAL_REGS = (
    (0x108, 0x0000),  # PHCALA
    (0x380, 0x400000),  # AIGAIN
    (0x381, 0x400000),  # AVGAIN
    (0x382, 0x400000),  # AWGAIN
    (0x389, 0x000000),  # AWATTOS
    (0x38C, 0x400000),  # BIGAIN
)


def _signed32(value):
    return value - 0x100000000 if value & 0x80000000 else value


class ADE7953:
    NAME = "ade7953"

    def __init__(self, spi, cs):
        self._spi = spi
        self._cs = cs
        self._tx = bytearray(7)
        self._rx = bytearray(7)
        self._views = (None, memoryview(self._tx)[:4], memoryview(self._tx)[:5],
                       memoryview(self._tx)[:6], self._tx)
        self._rviews = (None, memoryview(self._rx)[:4], memoryview(self._rx)[:5],
                        memoryview(self._rx)[:6], self._rx)
        self.energy_num = 1  # an energy LSB is 1 mWh at unity AWGAIN
        self.energy_den = 1000
        self.started = False
        self.stuck = False
        self.rejected = 0
        cs.value(1)

    def _frame(self, addr, op, value):
        n = (1, 2, 3, 4)[(addr >> 8) & 3]
        tx = self._tx
        tx[0] = addr >> 8
        tx[1] = addr & 0xFF
        tx[2] = op
        for i in range(n):
            tx[3 + i] = (value >> (8 * (n - 1 - i))) & 0xFF
        self._cs.value(0)
        try:
            self._spi.write_readinto(self._views[n], self._rviews[n])
        finally:
            self._cs.value(1)
        out = 0
        rx = self._rx
        for i in range(n):
            out = (out << 8) | rx[3 + i]
        return out

    def read(self, reg):
        return self._frame(reg, 0x80, 0)

    def write(self, reg, value):
        self._frame(reg, 0x00, value)

    def _verify(self, value, last=_LAST_RWDATA_32):
        """Confirm a read against the chip's LAST_RWDATA echo (see the ATM90E26 driver)."""
        for _ in range(6):
            echo = self.read(last)
            if echo == value:
                return value
            self.rejected += 1
            value = echo
        return -1

    def checksums(self, cal):
        return []  # the ADE7953 keeps no checksum over its calibration registers

    def start(self, cal=None):
        self.started = False
        self.write(_CONFIG, 0x0080)  # software reset
        self.write(_UNLOCK, 0xAD)
        self.write(_SETTING, _SETTING_VALUE)
        for addr, default in CAL_REGS:
            self.write(addr, cal.get(addr, default) if cal else default)
        self.started = True
        return self.configured()

    def configured(self):
        self.stuck = False
        value = self.read(_SETTING)
        if value != _SETTING_VALUE:
            value = self._verify(value, _LAST_RWDATA_16)
            if value != _SETTING_VALUE:
                # After a reset the setting reads 0, as does a bus stuck low: CONFIG (reset
                # value 0x8004) tells a live chip from a dead bus.
                if value in (-1, 0, 0xFFFF):
                    config = self._verify(self.read(_CONFIG), _LAST_RWDATA_16)
                    self.stuck = config in (-1, 0, 0xFFFF)
                return False
        return self.started

    def read_energy(self, reg=_AENERGYA):
        """(import, export) active energy since the last call, in energy LSBs (signed,
        read-with-reset register: one direction per read)."""
        value = self.read(reg)
        if value:
            value = self._verify(value)
            if value < 0:
                return None
        value = _signed32(value)
        return (value, 0) if value >= 0 else (0, -value)

    def read_reactive(self):
        """(lagging, leading) reactive energy since the last call (mvarh)."""
        return self.read_energy(_RENERGYA)

    def read_power(self):
        return _signed32(self.read(_AWATT)) // 100

    def read_currents(self):
        return self.read(_IRMSA), self.read(_IRMSB)

    def read_instant(self, out):
        """Same layout as the ATM90E26 driver's."""
        out[0] = self.read(_VRMS)
        out[1] = self.read(_IRMSA)
        w = _signed32(self.read(_AWATT))  # 10 mW
        var = _signed32(self.read(_AVAR))
        va = (out[0] // 10) * out[1] // 100  # 10 mVA, every product below 2**30
        out[2] = w // 100
        pf = (w // 10) * 1000 // (va // 10) if va >= 10 else 1000
        out[3] = 1000 if pf > 1000 else (-1000 if pf < -1000 else pf)  # rounding can overshoot
        period = self.read(_PERIOD)
        out[4] = 22375000 // (period + 1) if period else 0
        out[5] = self.read(_IRMSB)
        out[6] = var // 100
        out[7] = va // 100
