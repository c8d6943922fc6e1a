# End-of-line calibration of the ATM90E26: register values from reference readings.
# Imported only while calibrating (never in the metering loop). Each step takes what the
# meter measured and what the reference source delivered over the same interval, and
# returns the calibration dict updated; calib.save() then stores it with its checksums.
#   1. Vref, Ib, PF 1:           gains (Lgain from energy, Ugain/IgainL/IgainN from RMS)
#   2. Vref, Ib, PF 0.5 lagging: phase (Lphi)
#   3. Vref, low current, PF 1:  active power offset (PoffsetL)
import math

L_GAIN = 0x23
L_PHI = 0x24
U_GAIN = 0x31
I_GAIN_L = 0x32
I_GAIN_N = 0x33
P_OFFSET_L = 0x37
_DEFAULTS = {U_GAIN: 0x6720, I_GAIN_L: 0x7A13, I_GAIN_N: 0x7530}
LPHI_STEP_DEG = 0.02  # Lphi: bit 15 sign, bits 9:0 magnitude in these steps


def _signed(value):
    return value - 0x10000 if value & 0x8000 else value


def _scale16(cal, addr, ref, meas):
    old = cal.get(addr, _DEFAULTS.get(addr, 0))
    if meas <= 0:
        raise ValueError("no reading for register " + hex(addr))
    new = int(old * ref / meas + 0.5)
    if not 0 < new <= 0xFFFF:
        raise ValueError("register " + hex(addr) + " out of range")
    cal[addr] = new


def gains(cal, ref_wh, meas_wh, ref_v=0, meas_v=0, ref_a=0, meas_a=0, ref_n=0, meas_n=0):
    """Lgain so that the energy matches the reference; RMS gains likewise (0: skip)."""
    if meas_wh <= 0 or ref_wh <= 0:
        raise ValueError("no energy registered at Ib")
    factor = (1 + _signed(cal.get(L_GAIN, 0)) / 32768) * ref_wh / meas_wh
    lgain = int(round((factor - 1) * 32768))
    if not -32768 <= lgain <= 32767:
        raise ValueError("gain error beyond what Lgain can correct")
    cal[L_GAIN] = lgain & 0xFFFF
    if ref_v:
        _scale16(cal, U_GAIN, ref_v, meas_v)
    if ref_a:
        _scale16(cal, I_GAIN_L, ref_a, meas_a)
    if ref_n:
        _scale16(cal, I_GAIN_N, ref_n, meas_n)
    return cal


def phase(cal, ref_wh, meas_wh, ref_pf=0.5):
    """Lphi from the energy error at a lagging power factor (gains already calibrated):
    measured/true = cos(angle + error) / cos(angle)."""
    angle = math.acos(ref_pf)
    ratio = meas_wh / ref_wh * ref_pf
    if not -1 < ratio < 1:
        raise ValueError("phase reading out of range")
    error = math.degrees(math.acos(ratio) - angle)
    old = cal.get(L_PHI, 0)
    comp = (old & 0x3FF) * LPHI_STEP_DEG
    if old & 0x8000:
        comp = -comp
    steps = int(round((comp + error) / LPHI_STEP_DEG))
    if abs(steps) > 0x3FF:
        raise ValueError("phase error beyond what Lphi can correct")
    cal[L_PHI] = (0x8000 | -steps) if steps < 0 else steps
    return cal


def offset(cal, ref_wh, meas_wh, seconds):
    """PoffsetL (mW) from the energy error at low current."""
    watts = (meas_wh - ref_wh) * 3600 / seconds
    mw = _signed(cal.get(P_OFFSET_L, 0)) + int(round(watts * 1000))
    if not -32768 <= mw <= 32767:
        raise ValueError("offset beyond what PoffsetL can correct")
    cal[P_OFFSET_L] = mw & 0xFFFF
    return cal


# --- ADE7953: gains are 2^22-unity; AIGAIN/AVGAIN also scale the power ------------------
_UNITY = 0x400000
PHCALA = 0x108
AIGAIN = 0x380
AVGAIN = 0x381
AWGAIN = 0x382
AWATTOS = 0x389
BIGAIN = 0x38C
PHCAL_STEP_DEG = 0.02  # PHCALA: bit 9 sign, bits 8:0 magnitude in these steps


def ade_gains(cal, ref_wh, meas_wh, ref_v, meas_v, ref_a, meas_a, ref_n=0, meas_n=0):
    if meas_wh <= 0 or ref_wh <= 0 or meas_v <= 0 or meas_a <= 0:
        raise ValueError("no reading at Ib")
    kv = ref_v / meas_v
    ki = ref_a / meas_a
    new = {
        AVGAIN: cal.get(AVGAIN, _UNITY) * kv,
        AIGAIN: cal.get(AIGAIN, _UNITY) * ki,
        AWGAIN: cal.get(AWGAIN, _UNITY) * ref_wh / (meas_wh * kv * ki),
    }
    if ref_n and meas_n > 0:
        new[BIGAIN] = cal.get(BIGAIN, _UNITY) * ref_n / meas_n
    for addr in new:
        value = int(new[addr] + 0.5)
        if not _UNITY // 2 <= value <= _UNITY * 2:
            raise ValueError("gain beyond what register " + hex(addr) + " can correct")
        cal[addr] = value
    return cal


def ade_phase(cal, ref_wh, meas_wh, ref_pf=0.5):
    angle = math.acos(ref_pf)
    ratio = meas_wh / ref_wh * ref_pf
    if not -1 < ratio < 1:
        raise ValueError("phase reading out of range")
    error = math.degrees(math.acos(ratio) - angle)
    old = cal.get(PHCALA, 0)
    comp = (old & 0x1FF) * PHCAL_STEP_DEG
    if old & 0x200:
        comp = -comp
    steps = int(round((comp + error) / PHCAL_STEP_DEG))
    if abs(steps) > 0x1FF:
        raise ValueError("phase error beyond what PHCALA can correct")
    cal[PHCALA] = (0x200 | -steps) if steps < 0 else steps
    return cal


def ade_offset(cal, ref_wh, meas_wh, seconds):
    watts = (meas_wh - ref_wh) * 3600 / seconds
    old = cal.get(AWATTOS, 0)
    old = old - 0x1000000 if old & 0x800000 else old
    mw = old + int(round(watts * 1000))
    if not -0x800000 <= mw < 0x800000:
        raise ValueError("offset beyond what AWATTOS can correct")
    cal[AWATTOS] = mw & 0xFFFFFF
    return cal
