"""The ADE7953 driver against its emulator, frame by frame on the emulated SPI bus."""

from __future__ import annotations

import math

import pytest

from simulator.device import shim
from simulator.device.ade7953_emu import (
    AENERGYA,
    AWGAIN,
    IRMSA,
    PHCALA,
    SETTING_120,
    UNITY,
    VRMS,
    Ade7953,
    width,
)
from simulator.device.shim import SPI, Pin
from simulator.device.world import World

CS = 5


def make_rig(amps=10.0, pf=1.0, volts=240.0, chip=None, faults=None, neutral=None):
    world = World(10**12, 1_767_205_800,
                  [[0, volts, amps, pf, 50.0, amps if neutral is None else neutral, False]], [])
    emu = Ade7953(chip=chip, faults=faults)
    world.attach_spi(2, CS, emu)
    world.meters.append(emu)
    shim.WORLD[0] = world
    from meter.metering.ade7953 import ADE7953

    driver = ADE7953(SPI(2, baudrate=1_000_000, polarity=1, phase=1), Pin(CS, Pin.OUT, value=1))
    return world, emu, driver


@pytest.fixture(autouse=True)
def _detach():
    yield
    shim.WORLD[0] = None


def energy_wh(world, driver, seconds):
    total = 0
    for _ in range(seconds):
        world.advance(1000)
        imp, exp = driver.read_energy()
        total += imp - exp
    return total * driver.energy_num / driver.energy_den


def test_register_widths_follow_the_address():
    assert [width(a) for a in (0x004, 0x120, 0x2FF, 0x31E)] == [1, 2, 3, 4]


def test_needs_the_unlock_key_and_mode_3():
    world, emu, driver = make_rig()
    driver.write(SETTING_120, 0x30)  # without 0xAD to 0xFE first: ignored
    assert not emu.metering()
    from meter.metering.ade7953 import ADE7953

    wrong_mode = ADE7953(SPI(2, baudrate=1_000_000, polarity=0, phase=0),
                         Pin(CS, Pin.OUT, value=1))
    assert not wrong_mode.start()
    assert driver.start() and emu.metering()


def test_energy_import_export_gain_and_instant():
    world, emu, driver = make_rig()
    assert driver.start()
    assert energy_wh(world, driver, 600) == pytest.approx(400, abs=0.01)
    assert driver.start({AWGAIN: UNITY * 11 // 10})
    assert energy_wh(world, driver, 600) == pytest.approx(440, abs=0.01)
    world, emu, driver = make_rig(pf=-0.5)
    driver.start()
    assert energy_wh(world, driver, 600) == pytest.approx(-200, abs=0.01)
    out = [0] * 8
    driver.read_instant(out)
    assert out == [24000, 10000, -1200, -500, 5000, 10000, 2078, 2400]


def test_phase_error_shows_at_pf_half_and_phcal_removes_it():
    world, emu, driver = make_rig(pf=0.5, chip={"phase_error_deg": 1.0})
    driver.start()
    assert energy_wh(world, driver, 1800) / 600 - 1 == pytest.approx(
        math.cos(math.radians(61)) / 0.5 - 1, abs=0.0005)
    driver.start({PHCALA: 50})
    assert energy_wh(world, driver, 1800) == pytest.approx(600, abs=0.05)


def test_no_load_threshold_start_and_creep():
    world, emu, driver = make_rig(amps=0.04, chip={"power_offset_w": 1.0})
    driver.start()
    assert energy_wh(world, driver, 3600) > 9
    world, emu, driver = make_rig(amps=0.0, volts=276, chip={"power_offset_w": 1.0})
    driver.start()
    assert energy_wh(world, driver, 86400) == 0


def test_reset_and_stuck_bus_are_told_apart():
    world, emu, driver = make_rig(faults={"ic_resets_at_s": [5],
                                          "stuck_bus": [{"at_s": 20, "for_s": 5, "level": 0}]})
    assert driver.start()
    world.advance(6000)
    assert not driver.configured() and not driver.stuck
    assert driver.start()
    world.advance(15_000)
    assert not driver.configured() and driver.stuck
    world.advance(5_000)
    assert driver.configured()


def test_bit_errors_never_counted():
    def run(faults):
        world, emu, driver = make_rig(amps=20.0, faults=faults)
        driver.start()
        total = 0
        for _ in range(3600):
            world.advance(1000)
            got = driver.read_energy()
            total += got[0] if got else 0
        return total, driver.rejected

    clean = run({})
    noisy = run({"spi_bit_error_rate": 1e-3, "seed": 11})
    assert clean[1] == 0 and noisy[1] > 10
    assert noisy[0] == clean[0]


def test_rms_readings():
    world, emu, driver = make_rig(chip={"u_gain_error": 0.05}, neutral=3.0)
    driver.start()
    world.advance(1000)
    assert driver.read(VRMS) == 25200 and driver.read(IRMSA) == 10000
    assert driver.read_currents() == (10000, 3000)
    assert driver.read(AENERGYA) > 0


def test_energy_register_capacity_beats_the_poll_interval():
    """Worst case at Imax and 1.2 x Vref: AENERGYA (24-bit signed, 1 mWh) holds ~29 min."""
    lsb_per_s = 1.2 * 240 * 60 / 3.6  # mWh per second
    assert 0x7FFFFF / lsb_per_s > 1700
    world, emu, driver = make_rig(amps=60.0, volts=288.0)
    driver.start()
    world.advance(21_000)  # a poll plus four network timeouts of 5 s
    imp, _exp = driver.read_energy()
    assert imp == pytest.approx(lsb_per_s * 21, abs=1) and imp < 0x7FFFFF
