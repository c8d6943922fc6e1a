# Read-back commands and the billing snapshot (group READ in meter/remote/command_table.py,
# run by meter/remote/dispatch.py). The rings are opened through
# meter/storage/profile_rings.py (which also takes the snapshot), not
# meter/storage/profiles.py: that is about twice its size.
from micropython import const

from meter.remote.arguments import Refused, bad, log, only, whole
from meter.runtime.clock import METER_EPOCH_UNIX
from meter.runtime.overlays import unload
from meter.storage.profile_rings import bill, billing, block, daily

unload("meter.storage.profile_rings")  # (its names are copied)
PAGE = const(8)  # records per read_profile / read_events ack: the ack stays under ~800 B


def billing_snapshot(cmds, args):
    only(args, ())
    meter = cmds.link.meter
    try:
        meter.durable()  # registers on flash before a record shows them
        ring = bill(meter, cmds._clock.now())  # the month's demand is kept
        n = ring.n
        rec = ring.get(n)
    except OSError:
        raise Refused(2, "flash") from None
    log(cmds, 225, n)
    return 0, {"record": _billing_row(n, rec)}


def _range(args):
    since = whole(args, "since", 0, 0xFFFFFFFF, 0)
    until = whole(args, "until", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    if since > until:
        bad("since is after until")
    newest = args.get("newest_first", False)
    if type(newest) is not bool:
        bad("newest_first must be true or false")
    start = whole(args, "start", 0, 0x3FFFFFFF, 0)
    # meter seconds; a bound before the meter's epoch is its epoch
    return (since - METER_EPOCH_UNIX if since > METER_EPOCH_UNIX else 0,
            until - METER_EPOCH_UNIX if until >= METER_EPOCH_UNIX else -1, newest, start)


def _block_row(n, r):
    return [n, r[0] + METER_EPOCH_UNIX, r[1], r[2], r[3], r[4], r[5]]


def _daily_row(n, r):
    return [n, r[0] + METER_EPOCH_UNIX, r[1], r[2]]


def _billing_row(n, r):
    if r is None:
        return None
    return [n, r[0] + METER_EPOCH_UNIX, r[1], r[2], r[3], r[4] + METER_EPOCH_UNIX if r[4] else 0,
            r[5]]


def _event_row(n, r):
    # (seq, time, code, category, pad, cV, mA, import Wh, value)
    return [n, r[0], r[1] + METER_EPOCH_UNIX, r[2], r[5], r[6], r[7], r[8]]


def read_profile(cmds, args):
    only(args, ("profile", "since", "until", "newest_first", "start"))
    which = args.get("profile", "block")
    rng = _range(args)
    if which not in ("block", "daily", "billing"):
        bad("profile must be block, daily or billing")
    fs = cmds._fs
    if which == "block":
        meter = cmds.link.meter if cmds.link is not None else None
        ring = block(fs, meter.store.period.head if meter is not None else 0)
        ack = _page(ring, rng, 0, True, _block_row)
    elif which == "daily":
        ring = daily(fs)
        ack = _page(ring, rng, 0, True, _daily_row)
    else:
        ring = billing(fs)
        ack = _page(ring, rng, 0, False, _billing_row)
    if not ring.n:  # an empty list alone would not say why
        ack[1]["reason"] = "no period closed yet"
    return ack


def read_events(cmds, args):
    only(args, ("category", "since", "until", "newest_first", "start"))
    from meter.storage.layout import CATEGORIES

    unload("meter.storage.layout")  # (its names are copied: only while this runs)
    cat = args.get("category")
    if type(cat) is str and cat in CATEGORIES:
        cat = CATEGORIES.index(cat)
    elif type(cat) is not int or not 0 <= cat < len(CATEGORIES):
        bad("category must be one of " + ", ".join(CATEGORIES) + " (or 0-6)")
    rng = _range(args)
    from meter.storage import events

    return _page(events.ring(cmds._fs, cat), rng, 1, False, _event_row)


def _page(ring, rng, tf, ordered, row):
    """Up to PAGE records with time (field tf) in [since, until] as rows, oldest or newest
    first from `start`, and `next`: the record number to start the next page at (0: none).
    Records are read one at a time; a ring kept in time order (block, daily) is searched by
    bisection, so a page costs a few dozen record reads whatever the ring's size."""
    since, until, newest, start = rng
    last = ring.n
    lo = last - ring.capacity + 1 if last > ring.capacity else 1
    hi = last
    if ordered:
        lo = _first_at(ring, lo, hi, since, tf)
        hi = _first_at(ring, lo, hi, until + 1, tf) - 1
    if start:
        if newest:
            hi = hi if hi < start else start
        else:
            lo = lo if lo > start else start
    n = hi if newest else lo
    step = -1 if newest else 1
    rows = []
    nxt = 0
    while lo <= n <= hi:
        rec = ring.get(n)
        if rec is not None and since <= rec[tf] <= until:
            if len(rows) == PAGE:
                nxt = n
                break
            rows.append(row(n, rec))
        n += step
    return 0, {"records": rows, "next": nxt}


def _first_at(ring, lo, hi, t, tf):
    """The first record number in [lo, hi] whose time is >= t (hi + 1 if none), in a ring
    kept in time order; damaged records are stepped over."""
    best = hi + 1
    while lo <= hi:
        mid = (lo + hi) // 2
        m = mid
        rec = ring.get(m)
        while rec is None and m < hi:
            m += 1
            rec = ring.get(m)
        if rec is None:
            hi = mid - 1
        elif rec[tf] >= t:
            best = m
            hi = mid - 1
        else:
            lo = m + 1
    return best
