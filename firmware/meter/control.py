# Disconnect control after DLMS/COSEM interface class 70: states 0 Disconnected, 1 Connected,
# 2 Ready_for_reconnection; transitions a-h; control modes 0-6 decide which are allowed.
# Every request answers (code, reason): 0 success, 1 hardware fault, 2 temporary failure,
# 3 denied. A refused request never touches the relay. State and mode survive power loss.
from micropython import const

from meter import events

DISCONNECTED = const(0)
CONNECTED = const(1)
READY = const(2)
# Triggers: who asks (remote, manual = local button, local = limiter/tamper) x direction.
REMOTE = const(0)
MANUAL = const(1)
LOCAL = const(2)
# Causes logged with each transition (events.CONTROL + cause * 3 + resulting state).
CAUSE_REMOTE = const(0)
CAUSE_MANUAL = const(1)
CAUSE_LIMITER = const(2)
CAUSE_TAMPER = const(3)

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
_BUTTON_MS = const(2000)
_SAMPLE_MS = const(20)


def setup(meter, hw):
    """The meter's control: state restored, relay checked, button, port and limiter."""
    from meter.slots import Slots

    cfg = meter.cfg
    relay = hw.relay
    relay.configure(cfg["relay_retries"], cfg["relay_ops_per_min"])
    ctl = Control(cfg["control_mode"], Slots(hw.fs, "/control", "BB"), relay, meter.log,
                  meter.clock)
    ctl.boot()
    ctl.button = hw.button
    ctl.port = hw.commands
    if cfg["load_limit_w"] > 0:
        from meter.limiter import Limiter

        ctl.limiter = Limiter(cfg, meter.log)
    return ctl


class Control:
    def __init__(self, mode, store, relay, log, clock):
        """mode: the configured control mode, used until one is persisted."""
        self._store = store
        self.relay = relay
        self._log = log
        self._clock = clock
        self.state = CONNECTED
        self.mode = mode if 0 <= mode <= 6 else 1
        rec = store.load() if store is not None else None
        if rec is not None and rec[0] <= READY and rec[1] <= 6:
            self.state, self.mode = rec
        if self.mode == 0:
            self.state = CONNECTED
        self.button = None
        self.port = None
        self.limiter = None
        self._latched = False  # the button acted: wait for its release
        self._line = bytearray()

    def boot(self):
        """Bring the contact where the persisted state says, pulsing only if it is not."""
        relay = self.relay
        pulsed, code = relay.boot(self.state == CONNECTED)
        now = self._clock.now()
        if pulsed:
            self._log.log(now, events.RELAY_REASSERTED)
        if code:
            self._log.log(now, events.RELAY_FAULT)

    def output_state(self):
        return self.state == CONNECTED

    def set_mode(self, mode):
        if not 0 <= mode <= 6:
            return 3, "control mode must be 0-6"
        self.mode = mode
        if mode == 0 and self.state != CONNECTED:
            return self._go(CONNECTED, CAUSE_REMOTE)
        self._save()
        return 0, "ok"

    def remote(self, cmd, args=None):
        """Entry point for remote commands: "disconnect" or "reconnect"."""
        if cmd == "disconnect":
            return self.trigger(REMOTE, 0, CAUSE_REMOTE)
        if cmd == "reconnect":
            return self.trigger(REMOTE, 1, CAUSE_REMOTE)
        return 3, "unknown command"

    def trigger(self, who, reconnect, cause):
        mode = self.mode
        if mode == 0:
            return 3, "control mode 0: always connected"
        mask = _MODES[mode]
        key = who * 2 + reconnect
        kind_allowed = False
        target = -1
        denied = -1
        for i in range(8):
            if _T[i * 3] != key:
                continue
            ok = (mask >> i) & 1
            if ok:
                kind_allowed = True
            if _T[i * 3 + 1] == self.state:
                if ok:
                    target = _T[i * 3 + 2]
                else:
                    denied = i
        if target >= 0:
            return self._go(target, cause)
        if denied >= 0 or not kind_allowed:
            return 3, "not allowed in mode %d state %d" % (mode, self.state)
        return 0, "no change"

    def _go(self, target, cause):
        old = self.state
        close = target == CONNECTED
        moves = close != (old == CONNECTED)
        if moves:
            reason = self.relay.busy()
            if reason is not None:
                return 2, reason
        # Intent first: a power cut mid-pulse is finished at boot, not undone.
        self.state = target
        self._save()
        if moves:
            code, reason = self.relay.switch(close)
            if code:
                self.state = old
                self._save()
                self._log.log(self._clock.now(), events.RELAY_FAULT)
                return code, reason
        self._log.log(self._clock.now(), events.CONTROL + cause * 3 + target)
        return 0, "ok"

    def _save(self):
        if self._store is not None:
            self._store.save(self.state, self.mode)

    # --- local services, once per poll --------------------------------------------------
    def service(self, meter):
        if self.button is not None:
            self._service_button()
        if self.port is not None:
            self._service_port()
        if self.limiter is not None:
            self.limiter.service(self, self._clock.now(), meter.inst[2])

    def _service_button(self):
        pin = self.button
        if pin.value():  # released (active low)
            self._latched = False
            return
        if self._latched:
            return
        # Pressed: follow it closely; any release before 2 s is a short press (or a bounce).
        clock = self._clock
        start = clock.ticks_ms()
        while clock.ticks_diff(clock.ticks_ms(), start) < _BUTTON_MS:
            clock.sleep_ms(_SAMPLE_MS)
            if pin.value():
                return
        self._latched = True
        self.trigger(MANUAL, self.state == READY, CAUSE_MANUAL)

    def _service_port(self):
        port = self.port
        if not port.any():
            return
        data = port.read()
        if not data:
            return
        line = self._line
        for b in data:
            if b == 10:
                self._answer(bytes(line))
                line[:] = b""
            elif len(line) < 128:
                line.append(b)

    def _answer(self, line):
        try:
            cmd = line.decode().strip().split(" ", 1)[0]
        except UnicodeError:
            cmd = ""
        code, reason = self.remote(cmd)
        self.port.write(("%d %s\n" % (code, reason)).encode())
