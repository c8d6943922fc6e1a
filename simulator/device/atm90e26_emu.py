# Emulated Microchip ATM90E26 single-phase metering IC, at the SPI-frame level.
# A frame is one address byte (bit 7 set to read) then 16 data bits, MSB first, SPI mode 3.
# Energy is integrated from the world's load model in the chip's own units (0.1 pulse).
#
# Model of the signal chain (addresses as in the datasheet; scalings as modelled here):
# - the analogue front end of each unit has a manufacturing error the firmware cannot see:
#   voltage and current gain errors and a phase error of the current channel, plus a small
#   power offset. Only calibration removes them.
# - active/reactive power = U' x I' x (1 + Lgain/2^15) x cos/sin(angle + phase error - Lphi)
#   - PoffsetL/QoffsetL; Lgain is two's complement, Lphi sign-magnitude (bit 15 sign, bits
#   9:0 in 0.02 degree steps), the offsets two's complement in mW/mvar.
# - energy pulses: meter_constant imp/kWh at the reset value of PLconstH/L; the pulse rate is
#   inversely proportional to PLconst. An energy LSB is 0.1 pulse.
# - nothing accumulates while |P| is below PStartTh (mW) or |Q| below QStartTh (mvar):
#   the start-up / no-load threshold that stops creep.
# - Urms = U' x Ugain / 26400, Irms = I' x IgainL / 31251, Irms2 = In' x IgainN / 30000
#   (the reset values give unity).

import math

from simulator.device.faults import BusFaults

SOFT_RESET = 0x00
SYS_STATUS = 0x01
FUNC_EN = 0x02
LAST_DATA = 0x06
CAL_START = 0x20
PL_CONST_H = 0x21
PL_CONST_L = 0x22
L_GAIN = 0x23
L_PHI = 0x24
N_GAIN = 0x25
N_PHI = 0x26
P_START_TH = 0x27
P_NOL_TH = 0x28
Q_START_TH = 0x29
Q_NOL_TH = 0x2A
MMODE = 0x2B
CS1 = 0x2C
ADJ_START = 0x30
U_GAIN = 0x31
I_GAIN_L = 0x32
I_GAIN_N = 0x33
U_OFFSET = 0x34
I_OFFSET_L = 0x35
I_OFFSET_N = 0x36
P_OFFSET_L = 0x37
Q_OFFSET_L = 0x38
P_OFFSET_N = 0x39
Q_OFFSET_N = 0x3A
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
PANGLE = 0x4E
SMEAN = 0x4F
IRMS2 = 0x68
PMEAN2 = 0x69
QMEAN2 = 0x6A
POWER_F2 = 0x6B
PANGLE2 = 0x6C
SMEAN2 = 0x6D

ENERGY_REGS = (AP_ENERGY, AN_ENERGY, AT_ENERGY, RP_ENERGY, RN_ENERGY, RT_ENERGY)
RESET_CODE = 0x789A
START_CAL = 0x5678
CHECK_RUN = 0x8765
POWER_ON_START = 0x6886
MAX_SPI_HZ = 200_000
PL_CONST_DEFAULT = 0x0015D174
LPHI_STEP_DEG = 0.02
U_GAIN_UNITY = 26400
I_GAIN_L_UNITY = 31251
I_GAIN_N_UNITY = 30000

