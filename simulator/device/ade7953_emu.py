# Emulated Analog Devices ADE7953 single-phase metering IC, at the SPI-frame level.
# A frame is a 16-bit address, then 0x80 to read or 0x00 to write, then the data, MSB first;
# the data width follows the address: 0x0xx 8 bits, 0x1xx 16, 0x2xx 24, 0x3xx 32 (the
# 24-bit registers again, sign-extended). SPI mode 3, up to 1 MHz here.
#
# Model (scalings as modelled here): current channel A is the live, B the neutral. Gains
# are 2^22-unity (AIGAIN/AVGAIN scale the RMS readings and the power, AWGAIN/AVARGAIN the
# power only); PHCALA (bit 9 sign, bits 8:0 in 0.02 degree steps) shifts the current's phase;
# AWATTOS removes a power offset (mW, signed). Energy: AENERGYA/RENERGYA are signed 24-bit,
# read-with-reset, 1 LSB = 1 mWh / 1 mvarh at unity gains, saturating. No energy below the
# no-load threshold AP_NOLOAD/VAR_NOLOAD (LSB = 1/26 mW). IRMSA/IRMSB in mA, VRMS in 10 mV,
# AWATT in 10 mW, PERIOD = 223750 / f - 1.

import math

from simulator.device.atm90e26_emu import load_angle
from simulator.device.faults import BusFaults

LCYCMODE = 0x004
LAST_RWDATA_8 = 0x0FF
CONFIG = 0x102
PHCALA = 0x108
PERIOD = 0x10E
UNLOCK_120 = 0x0FE
SETTING_120 = 0x120
LAST_RWDATA_16 = 0x1FF
LAST_RWDATA_24 = 0x2FF
AP_NOLOAD = 0x303
VAR_NOLOAD = 0x304
AWATT = 0x312
AVAR = 0x314
IRMSA = 0x31A
IRMSB = 0x31B
VRMS = 0x31C
AENERGYA = 0x31E
RENERGYA = 0x320
AIGAIN = 0x380
AVGAIN = 0x381
AWGAIN = 0x382
AVARGAIN = 0x383
AWATTOS = 0x389
BIGAIN = 0x38C
LAST_RWDATA_32 = 0x3FF

UNITY = 0x400000
MAX_SPI_HZ = 1_000_000
PHCAL_STEP_DEG = 0.02
ENERGY_MAX = 0x7FFFFF

DEFAULTS = {
    LCYCMODE: 0x40,
    CONFIG: 0x8004,
    AP_NOLOAD: 0x00E419,
    VAR_NOLOAD: 0x00E419,
    AIGAIN: UNITY, AVGAIN: UNITY, AWGAIN: UNITY, AVARGAIN: UNITY, BIGAIN: UNITY,
}


def width(addr: int) -> int:
    """Data bytes of a register, from its address range."""
    return (1, 2, 3, 4)[(addr >> 8) & 3]


def signed(value: int, bits: int) -> int:
    return value - (1 << bits) if value & (1 << (bits - 1)) else value


