# Supply control at boot: restore the persisted state and mode, check the relay's contact
# against them (pulse only if it is elsewhere; without feedback re-assert once), and wire
# the button, the command port and the load limiter. Runs once, then unloads itself.
from meter import events
from meter.control import Control, unload


def setup(meter, hw):
    from meter.relay import Relay
    from meter.transition import load

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
    ctl.button = hw.button
    ctl.port = hw.commands
    if cfg["load_limit_w"] > 0:
        from meter.limiter import Limiter

        ctl.limiter = Limiter(cfg, meter.log)
    for name in ("relay", "transition", "ctlboot"):
        unload(name)
    return ctl
