# The load profiles' rings, opened in the layout of meter/storage/layout.py, and the billing
# snapshot (the registers and the month's maximum demand to the billing log): at 00:00 UTC on
# the 1st of each month (meter/storage/profiles.py) and on command
# (meter/remote/read_commands.py). A module of its own, so the read-back commands load this and
# not meter/storage/profiles.py (about twice its size): one opener per ring, one rule for the
# snapshot.
from micropython import const

from meter.runtime.overlays import unload
from meter.storage.layout import (
    BILLING_CAPACITY,
    BILLING_FMT,
    BILLING_PATH,
    BLOCK_CAPACITY,
    BLOCK_FMT,
    BLOCK_PATH,
    BLOCK_PER_FILE,
    DAILY_CAPACITY,
    DAILY_FMT,
    DAILY_PATH,
)
from meter.storage.ring import Ring

unload("meter.storage.layout")  # (its names are copied: meter/storage/layout.py)
# the billing record's trigger
BILL_MONTHLY = const(0)
BILL_COMMAND = const(1)


def block(fs, hint=0):
    return Ring(fs, BLOCK_PATH, BLOCK_FMT, BLOCK_CAPACITY, BLOCK_PER_FILE, True, hint)


def daily(fs):
    return Ring(fs, DAILY_PATH, DAILY_FMT, DAILY_CAPACITY, DAILY_CAPACITY)


def billing(fs):
    return Ring(fs, BILLING_PATH, BILLING_FMT, BILLING_CAPACITY, BILLING_CAPACITY)


def bill(meter, now, trigger=BILL_COMMAND):
    """Snapshot the registers and the month's maximum demand; a monthly one starts a new
    month of demand. Returns the billing log's ring, the record appended (its n)."""
    p = meter.store.period
    imp = meter.imp
    exp = meter.exp
    ring = billing(meter.hw.fs)
    ring.append(now, imp.kwh * 1000 + imp.wh, exp.kwh * 1000 + exp.wh, p.demand_w, p.demand_at,
                trigger)
    if trigger == BILL_MONTHLY:
        p.demand_w = p.demand_at = 0
    return ring
