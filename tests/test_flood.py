"""Issue 18: a genuine command right behind a flood of rejected ones is not lost, and is
answered within a bound (README "Wire format": the meter handles up to 32 incoming messages,
or 100 ms, a look, 5 looks a second). Over a real mosquitto, on both runtimes, as a scenario
with `raw` commands. Wall-clock figures (a flood through a live broker) are in `make bench`
(simulator/bench.py flood_holdup)."""

from __future__ import annotations

import pytest

from host_tools import headend
from simulator import scenario as sc

KEY = bytes(range(32))
FLOOD = 2000
RATE = 100  # flood messages a second: more than the 20 a second the meter used to take


@pytest.mark.parametrize("runtime", ["cpython", pytest.param(
    "micropython", marks=pytest.mark.micropython)])
def test_a_genuine_command_behind_a_flood_is_answered_at_once(runtime, mpy_build):
    start = sc.normalise({"duration_s": 1})["start_unix"]
    flood_s = FLOOD / RATE

    def forged(i):  # well-formed, the meter's id, a wrong key: rejected after the HMAC
        return headend.encode_command(bytes(32), "meter-0001", 100 + i, "disconnect", None,
                                      start + 5).decode()

    # every 10 ms one, for 20 s, then the genuine cut-off in the same stream
    commands = [{"at_s": 5 + i / RATE, "raw": forged(i)} for i in range(FLOOD)]
    end = 5 + flood_s
    commands.append({"at_s": end, "cmd": "disconnect"})
    report = sc.run(sc.normalise({
        "duration_s": end + 10, "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}],
        "config": {"control_mode": 2, "telemetry_period_s": 60}, "command_key": KEY.hex(),
        "commands": commands}), runtime)
    # nothing held up on the way: every message reached the meter when it was sent
    assert report["network_late"] == 0
    assert report["commands_delivered"] == FLOOD + 1
    acks = report["acks"]
    assert all(a["mac_ok"] for a in acks)
    assert [(a["cmd"], a["code"]) for a in acks[:-1]] == [("raw", 4)] * FLOOD
    last = acks[-1]
    assert (last["cmd"], last["code"], last["n"], last["state"]) == ("disconnect", 0, 1, 0)
    # answered in the second it was sent (ack t: the meter's Unix seconds; the flood kept up)
    assert last["t"] - (start + end) <= 1
    assert report["relay_operations"] == 1 and not report["relay_closed"]
    # the rejections logged as rate-limited events, not 2000 of them
    assert 1 <= sum(e["code"] == 204 for e in report["events"]) <= 2