# Reset values (datasheet defaults) of the registers with a non-zero one.
DEFAULTS = {
    FUNC_EN: 0x000C,
    CAL_START: POWER_ON_START,
    PL_CONST_H: 0x0015,
    PL_CONST_L: 0xD174,
    P_START_TH: 0x08BD,
    Q_START_TH: 0x0AEC,
    MMODE: 0x9422,
    ADJ_START: POWER_ON_START,
    U_GAIN: 0x6720,
    I_GAIN_L: 0x7A13,
    I_GAIN_N: 0x7530,
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


def signed16(value: int) -> int:
    return value - 0x10000 if value & 0x8000 else value


def sign_magnitude(value: float) -> int:
    magnitude = int(abs(value) + 0.5)
    if magnitude > 0x7FFF:
        magnitude = 0x7FFF
    return (0x8000 | magnitude) if value < 0 and magnitude else magnitude


def clamp16s(value: float) -> int:
    v = int(round(value))
    if v > 0x7FFF:
        v = 0x7FFF
    elif v < -0x8000:
        v = -0x8000
    return v & 0xFFFF


def load_angle(pf: float, lead: bool = False) -> float:
    """Angle of the current behind the voltage (radians) for a signed power factor
    (negative: export) and whether the load is capacitive (current leads)."""
    magnitude = abs(pf)
    if magnitude > 1.0:
        magnitude = 1.0
    angle = math.acos(magnitude)
    if lead:
        angle = -angle
    if pf < 0:
        angle = math.pi - angle
    return angle


class Atm90e26:
    """Register file plus metering engine of one ATM90E26."""

    def __init__(self, meter_constant: int = 3200, chip: dict = None, faults: dict = None):
        self.meter_constant = meter_constant  # imp/kWh at the default pulse constant
        chip = chip or {}
        # Per-unit manufacturing errors: hidden from the firmware, removed only by calibration.
        self.u_error = chip.get("u_gain_error", 0.0)
        self.i_error = chip.get("i_gain_error", 0.0)
        self.n_error = chip.get("n_gain_error", 0.0)
        self.phase_error = math.radians(chip.get("phase_error_deg", 0.0))
        self.offset_w = chip.get("power_offset_w", 0.0)
        self.faults = BusFaults(faults or {})
        self.powered = True
        self.regs = {}
        self.frame = bytearray(3)
        self.frame_len = 0
        self.pending = 0
        self.fraction = [0.0] * 6  # sub-LSB energy carried per energy register
        self.volts = 0.0
        self.amps = 0.0
        self.neutral = 0.0
        self.angle = 0.0
        self.hz = 50.0
        self.p = 0.0  # measured active / reactive power, W and var
        self.q = 0.0
        self.power_key = None
        self.t_ms = 0  # the chip's own view of elapsed time, for scheduled faults
        self.resets = 0
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
        if ok and len(tx) == 3 and self.frame_len == 0:
            # A whole frame in one transfer (the usual case): same as byte by byte.
            first = tx[0]
            self.frame_len = 3
            rx[0] = 0
            if first & 0x80:
                value = self.read_register(first & 0x7F)
                rx[1] = (value >> 8) & 0xFF
                rx[2] = value & 0xFF
            else:
                rx[1] = rx[2] = 0
                self.write_register(first & 0x7F, (tx[1] << 8) | tx[2])
        else:
            for i in range(len(tx)):
                rx[i] = self.clock_byte(tx[i]) if ok else 0xFF
        if self.faults.active:
            self.faults.corrupt(rx, self.t_ms)

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
            self.check_block(U_GAIN, Q_OFFSET_N, CS2, 0x3000)

    def check_block(self, first: int, last: int, cs_addr: int, err_bits: int):
        values = [self.regs.get(a, 0) for a in range(first, last + 1)]
        status = self.regs.get(SYS_STATUS, 0) & ~err_bits
        if block_checksum(values) != self.regs.get(cs_addr, 0):
            status |= err_bits
        self.regs[SYS_STATUS] = status

    # --- measurement ------------------------------------------------------------------
    def reg(self, addr: int) -> int:
        return self.regs.get(addr, 0)

    def measured(self):
        """(U', I', In') after the front end's gain errors."""
        return (self.volts * (1 + self.u_error), self.amps * (1 + self.i_error),
                self.neutral * (1 + self.n_error))

    def compute_power(self):
        volts, amps, _n = self.measured()
        gain = 1 + signed16(self.reg(L_GAIN)) / 32768
        lphi = self.reg(L_PHI)
        comp = math.radians((lphi & 0x3FF) * LPHI_STEP_DEG)
        if lphi & 0x8000:
            comp = -comp
        angle = self.angle + self.phase_error - comp
        apparent = volts * amps * gain
        # The current channel's offset shows even with no current: only the start-up
        # threshold keeps it from creeping into the energy registers.
        self.p = apparent * math.cos(angle) + self.offset_w - signed16(self.reg(P_OFFSET_L)) / 1000
        self.q = apparent * math.sin(angle) - signed16(self.reg(Q_OFFSET_L)) / 1000

    def live_value(self, addr: int):
        if addr < IRMS:
            return None
        volts, amps, neutral = self.measured()
        if addr == URMS:
            return int(volts * 100 * self.reg(U_GAIN) / U_GAIN_UNITY + 0.5) & 0xFFFF
        if addr == IRMS:
            return int(amps * 1000 * self.reg(I_GAIN_L) / I_GAIN_L_UNITY + 0.5) & 0xFFFF
        if addr == IRMS2:
            return int(neutral * 1000 * self.reg(I_GAIN_N) / I_GAIN_N_UNITY + 0.5) & 0xFFFF
        if addr == FREQ:
            return int(self.hz * 100 + 0.5) & 0xFFFF
        if not self.metering():
            return 0
        if addr == PMEAN:
            return clamp16s(self.p)
        if addr == QMEAN:
            return clamp16s(self.q)
        if addr == SMEAN:
            return clamp16s(math.sqrt(self.p * self.p + self.q * self.q))
        if addr == POWER_F:
            s = math.sqrt(self.p * self.p + self.q * self.q)
            return sign_magnitude(self.p / s * 1000) if s > 0 else 1000
        if addr == PANGLE:
            return sign_magnitude(math.degrees(math.atan2(self.q, self.p)) * 10)
        if addr == PMEAN2:
            return clamp16s(volts * neutral * math.cos(self.angle))
        return None

    # --- metering engine ------------------------------------------------------------
    def integrate(self, ms: int, volts: float, amps: float, pf: float, hz: float,
                  neutral: float = None, lead: bool = False):
        self.t_ms += ms
        if self.faults.reset_due(self.t_ms):
            self.resets += 1
            self.reset()  # a glitch resets the IC behind the firmware's back
        if not self.powered:
            return
        self.volts = volts
        self.amps = amps
        self.neutral = amps if neutral is None else neutral
        angle = load_angle(pf, lead)
        self.hz = hz
        if not self.metering():
            return
        regs = self.regs
        key = (volts, amps, angle, regs.get(L_GAIN, 0), regs.get(L_PHI, 0),
               regs.get(P_OFFSET_L, 0), regs.get(Q_OFFSET_L, 0))
        if key != self.power_key:  # the same load and registers give the same power
            self.angle = angle
            self.power_key = key
            self.compute_power()
        # 0.1 pulse per LSB: LSBs = Wh * meter_constant / 100, at the default PLconst.
        plconst = (regs.get(PL_CONST_H, 0) << 16) | regs.get(PL_CONST_L, 0)
        if plconst == 0:
            return
        scale = ms * self.meter_constant / 360_000_000 * PL_CONST_DEFAULT / plconst
        active = self.p
        reactive = self.q
        if abs(active) * 1000 >= regs.get(P_START_TH, 0):
            lsbs = active * scale
            self.accumulate(0 if lsbs >= 0 else 1, abs(lsbs))
            self.accumulate(2, abs(lsbs))
        if abs(reactive) * 1000 >= regs.get(Q_START_TH, 0):
            lsbs = reactive * scale
            self.accumulate(3 if lsbs >= 0 else 4, abs(lsbs))
            self.accumulate(5, abs(lsbs))

    def accumulate(self, index: int, lsbs: float):
        total = self.fraction[index] + lsbs
        whole = int(total)
        self.fraction[index] = total - whole
        addr = ENERGY_REGS[index]
        value = self.regs.get(addr, 0) + whole
        self.regs[addr] = value if value <= 0xFFFF else 0xFFFF  # saturates, never wraps
