# Disconnect control after DLMS/COSEM interface class 70: states 0 Disconnected, 1 Connected,
# 2 Ready_for_reconnection; transitions a-h; control modes 0-6 decide which are allowed.
# Every request answers (code, reason): 0 success, 1 hardware fault, 2 temporary failure,
# 3 denied. A refused request never touches the relay. State and mode survive power loss.
#
# Only this small object stays in RAM. Requests are rare, so the transition table
# (meter/supply/transitions.py) and the relay driver (meter/supply/relay.py) are loaded for each
# one and unloaded after it, which keeps their code out of the heap the rest of the time.

from micropython import const

from meter.runtime import compat
from meter.runtime.overlays import overlay, unload

_READY = const(2)
_REMOTE = const(0)  # triggers: 0 remote, 1 manual (the button), 2 local (limiter, tamper)
_MANUAL = const(1)
_COVER_OPEN = const(140)  # = meter.storage.events.COVER_OPEN (its own log, never overwritten)


class Control:
    def __init__(self, state, mode, relay, log, clock, fs=None):
        """state, mode: as persisted (meter/supply/startup.py restores them at boot).
        relay: the board's wiring (pin a, pin b, feedback pin or None, pulse ms, hbridge)."""
        self.fs = fs
        self.relay = relay
        self.log = log
        self.clock = clock
        self.mode = mode if 0 <= mode <= 6 else 1
        self.state = state if 0 <= state <= 2 and self.mode else 1
        self.seq = 0  # of the persisted record
        self.old = 1  # the state before a transition in progress
        self.retries = 2
        self.ring = [0, 0, 0, 0, 0, 0, 0, 0]  # rate limit: count, next, ticks of 6 ops
        self.button = None
        self.port = None
        self.line = None  # a partial line on the command port (meter/local/command_port.py)
        self.limiter = None
        self.tamper = None  # the terminal cover's switch (1 open): each opening is logged
        self.cover_cuts = False  # and disconnects (config tamper_disconnect)
        self.cover_seen = False
        self.latched = False  # the button acted: wait for its release

    def remote(self, cmd):
        """Entry point for remote commands: "disconnect" or "reconnect"."""
        if cmd == "disconnect":
            return self.trigger(_REMOTE, 0, 0)
        if cmd == "reconnect":
            return self.trigger(_REMOTE, 1, 0)
        return 3, "unknown command"

    # The MQTT command handler's methods (meter/remote/commands.py): (code, extra for the ack).
    def disconnect(self, args):
        return self._ack(self.remote("disconnect"))

    def reconnect(self, args):
        return self._ack(self.remote("reconnect"))

    def status(self, args):
        return self._ack((0, None))

    def _ack(self, result):
        code, reason = result
        extra = {"state": self.state, "output": self.state == 1, "mode": self.mode}
        if reason:
            extra["reason"] = reason
        return code, extra

    def trigger(self, who, reconnect, cause):
        """who: 0 remote, 1 manual, 2 local; cause (logged): 0 remote, 1 manual,
        2 load limiter, 3 tamper. The table and the relay driver are never loaded at once."""
        code, reason = overlay("meter.supply.transitions").run(self, who, reconnect, cause)
        if code >= 0:
            return code, reason
        compat.collect()
        from meter.supply.relay import Relay

        try:
            code, reason = Relay(self.clock, self.relay, self.ring, self.retries).switch(reason)
        finally:
            unload("meter.supply.relay")
        return overlay("meter.supply.transitions").finish(self, code, reason, cause)

    def service(self, meter):
        """Once per poll: the local button, the command port, the load limiter."""
        pin = self.button
        if pin is not None:
            if pin.value():  # released (active low)
                self.latched = False
            elif not self.latched:
                from meter.local.button import held

                ok = held(pin, self.clock)
                unload("meter.local.button")
                if ok:
                    self.latched = True  # acts once per hold
                    self.trigger(_MANUAL, self.state == _READY, 1)
        if self.port is not None and self.port.any():
            from meter.local.command_port import service

            service(self)
            unload("meter.local.command_port")
        if self.limiter is not None:
            self.limiter.service(self, self.clock.mono(), meter.inst[2])
        if self.tamper is not None:
            opened = self.tamper.value() == 1
            if opened and not self.cover_seen:
                self.log.log(self.clock.now(), _COVER_OPEN)
                if self.cover_cuts:
                    self.trigger(2, 0, 3)  # local disconnect (g), cause tamper
            self.cover_seen = opened
