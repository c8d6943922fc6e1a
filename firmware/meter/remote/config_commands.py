# Configuration commands (group CONFIG in meter/remote/command_table.py, run by
# meter/remote/dispatch.py): control mode, load limit, telemetry period.
import json

from meter.remote.arguments import Refused, bad, log, only, whole
from meter.runtime.overlays import overlay, unload


def _control(cmds):
    ctl = cmds.handler
    if ctl is None or not hasattr(ctl, "mode"):
        raise Refused(3, "no supply control")
    return ctl


def _save_config(cmds, changes):
    """Persist overrides in /config.json (the provisioned file, kept as it is otherwise),
    then apply them to the running configuration."""
    config = overlay("meter.storage.config")  # (meter/app.py keeps only the dict it made)
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
    link = cmds.link
    if link is not None:
        link._cfg.update(changes)


def set_control_mode(cmds, args):
    only(args, ("mode",))
    mode = whole(args, "mode", 0, 6)
    ctl = _control(cmds)
    if mode == 0 and ctl.state != 1:
        # mode 0 means "always connected": entering it would have to close the relay, which
        # a configuration command never does
        raise Refused(3, "mode 0 needs the supply connected: reconnect first")
    from meter.supply.transitions import save  # loaded before anything changes (heap)

    old = ctl.mode
    ctl.mode = mode
    try:
        save(ctl)  # with the state, in the control's CRC'd slots: restored at boot
    except OSError:
        ctl.mode = old
        raise Refused(2, "flash") from None
    finally:
        unload("meter.supply.transitions")
    log(cmds, 220, mode)
    return ctl.status(None)


def set_load_limit(cmds, args):
    from meter.supply import startup

    try:
        defaults = startup.LIMITER
        check = startup.check_limiter
    finally:
        unload("meter.supply.startup")
    watts = whole(args, "watts", 0, 1000000)
    settings = {}
    for k in args:
        if k != "watts":
            settings[k] = args[k]
    problem = check(settings)
    if problem is not None:
        bad(problem)
    ctl = _control(cmds)
    merged = dict(cmds.link._cfg["load_limiter"])  # given settings replace, others stay
    merged.update(settings)
    lim = ctl.limiter
    if watts and lim is None:
        from meter.supply.limiter import Limiter  # loaded before anything changes (heap)

        lim = Limiter(watts, defaults, ctl.log)
    _save_config(cmds, {"load_limit_w": watts, "load_limiter": merged})
    if watts:
        s = dict(defaults)
        s.update(merged)
        keep = (lim.tripped, lim.retry_at, lim.attempts)  # a pending reconnection stays
        lim.__init__(watts, s, ctl.log)
        lim.tripped, lim.retry_at, lim.attempts = keep
        ctl.limiter = lim
    else:
        ctl.limiter = None
        unload("meter.supply.limiter")
    log(cmds, 221, watts)
    return 0, {"watts": watts, "load_limiter": merged}


def set_telemetry_period(cmds, args):
    only(args, ("seconds",))
    s = whole(args, "seconds", 5, 86400)
    _save_config(cmds, {"telemetry_period_s": s})
    link = cmds.link
    now = cmds._clock.mono()  # the link's timers run on the monotonic clock
    if link is not None and link._next_s > now + s:
        link._next_s = now + s  # shorter: the next message comes on the new period
    log(cmds, 222, s)
    return 0, {"seconds": s}
