"""Metering: the emulated ATM90E26's calibration registers, thresholds and faults, the
firmware driver's verified reads, calibration and the class 1 accuracy table."""

from __future__ import annotations

import math
import random

import pytest

from simulator.device import shim
from simulator.device.atm90e26_emu import (
    AN_ENERGY,
    AP_ENERGY,
    IRMS,
    IRMS2,
    L_GAIN,
    L_PHI,
    PL_CONST_H,
    PL_CONST_L,
    RN_ENERGY,
    RP_ENERGY,
    U_GAIN,
    URMS,
    Atm90e26,
)
from simulator.device.shim import SPI, Pin
from simulator.device.world import World

CS = 5
VREF, IB, IMAX = 240.0, 10.0, 60.0


def make_rig(amps=IB, pf=1.0, volts=VREF, chip=None, faults=None, lead=False, neutral=None):
    world = World(10**12, 1_767_205_800,
                  [[0, volts, amps, pf, 50.0, amps if neutral is None else neutral, lead]], [])
    emu = Atm90e26(chip=chip, faults=faults)
    world.attach_spi(2, CS, emu)
    world.meters.append(emu)
    shim.WORLD[0] = world
    from meter.metering.atm90e26 import ATM90E26

    driver = ATM90E26(SPI(2, baudrate=200_000, polarity=1, phase=1), Pin(CS, Pin.OUT, value=1))
    return world, emu, driver


def set_regs(driver, cal):
    assert driver.start(cal)


def energy_wh(world, driver, seconds):
    lsbs = 0
    for _ in range(seconds):
        world.advance(1000)
        imp, exp = driver.read_energy()
        lsbs += imp + exp
    return lsbs * driver.energy_num / driver.energy_den


@pytest.fixture(autouse=True)
def _detach():
    yield
    shim.WORLD[0] = None


# --- emulator registers ---------------------------------------------------------------

def test_lgain_scales_energy_and_pulse_constant_divides_it():
    world, emu, driver = make_rig()
    set_regs(driver, {})
    base = energy_wh(world, driver, 600)
    assert base == pytest.approx(400, abs=0.05)
    set_regs(driver, {L_GAIN: round(0.1 * 32768)})  # +10 %
    assert energy_wh(world, driver, 600) == pytest.approx(440, abs=0.1)
    set_regs(driver, {L_GAIN: round(-0.1 * 32768) & 0xFFFF})  # two's complement: -10 %
    assert energy_wh(world, driver, 600) == pytest.approx(360, abs=0.1)
    plconst = 0x0015D174 * 2  # twice the pulse constant: half the pulses
    set_regs(driver, {PL_CONST_H: plconst >> 16, PL_CONST_L: plconst & 0xFFFF})
    assert energy_wh(world, driver, 600) == pytest.approx(200, abs=0.05)


def test_rms_gains_scale_measurements_not_energy():
    world, emu, driver = make_rig(chip={"u_gain_error": 0.05, "i_gain_error": -0.02})
    set_regs(driver, {})
    world.advance(1000)
    assert driver.read(URMS) == round(24000 * 1.05)
    assert driver.read(IRMS) == round(10000 * 0.98)
    set_regs(driver, {U_GAIN: round(26400 / 1.05)})
    assert driver.read(URMS) == pytest.approx(24000, abs=1)
    assert energy_wh(world, driver, 600) == pytest.approx(400 * 1.05 * 0.98, abs=0.1)


def test_phase_error_shows_at_pf_half_not_at_pf_one_and_lphi_removes_it():
    errors = {}
    for pf in (1.0, 0.5):
        world, emu, driver = make_rig(pf=pf, chip={"phase_error_deg": 1.0})
        set_regs(driver, {})
        true = 2400 * pf * 1800 / 3600
        errors[pf] = energy_wh(world, driver, 1800) / true - 1
        set_regs(driver, {L_PHI: 50})  # 50 x 0.02 degree
        errors[(pf, "lphi")] = energy_wh(world, driver, 1800) / true - 1
    assert abs(errors[1.0]) < 0.0005
    expected = math.cos(math.radians(61)) / 0.5 - 1  # about -3 %
    assert errors[0.5] == pytest.approx(expected, abs=0.0005)
    assert abs(errors[(0.5, "lphi")]) < 0.0005


def test_starts_at_0_004_ib_and_does_not_creep():
    world, emu, driver = make_rig(amps=0.004 * IB, chip={"power_offset_w": 1.5})
    set_regs(driver, {})
    assert energy_wh(world, driver, 3600) > 0.9 * 9.6  # 9.6 W for an hour
    world, emu, driver = make_rig(amps=0.0, volts=1.15 * VREF, chip={"power_offset_w": 1.5})
    set_regs(driver, {})
    assert energy_wh(world, driver, 24 * 3600) == 0
    assert emu.regs.get(RP_ENERGY, 0) == 0


