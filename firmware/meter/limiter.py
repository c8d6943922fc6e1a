# Load limiter after DLMS interface class 71: watches active import power against a normal
# threshold (or an emergency one during its profile), disconnects locally (transition g) on
# an overload lasting limit_over_s, and, in control modes that allow local reconnection (h),
# reconnects after limit_reconnect_s, up to limit_attempts times, then waits limit_lockout_s.
# Loaded only when load_limit_w is configured.
from meter import events
from meter.control import CAUSE_LIMITER, CONNECTED, LOCAL, READY


class Limiter:
    def __init__(self, cfg, log):
        self.normal_w = cfg["load_limit_w"]
        self.emergency_w = cfg["limit_emergency_w"]
        self.emergency_at = cfg["limit_emergency_at"]  # meter seconds; 0: no profile
        self.emergency_s = cfg["limit_emergency_s"]
        self.over_s = cfg["limit_over_s"]
        self.under_s = cfg["limit_under_s"]
        self.reconnect_s = cfg["limit_reconnect_s"]
        self.max_attempts = cfg["limit_attempts"]
        self.lockout_s = cfg["limit_lockout_s"]
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
        if ctl.state == CONNECTED:
            if watts > self.threshold(now):
                self.under_since = -1
                if self.over_since < 0:
                    self.over_since = now
                if now - self.over_since >= self.over_s:
                    self.over_since = -1
                    if ctl.trigger(LOCAL, 0, CAUSE_LIMITER)[0] == 0:
                        self.tripped = True
                        if self.attempts >= self.max_attempts:
                            self.attempts = 0
                            self.retry_at = now + self.lockout_s
                            self._log.log(now, events.LIMITER_LOCKOUT)
                        else:
                            self.retry_at = now + self.reconnect_s
            else:
                self.over_since = -1
                if self.under_since < 0:
                    self.under_since = now
                if now - self.under_since >= self.under_s:
                    self.attempts = 0
        elif ctl.state == READY and self.tripped and now >= self.retry_at:
            self.tripped = False  # one try per trip; a mode without h waits for the button
            if ctl.trigger(LOCAL, 1, CAUSE_LIMITER)[0] == 0:
                self.attempts += 1
                self.under_since = -1
