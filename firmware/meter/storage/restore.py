# What the meter does once at boot with its stored data: restore the energy checkpoint, find
# the event logs' heads, close the profile period the power cut interrupted, and log what
# happened. Imported for the boot only, then let go (meter.runtime.overlays.unload) to spare the
# heap.
import struct
from binascii import crc32

from micropython import const

from meter.storage import events
from meter.storage.checkpoint import FLAG_LAST_GASP, JOURNAL_FMT

_SLOT = const(32)
_PER_BLOCK = const(128)
_ERASED = b"\xff" * _SLOT


def scan_journal(store):
    """Read the journal partition (meter.storage.checkpoint.EnergyStore.last_gasp): its newest
    valid record and the block it is in, where the next record goes, and which blocks must be
    erased for that (a block is clean when its written slots are a prefix with erased ones
    after). Only reads; returns (record or None, damaged records); keeps the blocks to erase
    and the room there will be in the journal's working state."""
    j = store.journal
    buf = j[4]
    bdev = j[0]
    blocks = bdev.ioctl(4, 0)
    j[3] = blocks * _PER_BLOCK
    best = None
    best_at = -1
    used = [0] * blocks
    clean = [True] * blocks
    bad = 0
    for b in range(blocks):
        for i in range(_PER_BLOCK):
            bdev.readblocks(b, buf, i * _SLOT)
            if buf == _ERASED:
                continue
            if used[b] != i:
                clean[b] = False  # written after an erased slot: not this journal's order
            used[b] = i + 1
            if crc32(memoryview(buf)[:28]) != struct.unpack_from("<I", buf, 28)[0]:
                bad += 1  # torn by a cut or damaged: skipped; its block is erased at boot
                clean[b] = False
                continue
            rec = struct.unpack_from(JOURNAL_FMT, buf, 0)
            if best is None or rec[0] >= best[0]:
                best = rec
                best_at = b
    if best is not None and clean[best_at] and used[best_at] < _PER_BLOCK:
        here, at = best_at, used[best_at]  # go on after the newest record
    else:
        here, at = (best_at + 1) % blocks, 0  # a fresh block: the next (or first) one
        if best is None:
            for b in range(blocks):
                if not used[b]:
                    here = b
                    break
    erase = [b for b in range(blocks) if used[b] and (b != here or at == 0)]
    j[1] = here * _PER_BLOCK + at
    j[2] = 0  # until the erases are done (settle_journal)
    j[6] = erase
    j[7] = blocks * _PER_BLOCK - at
    return best, bad


def load_energy(store, imp, exp, journal=True):
    """The newest of the LittleFS checkpoint and the journal's last-gasp record (journal
    False: its records are stale), into the registers; returns its time or None. Only
    reads (folding is settle_journal's)."""
    rec, bad = store._period.load()
    if rec is not None:
        store.period = [rec[0], rec[1], rec[2]]
        store.demand = [rec[3], rec[4]]
        store.profile_head = rec[5]
    best, bad2 = store._energy.load()
    store.bad_slots = bad + bad2
    j = store.journal
    if j is not None and journal:
        j[5] = None
        last, bad3 = scan_journal(store)
        store.bad_slots += bad3
        # a record written after LittleFS checkpoint seq S carries S: it is the newer one
        if last is not None and last[0] >= store._energy.seq:
            j[5] = last  # to fold into LittleFS
            best = last[1:]
    if best is None:
        return None
    imp.set(best[0], best[1])
    exp.set(best[2], best[3])
    store.flags = best[5]
    return best[4]


def settle_journal(store, imp, exp, reset):
    """At boot, on mains: fold a newer journal record into LittleFS (so it is superseded
    before its block may be erased), then erase the spent blocks; from then on the last
    gasp has room without erasing. After a factory reset the journal's records are stale:
    all of it is erased and nothing is folded."""
    j = store.journal
    if j is None:
        return
    if reset:
        blocks = j[0].ioctl(4, 0)
        j[1] = 0
        j[3] = j[7] = blocks * _PER_BLOCK
        j[6] = range(blocks)
    elif j[5] is not None:
        rec = j[5]
        store.save(imp, exp, rec[5], rec[6])
    for b in j[6]:
        j[0].ioctl(6, b)
    j[5] = j[6] = None
    j[2] = j[7]


def restore(meter, now):
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
    reset = False
    try:
        fs.stat("/reset.flag")  # left by meter.storage.factory_reset: the journal is stale
        reset = True
    except OSError:
        pass
    saved = load_energy(store, meter.imp, meter.exp, not reset)
    settle_journal(store, meter.imp, meter.exp, reset)
    log.log(now, events.POWER_UP)
    if saved is not None and store.flags & FLAG_LAST_GASP:
        log.log(saved, events.POWER_FAIL, now - saved)
    events.unload("meter.storage.ring")


def report(meter, now, cfg_error, bad):
    """After the profile's boot: log what was found damaged, reset or rejected."""
    fs = meter.hw.fs
    log = meter.log
    if meter.store.bad_slots or log.bad or bad:
        log.log(now, events.STORE_CORRUPT)
    try:
        fs.remove("/reset.flag")  # left by meter.storage.factory_reset
        log.log(now, events.FACTORY_RESET)
    except OSError:
        pass
    if cfg_error is not None:
        print("config rejected:", cfg_error)
        log.log(now, events.CONFIG_REJECTED)
