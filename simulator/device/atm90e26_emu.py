# Emulated Microchip ATM90E26 single-phase metering IC, at the SPI-frame level.
# A frame is one address byte (bit 7 set to read) then 16 data bits, MSB first, SPI mode 3.
# Energy is integrated from the world's load model in the chip's own units (0.1 pulse).

import math

from simulator.device.world import phase_angle

SOFT_RESET = 0x00
SYS_STATUS = 0x01
FUNC_EN = 0x02
LAST_DATA = 0x06
CAL_START = 0x20
PL_CONST_H = 0x21
PL_CONST_L = 0x22
L_GAIN = 0x23
MMODE = 0x2B
CS1 = 0x2C
ADJ_START = 0x30
U_GAIN = 0x31
I_GAIN_L = 0x32
CS2 = 0x3B
AP_ENERGY = 0x40
AN_ENERGY = 0x41
AT_ENERGY = 0x42
RP_ENERGY = 0x43
RN_ENERGY = 0x44
RT_ENERGY = 0x45
EN_STATUS = 0x46
IRMS = 0x48
URMS = 0x49
PMEAN = 0x4A
QMEAN = 0x4B
FREQ = 0x4C
POWER_F = 0x4D
SMEAN = 0x4F

ENERGY_REGS = (AP_ENERGY, AN_ENERGY, AT_ENERGY, RP_ENERGY, RN_ENERGY, RT_ENERGY)
RESET_CODE = 0x789A
START_CAL = 0x5678
CHECK_RUN = 0x8765
POWER_ON_START = 0x6886
MAX_SPI_HZ = 200_000

# Reset values of the registers a driver typically touches (datasheet defaults).
DEFAULTS = {
    FUNC_EN: 0x000C,
    CAL_START: POWER_ON_START,
    PL_CONST_H: 0x0015,
    PL_CONST_L: 0xD174,
    L_GAIN: 0x0000,
    MMODE: 0x9422,
    ADJ_START: POWER_ON_START,
    U_GAIN: 0x6720,
    I_GAIN_L: 0x7A13,
}


def block_checksum(values) -> int:
    """CS1/CS2: low byte = sum of the bytes mod 256, high byte = XOR of the bytes."""
    total = 0
    xor = 0
    for value in values:
        hi = (value >> 8) & 0xFF
        lo = value & 0xFF
        total += hi + lo
        xor ^= hi ^ lo
    return ((xor & 0xFF) << 8) | (total & 0xFF)


class Atm90e26:
    """Register file plus metering engine of one ATM90E26."""

    def __init__(self, meter_constant: int = 3200):
        self.meter_constant = meter_constant  # imp/kWh at the default pulse constant
        self.powered = True
        self.regs = {}
        self.frame = bytearray(3)
        self.frame_len = 0
        self.pending = 0
        self.fraction = [0.0] * 6  # sub-LSB energy carried per energy register
        self.volts = 0.0
        self.amps = 0.0
        self.pf = 1.0
        self.hz = 50.0
        self.reset()

    # --- power and reset ----------------------------------------------------------
    def reset(self):
        self.regs = dict(DEFAULTS)
        for i in range(6):
            self.fraction[i] = 0.0

    def power_lost(self):
        self.powered = False
        self.reset()

    def power_on(self):
        self.powered = True
        self.reset()

    def metering(self) -> bool:
        return (
            self.powered
            and self.regs.get(CAL_START) == CHECK_RUN
            and self.regs.get(ADJ_START) == CHECK_RUN
            and (self.regs.get(SYS_STATUS, 0) & 0xF000) == 0
        )

    # --- bus ------------------------------------------------------------------------
    def chip_select(self, level: int):
        if level == 0:
            self.frame_len = 0  # a falling edge starts a new frame

    def exchange(self, mode: tuple, tx, rx):
        polarity, phase, baudrate = mode
        ok = self.powered and polarity == 1 and phase == 1 and baudrate <= MAX_SPI_HZ
        for i in range(len(tx)):
            rx[i] = self.clock_byte(tx[i]) if ok else 0xFF

    def clock_byte(self, byte: int) -> int:
        pos = self.frame_len
        if pos >= 3:
            return 0xFF
        self.frame[pos] = byte
        self.frame_len = pos + 1
        if pos == 0:
            if byte & 0x80:
                self.pending = self.read_register(byte & 0x7F)
            return 0x00
        if self.frame[0] & 0x80:
            return (self.pending >> 8) & 0xFF if pos == 1 else self.pending & 0xFF
        if pos == 2:
            self.write_register(self.frame[0] & 0x7F, (self.frame[1] << 8) | self.frame[2])
        return 0x00

    def read_register(self, addr: int) -> int:
        value = self.live_value(addr)
        if value is None:
            value = self.regs.get(addr, 0)
        if addr in ENERGY_REGS:
            self.regs[addr] = 0  # energy registers clear on read
        self.regs[LAST_DATA] = value
        return value

    def write_register(self, addr: int, value: int):
        self.regs[LAST_DATA] = value
        if addr == SOFT_RESET:
            if value == RESET_CODE:
                self.reset()
            return
        self.regs[addr] = value
        if addr == CAL_START and value == CHECK_RUN:
            self.check_block(PL_CONST_H, MMODE, CS1, 0xC000)
        elif addr == ADJ_START and value == CHECK_RUN:
            self.check_block(U_GAIN, U_GAIN + 9, CS2, 0x3000)

    def check_block(self, first: int, last: int, cs_addr: int, err_bits: int):
        values = [self.regs.get(a, 0) for a in range(first, last + 1)]
        status = self.regs.get(SYS_STATUS, 0) & ~err_bits
        if block_checksum(values) != self.regs.get(cs_addr, 0):
            status |= err_bits
        self.regs[SYS_STATUS] = status

    def live_value(self, addr: int):
        if addr == URMS:
            return int(self.volts * 100 + 0.5) & 0xFFFF
        if addr == IRMS:
            return int(self.amps * 1000 + 0.5) & 0xFFFF
        if addr == FREQ:
            return int(self.hz * 100 + 0.5) & 0xFFFF
        if addr == PMEAN:
            return int(round(self.volts * self.amps * self.pf)) & 0xFFFF
        if addr == POWER_F:
            magnitude = int(abs(self.pf) * 1000 + 0.5)
            return (0x8000 | magnitude) if self.pf < 0 else magnitude
        return None

    # --- metering engine ------------------------------------------------------------
    def integrate(self, ms: int, volts: float, amps: float, pf: float, hz: float):
        if not self.powered:
            return
        self.volts = volts
        self.amps = amps
        self.pf = pf
        self.hz = hz
        if not self.metering():
            return
        # 0.1 pulse per LSB: LSBs = Wh * meter_constant / 100.
        scale = ms * self.meter_constant / 360_000_000
        active = volts * amps * pf * scale
        reactive = volts * amps * _sin_of(pf) * scale
        self.accumulate(0 if active >= 0 else 1, abs(active))
        self.accumulate(2, abs(active))
        self.accumulate(3 if reactive >= 0 else 4, abs(reactive))
        self.accumulate(5, abs(reactive))

    def accumulate(self, index: int, lsbs: float):
        total = self.fraction[index] + lsbs
        whole = int(total)
        self.fraction[index] = total - whole
        addr = ENERGY_REGS[index]
        value = self.regs.get(addr, 0) + whole
        self.regs[addr] = value if value <= 0xFFFF else 0xFFFF  # saturates, never wraps


def _sin_of(pf: float) -> float:
    return math.sin(phase_angle(pf))
