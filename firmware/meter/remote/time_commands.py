# Time and reboot commands (group TIME in meter/remote/command_table.py, run by
# meter/remote/dispatch.py).
from micropython import const

from meter.remote.arguments import Refused, log, only, whole

MAX_STEP = const(3600)  # time_sync: the largest step (s) while the clock is valid
_UNIX_MIN = const(1704067200)  # 2024-01-01: a time_sync must land on a valid clock
_UNIX_MAX = 2634801407  # meter time clock.MAX_S (2053-06-29): meter times stay small ints


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
    step = clock.set(unix)  # the one offset moves; every deadline runs on clock.mono()
    meter = None if cmds.link is None else cmds.link.meter
    if meter is not None:
        p = meter.store.period  # periods end at wall-clock multiples: they follow the step
        if p.clock_set(clock.now(), unset, meter.period_s):
            meter.store.save_period()
    size = -step if step < 0 else step
    size = size if size < 0x7FFFFFFF else 0x7FFFFFFF
    log(cmds, 223, size, old)
    log(cmds, 224, size)
    return 0, {"step": step}


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
