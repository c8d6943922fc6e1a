# Remote commands beyond switching the supply (meter/commands.py dispatches here whatever
# the disconnect control does not answer): control mode, load limit, telemetry period,
# time, billing snapshot, profile and event read-back, reboot. An overlay: imported only
# while one of these commands runs, then dropped (commands are rare, the heap is not).
#
# Each handler checks every argument first and answers (code, extra for the ack):
# 250 "bad args: ..." for an unknown key, a wrong type or a value out of range; 3 with a
# reason when the meter's state refuses it. Nothing here ever moves the relay. Every
# accepted configuration command logs a transaction event (README "Commands"):
#   220 control_mode_set (value: mode)      221 load_limit_set (value: W)
#   222 telemetry_period_set (value: s)     223 time_set_old, 224 time_set_new (value: |step| s)
#   225 billing_snapshot (value: record n)  226 remote_reboot
# (200-210 are the rejected commands, 200 + ack code: meter/commands.py.)
import json

from micropython import const

from meter.store import unload

PAGE = const(8)  # records per read_profile / read_events ack: the ack stays under ~800 B
MAX_STEP = const(3600)  # time_sync: the largest step (s) while the clock is valid
_EPOCH = const(1577836800)  # meter time 0 in Unix seconds (meter/clock.py)
_UNIX_MIN = const(1704067200)  # 2024-01-01: a time_sync must land on a valid clock
_UNIX_MAX = 2651578623  # meter time 2**30 - 1 (2054): meter times stay small ints
_CLOCK_SET = const(8)  # block profile flag: the clock was set in the period (profile.py)
_CATEGORIES = ("voltage", "current", "power", "transaction", "other", "control", "cover")


class Refused(Exception):
    """(code, reason): the command is answered with it, nothing was changed."""


def _bad(what):
    raise Refused(250, "bad args: " + what)


def _only(args, keys):
    for k in args:
        if k not in keys:
            _bad("unknown argument " + str(k))


def _int(args, key, lo, hi, default=None):
    v = args.get(key, default)
    if type(v) is not int or not lo <= v <= hi:  # type(True) is bool, not int
        _bad("%s must be a whole number %d-%d" % (key, lo, hi))
    return v


def run(cmds, cmd, body):
    """The command `cmd` (already verified and counted) with body["args"]."""
    f = globals().get("_" + cmd)
    if f is None:  # disconnect / reconnect on a meter without a relay
        return 3, {"reason": "no supply control"}
    try:
        return f(cmds, body.get("args", {}), body)
    except Refused as e:
        return e.args[0], {"reason": e.args[1]}


def _log(cmds, code, value=0, now=None):
    try:
        now = cmds._clock.now() if now is None else now
        cmds._log.log(now if now > 0 else 0, code, value)  # an unset clock reads < 0
    except OSError:
        pass  # the command took effect; a full or failing log does not undo it


def _control(cmds):
    ctl = cmds.handler
    if ctl is None or not hasattr(ctl, "mode"):
        raise Refused(3, "no supply control")
    return ctl


def _save_config(cmds, changes):
    """Persist overrides in /config.json (the provisioned file, kept as it is otherwise),
    then apply them to the running configuration."""
    from meter import config

    fs = cmds._fs
    try:
        with fs.open(config.PATH, "r") as f:
            stored = json.loads(f.read())
    except OSError:
        stored = {}
    except ValueError:
        stored = None
    if type(stored) is not dict:
        raise Refused(250, "config.json unreadable")
    stored.update(changes)
    try:
        config.save(fs, stored)
    except OSError:
        raise Refused(2, "flash") from None
    finally:
        unload("config")
    link = cmds.link
    if link is not None:
        link._cfg.update(changes)


# --- configuration ------------------------------------------------------------------------
def _set_control_mode(cmds, args, body):
    _only(args, ("mode",))
    mode = _int(args, "mode", 0, 6)
    ctl = _control(cmds)
    if mode == 0 and ctl.state != 1:
        # mode 0 means "always connected": entering it would have to close the relay, which
        # a configuration command never does
        raise Refused(3, "mode 0 needs the supply connected: reconnect first")
    old = ctl.mode
    ctl.mode = mode
    from meter.transition import save

    try:
        save(ctl)  # with the state, in the control's CRC'd slots: restored at boot
    except OSError:
        ctl.mode = old
        raise Refused(2, "flash") from None
    finally:
        unload("transition")
    _log(cmds, 220, mode)
    return ctl.status(None)


def _set_load_limit(cmds, args, body):
    from meter import ctlboot

    try:
        defaults = ctlboot.LIMITER
        check = ctlboot.check_limiter
    finally:
        unload("ctlboot")
    watts = _int(args, "watts", 0, 1000000)
    settings = {}
    for k in args:
        if k != "watts":
            settings[k] = args[k]
    problem = check(settings)
    if problem is not None:
        _bad(problem)
    ctl = _control(cmds)
    merged = dict(cmds.link._cfg["load_limiter"])  # given settings replace, others stay
    merged.update(settings)
    _save_config(cmds, {"load_limit_w": watts, "load_limiter": merged})
    if watts:
        s = dict(defaults)
        s.update(merged)
        lim = ctl.limiter
        if lim is None:
            from meter.limiter import Limiter

            ctl.limiter = Limiter(watts, s, ctl.log)
        else:  # new limits, same trip state (a pending reconnection still happens)
            keep = (lim.tripped, lim.retry_at, lim.attempts)
            lim.__init__(watts, s, ctl.log)
            lim.tripped, lim.retry_at, lim.attempts = keep
    else:
        ctl.limiter = None
        unload("limiter")
    _log(cmds, 221, watts)
    return 0, {"watts": watts, "load_limiter": merged}


