"""Energy registers: every LSB counted once, nothing lost to rounding, ints stay small."""

from meter.metering.energy import Register

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


def test_counters_stay_small_ints_for_25_years_at_imax():
    # Worst case: Imax 60 A at 1.2 x 240 V, PF 1, read every second for 25 years.
    watts = 60 * 240 * 1.2
    lsb_per_s = watts / 3600 * DEN / NUM
    reg = Register(DEN)
    seconds = 25 * 365.25 * 86400
    reg.add(int(lsb_per_s * seconds), NUM)  # one add: the total is what matters
    limit = 1 << 30
    assert reg.kwh < limit and reg.wh < limit and reg.rem < limit
    assert reg.kwh > 3_000_000  # it really is ~3.8 GWh
    # and one poll's intermediate product stays small too
    assert (DEN - 1) + 0xFFFF * NUM < limit


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
