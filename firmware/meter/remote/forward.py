# Store-and-forward over MQTT: an overlay of meter/remote/link.py, loaded while stored records wait
# to be delivered and dropped again after each batch.
# - meters/<id>/profile: each block-profile record, seq = its record number n in the ring;
# - meters/<id>/events: each event, seq = the event's own sequence number.
# Both are published at QoS 1, oldest first per stream, at most _BATCH records per duty
# cycle; a record counts as delivered (the cursor moves past it) only once umqtt.simple's
# publish has returned, i.e. after its PUBACK. The numbers come from flash, so a record sent
# again after a reboot or a lost PUBACK carries the same seq. Records are read straight from
# their ring files, one record buffer at a time, never whole logs.
import json
import struct
from binascii import crc32

from micropython import const

from meter.runtime.clock import METER_EPOCH_UNIX
from meter.runtime.overlays import unload
from meter.storage import events
from meter.storage.checkpoint import Slots
from meter.storage.events import EVENT_CAPACITY, EVENT_DIR, EVENT_FMT, EVENT_SIZE
from meter.storage.layout import BLOCK_CAPACITY, BLOCK_FMT, BLOCK_PATH, BLOCK_PER_FILE, BLOCK_SIZE

unload("meter.storage.layout")  # (its names are copied: meter/storage/layout.py)
_BATCH = const(4)  # records per duty cycle (both streams together)
_BUDGET_MS = const(250)  # ... and no more wall time than this on them
_KEEP_S = const(60)  # the cursor is saved at most this often
# link.fwd, the state kept in RAM between loads (one list: the link is resident), by these
# indices (meter/remote/link.py names the ones it reads alike; times are clock.mono()):
_PROFILE = const(0)  # the cursor: block-profile n delivered up to (-1: not read from flash yet)
_EVENT = const(1)  # ... and event seq delivered up to
_SEQ = const(2)  # its slot sequence
_DUE = const(3)  # when it is next to be saved (-1: saved)
_SAVED = const(4)  # the last save
_WAIT = const(5)  # when to try again after the heap had no room (set by the link)
_LOST = const(6)  # records lost


def _load(f, fs):
    """The delivered-up-to cursor as last saved (/fwd.a|b, meter.storage.checkpoint.Slots
    records)."""
    slots = Slots(fs, "/fwd", "<II")
    rec = slots.load()[0]
    f[_PROFILE], f[_EVENT] = rec if rec is not None else (0, 0)
    f[_SEQ] = slots.seq


def _save(f, fs, now):
    """The cursor to flash: once a minute at most (a small LittleFS metadata commit), so
    after a reboot it may lag and those records go again, with the same seq."""
    slots = Slots(fs, "/fwd", "<II")
    slots.seq = f[_SEQ]
    slots.save(f[_PROFILE], f[_EVENT])
    f[_SEQ] = slots.seq
    f[_DUE] = -1
    f[_SAVED] = now


def _moved(f):
    """The cursor moved: it is to be saved, no sooner than _KEEP_S after the last save."""
    if f[_DUE] < 0:
        f[_DUE] = f[_SAVED] + _KEEP_S


def backlog(link):
    """Records stored but not yet delivered, over both streams (Link.backlog)."""
    f = link.fwd
    m = link.meter
    if m is None:
        return 0
    if f[_PROFILE] < 0:
        _load(f, m.hw.fs)
    head = m.store.period.head
    p = head - max(f[_PROFILE], head - BLOCK_CAPACITY) if f[_PROFILE] <= head else head
    head = m.log.seq
    return p + (head - f[_EVENT] if f[_EVENT] <= head else head)


def _read(fs, path, offset, buf, size):
    """Read one record into buf; True if it is intact (its CRC matches)."""
    try:
        with fs.open(path, "rb") as f:
            f.seek(offset)
            if f.readinto(memoryview(buf)[:size]) != size:
                return False
    except OSError:
        return False
    return crc32(memoryview(buf)[: size - 4]) == struct.unpack_from("<I", buf, size - 4)[0]


