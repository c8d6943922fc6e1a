# Supply control at boot: restore the persisted state and mode, check the relay's contact
# against them (pulse only if it is elsewhere; without feedback re-assert once), and wire
# the button, the command port and the load limiter. Runs once, then unloads itself.
from meter import events
from meter.clock import MAX_S
from meter.control import Control
from meter.store import Slots, unload  # Slots: /control.a|b, written by meter/transition.py

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
    """(seq, state, mode) of the newest valid record, or None."""
    slots = Slots(fs, "/control", "<BB")
    rec = slots.load()[0]
    return None if rec is None else (slots.seq, rec[0], rec[1])


def setup(meter, hw):
    from meter.relay import Relay

    cfg = meter.cfg
    rec = load(hw.fs)
    state, mode = (rec[1], rec[2]) if rec else (1, cfg["control_mode"])
    ctl = Control(state, mode, hw.relay, meter.log, meter.clock, hw.fs)
    if rec:
        ctl.seq = rec[0]
    ctl.retries = cfg["relay_retries"]
    ctl.ring = [0] * (2 + max(1, cfg["relay_ops_per_min"]))
    close = ctl.state == 1  # Connected
    fb = hw.relay[2]
    if fb is None or fb.value() != close:
        code = Relay(ctl.clock, hw.relay, ctl.ring, ctl.retries).switch(close, False)[0]
        t = meter.clock.now()
        meter.log.log(t, events.RELAY_REASSERTED)
        if code:
            meter.log.log(t, events.RELAY_FAULT)
    ctl.tamper = hw.cover
    ctl.cover_cuts = cfg["tamper_disconnect"]
    ctl.button = hw.button
    ctl.port = hw.commands
    if cfg["load_limit_w"] > 0:
        from meter.limiter import Limiter

        settings = dict(LIMITER)
        problem = check_limiter(cfg["load_limiter"])
        if problem is None:
            settings.update(cfg["load_limiter"])
        else:
            print("config rejected:", problem)
            meter.log.log(meter.clock.now(), events.CONFIG_REJECTED)
        ctl.limiter = Limiter(cfg["load_limit_w"], settings, meter.log)
    for name in ("relay", "ctlboot"):
        unload(name)
    return ctl
