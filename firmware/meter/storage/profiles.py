# Load profiles on the data filesystem, as rings of fixed-size CRC'd records (meter.store):
# - block: one record per capture period (15 min default, 30 configurable): period end,
#   import and export Wh in the period, average volts and amps, status flags; >= 60 days;
# - daily: cumulative import/export Wh at 00:00 UTC, 35 days;
# - billing: cumulative Wh and the month's maximum demand (W over a capture period, with its
#   time) at 00:00 UTC on the 1st of each month and on command; 12 entries.
# The period in progress (meter.storage.checkpoint.Period, written here: its start and the
# registers then, the month's maximum demand, the block ring's head, the V/I samples) travels
# in the checkpoint's period slot, so a reboot carries on.
# Used at boot and once a period: the app imports it then and lets it go again (heap).
from micropython import const

from meter.runtime.clock import VALID_AFTER
from meter.runtime.overlays import unload
from meter.storage.layout import PROFILE_DIR
from meter.storage.profile_rings import BILL_MONTHLY, bill, block, daily

# (their names are copied: meter/storage/layout.py, meter/storage/profile_rings.py)
unload("meter.storage.layout")
unload("meter.storage.profile_rings")
# block flags
POWER_FAILED = const(1)  # the supply failed during the period (energy may be missing)
PARTIAL = const(2)  # the meter was not running for the whole period
NO_SAMPLES = const(4)  # no V/I samples: the averages are zero
# 8: the clock was set during the period (a time_sync command, meter/remote/dispatch.py)
# 16: the period ended on an invalid clock (before 2024: meter/runtime/clock.py)
CLOCK_INVALID = const(16)


def civil_day(days):
    """(year, month, day) of a day number counted from 2020-01-01."""
    z = days + 18262 + 719468  # to days from 0000-03-01
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


def _wh(reg):
    return reg.kwh * 1000 + reg.wh


def boot(meter, now):
    """Close the period the last checkpoint was in if it has ended (unless its record made
    it to flash before the power went), then begin the current one. Returns how many
    damaged records were met."""
    fs = meter.hw.fs
    try:
        fs.mkdir(PROFILE_DIR)
    except OSError:
        pass
    p = meter.store.period
    ring = block(fs, p.head)
    p.flags |= POWER_FAILED | PARTIAL
    if p.start and now < _end(meter, p.start):
        p.end = _end(meter, p.start)
        return ring.bad
    if p.start:
        end = _end(meter, p.start)
        last = ring.get(ring.n)
        if last is None or last[0] < end:
            _capture(meter, ring, end)
    _begin(meter, ring, now)
    return ring.bad


def _end(meter, start):
    return start - start % meter.period_s + meter.period_s


def _begin(meter, ring, now):
    store = meter.store
    p = store.period
    p.start = now - now % meter.period_s
    p.imp_wh = _wh(meter.imp)
    p.exp_wh = _wh(meter.exp)
    p.head = ring.n
    p.end = _end(meter, p.start)
    store.save_period()


def close(meter, now):
    """The period has ended: write its record (and at midnight the daily one, on the 1st the
    billing one), begin the next."""
    p = meter.store.period
    ring = block(meter.hw.fs, p.head)
    end = p.end
    _capture(meter, ring, end)
    p.flags = 0 if now == end else PARTIAL
    _begin(meter, ring, now)


def _capture(meter, ring, end):
    p = meter.store.period
    d_imp = _wh(meter.imp) - p.imp_wh
    d_exp = _wh(meter.exp) - p.exp_wh
    n = p.samples
    flags = p.flags
    if end <= VALID_AFTER:
        flags |= CLOCK_INVALID
    if not n:
        flags |= NO_SAMPLES
        n = 1
    ring.append(end, min(max(d_imp, 0), 0xFFFF), min(max(d_exp, 0), 0xFFFF),
                min(p.v_sum // n, 0xFFFF), min(p.i_sum // n, 0xFFFF), flags)
    p.v_sum = p.i_sum = p.samples = 0
    watts = d_imp * 3600 // (end - p.start) if end > p.start else 0
    if watts > p.demand_w:
        p.demand_w = watts
        p.demand_at = end
    if end % 86400 == 0:
        daily(meter.hw.fs).append(end, _wh(meter.imp), _wh(meter.exp))
        if civil_day(end // 86400)[2] == 1:
            bill(meter, end, BILL_MONTHLY)

