# Supply control's pure logic on real MicroPython (and CPython, from tests/test_control.py):
# the DLMS class 70 transition table in every control mode, checked against the issue's
# table written out independently, and the relay driver against fake pins and a fake clock.
import sys

from fakes import FakeClock
from meter.supply.control import Control
from meter.supply.relay import Relay

# The table: transitions and, per mode, the ones allowed.
TRANSITIONS = {
    "a": ("remote", 1, 0, 1), "b": ("remote", 0, 1, 0), "c": ("remote", 0, 2, 0),
    "d": ("remote", 1, 0, 2), "e": ("manual", 1, 2, 1), "f": ("manual", 0, 1, 2),
    "g": ("local", 0, 1, 2), "h": ("local", 1, 2, 1),
}
ALLOWED = {0: "", 1: "bcfgde", 2: "bcfgae", 3: "bcgde", 4: "bcgae", 5: "bcfgdeh", 6: "bcgdeh"}
WHO = {"remote": 0, "manual": 1, "local": 2}


class FakeLog:
    def __init__(self):
        self.codes = []

    def log(self, now, code, value=0):
        self.codes.append(code)


def expected(mode, state, who, reconnect):
    """(code, new state) by the table."""
    if mode == 0:
        return 3, 1
    kinds = [k for k in TRANSITIONS
             if TRANSITIONS[k][0] == who and TRANSITIONS[k][1] == reconnect]
    here = [k for k in kinds if TRANSITIONS[k][2] == state]
    ok = [k for k in here if k in ALLOWED[mode]]
    if ok:
        return 0, TRANSITIONS[ok[0]][3]
    if here or not [k for k in kinds if k in ALLOWED[mode]]:
        return 3, state
    return 0, state


def transition_table():
    """Every mode x state x trigger; returns the list of mismatches."""
    bad = []
    cases = 0
    for mode in range(7):
        for state in range(3):
            for who in ("remote", "manual", "local"):
                for reconnect in (0, 1):
                    clock = FakeClock()
                    trace = []
                    wiring = (FakePin("a", trace, clock), FakePin("b", trace, clock), None,
                              100, False)
                    log = FakeLog()
                    ctl = Control(state, mode, wiring, log, clock)
                    start = ctl.state
                    code, reason = ctl.trigger(WHO[who], reconnect, 0)
                    calls = [t[1] == "a" for t in trace if t[2] == 1]
                    want_code, want_state = expected(mode, state, who, reconnect)
                    moved = (want_state == 1) != (start == 1)
                    want_calls = [want_state == 1] if (want_code == 0 and moved) else []
                    logged = 1 if (want_code == 0 and want_state != start) else 0
                    got = (code, ctl.state, calls, len(log.codes))
                    want = (want_code, want_state, want_calls, logged)
                    cases += 1
                    if got != want or not isinstance(reason, str):
                        bad.append((mode, state, who, reconnect, got, want))
    return cases, bad


class FakePin:
    def __init__(self, name, trace, clock):
        self.name = name
        self.trace = trace
        self.clock = clock
        self.level = 0

    def value(self, level=None):
        if level is None:
            return self.level
        self.level = level
        self.trace.append((self.clock.ms, self.name, level))


def relay_pulses_one_coil_at_a_time():
    clock = FakeClock()
    trace = []
    a = FakePin("a", trace, clock)
    b = FakePin("b", trace, clock)
    fb = FakePin("fb", [], clock)
    relay = Relay(clock, (a, b, fb, 100, False), [0, 0, 0, 0, 0, 0, 0, 0])
    fb.level = 1  # it will not move: stuck closed
    code, _ = relay.switch(False)
    on = [t for t in trace if t[2] == 1]
    ok = code == 1 and len(on) == 3 and all(t[1] == "b" for t in on)
    # never both high, and each pulse exactly 100 ms
    high = {"a": 0, "b": 0}
    start = 0
    for ms, name, level in trace:
        if level and not high[name]:
            start = ms
        if not level and high[name]:
            ok = ok and ms - start == 100
        high[name] = level
        ok = ok and not (high["a"] and high["b"])
    return ok and not a.level and not b.level


def relay_rate_limit():
    clock = FakeClock()
    trace = []
    relay = Relay(clock, (FakePin("a", trace, clock), FakePin("b", trace, clock), None, 100,
                          False), [0, 0, 0, 0, 0, 0, 0, 0])
    codes = [relay.switch(i % 2 == 0)[0] for i in range(8)]
    clock.ms += 60000
    later = relay.switch(True)[0]
    return codes == [0, 0, 0, 0, 0, 0, 2, 2] and later == 0


def relay_released_on_exception():
    class Boom(Exception):
        pass

    class BadClock(FakeClock):
        def sleep_ms(self, ms):
            self.ms += ms
            if ms >= 50:  # in the middle of the pulse
                raise Boom()

    clock = BadClock()
    trace = []
    a = FakePin("a", trace, clock)
    b = FakePin("b", trace, clock)
    relay = Relay(clock, (a, b, None, 100, True), [0, 0, 0])
    try:
        relay.switch(True)
    except Boom:
        pass
    energised = [t for t in trace if t[2] == 1]
    return (a.level == 0 and b.level == 0 and energised == [(2, "a", 1)]
            and trace[-2:] == [(102, "a", 0), (102, "b", 0)])


def main():
    passed = 0
    failed = 0
    cases, bad = transition_table()
    for item in bad:
        print("FAIL table", item)
    checks = [
        ("transition table, %d cases" % cases, cases == 7 * 3 * 6 and not bad),
        ("relay pulses one coil at a time, retries, fault", relay_pulses_one_coil_at_a_time()),
        ("relay rate limit", relay_rate_limit()),
        ("relay de-energised on an exception", relay_released_on_exception()),
    ]
    for name, ok in checks:
        print(("ok " if ok else "FAIL ") + name)
        if ok:
            passed += 1
        else:
            failed += 1
    print("control: %d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
