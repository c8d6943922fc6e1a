# Event logs by category, each a ring of fixed-size CRC'd records (meter.storage.ring.Ring), so an
# event costs one small write and a damaged record is detected and skipped.
# Each record: time, code, category, a snapshot (V, I, cumulative import Wh) and a value
# (e.g. the length of a power failure in seconds).
#
# Codes: 1-99 core (below); 100-149 metering/tamper (100-109 voltage, 110-119 current,
# 120-149 other/tamper); 150-199 control (connect/disconnect); 200-249 transaction
# (configuration, commands). A code can be put in another category through CATEGORY_OF.
from micropython import const

from meter.runtime.clock import VALID_AFTER
from meter.runtime.overlays import unload

POWER_UP = const(1)
CONFIG_REJECTED = const(2)
IC_REINIT = const(3)
STORE_CORRUPT = const(4)
IC_FAULT = const(5)
POWER_FAIL = const(6)  # value: seconds without power (from the last gasp, or an upper bound)
FACTORY_RESET = const(7)
COVER_OPEN = const(140)
# Supply control (150-199): CONTROL + cause * 3 + resulting state (meter/supply/transitions.py).
CONTROL = const(150)
RELAY_FAULT = const(170)
RELAY_REASSERTED = const(171)
LIMITER_LOCKOUT = const(172)
# Metering (120-139: other/tamper; 100-119 stay for voltage and current events). Their names
# live host-side (simulator/event_names.py), off the heap.
READ_REJECTED = const(120)  # an impossible or unconfirmed IC read, never added
BUS_FAULT = const(121)  # the IC's bus is stuck (all zeros or all ones)
BUS_RESTORED = const(122)
TAMPER_NEUTRAL = const(123)  # neutral current differs from live current
TAMPER_NEUTRAL_END = const(124)
REVERSE_FLOW = const(125)  # export on an import-only meter
REVERSE_FLOW_END = const(126)
CALIB_LOADED = const(127)
CALIB_BAD = const(128)  # calibration file unreadable or its checksums wrong: defaults used
# Store-and-forward (meter/remote/forward.py): records gone before they could be delivered (the
# ring overwrote them during a long outage, or they were damaged); value: how many.
BACKLOG_LOST = const(130)
# 200-249: remote commands. A rejected command logs CMD_REJECTED + its ack code (see
# meter/remote/commands.py), rate-limited; their names are built host-side
# (simulator/event_names.py).
# 220-226: accepted configuration commands, logged by meter/remote/dispatch.py (defined there, off
# the resident heap): 220 control_mode_set, 221 load_limit_set, 222 telemetry_period_set,
# 223 time_set_old (at the old time), 224 time_set_new, 225 billing_snapshot, 226 remote_reboot.
CMD_REJECTED = const(200)

CAT_VOLTAGE = const(0)
CAT_CURRENT = const(1)
CAT_POWER = const(2)
CAT_TRANSACTION = const(3)
CAT_OTHER = const(4)
CAT_CONTROL = const(5)
CAT_COVER = const(6)  # never overwritten: once full, later openings are not recorded
# (named CAT_* so they never clash with event codes such as a CONTROL base code; their names:
# meter/storage/layout.py CATEGORIES)
CATEGORY_OF = {
    POWER_FAIL: CAT_POWER,
    CONFIG_REJECTED: CAT_TRANSACTION,
    FACTORY_RESET: CAT_TRANSACTION,
    COVER_OPEN: CAT_COVER,
}

# The event logs' part of the storage layout (meter/storage/layout.py; here because this
# resident log opens a ring at every write): one ring per category in one segment file each,
# /ev/<category>.0, records of ring n(4) | seq(4) time(4) code(2) category(1) flags(1)
# centivolts(2) milliamps(2) import Wh(4) value(4) | crc(4): 32 bytes.
EVENT_DIR = "/ev"
EVENT_FMT = "<IIHBBHHII"
EVENT_SIZE = const(32)
EVENT_CAPACITY = b"\x32\x32\x14\x32\x32\x32\x14"  # 50 50 20 50 50 50 20 records, by category
# Flag 1: stamped while the clock was invalid (meter time before 2024: meter/runtime/clock.py),
# so that time says nothing about when it was.
CLOCK_INVALID = const(1)


def category(code):
    cat = CATEGORY_OF.get(code)
    if cat is not None:
        return cat
    if 100 <= code < 110:
        return CAT_VOLTAGE
    if 110 <= code < 120:
        return CAT_CURRENT
    if 150 <= code < 200:
        return CAT_CONTROL
    if 200 <= code < 250:
        return CAT_TRANSACTION
    return CAT_OTHER


def ring(fs, cat):
    """One category's ring (meter.storage.ring; unload("meter.storage.ring") when done with it)."""
    from meter.storage.ring import Ring

    size = EVENT_CAPACITY[cat]
    return Ring(fs, EVENT_DIR + "/" + str(cat), EVENT_FMT, size, size, cat != CAT_COVER)


class EventLog:
    def __init__(self, fs):
        self._fs = fs
        self.snapshot = None  # callable -> (centivolts, milliamps, import Wh), set by the app
        self.bad = 0  # damaged records found at boot (meter.storage.restore)
        self.seq = 0  # the newest record's, found at boot (meter.storage.restore)

    def log(self, now, code, value=0):
        """Record an event now; returns False when its log is full and does not roll over."""
        volts = amps = wh = 0
        if self.snapshot is not None:
            volts, amps, wh = self.snapshot()
        cat = category(code)
        flags = 0 if now > VALID_AFTER else CLOCK_INVALID
        if now < 0:  # (meter/runtime/clock.py keeps it >= 0; a record is stored whatever comes)
            now = 0
        if value < 0:  # e.g. an outage's length across a clock that went back
            value = 0
        ok = ring(self._fs, cat).append(self.seq + 1, now, code, cat, flags, volts, amps, wh,
                                        value)
        unload("meter.storage.ring")
        if ok:  # a number only for a record that exists: the forwarded sequence has no gaps
            self.seq += 1
        return ok
