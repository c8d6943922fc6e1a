# Supply control at boot: restore the persisted state and mode, check the relay's contact
# against them (pulse only if it is elsewhere; without feedback re-assert once), and wire
# the button, the command port and the load limiter. Runs once, then forgets itself so its
# code does not stay in the heap.
import struct
import sys
from binascii import crc32

from meter import events
from meter.control import Control

_SLOTS = ("/control.a", "/control.b")


def load(fs):
    """(seq, state, mode) of the newest valid slot, or None."""
    best = None
    for path in _SLOTS:
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


def setup(meter, hw):
    cfg = meter.cfg
    relay = hw.relay
    relay.retries = cfg["relay_retries"]
    relay.ops = [0] * max(1, cfg["relay_ops_per_min"])
    rec = load(hw.fs)
    state, mode = (rec[1], rec[2]) if rec else (1, cfg["control_mode"])
    ctl = Control(state, mode, relay, meter.log, meter.clock, hw.fs)
    if rec:
        ctl._seq = rec[0]
    close = ctl.state == 1  # Connected
    fb = relay.feedback
    if fb is None or fb.value() != close:
        code = relay.switch(close, False)[0]
        t = meter.clock.now()
        meter.log.log(t, events.RELAY_REASSERTED)
        if code:
            meter.log.log(t, events.RELAY_FAULT)
    ctl.button = hw.button
    ctl.port = hw.commands
    if cfg["load_limit_w"] > 0:
        from meter.limiter import Limiter

        ctl.limiter = Limiter(cfg, meter.log)
    sys.modules.pop(__name__, None)
    import meter as package

    if hasattr(package, "ctlboot"):
        delattr(package, "ctlboot")
    return ctl
