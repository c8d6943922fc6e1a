"""The ATM90E26 driver against the emulated chip, frame by frame on the emulated SPI bus."""

from __future__ import annotations

import pytest

from simulator.device import shim
from simulator.device.atm90e26_emu import Atm90e26, block_checksum
from simulator.device.shim import SPI, Pin
from simulator.device.world import World

CS = 5


@pytest.fixture
def rig():
    world = World(10**9, 1_767_205_800, [[0, 240.0, 10.0, 1.0, 50.0]], [])
    chip = Atm90e26()
    world.attach_spi(2, CS, chip)
    world.meters.append(chip)
    shim.WORLD[0] = world
    from meter.metering.atm90e26 import ATM90E26

    spi = SPI(2, baudrate=200_000, polarity=1, phase=1)
    driver = ATM90E26(spi, Pin(CS, Pin.OUT, value=1))
    yield world, chip, driver
    shim.WORLD[0] = None


def test_checksum_matches_between_driver_and_chip():
    from meter.metering.atm90e26 import CAL_BLOCK, checksum

    values = [v for _a, v in CAL_BLOCK]
    assert checksum(values) == block_checksum(values)
    # low byte: sum mod 256; high byte: XOR of all bytes
    assert checksum([0x1234, 0x00FF]) == ((0x12 ^ 0x34 ^ 0x00 ^ 0xFF) << 8) | (
        (0x12 + 0x34 + 0xFF) & 0xFF)


def test_start_configures_and_meters(rig):
    world, chip, driver = rig
    assert not chip.metering()
    assert driver.start()
    assert chip.metering()
    world.advance(1_800_000)  # half an hour at 2.4 kW
    imp, exp = driver.read_energy()
    assert exp == 0
    assert imp * 100 / 3200 == pytest.approx(1200, abs=0.05)
    # clear on read
    assert driver.read_energy() == (0, 0)


def test_energy_register_saturates_instead_of_wrapping(rig):
    world, chip, driver = rig
    driver.start()
    world.advance(3_600_000)  # 2.4 kWh: more than 16 bits of 1/32 Wh can hold
    assert driver.read_energy() == (0xFFFF, 0)


def test_wrong_spi_mode_reads_garbage_and_start_fails(rig):
    world, chip, _driver = rig
    from meter.metering.atm90e26 import ATM90E26

    driver = ATM90E26(SPI(2, baudrate=200_000, polarity=0, phase=0), Pin(CS, Pin.OUT, value=1))
    assert not driver.start()
    assert not chip.metering()


def test_chip_reset_is_detected(rig):
    world, chip, driver = rig
    assert driver.start()
    assert driver.configured()
    chip.reset()  # a brown-out resets the IC behind the firmware's back
    assert not driver.configured()


def test_bad_calibration_checksum_stops_metering(rig):
    world, chip, driver = rig
    assert driver.start()
    driver.write(0x20, 0x5678)
    driver.write(0x23, 0x1234)  # change Lgain without updating CS1
    driver.write(0x20, 0x8765)
    assert chip.regs[0x01] & 0xC000
    assert not driver.configured()
    world.advance(60_000)
    assert driver.read_energy() == (0, 0)


def test_instant_values(rig):
    world, chip, driver = rig
    driver.start()
    world.advance(1000)
    out = [0] * 8
    driver.read_instant(out)
    assert out == [24000, 10000, 2400, 1000, 5000, 10000, 0, 2400]
