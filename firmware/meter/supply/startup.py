# Supply control at boot: restore the persisted state and mode, check the relay's contact
# against them (pulse only if it is elsewhere; without feedback re-assert once), and wire
# the button, the command port and the load limiter. Runs once, then unloads itself.
from meter.runtime.clock import MAX_S
from meter.runtime.overlays import unload
from meter.storage import events
from meter.storage.checkpoint import (
    Slots,  # Slots: /control.a|b, written by meter/supply/transitions.py
)
from meter.supply.control import Control

# config "load_limiter": {key: whole number 0 ... 2^24 (194 days in s: timers stay small ints),
# emergency_at 0 ... MAX_S (meter seconds)}; anything else is refused.
LIMITER = {
    "emergency_w": 0,  # the emergency profile's threshold
    "emergency_at": 0,  # meter seconds it starts (0: no profile)
    "emergency_s": 0,  # and how long it lasts
    "over_s": 10,  # overload lasting this long disconnects
    "under_s": 10,  # normal load lasting this long forgets earlier attempts
    "reconnect_s": 120,
    "attempts": 4,
    "lockout_s": 300,
}


def check_limiter(settings):
    """None, or why the load_limiter settings are refused."""
    for key in settings:
        value = settings[key]
        if key not in LIMITER:
            return "unknown load_limiter key " + key
        hi = MAX_S if key == "emergency_at" else 0x1000000
        if type(value) is not int or not 0 <= value <= hi:
            return "load_limiter.%s must be a whole number 0-%d" % (key, hi)
    return None


def load(fs):
    """(seq, state, mode, event code, control log head) of the newest valid record, or None.
    A record of the firmware before transition events were kept with it: (seq, state, mode,
    0, 0)."""
    for fmt in ("<BBBI", "<BB"):
        slots = Slots(fs, "/control", fmt)
        rec = slots.load()[0]
        if rec is not None:
            rec = tuple(rec) + (0, 0)
            return (slots.seq, rec[0], rec[1], rec[2], rec[3])
    return None


def missing(fs, rec):
    """The event of the transition the record rec commits if the control log has nothing
    after it (the cut came between the intent and its event), else 0."""
    if not rec or not rec[3]:
        return 0
    n = events.ring(fs, events.CAT_CONTROL).n
    unload("meter.storage.ring")
    return rec[3] if n <= rec[4] else 0


def setup(meter, hw):
    from meter.supply.relay import Relay

    cfg = meter.cfg
    rec = load(hw.fs)
    state, mode = (rec[1], rec[2]) if rec else (1, cfg["control_mode"])
    ctl = Control(state, mode, hw.relay, meter.log, meter.clock, hw.fs)
    if rec:
        ctl.seq = rec[0]
    ctl.retries = cfg["relay_retries"]
    ctl.ring = [0] * (2 + max(1, cfg["relay_ops_per_min"]))
    close = ctl.state == 1  # Connected
    # a transition cut short before its event: completed now (the relay below), logged once
    lost = missing(hw.fs, rec)
    _a, _b, fb, _ms, _hbridge = hw.relay  # the wiring (meter/runtime/hardware.py)
    code = -1  # not pulsed
    if fb is None or fb.value() != close:
        code = Relay(ctl.clock, hw.relay, ctl.ring, ctl.retries).switch(close, False)[0]
    t = meter.clock.now()
    if lost and code <= 0:
        meter.log.log(t, lost)
    if code >= 0:
        meter.log.log(t, events.RELAY_REASSERTED)
        if code:
            meter.log.log(t, events.RELAY_FAULT)
    ctl.tamper = hw.cover
    ctl.cover_cuts = cfg["tamper_disconnect"]
    ctl.button = hw.button
    ctl.port = hw.commands
    if cfg["load_limit_w"] > 0:
        from meter.supply.limiter import Limiter

        settings = dict(LIMITER)
        problem = check_limiter(cfg["load_limiter"])
        if problem is None:
            settings.update(cfg["load_limiter"])
        else:
            print("config rejected:", problem)
            meter.log.log(meter.clock.now(), events.CONFIG_REJECTED)
        ctl.limiter = Limiter(cfg["load_limit_w"], settings, meter.log)
    for name in ("meter.supply.relay", "meter.supply.startup"):
        unload(name)
    return ctl