def test_reactive_registers_and_direction():
    world, emu, driver = make_rig(pf=0.5)
    set_regs(driver, {})
    world.advance(60_000)
    q_wh = driver.read(RP_ENERGY) * 100 / 3200
    assert q_wh == pytest.approx(2400 * math.sin(math.acos(0.5)) / 60, abs=0.05)
    assert driver.read(RN_ENERGY) == 0
    world, emu, driver = make_rig(pf=0.8, lead=True)
    set_regs(driver, {})
    world.advance(60_000)
    assert driver.read(RP_ENERGY) == 0 and driver.read(RN_ENERGY) > 0
    world, emu, driver = make_rig(pf=-1.0)  # export
    set_regs(driver, {})
    world.advance(60_000)
    assert driver.read(AP_ENERGY) == 0 and driver.read(AN_ENERGY) == 1280  # 40 Wh


def test_neutral_channel():
    world, emu, driver = make_rig(amps=10.0, neutral=7.5)
    set_regs(driver, {})
    world.advance(1000)
    assert driver.read(IRMS2) == 7500
    assert driver.read_currents() == (10000, 7500)


# --- faults and verified reads ---------------------------------------------------------

def test_bit_errors_are_deterministic_and_never_counted():
    def run(faults):
        world, emu, driver = make_rig(amps=20.0, faults=faults)
        set_regs(driver, {})
        total = 0
        for _ in range(3600):
            world.advance(1000)
            got = driver.read_energy()
            if got is not None:
                total += got[0]
        return total, driver.rejected, emu.faults.bit_errors

    clean, rejected, flips = run({})
    assert (rejected, flips) == (0, 0)
    noisy = run({"spi_bit_error_rate": 1e-3, "seed": 7})
    assert noisy == run({"spi_bit_error_rate": 1e-3, "seed": 7})  # same seed, same run
    assert noisy[2] > 50 and noisy[1] > 10
    assert noisy[0] == clean  # every corrupted read was caught and confirmed from LastData


def test_stuck_bus_is_not_mistaken_for_a_reset():
    world, emu, driver = make_rig(faults={"stuck_bus": [{"at_s": 10, "for_s": 5, "level": 0}]})
    set_regs(driver, {})
    world.advance(11_000)
    assert not driver.configured() and driver.stuck
    world.advance(5_000)
    assert driver.configured() and not driver.stuck


def test_ic_reset_at_scheduled_time():
    world, emu, driver = make_rig(faults={"ic_resets_at_s": [30]})
    set_regs(driver, {})
    world.advance(29_000)
    assert driver.configured()
    world.advance(2_000)
    assert not driver.configured() and not driver.stuck
    assert emu.resets == 1


# --- calibration and the class 1 table ------------------------------------------------

def random_units(n, seed):
    rng = random.Random(seed)
    return [{"u_gain_error": rng.uniform(-0.1, 0.1), "i_gain_error": rng.uniform(-0.1, 0.1),
             "phase_error_deg": rng.uniform(-2, 2), "power_offset_w": rng.uniform(-0.5, 0.5)}
            for _ in range(n)]


CLASS1_POINTS = [  # (I / Ib, PF, capacitive, limit %)
    (0.05, 1.0, False, 1.5), (0.08, 1.0, False, 1.5),
    (0.1, 1.0, False, 1.0), (1.0, 1.0, False, 1.0), (6.0, 1.0, False, 1.0),
    (0.1, 0.5, False, 1.5), (0.15, 0.5, False, 1.5), (0.1, 0.8, True, 1.5),
    (0.15, 0.8, True, 1.5),
    (0.2, 0.5, False, 1.0), (1.0, 0.5, False, 1.0), (6.0, 0.5, False, 1.0),
    (0.2, 0.8, True, 1.0), (1.0, 0.8, True, 1.0), (6.0, 0.8, True, 1.0),
]


UNITS = random_units(3, 2026) + [
    {"u_gain_error": 0.1, "i_gain_error": 0.1, "phase_error_deg": 2.0},
    {"u_gain_error": -0.1, "i_gain_error": -0.1, "phase_error_deg": -2.0},
]


@pytest.mark.parametrize("ic", ["atm90e26", "ade7953"])
@pytest.mark.parametrize("errors", UNITS)
def test_class1_table_after_calibration(ic, errors):
    from simulator.calibration_bench import Bench, procedure
    from simulator.device.ade7953_emu import Ade7953

    bench = Bench(Atm90e26(chip=errors) if ic == "atm90e26" else Ade7953(chip=errors))
    try:
        uncalibrated = bench.error_pct(IB, 0.5, False, None)
        cal = procedure(bench)
        for frac, pf, lead, limit in CLASS1_POINTS:
            err = bench.error_pct(frac * IB, pf, lead, cal, min_wh=20)
            assert abs(err) <= limit, (frac, pf, lead, err)
            assert abs(err) <= 0.3, (frac, pf, lead, err)  # margin left for the chip's drift
    finally:
        bench.close()
    assert abs(uncalibrated) > 1.0  # the unit would fail class 1 without calibration


