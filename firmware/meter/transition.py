# The transition table of meter/control.py, and the persisted state. Loaded per request.
import struct
from binascii import crc32

from micropython import const

from meter import events
from meter.relay import Relay

_CONNECTED = const(1)
# Transitions a..h as (trigger * 2 + reconnect, from, to).
_T = (b"\x01\x00\x01"  # a remote_reconnect 0->1
      b"\x00\x01\x00"  # b remote_disconnect 1->0
      b"\x00\x02\x00"  # c remote_disconnect 2->0
      b"\x01\x00\x02"  # d remote_reconnect 0->2
      b"\x03\x02\x01"  # e manual_reconnect 2->1
      b"\x02\x01\x02"  # f manual_disconnect 1->2
      b"\x04\x01\x02"  # g local_disconnect 1->2
      b"\x05\x02\x01")  # h local_reconnect 2->1
# Allowed transitions per control mode, bit 0 = a ... bit 7 = h.
_MODES = b"\x00\x7e\x77\x5e\x57\xfe\xde"
SLOTS = ("/control.a", "/control.b")  # (seq, state, mode, CRC), the newer valid one wins


def run(ctl, who, reconnect, cause):
    mode = ctl.mode
    if mode == 0:
        return 3, "control mode 0: always connected"
    mask = _MODES[mode]
    key = who * 2 + reconnect
    kind_allowed = False
    target = -1
    denied = False
    for i in range(8):
        if _T[i * 3] != key:
            continue
        ok = (mask >> i) & 1
        if ok:
            kind_allowed = True
        if _T[i * 3 + 1] == ctl.state:
            if ok:
                target = _T[i * 3 + 2]
            else:
                denied = True
    if target < 0:
        if denied or not kind_allowed:
            return 3, "not allowed in mode %d state %d" % (mode, ctl.state)
        return 0, "no change"
    old = ctl.state
    close = target == _CONNECTED
    moves = close != (old == _CONNECTED)
    relay = Relay(ctl.clock, ctl.relay, ctl.ring, ctl.retries)
    if moves:
        reason = relay.busy()
        if reason is not None:
            return 2, reason
    # Intent first: a power cut mid-pulse is finished at boot, not undone.
    ctl.state = target
    save(ctl)
    if moves:
        code, reason = relay.switch(close)
        if code:
            ctl.state = old
            save(ctl)
            ctl.log.log(ctl.clock.now(), events.RELAY_FAULT)
            return code, reason
    ctl.log.log(ctl.clock.now(), events.CONTROL + cause * 3 + target)
    return 0, "ok"


def save(ctl):
    if ctl.fs is None:
        return
    ctl.seq += 1
    rec = struct.pack("<IBB", ctl.seq, ctl.state, ctl.mode)
    with ctl.fs.open(SLOTS[ctl.seq & 1], "wb") as f:
        f.write(rec + struct.pack("<I", crc32(rec)))


def load(fs):
    """(seq, state, mode) of the newest valid record, or None."""
    best = None
    for path in SLOTS:
        try:
            with fs.open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if len(data) == 10 and crc32(data[:6]) == struct.unpack_from("<I", data, 6)[0]:
            rec = struct.unpack_from("<IBB", data)
            if best is None or rec[0] > best[0]:
                best = rec
    return best
