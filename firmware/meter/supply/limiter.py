# Load limiter after DLMS interface class 71: watches active import power against a normal
# threshold (or an emergency one during its profile), disconnects locally (transition g) on
# an overload lasting over_s, and, in control modes that allow local reconnection (h),
# reconnects after reconnect_s, up to `attempts` times, then waits lockout_s before trying
# again. Settings: config "load_limiter" (see meter/supply/startup.py). Loaded when load_limit_w >
# 0.
from micropython import const

from meter.storage import events

_CONNECTED = const(1)  # control states
_READY = const(2)
_LOCAL = const(2)  # trigger
_CAUSE_LIMITER = const(2)

class Limiter:
    def __init__(self, normal_w, s, log):
        """s: the load_limiter settings completed with their defaults (meter/supply/startup.py)."""
        self.normal_w = normal_w
        self.emergency_w = s["emergency_w"]
        self.emergency_at = s["emergency_at"]
        self.emergency_s = s["emergency_s"]
        self.over_s = s["over_s"]
        self.under_s = s["under_s"]
        self.reconnect_s = s["reconnect_s"]
        self.max_attempts = s["attempts"]
        self.lockout_s = s["lockout_s"]
        self._log = log
        self.over_since = -1
        self.under_since = -1
        self.tripped = False  # we disconnected and may reconnect
        self.retry_at = 0
        self.attempts = 0  # reconnections since the load was last normal long enough

    def threshold(self, now):
        at = self.emergency_at
        if self.emergency_w and at and at <= now < at + self.emergency_s:
            return self.emergency_w
        return self.normal_w

    def service(self, ctl, now, watts):
        """now: clock.mono(), which the timers run on (a time_sync moves none of them); the
        emergency profile is in meter (wall) time."""
        if ctl.state == _CONNECTED:
            if watts > self.threshold(ctl.clock.now()):
                self.under_since = -1
                if self.over_since < 0:
                    self.over_since = now
                if now - self.over_since >= self.over_s:
                    self.over_since = -1
                    if ctl.trigger(_LOCAL, 0, _CAUSE_LIMITER)[0] == 0:
                        self.tripped = True
                        if self.attempts >= self.max_attempts:
                            self.attempts = 0
                            self.retry_at = now + self.lockout_s
                            self._log.log(ctl.clock.now(), events.LIMITER_LOCKOUT)
                        else:
                            self.retry_at = now + self.reconnect_s
            else:
                self.over_since = -1
                if self.under_since < 0:
                    self.under_since = now
                if now - self.under_since >= self.under_s:
                    self.attempts = 0
        elif ctl.state == _READY and self.tripped and now >= self.retry_at:
            self.tripped = False  # one try per trip; a mode without h waits for the button
            if ctl.trigger(_LOCAL, 1, _CAUSE_LIMITER)[0] == 0:
                self.attempts += 1
                self.under_since = -1
