# The data filesystem's layout, written down once: each log's files, record format (struct,
# the payload: meter/storage/ring.py adds n(4) before it and a CRC32(4) after), capacity and
# records per segment file (one 4 KiB flash block at most), and the event categories. Meter
# time's epoch is meter/runtime/clock.py's METER_EPOCH_UNIX. Read by the modules that open or
# read the logs (meter/storage/events.py, profiles.py, billing.py, reader.py, restore.py,
# factory_reset.py; meter/remote/forward.py, read_commands.py).
# Heap: every user imports the names it needs and lets this module go at once
# (`from meter.storage.layout import X` then `unload("meter.storage.layout")`): the names then
# live in the user's own globals (an overlay's, while it is loaded) or a function's locals,
# and this module (~0.9 KB as a module) never stays in RAM.
from micropython import const

# Event logs: one ring per category in one segment file each, /ev/<category>.0. Their layout
# (EVENT_DIR, EVENT_FMT, EVENT_SIZE, EVENT_CAPACITY) is meter/storage/events.py's: the resident
# event log opens a ring at every write, so it keeps those four names itself (loading this
# module at each write cost a MicroPython boot its heap: measured). By category number
# (meter/storage/events.py CAT_*), the names for read-back:
CATEGORIES = ("voltage", "current", "power", "transaction", "other", "control", "cover")

# Load profiles (meter/storage/profiles.py), /p/<name>.<segment>.
PROFILE_DIR = "/p"
# block: period end (meter s), import Wh, export Wh, cV, mA, flags: 22 B a record, 186 fill
# one 4 KiB block, 31 files: 60 days of 15-min periods, 120 of 30-min.
BLOCK_PATH = "/p/block"
BLOCK_FMT = "<IHHHHH"
BLOCK_SIZE = const(22)
BLOCK_CAPACITY = const(5766)
BLOCK_PER_FILE = const(186)
# daily: midnight, cumulative import Wh, export Wh; 35 days in one file.
DAILY_PATH = "/p/daily"
DAILY_FMT = "<III"
DAILY_CAPACITY = const(35)
# billing: time, import Wh, export Wh, max demand W, its time, trigger; 12 in one file.
BILLING_PATH = "/p/bill"
BILLING_FMT = "<IIIIIB"
BILLING_CAPACITY = const(12)

