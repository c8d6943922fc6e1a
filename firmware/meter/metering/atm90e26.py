# Microchip ATM90E26 single-phase metering IC over SPI (mode 3, <= 200 kHz, MSB first).
# A frame is an address byte (bit 7 set to read) followed by 16 data bits.
from micropython import const

_SOFT_RESET = const(0x00)
_SYS_STATUS = const(0x01)
_FUNC_EN = const(0x02)
_LAST_DATA = const(0x06)
_CAL_START = const(0x20)
_CS1 = const(0x2C)
_ADJ_START = const(0x30)
_CS2 = const(0x3B)
_AP_ENERGY = const(0x40)
_AN_ENERGY = const(0x41)
_RP_ENERGY = const(0x43)
_RN_ENERGY = const(0x44)
_IRMS = const(0x48)
_URMS = const(0x49)
_PMEAN = const(0x4A)
_QMEAN = const(0x4B)
_FREQ = const(0x4C)
_POWER_F = const(0x4D)
_SMEAN = const(0x4F)
_IRMS2 = const(0x68)

_RESET_CODE = const(0x789A)
_FUNC_EN_VALUE = const(0x0030)
_START_CAL = const(0x5678)
_CHECK_RUN = const(0x8765)
_CAL_ERRORS = const(0xF000)
_READ = const(0x80)

# Metering calibration block 0x21..0x2B and measurement calibration block 0x31..0x3A,
# as (address, reset value). Calibration overrides these by address.
CAL_BLOCK = (
    (0x21, 0x0015), (0x22, 0xD174), (0x23, 0x0000), (0x24, 0x0000), (0x25, 0x0000),
    (0x26, 0x0000), (0x27, 0x08BD), (0x28, 0x0000), (0x29, 0x0AEC), (0x2A, 0x0000),
    (0x2B, 0x9422),
)
ADJ_BLOCK = (
    (0x31, 0x6720), (0x32, 0x7A13), (0x33, 0x7530), (0x34, 0x0000), (0x35, 0x0000),
    (0x36, 0x0000), (0x37, 0x0000), (0x38, 0x0000), (0x39, 0x0000), (0x3A, 0x0000),
)


def checksum(values):
    """CS1/CS2 over a block: low byte = sum of bytes mod 256, high byte = XOR of bytes."""
    total = 0
    xor = 0
    for value in values:
        hi = (value >> 8) & 0xFF
        lo = value & 0xFF
        total += hi + lo
        xor ^= hi ^ lo
    return ((xor & 0xFF) << 8) | (total & 0xFF)


