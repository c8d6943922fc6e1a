# Read-back commands and the billing snapshot (group READ in meter/remote/command_table.py,
# run by meter/remote/dispatch.py). The rings are opened
# with meter/storage/ring.py directly: meter/storage/profiles.py is three times its size, and only
# its ring layouts are needed (tests/test_cmdx.py checks they agree).
from micropython import const

from meter.remote.arguments import Refused, bad, log, only, whole
from meter.storage.ring import Ring

PAGE = const(8)  # records per read_profile / read_events ack: the ack stays under ~800 B
_EPOCH = const(1577836800)  # meter time 0 in Unix seconds (meter/runtime/clock.py)
_CATEGORIES = ("voltage", "current", "power", "transaction", "other", "control", "cover")
# (path, format, capacity, records per file) as in meter/storage/profiles.py
BLOCK = ("/p/block", "<IHHHHH", 5766, 186)
DAILY = ("/p/daily", "<III", 35, 35)
BILLING = ("/p/bill", "<IIIIIB", 12, 12)


def _ring(fs, layout, hint=0):
    return Ring(fs, layout[0], layout[1], layout[2], layout[3], True, hint)


def billing_snapshot(cmds, args):
    only(args, ())
    meter = cmds.link.meter
    imp = meter.imp
    exp = meter.exp
    demand = meter.store.demand
    now = cmds._clock.now()
    try:  # = meter/storage/profiles.py bill(meter, now, BILL_COMMAND): the month's demand is kept
        meter.durable()  # registers on flash before a record shows them
        ring = _ring(cmds._fs, BILLING)
        ring.append(now, imp.kwh * 1000 + imp.wh, exp.kwh * 1000 + exp.wh, demand[0],
                    demand[1], 1)
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
    return (since - _EPOCH if since > _EPOCH else 0,
            until - _EPOCH if until >= _EPOCH else -1, newest, start)


def _block_row(n, r):
    return [n, r[0] + _EPOCH, r[1], r[2], r[3], r[4], r[5]]


def _daily_row(n, r):
    return [n, r[0] + _EPOCH, r[1], r[2]]


def _billing_row(n, r):
    if r is None:
        return None
    return [n, r[0] + _EPOCH, r[1], r[2], r[3], r[4] + _EPOCH if r[4] else 0, r[5]]


def _event_row(n, r):
    # (seq, time, code, category, pad, cV, mA, import Wh, value)
    return [n, r[0], r[1] + _EPOCH, r[2], r[5], r[6], r[7], r[8]]


def read_profile(cmds, args):
    only(args, ("profile", "since", "until", "newest_first", "start"))
    which = args.get("profile", "block")
    rng = _range(args)
    if which not in ("block", "daily", "billing"):
        bad("profile must be block, daily or billing")
    fs = cmds._fs
    if which == "block":
        meter = cmds.link.meter if cmds.link is not None else None
        ring = _ring(fs, BLOCK, meter.store.profile_head if meter is not None else 0)
        ack = _page(ring, rng, 0, True, _block_row)
    elif which == "daily":
        ring = _ring(fs, DAILY)
        ack = _page(ring, rng, 0, True, _daily_row)
    else:
        ring = _ring(fs, BILLING)
        ack = _page(ring, rng, 0, False, _billing_row)
    if not ring.n:  # an empty list alone would not say why
        ack[1]["reason"] = "no period closed yet"
    return ack


def read_events(cmds, args):
    only(args, ("category", "since", "until", "newest_first", "start"))
    cat = args.get("category")
    if type(cat) is str and cat in _CATEGORIES:
        cat = _CATEGORIES.index(cat)
    elif type(cat) is not int or not 0 <= cat < len(_CATEGORIES):
        bad("category must be one of " + ", ".join(_CATEGORIES) + " (or 0-6)")
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