def test_calibration_record_checksums_and_refusal(tmp_path):
    from meter.metering import calibration as calib

    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip

    world, emu, driver = make_rig()
    chip = FlashChip(str(tmp_path / "f.img"), 64)
    lfs_vfs.VfsLfs2.mkfs(chip)
    fs = lfs_vfs.VfsLfs2(chip)
    assert calib.load(fs, driver) == (None, None)
    cal = {L_GAIN: 0x0123, U_GAIN: 0x6800}
    calib.save(fs, driver, cal)
    assert calib.load(fs, driver) == (cal, None)
    assert driver.start(cal) and emu.metering()
    with fs.open("/calib.json", "r") as f:
        text = f.read()
    with fs.open("/calib.json", "w") as f:
        f.write(text.replace(str(0x0123), str(0x0124)))
    regs, error = calib.load(fs, driver)
    assert regs is None and "checksum" in error
    chip.close()


# --- bounds of the accounting ---------------------------------------------------------

def test_counters_stay_small_ints_for_25_years_at_imax():
    from meter.metering.energy import Register

    lsb_per_s = 1.2 * VREF * IMAX / 3600 * 3200 / 100
    reg = Register(3200)
    seconds = 25 * 366 * 86400
    # Add 25 years in day-sized chunks of whole LSBs (the per-poll path is the same add()).
    per_day = int(lsb_per_s * 86400) + 1
    for _ in range(25 * 366):
        reg.add(per_day, 100)
        assert max(reg.kwh, reg.wh, reg.rem, reg.unsaved_wh) < 2**30
        reg.unsaved_wh = 0  # the owner checkpoints at least every 15 minutes
    assert reg.kwh * 1000 + reg.wh >= 1.2 * VREF * IMAX * seconds / 3600 / 1000 * 999


def test_register_capacity_beats_the_poll_interval_even_with_stalls():
    """Worst case at Imax and 1.2 x Vref: the 16-bit energy register holds over 400 s,
    while the longest gap between polls is the network timeout (5 s) a few times over."""
    from meter.storage.config import defaults

    lsb_per_s = 1.2 * VREF * IMAX / 3600 * 3200 / 100
    capacity_s = 0xFFFF / lsb_per_s
    assert capacity_s > 400
    worst_gap_s = defaults()["poll_ms"] / 1000 + 4 * defaults()["mqtt_timeout_s"]
    assert worst_gap_s * 10 < capacity_s
    world, emu, driver = make_rig(amps=IMAX, volts=1.2 * VREF)
    set_regs(driver, {})
    world.advance(int(worst_gap_s * 1000))
    imp, _exp = driver.read_energy()
    assert imp < 0xFFFF and imp == pytest.approx(lsb_per_s * worst_gap_s, abs=1)


# --- the firmware's poll: impossible reads, re-initialisation ---------------------------

def make_meter(tmp_path, **rig):
    from meter.app import Meter
    from meter.runtime.clock import Clock
    from meter.runtime.hardware import Hardware

    from simulator import lfs_vfs
    from simulator.device import shim as vtime
    from simulator.device.flash import FlashChip

    world, emu, driver = make_rig(**rig)
    world.flash = FlashChip(str(tmp_path / "f.img"), 64, world)
    lfs_vfs.VfsLfs2.mkfs(world.flash)
    meter = Meter(Hardware(Clock(vtime), lfs_vfs.VfsLfs2(world.flash), driver))
    meter.start_ic()
    return world, emu, meter


def test_impossible_energy_is_rejected_not_added(tmp_path):
    world, emu, meter = make_meter(tmp_path, amps=10.0)
    for _ in range(10):
        world.advance(1000)
        meter.poll()
    before = meter.imp.wh_float()
    assert before == pytest.approx(10 * 2400 / 3600, abs=0.05)
    world.advance(1000)
    emu.regs[AP_ENERGY] += 20_000  # a glitch inside the chip: 625 Wh in one second
    meter.poll()
    assert meter.rejected == 1 and meter.imp.wh_float() == before
    from meter.storage.reader import all_events

    codes = [code for _s, _t, code in all_events(meter.hw.fs)]
    assert 120 in codes  # read_rejected
    world.advance(1000)
    meter.poll()
    assert meter.imp.wh_float() == pytest.approx(before + 2400 / 3600, abs=0.05)


def test_ic_reset_reinitialises_with_calibration_and_counts(tmp_path):
    world, emu, meter = make_meter(tmp_path)
    meter.cal = {L_GAIN: 0x0100}
    meter.start_ic()
    emu.reset()
    world.advance(1000)
    meter.poll()
    assert meter.reinits == 1 and emu.metering() and emu.regs[L_GAIN] == 0x0100
    from meter.storage.reader import all_events

    assert 3 in [code for _s, _t, code in all_events(meter.hw.fs)]  # ic_reinitialised