class ATM90E26:
    NAME = "atm90e26"

    def __init__(self, spi, cs, meter_constant=3200):
        self._spi = spi
        self._cs = cs
        self._tx = bytearray(3)
        self._rx = bytearray(3)
        # An energy LSB is a tenth of a pulse: 100 / meter_constant Wh.
        self.energy_num = 100
        self.energy_den = meter_constant
        self.started = False
        self.stuck = False  # the last check found MISO stuck (all zeros or all ones)
        self.rejected = 0  # reads that did not match the chip's LastData echo
        cs.value(1)

    def _frame(self, first, value):
        tx = self._tx
        tx[0] = first
        tx[1] = value >> 8
        tx[2] = value & 0xFF
        self._cs.value(0)
        try:
            self._spi.write_readinto(tx, self._rx)
        finally:
            self._cs.value(1)
        return (self._rx[1] << 8) | self._rx[2]

    def read(self, reg):
        return self._frame(_READ | reg, 0)

    def write(self, reg, value):
        self._frame(reg & 0x7F, value)

    def _verify(self, value):
        """Check a value just read against the chip's LastData echo of it; on a mismatch
        read the echo again until two reads in a row agree. Returns -1 when they never do
        (then the caller counts nothing rather than something unconfirmed)."""
        for _ in range(6):
            echo = self.read(_LAST_DATA)
            if echo == value:
                return value
            self.rejected += 1
            value = echo
        return -1

    def read_checked(self, reg):
        return self._verify(self.read(reg))

    def _load_block(self, start_reg, block, cs_reg, cal):
        self.write(start_reg, _START_CAL)
        values = []
        for addr, default in block:
            value = cal.get(addr, default) if cal else default
            self.write(addr, value)
            values.append(value)
        self.write(cs_reg, checksum(values))

    def checksums(self, cal):
        """CS1 and CS2 the chip expects for these calibration registers."""
        out = []
        for block in (CAL_BLOCK, ADJ_BLOCK):
            out.append(checksum([cal.get(a, d) for a, d in block]))
        return out

    def start(self, cal=None):
        """Reset the chip, enable its functions, load calibration and start metering.

        Returns True when the chip accepted both calibration checksums."""
        self.started = False
        self.write(_SOFT_RESET, _RESET_CODE)
        self.write(_FUNC_EN, _FUNC_EN_VALUE)
        if self.read_checked(_LAST_DATA) != _FUNC_EN_VALUE:
            return False
        self._load_block(_CAL_START, CAL_BLOCK, _CS1, cal)
        self._load_block(_ADJ_START, ADJ_BLOCK, _CS2, cal)
        self.write(_CAL_START, _CHECK_RUN)
        self.write(_ADJ_START, _CHECK_RUN)
        self.started = True
        return self.configured()

    def configured(self):
        """Still set up as we left it: not reset, no checksum error. Sets `stuck` when
        the bus, not the chip, is the problem (then re-initialising would not help)."""
        self.stuck = False
        value = self.read(_FUNC_EN)
        if value != _FUNC_EN_VALUE:
            value = self._verify(value)
            if value != _FUNC_EN_VALUE:
                self.stuck = value in (-1, 0, 0xFFFF)
                return False
        if not self.started:
            return False
        status = self.read(_SYS_STATUS)
        if status & _CAL_ERRORS:
            status = self._verify(status)
        return status >= 0 and (status & _CAL_ERRORS) == 0

    def read_energy(self):
        """(import, export) active energy since the last call, in energy LSBs; each read
        checked against the chip's echo. None when a read could not be confirmed."""
        imp = self.read(_AP_ENERGY)
        if imp:
            imp = self._verify(imp)
        exp = self.read(_AN_ENERGY)
        if exp:
            exp = self._verify(exp)
        if imp < 0 or exp < 0:
            return None
        return imp, exp

    def read_reactive(self):
        """(lagging, leading) reactive energy since the last call, in energy LSBs (varh)."""
        pos = self.read(_RP_ENERGY)
        if pos:
            pos = self._verify(pos)
        neg = self.read(_RN_ENERGY)
        if neg:
            neg = self._verify(neg)
        if pos < 0 or neg < 0:
            return None
        return pos, neg

    def read_currents(self):
        """(live, neutral) RMS current in mA."""
        return self.read(_IRMS), self.read(_IRMS2)

    def read_power(self):
        """Mean active power in W, signed (export negative)."""
        watts = self.read(_PMEAN)
        return watts - 0x10000 if watts & 0x8000 else watts

    def read_instant(self, out):
        """Fill out with integers (no float allocation in the metering loop):
        [0] centivolts, [1] milliamps, [2] watts (signed), [3] PF x 1000 (signed), [4] cHz,
        [5] neutral milliamps, [6] var (signed), [7] VA."""
        out[0] = self.read(_URMS)
        out[1] = self.read(_IRMS)
        out[2] = self.read_power()
        pf = self.read(_POWER_F)
        out[3] = -(pf & 0x7FFF) if pf & 0x8000 else pf
        out[4] = self.read(_FREQ)
        out[5] = self.read(_IRMS2)
        var = self.read(_QMEAN)
        out[6] = var - 0x10000 if var & 0x8000 else var
        out[7] = self.read(_SMEAN)
