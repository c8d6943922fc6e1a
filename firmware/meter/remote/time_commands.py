# Time and reboot commands (group TIME in meter/remote/command_table.py, run by
# meter/remote/dispatch.py).
from micropython import const

from meter.remote.arguments import Refused, log, only, whole

MAX_STEP = const(3600)  # time_sync: the largest step (s) while the clock is valid
_UNIX_MIN = const(1704067200)  # 2024-01-01: a time_sync must land on a valid clock
_UNIX_MAX = 2634801407  # meter time clock.MAX_S (2053-06-29): meter times stay small ints
_CLOCK_SET = const(8)  # block profile flag: the clock was set in the period (profile.py)


def time_sync(cmds, args, body):
    only(args, ("unix",))
    unix = whole(args, "unix", _UNIX_MIN, _UNIX_MAX)
    if not body["t"] <= unix <= body["exp"]:
        # the time set must be one at which this very command is valid by the head-end's
        # own signed issue time and expiry
        raise Refused(3, "time outside the command's validity")
    clock = cmds._clock
    step = unix - clock.unix()
    if clock.valid() and not -MAX_STEP <= step <= MAX_STEP:
        raise Refused(3, "step %d s: at most %d while the clock is set" % (step, MAX_STEP))
    old = clock.now()
    unset = not clock.valid()
    import machine

    t = clock._src.gmtime(unix - clock._epoch_offset)  # the source's own epoch
    machine.RTC().datetime((t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0))  # survives a reset
    clock._base_s += step
    _shift(cmds, step, unset)
    size = -step if step < 0 else step
    size = size if size < 0x7FFFFFFF else 0x7FFFFFFF
    log(cmds, 223, size, old)
    log(cmds, 224, size)
    return 0, {"step": step}


def _shift(cmds, step, unset):
    """Deadlines kept in meter seconds move with the clock, so a step neither fires nor
    holds back checkpoints, telemetry, retries and the limiter's timers. A profile period
    in progress keeps its end: a forward step closes it at the next poll (marked partial),
    a backward one lengthens it, so block records stay in strictly increasing time. If
    the clock was not set, that period began at a meaningless time: a new one begins now,
    with no record for the old one (its energy counts in the new one)."""
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
        if unset:
            now = cmds._clock.now()
            p = meter.store.period
            p[0] = now - now % meter.period_s
            meter.period_end = p[0] + meter.period_s
            meter.store.save_period()
    ctl = cmds.handler
    lim = getattr(ctl, "limiter", None)
    if lim is not None:
        lim.retry_at += step
        if lim.over_since >= 0:
            lim.over_since += step
        if lim.under_since >= 0:
            lim.under_since += step


def reboot(cmds, args):
    only(args, ())
    if cmds.link is None:
        raise Refused(3, "no link")
    cmds.link.reboot = True  # the link acks first, then calls restart() below
    log(cmds, 226)
    return 0, None


def restart(link):
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
