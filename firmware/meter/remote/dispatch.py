# Remote commands beyond switching the supply (meter/remote/commands.py sends here the
# commands of the groups CONFIG, TIME and READ in meter/remote/command_table.py). Overlays,
# each imported only while one of its commands runs, then dropped (commands are rare, the
# heap is not): this module and one of meter/remote/config_commands.py (control mode, load
# limit, telemetry period), meter/remote/time_commands.py (time sync, reboot),
# meter/remote/read_commands.py (profile and event read-back, billing snapshot), with the
# argument checks they share (meter/remote/arguments.py).
#
# Nothing here ever moves the relay. Every accepted configuration command logs a
# transaction event (README "Commands"):
#   220 control_mode_set (value: mode)      221 load_limit_set (value: W)
#   222 telemetry_period_set (value: s)     223 time_set_old, 224 time_set_new (value: |step| s)
#   225 billing_snapshot (value: record n)  226 remote_reboot
# (200-210 are the rejected commands, 200 + ack code: meter/remote/commands.py.)
from meter.remote.arguments import Refused
from meter.runtime.overlays import overlay, unload


def run(cmds, cmd, body):
    """The command `cmd` (already verified and counted; its group CONFIG, TIME or READ)
    with body["args"]."""
    args = body.get("args", {})
    try:
        if cmd == "set_control_mode":
            return overlay("meter.remote.config_commands").set_control_mode(cmds, args)
        if cmd == "set_load_limit":
            return overlay("meter.remote.config_commands").set_load_limit(cmds, args)
        if cmd == "set_telemetry_period":
            return overlay("meter.remote.config_commands").set_telemetry_period(cmds, args)
        if cmd == "time_sync":
            return overlay("meter.remote.time_commands").time_sync(cmds, args, body)
        if cmd == "reboot":
            return overlay("meter.remote.time_commands").reboot(cmds, args)
        if cmd == "read_profile":
            return overlay("meter.remote.read_commands").read_profile(cmds, args)
        if cmd == "read_events":
            return overlay("meter.remote.read_commands").read_events(cmds, args)
        if cmd == "billing_snapshot":
            return overlay("meter.remote.read_commands").billing_snapshot(cmds, args)
        return 10, None  # in the table but handled nowhere: tests/test_structure.py
    except Refused as e:
        return e.args[0], {"reason": e.args[1]}
    finally:
        unload("meter.remote.arguments")  # the groups' (meter/runtime/overlay_table.py)
        unload("meter.storage.ring")  # meter/remote/read_commands.py's