def _set_telemetry_period(cmds, args, body):
    _only(args, ("seconds",))
    s = _int(args, "seconds", 5, 86400)
    _save_config(cmds, {"telemetry_period_s": s})
    link = cmds.link
    now = cmds._clock.now()
    if link is not None and link._next_s > now + s:
        link._next_s = now + s  # shorter: the next message comes on the new period
    _log(cmds, 222, s)
    return 0, {"seconds": s}


# --- time -----------------------------------------------------------------------------------
def _time_sync(cmds, args, body):
    _only(args, ("unix",))
    unix = _int(args, "unix", _UNIX_MIN, _UNIX_MAX)
    if not body["t"] <= unix <= body["exp"]:
        # the time set must be one at which this very command is valid by the head-end's
        # own signed issue time and expiry
        raise Refused(3, "time outside the command's validity")
    clock = cmds._clock
    step = unix - clock.unix()
    if clock.valid() and not -MAX_STEP <= step <= MAX_STEP:
        raise Refused(3, "step %d s: at most %d while the clock is set" % (step, MAX_STEP))
    old = clock.now()
    import machine

    t = clock._src.gmtime(unix - clock._epoch_offset)  # the source's own epoch
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))  # survives a reset
    clock._base_s += step
    _shift(cmds, step)
    size = -step if step < 0 else step
    size = size if size < 0x7FFFFFFF else 0x7FFFFFFF
    _log(cmds, 223, size, old)
    _log(cmds, 224, size)
    return 0, {"step": step}


def _shift(cmds, step):
    """Deadlines kept in meter seconds move with the clock, so a step neither fires nor
    holds back checkpoints, telemetry, retries and the limiter's timers. A profile period
    in progress keeps its end: a forward step closes it at the next poll (marked partial),
    a backward one lengthens it, so block records stay in strictly increasing time."""
    link = cmds.link
    if cmds.state[0] is not None:
        cmds.state[0] += step
    if link is None:
        return
    link._next_s += step
    link._sent_s += step
    link._retry_s += step
    meter = link.meter
    if meter is not None:
        meter.saved_at += step
        meter.rejected_logged += step
        if meter.reverse_at >= 0:
            meter.reverse_at += step
        meter.acc[3] = 0  # take a V/I sample at the next poll
        meter.acc[4] |= _CLOCK_SET
    ctl = cmds.handler
    lim = getattr(ctl, "limiter", None)
    if lim is not None:
        lim.retry_at += step
        if lim.over_since >= 0:
            lim.over_since += step
        if lim.under_since >= 0:
            lim.under_since += step


# --- billing and read-back ------------------------------------------------------------------
def _billing_snapshot(cmds, args, body):
    _only(args, ())
    meter = cmds.link.meter
    from meter import profile

    try:
        profile.bill(meter, cmds._clock.now())  # trigger: command
        ring = profile.billing(cmds._fs)
        n = ring.n
        rec = ring.get(n)
    except OSError:
        raise Refused(2, "flash") from None
    finally:
        unload("profile")
        unload("ring")
    _log(cmds, 225, n)
    return 0, {"record": _billing_row(n, rec)}


def _range(args):
    since = _int(args, "since", 0, 0xFFFFFFFF, 0)
    until = _int(args, "until", 0, 0xFFFFFFFF, 0xFFFFFFFF)
    if since > until:
        _bad("since is after until")
    newest = args.get("newest_first", False)
    if type(newest) is not bool:
        _bad("newest_first must be true or false")
    start = _int(args, "start", 0, 0x3FFFFFFF, 0)
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


def _read_profile(cmds, args, body):
    _only(args, ("profile", "since", "until", "newest_first", "start"))
    which = args.get("profile", "block")
    rng = _range(args)
    if which not in ("block", "daily", "billing"):
        _bad("profile must be block, daily or billing")
    from meter import profile

    try:
        fs = cmds._fs
        if which == "block":
            meter = cmds.link.meter if cmds.link is not None else None
            ring = profile.block(fs, meter.store.profile_head if meter is not None else 0)
            return _page(ring, rng, 0, True, _block_row)
        if which == "daily":
            return _page(profile.daily(fs), rng, 0, True, _daily_row)
        return _page(profile.billing(fs), rng, 0, False, _billing_row)
    finally:
        unload("profile")
        unload("ring")


def _read_events(cmds, args, body):
    _only(args, ("category", "since", "until", "newest_first", "start"))
    cat = args.get("category")
    if type(cat) is str and cat in _CATEGORIES:
        cat = _CATEGORIES.index(cat)
    elif type(cat) is not int or not 0 <= cat < len(_CATEGORIES):
        _bad("category must be one of " + ", ".join(_CATEGORIES) + " (or 0-6)")
    rng = _range(args)
    from meter import events

    try:
        return _page(events.ring(cmds._fs, cat), rng, 1, False, _event_row)
    finally:
        unload("ring")


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


# --- reboot -----------------------------------------------------------------------------------
def _reboot(cmds, args, body):
    _only(args, ())
    if cmds.link is None:
        raise Refused(3, "no link")
    cmds.link.reboot = True  # the link acks first, then calls reboot() below
    _log(cmds, 226)
    return 0, None


def reboot(link):
    """After the ack went out: save the energy registers, leave the broker cleanly, reset."""
    meter = link.meter
    if meter is not None:
        meter.checkpoint(True)
    c = link.client
    if c is not None:
        try:
            c.publish(link._base + "status", b"offline", True)
            c.disconnect()
        except Exception:  # noqa: BLE001 - the reset comes anyway
            pass
    import machine

    machine.reset()
