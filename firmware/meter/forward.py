# Store-and-forward over MQTT: an overlay of meter/link.py, loaded while stored records wait
# to be delivered and dropped again after each batch.
# - meters/<id>/profile: each block-profile record, seq = its record number n in the ring;
# - meters/<id>/events: each event, seq = the event's own sequence number.
# Both are published at QoS 1, oldest first per stream, at most _BATCH records per duty
# cycle; a record counts as delivered (link.cursor moves past it) only once umqtt.simple's
# publish has returned, i.e. after its PUBACK. The numbers come from flash, so a record sent
# again after a reboot or a lost PUBACK carries the same seq. Records are read straight from
# their ring files, one record buffer at a time, never whole logs.
import json
import struct
from binascii import crc32

from micropython import const

from meter import events
from meter.store import Slots

_BATCH = const(4)  # records per duty cycle (both streams together)
_BUDGET_MS = const(250)  # ... and no more wall time than this on them
# The block profile's ring (meter/profile.py block(); kept in step by a test)
_P_PATH = "/p/block."
_P_FMT = "<IHHHHH"  # period end, import Wh, export Wh, cV, mA, flags
_P_SIZE = const(22)  # n(4) payload(14) crc(4)
P_CAPACITY = const(5766)
_P_PER_FILE = const(186)
_E_SIZE = const(32)  # an event record (meter/events.py)
_EPOCH = const(1577836800)  # meter time 0 in Unix seconds (meter/clock.py)
_KEEP_S = const(60)  # the cursor is saved at most this often


def _load(link, fs):
    """The delivered-up-to cursor as last saved (/fwd.a|b, meter.store.Slots records)."""
    link.cursor = [0, 0]
    for path in ("/fwd.a", "/fwd.b"):
        try:
            with fs.open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if len(data) != 16 or crc32(data[:12]) != struct.unpack_from("<I", data, 12)[0]:
            continue
        seq, p, e = struct.unpack_from("<III", data, 0)
        if seq > link._keep[0]:
            link._keep[0] = seq
            link.cursor = [p, e]


def _save(link, fs, now):
    """The cursor to flash: once a minute at most (a small LittleFS metadata commit), so
    after a reboot it may lag and those records go again, with the same seq."""
    keep = link._keep
    slots = Slots(fs, "/fwd", "<II")
    slots.seq = keep[0]
    slots.save(link.cursor[0], link.cursor[1])
    keep[0] = slots.seq
    keep[1] = -1
    keep[2] = now


def _moved(link):
    """The cursor moved: it is to be saved, no sooner than _KEEP_S after the last save."""
    keep = link._keep
    if keep[1] < 0:
        keep[1] = keep[2] + _KEEP_S


def backlog(link):
    """Records stored but not yet delivered, over both streams (Link.backlog)."""
    m = link._meter
    if m is None:
        return 0
    if link.cursor is None:
        _load(link, m.hw.fs)
    cur = link.cursor
    head = m.store.profile_head
    p = head - max(cur[0], head - P_CAPACITY) if cur[0] <= head else head
    head = m.log.seq
    return p + (head - cur[1] if cur[1] <= head else head)


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


