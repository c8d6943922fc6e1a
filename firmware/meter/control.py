# Disconnect control after DLMS/COSEM interface class 70: states 0 Disconnected, 1 Connected,
# 2 Ready_for_reconnection; transitions a-h; control modes 0-6 decide which are allowed.
# Every request answers (code, reason): 0 success, 1 hardware fault, 2 temporary failure,
# 3 denied. A refused request never touches the relay. State and mode survive power loss.
import struct
from binascii import crc32

from micropython import const

from meter import events

# States 0 Disconnected, 1 Connected, 2 Ready_for_reconnection.
_CONNECTED = const(1)
_READY = const(2)
# Triggers: who asks x direction: 0 remote, 1 manual (the button), 2 local (limiter, tamper).
_REMOTE = const(0)
_MANUAL = const(1)
# Causes logged with each transition (events.CONTROL + cause * 3 + resulting state):
# 0 remote, 1 manual, 2 load limiter, 3 tamper.

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
_SLOTS = ("/control.a", "/control.b")


class Control:
    def __init__(self, state, mode, relay, log, clock, fs=None):
        """state, mode: as persisted (meter/ctlboot.py restores them at boot)."""
        self._fs = fs
        self.relay = relay
        self._log = log
        self._clock = clock
        self.mode = mode if 0 <= mode <= 6 else 1
        self.state = state if 0 <= state <= 2 and self.mode else _CONNECTED
        self._seq = 0
        self.button = None
        self.port = None
        self.limiter = None
        self.latched = False  # the button acted: wait for its release

    def remote(self, cmd, args=None):
        """Entry point for remote commands: "disconnect" or "reconnect"."""
        if cmd == "disconnect":
            return self.trigger(_REMOTE, 0, 0)
        if cmd == "reconnect":
            return self.trigger(_REMOTE, 1, 0)
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
        close = target == _CONNECTED
        moves = close != (old == _CONNECTED)
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
        # Two alternating slot files of (seq, state, mode, CRC): see meter/ctlboot.py.
        if self._fs is None:
            return
        self._seq += 1
        rec = struct.pack("<IBB", self._seq, self.state, self.mode)
        with self._fs.open(_SLOTS[self._seq & 1], "wb") as f:
            f.write(rec + struct.pack("<I", crc32(rec)))

    def service(self, meter):
        """Once per poll: the local button, the command port, the load limiter."""
        pin = self.button
        if pin is not None:
            if pin.value():  # released (active low)
                self.latched = False
            elif not self.latched:
                from meter.button import held

                if held(pin, self._clock):
                    self.latched = True  # acts once per hold
                    self.trigger(_MANUAL, self.state == _READY, 1)
        if self.port is not None and self.port.any():
            from meter.cmdport import service

            service(self)
        if self.limiter is not None:
            self.limiter.service(self, self._clock.now(), meter.inst[2])
