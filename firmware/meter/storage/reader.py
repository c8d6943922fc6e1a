# Reading stored records back (remote read-back, the boot's event scan), imported only when
# used.


def read(ring, since=0, until=0x7FFFFFFF, newest_first=False, start=0, tfield=0):
    """Stream a ring's records whose time (field tfield) is in [since, until], oldest or
    newest first, one record in RAM at a time. Yields (n, payload); page by passing the last
    n seen +1 (oldest first) or -1 (newest first) as start."""
    last = ring.n
    oldest = last - ring.capacity + 1 if last > ring.capacity else 1
    if newest_first:
        n = start if 0 < start < last else last
        step = -1
    else:
        n = start if start > oldest else oldest
        step = 1
    f = None
    at = -1
    try:
        while oldest <= n <= last:
            seg = ring.segment(n)
            if seg != at:  # one segment file open at a time
                if f is not None:
                    f.close()
                    f = None
                at = seg
                try:
                    f = ring._fs.open(ring._file(seg), "rb")
                except OSError:
                    pass
            rec = ring.get(n, f) if f is not None else None
            if rec is not None and since <= rec[tfield] <= until:
                yield n, rec
            n += step
    finally:
        if f is not None:
            f.close()


# Event log categories by number (meter.storage.events): the names used by read-back tools.
CATEGORY_NAMES = ("voltage", "current", "power", "transaction", "other", "control", "cover")


def read_events(fs, cat, since=0, until=0x7FFFFFFF, newest_first=False, start=0):
    """Stream (n, (seq, time, code, category, pad, cV, mA, import Wh, value)) of one event
    category with time in [since, until]; paging as for read()."""
    from meter.storage import events

    return read(events.ring(fs, cat), since, until, newest_first, start, 1)


def all_events(fs):
    """Yield (seq, meter time, code) of every valid event of every category."""
    for cat in range(len(CATEGORY_NAMES)):
        for _n, rec in read_events(fs, cat):
            yield rec[0], rec[1], rec[2]