def _next_profile(link, meter, buf):
    """The next block-profile record to deliver: its n (in buf), or 0 if none waits."""
    cur = link.cursor
    head = meter.store.profile_head
    if cur[0] > head:  # numbered afresh (factory reset): everything there is is new
        cur[0] = 0
        _moved(link)
    while cur[0] < head:
        n = cur[0] + 1
        if n <= head - P_CAPACITY:  # overwritten before it could be delivered
            link.lost += head - P_CAPACITY - n + 1
            cur[0] = head - P_CAPACITY
            continue
        slot = (n - 1) % P_CAPACITY
        path = _P_PATH + str(slot // _P_PER_FILE)
        if _read(meter.hw.fs, path, (slot % _P_PER_FILE) * _P_SIZE, buf, _P_SIZE) and \
                struct.unpack_from("<I", buf, 0)[0] == n:
            return n
        link.lost += 1  # damaged: skipped (a reading of the fault was logged at boot)
        cur[0] = n
    return 0


def _next_event(link, meter, buf, scan):
    """The oldest event after the cursor, over all categories: its seq (record in buf), or
    0 if none waits. Each category's ring is one small file: scanned one record at a time."""
    cur = link.cursor
    head = meter.log.seq
    if cur[1] > head:
        cur[1] = 0
        _moved(link)
    if cur[1] >= head:
        return 0
    best = 0
    fs = meter.hw.fs
    for cat in range(len(events._CAPACITY)):
        try:
            f = fs.open(events._DIR + "/" + str(cat) + ".0", "rb")  # one segment file each
        except OSError:
            continue
        try:
            while f.readinto(scan) == _E_SIZE:
                if crc32(memoryview(scan)[:28]) != struct.unpack_from("<I", scan, 28)[0]:
                    continue
                seq = struct.unpack_from("<I", scan, 4)[0]
                if cur[1] < seq <= head and (not best or seq < best):
                    best = seq
                    buf[:] = scan
        finally:
            f.close()
    if not best:  # all of them gone (overwritten while the link was down)
        link.lost += head - cur[1]
        cur[1] = head
        return 0
    link.lost += best - cur[1] - 1  # those in between were overwritten
    return best


def send(link, meter, now):
    """Publish up to _BATCH waiting records at QoS 1, events and profile records in turn.
    A record counts as delivered only once its PUBACK is in (publish returned); an error
    propagates to the link, which fails and backs off, the cursor left where it was."""
    if link.cursor is None:
        _load(link, meter.hw.fs)
    c = link.client
    clock = meter.clock
    cur = link.cursor
    base = link._base
    mid = link._cfg["meter_id"]
    lost = link.lost
    buf = bytearray(_E_SIZE)
    scan = bytearray(_E_SIZE)
    started = clock.ticks_ms()
    sent = 0
    more = True
    while more and sent < _BATCH and clock.ticks_diff(clock.ticks_ms(), started) < _BUDGET_MS:
        more = False
        seq = _next_event(link, meter, buf, scan)
        if seq:
            r = struct.unpack_from(events._FMT, buf, 4)
            wh = r[7]
            _publish(link, c, base + "events", json.dumps({
                "id": mid, "seq": seq, "t": r[1] + _EPOCH, "code": r[2], "cat": r[3],
                "v": r[5] / 100, "i": r[6] / 1000,
                "import_kwh": str(wh // 1000) + "." + ("00" + str(wh % 1000))[-3:],
                "value": r[8]}))
            cur[1] = seq
            sent += 1
            more = True
        n = _next_profile(link, meter, buf) if sent < _BATCH else 0
        if n:
            r = struct.unpack_from(_P_FMT, buf, 4)
            _publish(link, c, base + "profile", json.dumps({
                "id": mid, "seq": n, "t": r[0] + _EPOCH, "import_wh": r[1],
                "export_wh": r[2], "v": r[3] / 100, "i": r[4] / 1000, "flags": r[5]}))
            cur[0] = n
            sent += 1
            more = True
    if link.lost != lost:  # say so: an event (itself forwarded in turn) with how many,
        meter.log.log(now, events.BACKLOG_LOST, link.lost - lost)
        link._keep[1] = now  # and the cursor saved past them now: announced only once
    if sent:
        _moved(link)
    if 0 <= link._keep[1] <= now:
        _save(link, meter.hw.fs, now)
    return sent


def _publish(link, c, topic, body):
    if c.pid >= 65000:  # umqtt packs the packet id into 16 bits and never wraps it
        c.pid = 0
    c.publish(topic, body, False, 1)  # returns once the PUBACK is in
    link.published += 1
    link.delivered += 1
