# What the meter does once at boot with its stored data: restore the energy checkpoint, find
# the event logs' heads, close the profile period the power cut interrupted, and log what
# happened. Imported for the boot only, then let go (meter.store.unload) to spare the heap.
import struct
from binascii import crc32

from meter import events
from meter.store import FLAG_LAST_GASP


def load_slots(slots):
    """The newest valid record of a slot pair, or None; returns (fields, damaged slots)."""
    best = None
    best_seq = -1
    bad = 0
    size = slots._size
    for path in slots._paths:
        try:
            with slots._fs.open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if len(data) != size + 4 or crc32(data[:size]) != struct.unpack_from("<I", data, size)[0]:
            bad += 1
            continue
        seq = struct.unpack_from("<I", data, 0)[0]
        if seq > best_seq:
            best_seq = seq
            best = struct.unpack_from(slots._fmt, data, 4)
    if best is not None:
        slots.seq = best_seq
    return best, bad


def load_energy(store, imp, exp):
    rec, bad = load_slots(store._period)
    if rec is not None:
        store.period = [rec[0], rec[1], rec[2]]
        store.demand = [rec[3], rec[4]]
        store.profile_head = rec[5]
    best, bad2 = load_slots(store._energy)
    store.bad_slots = bad + bad2
    if best is None:
        return None
    imp.set(best[0], best[1])
    exp.set(best[2], best[3])
    store.flags = best[5]
    return best[4]


def restore(meter, now, cfg_error):
    fs = meter.hw.fs
    log = meter.log
    try:
        fs.mkdir("/ev")
    except OSError:
        pass
    for cat in range(7):
        ring = events.ring(fs, cat)
        last = ring.get(ring.n)
        log.bad += ring.bad
        if last is not None and last[0] > log.seq:
            log.seq = last[0]
    store = meter.store
    saved = load_energy(store, meter.imp, meter.exp)
    log.log(now, events.POWER_UP)
    if saved is not None and store.flags & FLAG_LAST_GASP:
        log.log(saved, events.POWER_FAIL, now - saved)
    events.unload("ring")


def report(meter, now, cfg_error, bad):
    """After the profile's boot: log what was found damaged, reset or rejected."""
    fs = meter.hw.fs
    log = meter.log
    if meter.store.bad_slots or log.bad or bad:
        log.log(now, events.STORE_CORRUPT)
    try:
        fs.remove("/reset.flag")  # left by meter.maint.factory_reset
        log.log(now, events.FACTORY_RESET)
    except OSError:
        pass
    if cfg_error is not None:
        print("config rejected:", cfg_error)
        log.log(now, events.CONFIG_REJECTED)
