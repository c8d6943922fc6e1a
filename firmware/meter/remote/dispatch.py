# Remote commands beyond switching the supply (meter/remote/commands.py dispatches here whatever
# the disconnect control does not answer). Overlays, each imported only while one of its
# commands runs, then dropped (commands are rare, the heap is not): this module (argument
# checks, dispatch) and one of meter/remote/config_commands.py (control mode, load limit, telemetry
# period), meter/remote/time_commands.py (time sync, reboot), meter/remote/read_commands.py
# (profile and event read-back, billing snapshot).
#
# Each handler checks every argument first and answers (code, extra for the ack):
# 250 "bad args: ..." for an unknown key, a wrong type or a value out of range; 3 with a
# reason when the meter's state refuses it. Nothing here ever moves the relay. Every
# accepted configuration command logs a transaction event (README "Commands"):
#   220 control_mode_set (value: mode)      221 load_limit_set (value: W)
#   222 telemetry_period_set (value: s)     223 time_set_old, 224 time_set_new (value: |step| s)
#   225 billing_snapshot (value: record n)  226 remote_reboot
# (200-210 are the rejected commands, 200 + ack code: meter/remote/commands.py.)
from meter.runtime import compat
from meter.runtime.overlays import unload

_GROUPS = {
    "set_control_mode": "config", "set_load_limit": "config", "set_telemetry_period": "config",
    "time_sync": "time", "reboot": "time",
    "read_profile": "read", "read_events": "read", "billing_snapshot": "read",
}


class Refused(Exception):
    """(code, reason): the command is answered with it, nothing was changed."""


def bad(what):
    raise Refused(250, "bad args: " + what)


def only(args, keys):
    for k in args:
        if k not in keys:
            bad("unknown argument " + str(k))


def whole(args, key, lo, hi, default=None):
    v = args.get(key, default)
    if type(v) is not int or not lo <= v <= hi:  # type(True) is bool, not int
        bad("%s must be a whole number %d-%d" % (key, lo, hi))
    return v


def log(cmds, code, value=0, now=None):
    try:
        now = cmds._clock.now() if now is None else now
        cmds._log.log(now if now > 0 else 0, code, value)  # an unset clock reads < 0
    except OSError:
        pass  # the command took effect; a full or failing log does not undo it


def _load(group):
    if group == "config":
        import meter.remote.config_commands as m
    elif group == "time":
        import meter.remote.time_commands as m
    else:
        import meter.remote.read_commands as m
    return m


def run(cmds, cmd, body):
    """The command `cmd` (already verified and counted) with body["args"]."""
    group = _GROUPS.get(cmd)
    if group is None:  # disconnect / reconnect on a meter without a relay
        return 3, {"reason": "no supply control"}
    compat.collect()
    try:
        return getattr(_load(group), "_" + cmd)(cmds, body.get("args", {}), body)
    except Refused as e:
        return e.args[0], {"reason": e.args[1]}
    finally:
        unload("meter.remote." + group + "_commands")
        unload("meter.storage.ring")  # meter/remote/read_commands.py's
