# The transition table of meter/supply/control.py, and the persisted state. Loaded per request.
from micropython import const

from meter.runtime.overlays import unload
from meter.storage import events
from meter.storage.checkpoint import Slots

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
    if close != (old == _CONNECTED):
        if busy(ctl):
            return 2, "rate limit: %d operations per minute" % (len(ctl.ring) - 2)
        # Intent first, with its event: a power cut mid-pulse is finished at boot, not undone,
        # and boot logs the event if the cut came before it (meter/supply/startup.py).
        ctl.state = target
        save(ctl, events.CONTROL + cause * 3 + target)
        ctl.old = old
        return -1, close  # the relay must move: Control.trigger pulses it, then finish()
    ctl.state = target
    save(ctl, events.CONTROL + cause * 3 + target)
    return finish(ctl, 0, "ok", cause)


def finish(ctl, code, reason, cause):
    """After the relay moved (or failed to): log, or put the state back on a fault."""
    if code:
        ctl.state = ctl.old
        save(ctl)
        ctl.log.log(ctl.clock.now(), events.RELAY_FAULT)
        return code, reason
    ctl.log.log(ctl.clock.now(), events.CONTROL + cause * 3 + ctl.state)
    return 0, "ok"


def busy(ctl):
    """The relay's rate limit is used up (the same rule as meter/supply/relay.py's busy())."""
    ring = ctl.ring
    clock = ctl.clock
    if ring[0] < len(ring) - 2:
        return False
    return clock.ticks_diff(clock.ticks_ms(), ring[2 + ring[1]]) < 60000


def save(ctl, code=0):
    """Persist state and mode. code: the event of the transition this record commits (the
    intent), kept with the control log's head before it: boot logs it if that log has
    nothing newer, so a cut between the two writes loses no event and logs none twice."""
    if ctl.fs is None:
        return
    head = 0
    if code:
        head = events.ring(ctl.fs, events.CAT_CONTROL).n
        unload("meter.storage.ring")
    # (seq, state, mode, event code or 0, the log's head, CRC): 15 bytes; meter/supply/startup.py
    slots = Slots(ctl.fs, "/control", "<BBBI")
    slots.seq = ctl.seq
    slots.save(ctl.state, ctl.mode, code, head)
    ctl.seq = slots.seq
