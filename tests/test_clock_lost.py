"""A meter whose real-time clock lost its time (issue 17, part 3): whatever the RTC reads at
boot (2000-01-01 after an ESP32 lost its time, before the 2020 meter epoch, an invalid 2023,
past 32-bit Unix time in 2106) the meter boots, meters, connects, answers `status`, accepts
the `time_sync` that repairs it, and marks what it recorded on the invalid clock. Whole
firmware, real mosquitto, both runtimes."""

from __future__ import annotations

import pytest

from host_tools import headend
from simulator import scenario as sc
from simulator import schema
from simulator.device.timeutil import parse_iso

EPOCH = 1577836800  # meter time 0: 2020-01-01 (firmware/meter/runtime/clock.py)

KEY = bytes(range(32))
TRUE_START = parse_iso(schema.DEFAULT_START)  # the head-end's (true) clock at the run's start
RTC_STARTS = ["2000-01-01T00:00:00Z", "2019-12-31T23:00:00Z", "2023-06-01T00:00:00Z",
              "2106-03-01T00:00:00Z"]


def signed(n: int, cmd: str, at_s: int, args: dict | None = None) -> dict:
    """A command signed on the head-end's true clock (the scenario's own head-end signs on
    the meter's start time, which here is the broken RTC)."""
    issued = TRUE_START + at_s
    return {"at_s": at_s, "raw": headend.encode_command(KEY, "meter-0001", n, cmd, args,
                                                        issued).decode()}


def run_lost_clock(runtime: str, rtc_start: str) -> dict:
    sync_s = 20
    scenario = sc.normalise({
        "duration_s": 45, "start": rtc_start, "command_key": KEY.hex(),
        "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}],
        "config": {"control_mode": 2, "telemetry_period_s": 10},
        "commands": [
            signed(1, "disconnect", 5),  # refused: expiry cannot be checked
            signed(2, "status", 10),
            signed(3, "time_sync", sync_s, {"unix": TRUE_START + sync_s}),
            signed(4, "disconnect", 30),  # the clock is valid again: switched
            signed(5, "reconnect", 35),
        ]})
    return sc.run(scenario, runtime, heapsize=sc.HEAPSIZE)


@pytest.mark.parametrize("rtc_start", RTC_STARTS)
@pytest.mark.parametrize("runtime", ["cpython", pytest.param(
    "micropython", marks=pytest.mark.micropython)])
def test_lost_clock_boots_meters_answers_and_is_repaired(runtime, rtc_start, mpy_build):
    report = run_lost_clock(runtime, rtc_start)
    acks = [(a["at_s"], a["code"], a.get("reason")) for a in report["acks"]]
    assert acks == [(5, 2, "clock_unset"), (10, 0, None), (20, 0, None), (30, 0, "ok"),
                    (35, 0, "ok")]
    assert all(a["mac_ok"] for a in report["acks"])
    # before the sync the meter stamped the 2020 epoch onward (never a negative time, never
    # the broken RTC's); after it, the true time
    assert TRUE_START - EPOCH > report["acks"][1]["t"] - EPOCH >= 0
    assert abs(report["acks"][3]["t"] - (TRUE_START + 30)) <= 2
    # energy counted whatever the clock said (no supply from 30 to 35 s)
    assert report["meter_import_wh"] == pytest.approx(2400 * 40 / 3600, abs=1.0)
    tele = report["telemetry"]
    assert tele["received"]["telemetry"] >= 4  # every 10 s, from boot on
    # what happened is recorded; what was stamped on the invalid clock is marked so
    events = [(e["name"], e.get("clock_invalid", False)) for e in report["events"]]
    assert events[0] == ("power_up", True)
    assert ("cmd_rejected_temporary_failure", True) in events
    assert ("time_set_old", True) in events and ("time_set_new", False) in events
    assert ("control_remote_disconnected", False) in events