def _next_profile(f, meter, buf):
    """The next block-profile record to deliver: its n (in buf), or 0 if none waits."""
    head = meter.store.period.head
    if f[_PROFILE] > head:  # numbered afresh (factory reset): everything there is is new
        f[_PROFILE] = 0
        _moved(f)
    while f[_PROFILE] < head:
        n = f[_PROFILE] + 1
        if n <= head - BLOCK_CAPACITY:  # overwritten before it could be delivered
            f[_LOST] += head - BLOCK_CAPACITY - n + 1
            f[_PROFILE] = head - BLOCK_CAPACITY
            continue
        slot = (n - 1) % BLOCK_CAPACITY
        path = BLOCK_PATH + "." + str(slot // BLOCK_PER_FILE)
        if _read(meter.hw.fs, path, (slot % BLOCK_PER_FILE) * BLOCK_SIZE, buf, BLOCK_SIZE) and \
                struct.unpack_from("<I", buf, 0)[0] == n:
            return n
        f[_LOST] += 1  # damaged: skipped (the damage was logged at boot)
        f[_PROFILE] = n
    return 0


def _next_event(f, meter, buf, scan):
    """The oldest event after the cursor, over all categories: its seq (record in buf), or
    0 if none waits. Each category's ring is one small file: scanned one record at a time."""
    head = meter.log.seq
    if f[_EVENT] > head:
        f[_EVENT] = 0
        _moved(f)
    if f[_EVENT] >= head:
        return 0
    best = 0
    fs = meter.hw.fs
    for cat in range(len(EVENT_CAPACITY)):
        try:
            g = fs.open(EVENT_DIR + "/" + str(cat) + ".0", "rb")  # one segment file each
        except OSError:
            continue
        try:
            while g.readinto(scan) == EVENT_SIZE:
                if crc32(memoryview(scan)[:EVENT_SIZE - 4]) != \
                        struct.unpack_from("<I", scan, EVENT_SIZE - 4)[0]:
                    continue
                seq = struct.unpack_from("<I", scan, 4)[0]
                if f[_EVENT] < seq <= head and (not best or seq < best):
                    best = seq
                    buf[:] = scan
        finally:
            g.close()
    if not best:  # all of them gone (overwritten while the link was down)
        f[_LOST] += head - f[_EVENT]
        f[_EVENT] = head
        return 0
    f[_LOST] += best - f[_EVENT] - 1  # those in between were overwritten
    return best


def send(link, meter, now):
    """Publish up to _BATCH waiting records at QoS 1, events and profile records in turn
    (now: clock.mono(), the cursor's timers run on it).
    A record counts as delivered only once its PUBACK is in (publish returned); an error
    propagates to the link, which fails and backs off, the cursor left where it was."""
    f = link.fwd
    if f[_PROFILE] < 0:
        _load(f, meter.hw.fs)
    clock = meter.clock
    mid = link._cfg["meter_id"]
    lost = f[_LOST]
    buf = bytearray(EVENT_SIZE)
    scan = bytearray(EVENT_SIZE)
    started = clock.ticks_ms()
    sent = 0
    while sent < _BATCH and clock.ticks_diff(clock.ticks_ms(), started) < _BUDGET_MS:
        seq = _next_event(f, meter, buf, scan)
        if seq:
            r = struct.unpack_from(EVENT_FMT, buf, 4)
            wh = r[7]
            _publish(link, "events", {
                "id": mid, "seq": seq, "t": r[1] + METER_EPOCH_UNIX, "code": r[2], "cat": r[3],
                "v": r[5] / 100, "i": r[6] / 1000,
                "import_kwh": str(wh // 1000) + "." + ("00" + str(wh % 1000))[-3:],
                "value": r[8]})
            f[_EVENT] = seq
            sent += 1
        n = _next_profile(f, meter, buf) if sent < _BATCH else 0
        if n:
            r = struct.unpack_from(BLOCK_FMT, buf, 4)
            _publish(link, "profile", {
                "id": mid, "seq": n, "t": r[0] + METER_EPOCH_UNIX, "import_wh": r[1],
                "export_wh": r[2], "v": r[3] / 100, "i": r[4] / 1000, "flags": r[5]})
            f[_PROFILE] = n
            sent += 1
        if not (seq or n):
            break
    if f[_LOST] != lost:  # say so: an event (itself forwarded in turn) with how many,
        meter.log.log(clock.now(), events.BACKLOG_LOST, f[_LOST] - lost)
        f[_DUE] = now  # and the cursor saved past them now: announced only once
    if sent:
        _moved(f)
    if 0 <= f[_DUE] <= now:
        _save(f, meter.hw.fs, now)


def _publish(link, stream, body):
    c = link.client
    if c.pid >= 65000:  # umqtt packs the packet id into 16 bits and never wraps it
        c.pid = 0
    c.publish(link._base + stream, json.dumps(body), False, 1)  # returns on its PUBACK
    link.published += 1
    link.delivered += 1