class Ade7953:
    """Register file plus metering engine of one ADE7953."""

    def __init__(self, chip: dict = None, faults: dict = None):
        chip = chip or {}
        self.u_error = chip.get("u_gain_error", 0.0)
        self.i_error = chip.get("i_gain_error", 0.0)
        self.n_error = chip.get("n_gain_error", 0.0)
        self.phase_error = math.radians(chip.get("phase_error_deg", 0.0))
        self.offset_w = chip.get("power_offset_w", 0.0)
        self.faults = BusFaults(faults or {})
        self.powered = True
        self.regs = {}
        self.frame = bytearray(8)
        self.frame_len = 0
        self.out = 0
        self.fraction = [0.0, 0.0]
        self.volts = self.amps = self.neutral = self.angle = 0.0
        self.hz = 50.0
        self.p = self.q = 0.0
        self.t_ms = 0
        self.resets = 0
        self.reset()

    def reset(self):
        self.regs = dict(DEFAULTS)
        self.fraction[0] = self.fraction[1] = 0.0

    def power_lost(self):
        self.powered = False
        self.reset()

    def power_on(self):
        self.powered = True
        self.reset()

    def metering(self) -> bool:
        return self.powered and self.regs.get(SETTING_120) == 0x0030

    # --- bus ------------------------------------------------------------------------
    def chip_select(self, level: int):
        if level == 0:
            self.frame_len = 0

    def exchange(self, mode: tuple, tx, rx):
        polarity, phase, baudrate = mode
        ok = self.powered and polarity == 1 and phase == 1 and baudrate <= MAX_SPI_HZ
        for i in range(len(tx)):
            rx[i] = self.clock_byte(tx[i]) if ok else 0xFF
        if self.faults.active:
            self.faults.corrupt(rx, self.t_ms)

    def clock_byte(self, byte: int) -> int:
        pos = self.frame_len
        if pos >= 7:
            return 0xFF
        self.frame[pos] = byte
        self.frame_len = pos + 1
        if pos < 2:
            return 0x00
        addr = ((self.frame[0] << 8) | self.frame[1]) & 0x3FF
        n = width(addr)
        if pos == 2:
            if byte == 0x80:
                self.out = self.read_register(addr)
            return 0x00
        if self.frame[2] == 0x80:
            if pos - 3 >= n:
                return 0x00
            return (self.out >> (8 * (n - 1 - (pos - 3)))) & 0xFF
        if self.frame[2] == 0x00 and pos - 3 == n - 1:
            value = 0
            for i in range(n):
                value = (value << 8) | self.frame[3 + i]
            self.write_register(addr, value)
        return 0x00

    def last(self, value: int, n: int):
        for reg in (LAST_RWDATA_8, LAST_RWDATA_16, LAST_RWDATA_24, LAST_RWDATA_32):
            self.regs[reg] = 0
        self.regs[(LAST_RWDATA_8, LAST_RWDATA_16, LAST_RWDATA_24, LAST_RWDATA_32)[n - 1]] = value

    def read_register(self, addr: int) -> int:
        n = width(addr)
        if addr in (LAST_RWDATA_8, LAST_RWDATA_16, LAST_RWDATA_24, LAST_RWDATA_32):
            return self.regs.get(addr, 0)
        value = self.live_value(addr)
        if value is None:
            value = self.regs.get(addr, 0)
        if addr in (AENERGYA, RENERGYA) and self.regs.get(LCYCMODE, 0) & 0x40:
            self.regs[addr] = 0  # read-with-reset
        value &= (1 << (8 * n)) - 1
        self.last(value, n)
        return value

    def write_register(self, addr: int, value: int):
        self.last(value, width(addr))
        if addr == CONFIG and value & 0x80:
            self.reset()  # SWRST
            return
        if addr == SETTING_120 and self.regs.get(UNLOCK_120) != 0xAD:
            return  # the "required setting" only after the unlock key
        self.regs[addr] = value

    # --- measurement ------------------------------------------------------------------
    def gain(self, addr: int) -> float:
        return self.regs.get(addr, UNITY) / UNITY

    def compute_power(self):
        volts = self.volts * (1 + self.u_error)
        amps = self.amps * (1 + self.i_error)
        phcal = self.regs.get(PHCALA, 0)
        comp = math.radians((phcal & 0x1FF) * PHCAL_STEP_DEG)
        if phcal & 0x200:
            comp = -comp
        angle = self.angle + self.phase_error - comp
        apparent = volts * amps * self.gain(AVGAIN) * self.gain(AIGAIN)
        offset = signed(self.regs.get(AWATTOS, 0) & 0xFFFFFF, 24) / 1000
        self.p = (apparent * math.cos(angle) + self.offset_w) * self.gain(AWGAIN) - offset
        self.q = apparent * math.sin(angle) * self.gain(AVARGAIN)

    def live_value(self, addr: int):
        if addr == PERIOD:
            return int(223750 / self.hz - 1 + 0.5) if self.hz > 0 else 0xFFFF
        if addr < 0x300:
            return None
        if addr == VRMS:
            return int(self.volts * (1 + self.u_error) * 100 * self.gain(AVGAIN) + 0.5)
        if addr == IRMSA:
            return int(self.amps * (1 + self.i_error) * 1000 * self.gain(AIGAIN) + 0.5)
        if addr == IRMSB:
            return int(self.neutral * (1 + self.n_error) * 1000 * self.gain(BIGAIN) + 0.5)
        if not self.metering():
            return 0 if addr in (AWATT, AVAR) else None
        if addr == AWATT:
            return int(round(self.p * 100)) & 0xFFFFFFFF
        if addr == AVAR:
            return int(round(self.q * 100)) & 0xFFFFFFFF
        if addr in (AENERGYA, RENERGYA):
            return self.regs.get(addr, 0) & 0xFFFFFFFF  # sign-extended to 32 bits
        return None

    # --- metering engine ------------------------------------------------------------
    def integrate(self, ms: int, volts: float, amps: float, pf: float, hz: float,
                  neutral: float = None, lead: bool = False):
        self.t_ms += ms
        if self.faults.reset_due(self.t_ms):
            self.resets += 1
            self.reset()
        if not self.powered:
            return
        self.volts, self.amps, self.hz = volts, amps, hz
        self.neutral = amps if neutral is None else neutral
        self.angle = load_angle(pf, lead)
        if not self.metering():
            return
        self.compute_power()
        scale = ms / 3600  # mWh per W over ms
        if abs(self.p) * 26000 >= self.regs.get(AP_NOLOAD, 0):
            self.accumulate(0, AENERGYA, self.p * scale)
        if abs(self.q) * 26000 >= self.regs.get(VAR_NOLOAD, 0):
            self.accumulate(1, RENERGYA, self.q * scale)

    def accumulate(self, index: int, addr: int, lsbs: float):
        total = self.fraction[index] + lsbs
        whole = int(total)  # toward zero: the remainder keeps its sign
        self.fraction[index] = total - whole
        value = self.regs.get(addr, 0) + whole
        if value > ENERGY_MAX:
            value = ENERGY_MAX
        elif value < -ENERGY_MAX:
            value = -ENERGY_MAX
        self.regs[addr] = value
