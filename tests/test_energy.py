"""Energy registers: every LSB counted once, nothing lost to rounding, ints stay small."""

import pytest
from meter.metering.ade7953 import ADE7953
from meter.metering.atm90e26 import ATM90E26
from meter.metering.energy import Register
from meter.storage.config_rules import RANGES

# ATM90E26: an energy LSB is 0.1 pulse = 100 / 3200 Wh.
NUM, DEN = 100, 3200


def test_fractions_carry_over_exactly():
    reg = Register(DEN)
    for _ in range(3200):
        reg.add(1, NUM)  # 3200 LSBs of 1/32 Wh each = 100 Wh exactly
    assert (reg.kwh, reg.wh, reg.rem) == (0, 100, 0)


def test_many_uneven_polls_equal_one_big_add():
    a, b = Register(DEN), Register(DEN)
    total = 0
    for i in range(10_000):
        count = (i * 7919) % 613  # uneven reads, as from a varying load
        a.add(count, NUM)
        total += count
    b.add(total, NUM)
    assert (a.kwh, a.wh, a.rem) == (b.kwh, b.wh, b.rem)
    assert a.wh_float() == total * NUM / DEN


def test_kwh_text_has_mwh_resolution():
    reg = Register(DEN)
    reg.add(32 * 1234 + 16, NUM)  # 1234.5 Wh
    assert reg.kwh_text() == "1.234500"


def test_set_restores_without_inventing_energy():
    reg = Register(DEN)
    reg.add(12345, NUM)
    copy = Register(DEN)
    copy.set(reg.kwh, reg.total_mwh())
    assert copy.wh_float() <= reg.wh_float()
    assert reg.wh_float() - copy.wh_float() < 0.001


def config_range(key: str) -> tuple[int, int]:
    """(lowest, highest) of a config key in the firmware's one range table."""
    for line in RANGES.splitlines():
        name, low, high = line.split()
        if name == key:
            return int(low), int(high)
    raise KeyError(key)


class Pin:
    def value(self, v=None):
        return 1


@pytest.mark.parametrize("ic", [ATM90E26(None, Pin(), 100), ATM90E26(None, Pin(), 100_000),
                                ADE7953(None, Pin())], ids=["atm-100", "atm-100000", "ade"])
def test_fields_stay_small_ints_two_centuries_on_at_the_largest_load(ic):
    """Each field of a register (and the sum add() forms) within an ESP32 small int (+/-2**30)
    two centuries into a meter's life at the largest load the config allows (1.2 x the highest
    Vref x the highest Imax, PF 1), for each IC's energy scale: a higher rating, a finer
    scale or a field that does not carry over breaks it. (test_metering.py adds the first
    25 years day by day at the default rating.)"""
    watts = 1.2 * config_range("vref_v")[1] * config_range("imax_a")[1]
    num, den = ic.energy_num, ic.energy_den
    lsb_per_s = int(watts / 3600 * den / num) + 1
    reg = Register(den)
    reg.add(lsb_per_s * 86400 * 36525 * 2, num)  # two centuries (CPython holds the sum)
    reg.unsaved_wh = 0
    start = (reg.kwh * 1000 + reg.wh) * den + reg.rem  # in 1/den Wh
    assert reg.kwh > 200 * 600_000  # it really is ~126 GWh
    # then a day of one-second polls, checkpointed every 15 minutes as the firmware does
    largest = 0
    for s in range(86400):
        largest = max(largest, reg.rem + lsb_per_s * num)  # what add() sums first
        reg.add(lsb_per_s, num)
        largest = max(largest, reg.kwh, reg.wh, reg.rem, reg.unsaved_wh, reg.total_mwh())
        if s % 900 == 899:
            reg.unsaved_wh = 0
    assert largest < 2**30 and min(reg.kwh, reg.wh, reg.rem) >= 0
    assert (reg.kwh * 1000 + reg.wh) * den + reg.rem - start == lsb_per_s * 86400 * num


def test_restore_shows_exactly_what_was_saved_for_every_remainder():
    # A register saved as (kWh, mWh) and restored must show the same mWh again (not one
    # less: a published 0.049281 kWh came back as 0.049280 after a reboot), and must not
    # hold more than it did (nothing invented). Every remainder, both ICs' scales.
    for den in (3200, 1000, 7, 100_000):
        for rem in range(0, den, max(1, den // 5000)):
            reg = Register(den)
            reg.wh, reg.rem = 49, rem
            copy = Register(den)
            copy.set(reg.kwh, reg.total_mwh())
            assert copy.kwh_text() == reg.kwh_text(), (den, rem)
            assert copy.rem <= reg.rem, (den, rem)
            assert copy.on_flash()


def test_on_flash_tracks_what_is_shown():
    reg = Register(DEN)
    assert reg.on_flash()
    reg.add(1, NUM)  # 1/32 Wh: the mWh figure moves
    assert not reg.on_flash()
    reg.saved(reg.kwh, reg.total_mwh())
    assert reg.on_flash()
