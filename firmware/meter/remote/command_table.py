# The remote command set, defined once: each command's name, the group that handles it, how
# it is treated and the argument the head-end takes as its VALUE. Read by the meter's
# dispatch (meter/remote/commands.py, an overlay: this table is loaded with it for one
# message and dropped after), by the head-end (host_tools/headend.py) and the simulator's
# scenario check, on CPython. Adding a command: a line here and its handler in its group's
# module, named as the command (tests/test_structure.py checks both).
#
# Groups: SUPPLY the disconnect control (meter/supply/control.py, resident: its methods
# disconnect, reconnect, status); CONFIG meter/remote/config_commands.py; TIME
# meter/remote/time_commands.py; READ meter/remote/read_commands.py.
# Flags: ONCE a command cut short (power lost while it ran) is not run again: a second run
# would act twice; NEEDED the head-end wants its VALUE; PAGED read-back paged with
# since/until/start/newest_first and the ack's next.
# VALUE kinds: 0 none, 1 a whole number, 2 a time (Unix s or ISO 8601), 3 a name,
# 4 an event category (a name or its number).
SUPPLY = 0
CONFIG = 1
TIME = 2
READ = 3
ONCE = 1
NEEDED = 2
PAGED = 4

# name: (group, flags, VALUE argument, VALUE kind)
COMMANDS = {
    "disconnect": (SUPPLY, 0, None, 0),
    "reconnect": (SUPPLY, 0, None, 0),
    "status": (SUPPLY, 0, None, 0),
    "set_control_mode": (CONFIG, NEEDED, "mode", 1),
    "set_load_limit": (CONFIG, NEEDED, "watts", 1),
    "read_profile": (READ, PAGED, "profile", 3),
    "read_events": (READ, NEEDED | PAGED, "category", 4),
    "billing_snapshot": (READ, ONCE, None, 0),
    "time_sync": (TIME, ONCE, "unix", 2),
    "set_telemetry_period": (CONFIG, NEEDED, "seconds", 1),
    "reboot": (TIME, 0, None, 0),
}
