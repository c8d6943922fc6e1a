# Every overlay, once: each module the firmware imports only while it uses it (a function-
# level import or overlay("...")), what it pulls in (the overlays it imports at module level,
# loaded and dropped with it) and when it first loads. The boot's name-table priming walks
# this table (prime(), from meter/app.py); tests/test_structure.py checks from the sources
# that it lists every lazily imported module and exactly what each pulls in, so a new overlay
# left out fails a test, not a run hours in. Itself loaded once, at boot, and dropped.
from meter.runtime import compat
from meter.runtime.overlays import unload

BOOT = 0  # loaded at every boot before anything loads late: its names are in already
LATE = 1  # first loaded hours into a run (a command, a period's close, a button): primed

# (overlay, what it pulls in, when it first loads)
OVERLAYS = (
    ("meter.runtime.overlay_table", (), BOOT),  # this table, for prime()
    ("meter.storage.config", (), BOOT),  # the app keeps the dict it returns
    ("meter.storage.config_rules", (), BOOT),
    ("meter.storage.restore", (), BOOT),
    ("meter.metering.calibration", (), BOOT),
    ("meter.storage.layout", (), BOOT),  # by the profiles' boot; its users drop it at once
    ("meter.remote.link", (), BOOT),  # kept once loaded: MQTT configured
    ("meter.remote.config_commands", ("meter.remote.arguments",), LATE),
    ("meter.remote.read_commands", ("meter.remote.arguments", "meter.storage.layout",
                                    "meter.storage.profile_rings", "meter.storage.ring"), LATE),
    ("meter.remote.time_commands", ("meter.remote.arguments",), LATE),
    ("meter.remote.dispatch", ("meter.remote.arguments",), LATE),
    ("meter.remote.commands", (), LATE),
    ("meter.remote.command_table", (), LATE),
    ("meter.remote.connect", (), LATE),
    ("meter.remote.forward", ("meter.storage.layout",), LATE),
    ("meter.supply.startup", ("meter.supply.control",), LATE),  # set_load_limit's defaults
    ("meter.supply.limiter", (), LATE),
    ("meter.storage.profiles", ("meter.storage.layout", "meter.storage.profile_rings",
                                "meter.storage.ring"), LATE),
    ("meter.storage.ring", (), LATE),
    ("meter.supply.relay", (), LATE),
    ("meter.supply.transitions", (), LATE),
    ("meter.local.button", (), LATE),
    ("meter.local.command_port", (), LATE),
)


def prime():
    """Load every LATE overlay once, one at a time, with what it pulls in, and drop them
    again. MicroPython keeps the names of each module it loads in a table that grows in
    doubling steps and is never freed; one step is a ~6.4 KB allocation. Taken now, while
    the heap is whole, it cannot fail later on a fragmented heap at an overlay's first load
    (hours into a run, say at the first command): the names are all in, so later loads add
    none."""
    for name, pulled, when in OVERLAYS:
        if when == LATE:
            __import__(name)
            unload(name)
            for other in pulled:
                unload(other)
            compat.collect()
