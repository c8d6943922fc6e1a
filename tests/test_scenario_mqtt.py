"""Scenario commands over real MQTT: the run's own mosquitto, a proxy the World switches off
for `network_outages`, a head-end that signs commands and verifies acks. Cut-off and
reconnect in every control mode on both runtimes; the same scenario, the same report."""

from __future__ import annotations

import time

import pytest

from host_tools import headend
from simulator import mqttpath, paths
from simulator import scenario as sc
from simulator.micropython_port import heap_bytes

LOAD = [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}]  # 2.4 kW
# Modes where a remote reconnect only arms the meter (DLMS class 70 transition d) and the
# consumer's button closes the relay (e); in 2 and 4 a remote reconnect closes it (a).
ARMING_MODES = (1, 3, 5, 6)
VOLATILE = ("wall_s", "sim_s_per_wall_s", "heap_peak_bytes", "heap_device_layer_bytes",
            "flash")  # LittleFS's own write pattern differs between runtimes


def run(runtime="cpython", heapsize=sc.HEAPSIZE, **keys):
    raw = {"duration_s": 60, "load": LOAD}
    raw.update(keys)
    report = sc.run(sc.normalise(raw), runtime, heapsize=heapsize)
    assert report["coil_conflicts"] == 0 and report["relay_max_pulse_ms"] <= 100
    assert report.get("network_late", 0) == 0
    return report


def mode_scenario(mode: int) -> dict:
    return dict(
        duration_s=45, config={"control_mode": mode, "telemetry_period_s": 10},
        commands=[{"at_s": 10, "cmd": "disconnect"},
                  {"at_s": 20, "cmd": "reconnect"}, {"at_s": 40, "cmd": "status"}],
        button=[{"at_s": 30, "hold_s": 4}] if mode in ARMING_MODES else [])


def check_mode(mode: int, report: dict) -> None:
    acks = report["acks"]
    assert [a["at_s"] for a in acks] == [10, 20, 40]
    assert [a["cmd"] for a in acks] == ["disconnect", "reconnect", "status"]
    assert all(a["mac_ok"] for a in acks) and [a["n"] for a in acks] == [1, 2, 3]
    got = [(a["code"], a["state"], a["output"]) for a in acks]
    if mode == 0:  # always connected: both refused, the relay never touched
        assert got == [(3, 1, True), (3, 1, True), (0, 1, True)]
        assert report["relay_pulses"] == 0
        return
    reconnected = 2 if mode in ARMING_MODES else 1
    assert got == [(0, 0, False), (0, reconnected, reconnected == 1), (0, 1, True)]
    assert report["relay_operations"] == 2 and report["relay_closed"]
    expected = ["control_remote_disconnected"]
    if mode in ARMING_MODES:
        expected += ["control_remote_ready_for_reconnection", "control_manual_connected"]
    else:
        expected += ["control_remote_connected"]
    assert [e["name"] for e in report["control_events"]] == expected
    # the supply was off from the disconnect until the reconnect (or the button)
    on_s = 10 + (45 - (33 if mode in ARMING_MODES else 20))
    assert report["true_import_wh"] == pytest.approx(2400 * on_s / 3600, abs=1.0)


@pytest.mark.parametrize("mode", range(7))
def test_cutoff_and_reconnect_in_every_mode_cpython(mode):
    check_mode(mode, run(**mode_scenario(mode)))


@pytest.mark.micropython
def test_cutoff_and_reconnect_in_every_mode_micropython(mpy_build):
    """The whole firmware (MQTT, commands, control switching the relay) on MicroPython, in
    its full-firmware heap, through the run's own mosquitto; the same reports as CPython."""
    for mode in range(7):
        report = run("micropython", sc.HEAPSIZE, **mode_scenario(mode))
        check_mode(mode, report)
        assert report["heap_peak_bytes"] < heap_bytes(sc.HEAPSIZE)
        # the link's counts came over the wire at the end (op Y); readings at 0, 10 ... 40 s
        # (`published` also counts profile records and events once the meter sends those)
        tele = report["telemetry"]
        assert tele["received"]["telemetry"] == 5 and tele["published"] >= 5
        if mode == 6:
            cpy = run(**mode_scenario(mode))
            for key in cpy:
                if key not in VOLATILE + ("runtime",):
                    assert report[key] == cpy[key], key


def busy_scenario() -> dict:
    """Commands, hostile input, a broker outage and a power cut, all in two minutes."""
    key = "11" * 32
    captured = headend.encode_command(bytes.fromhex(key), "meter-0001", 1, "disconnect",
                                      issued=sc.normalise({"duration_s": 1})["start_unix"])
    return dict(
        duration_s=150, command_key=key,
        config={"control_mode": 2, "telemetry_period_s": 10},
        commands=[{"at_s": 10, "cmd": "disconnect"},
                  {"at_s": 15.5, "raw": captured.decode()},  # replayed
                  {"at_s": 20, "cmd": "reconnect"},
                  {"at_s": 25, "raw": "not a command"},
                  # while the broker is unreachable: kept in the meter's session at the
                  # broker, delivered when the meter is back
                  {"at_s": 50, "cmd": "status"},
                  {"at_s": 95, "cmd": "disconnect"},  # back online by then
                  {"at_s": 114, "cmd": "status"},  # while the meter has no power: the same
                  {"at_s": 135, "cmd": "reconnect"}],
        network_outages=[{"at_s": 40, "for_s": 20}],
        outages=[{"at_s": 110, "for_s": 10}])


def test_same_scenario_same_report():
    first = run(**busy_scenario())
    second = run(**busy_scenario())
    for key in VOLATILE:
        first.pop(key, None)
        second.pop(key, None)
    assert first == second
    acks = first["acks"]
    assert [(a["at_s"], a["code"], a.get("reason")) for a in acks] == [
        (10, 0, "ok"), (15.5, 5, "replay"), (20, 0, "ok"), (25, 7, "malformed"),
        (50, 0, None), (95, 0, "ok"), (114, 0, None), (135, 0, "ok")]
    assert first["commands_delivered"] == 8
    # the two sent while the meter was unreachable were answered once it was back: after the
    # network outage (40-60 s) and after the power cut (110-120 s)
    start = sc.normalise({"duration_s": 1})["start_unix"]
    assert acks[4]["t"] - start >= 60 and acks[6]["t"] - start >= 120
    assert first["reboots"] == 1 and first["relay_closed"]
    tele = first["telemetry"]
    # the counts are the live meter's (since its boot at 120 s); the head-end got them all,
    # and every ack
    assert tele["published"] >= 3 and tele["received"]["ack"] == 8
    # readings every 10 s while online: 0-40 s, from the reconnection after the outage to
    # the power cut at 110 s, and 120-150 s
    assert 9 <= tele["received"]["telemetry"] <= 12
    # store-and-forward: every logged event reached the head-end, none twice, none missing;
    # nothing is left queued; the live meter delivered at least those it logged since boot
    assert tele["records_received"]["events"] == len(first["events"]) == 8
    assert tele["seq_gaps"] == {"profile": 0, "events": 0} and tele["backlog"] == 0
    assert tele["delivered"] >= sum(1 for e in first["events"] if e["t_s"] >= 120) == 2


def test_network_outage_is_refused_fast_and_recovered():
    # Two hours without a broker: every reconnect attempt (backing off to 5 min) is refused
    # at once, metering goes on, and the meter is back online afterwards.
    started = time.monotonic()
    report = run(duration_s=3 * 3600, config={"telemetry_period_s": 60},
                 network_outages=[{"at_s": 600, "for_s": 7200}],
                 commands=[{"at_s": 3600, "cmd": "status"},
                           {"at_s": 2 * 3600 + 900, "cmd": "status"}])
    assert time.monotonic() - started < 60
    # the command sent in the outage waited at the broker and, its 5 minutes long gone when
    # the meter came back, was refused as expired; the one after it was answered
    assert [(a["at_s"], a["code"], a.get("reason")) for a in report["acks"]] == [
        (3600, 6, "expired"), (2 * 3600 + 900, 0, None)]
    assert report["meter_import_wh"] == pytest.approx(report["true_import_wh"], rel=0.01)
    tele = report["telemetry"]
    # a reading a minute for 10 minutes, and for the 50 minutes after the outage less the
    # up to 5 minutes' back-off before the meter tries again
    assert 55 <= tele["received"]["telemetry"] <= 61
    assert tele["published"] >= tele["received"]["telemetry"]


@pytest.mark.parametrize("runtime", ["cpython", pytest.param(
    "micropython", marks=pytest.mark.micropython)])
def test_hostile_commands_never_switch_the_relay(runtime, mpy_build):
    key = bytes(range(32))
    start = sc.normalise({"duration_s": 1})["start_unix"]

    def signed(n, cmd="disconnect", args=None, meter="meter-0001", k=key, issued=start + 5,
               ttl=300):
        return headend.encode_command(k, meter, n, cmd, args, issued, ttl).decode()

    good = signed(1, "status")
    hostile = [
        signed(50, k=bytes(32)),  # forged: wrong key
        signed(51, meter="meter-0002"),  # another meter's
        signed(52, ttl=-10),  # malformed: exp before t
        signed(53, issued=start - 1000, ttl=10),  # expired
        signed(1, issued=start + 4),  # replayed: counter 1 (accepted first), other bytes
        good[:90],  # truncated
        "x" * 1100,  # oversized
        good.replace('"n":1', '"n":"1"'),  # wrong type (and so a bad MAC too)
        signed(54, "self_destruct"),  # unknown command
        "",
        good,  # an exact copy of the accepted one (its ack lost): its recorded answer
    ]
    report = run(runtime, sc.HEAPSIZE, duration_s=40,
                 config={"control_mode": 2}, command_key=key.hex(),
                 commands=[{"at_s": 5, "raw": good}]
                 + [{"at_s": 6 + i, "raw": p} for i, p in enumerate(hostile)])
    reasons = [a.get("reason") for a in report["acks"]]
    assert reasons[0] is None and report["acks"][0]["code"] == 0
    assert reasons[1:] == ["bad_mac", "wrong_meter", "malformed", "expired", "replay",
                           "malformed", "too_large", "malformed", "unknown_command",
                           "malformed", None]
    assert [a.get("repeat") for a in report["acks"]] == [None] * 11 + [True]
    assert report["acks"][-1]["code"] == 0
    assert all(a["mac_ok"] for a in report["acks"])
    # each ack attributed to the message it names ("for"); no counter unless MAC-verified
    assert [a["at_s"] for a in report["acks"]] == [5] + [6 + i for i in range(len(hostile))]
    assert [a["n"] for a in report["acks"]] == [1, None, None, None, 53, 1, None, None, None,
                                                54, None, 1]
    assert report["relay_pulses"] == 0 and report["relay_closed"]


@pytest.mark.parametrize("runtime", ["cpython", pytest.param(
    "micropython", marks=pytest.mark.micropython)])
def test_forged_command_with_the_next_counter_just_before_the_genuine(runtime, mpy_build):
    """Issue 17's race in a scenario: a forged disconnect carrying the head-end's next
    counter (1) lands a moment before the genuine one; the meter answers it "bad_mac" with
    no counter and the forged message's digest, and the genuine one as usual."""
    key = bytes(range(32))
    start = sc.normalise({"duration_s": 1})["start_unix"]
    forged = headend.encode_command(bytes(32), "meter-0001", 1, "disconnect", None,
                                    start + 10).decode()
    report = run(runtime, sc.HEAPSIZE, duration_s=20, config={"control_mode": 2},
                 command_key=key.hex(),
                 commands=[{"at_s": 10, "raw": forged}, {"at_s": 10, "cmd": "disconnect"}])
    got = [(a["cmd"], a["code"], a["n"], a.get("state")) for a in report["acks"]]
    assert got == [("raw", 4, None, None), ("disconnect", 0, 1, 0)]
    assert report["acks"][0]["for"] == headend.ack_for(forged.encode())
    assert report["relay_operations"] == 1 and not report["relay_closed"]


def test_external_broker(mosquitto):
    host, port = mosquitto
    report = run(duration_s=20, broker=f"{host}:{port}", config={"meter_id": "ext-broker-1"},
                 commands=[{"at_s": 5, "cmd": "status"}])
    assert [(a["code"], a["cmd"]) for a in report["acks"]] == [(0, "status")]


def test_mosquitto_missing_is_one_line(monkeypatch):
    monkeypatch.setattr(mqttpath, "mosquitto_binary", lambda: None)
    scenario = sc.normalise({"duration_s": 5, "commands": [{"at_s": 1, "cmd": "status"}]})
    with pytest.raises(sc.ScenarioError, match="mosquitto is not installed") as err:
        sc.run(scenario)
    assert "\n" not in str(err.value)


def test_link_counts_read_from_the_live_meter(monkeypatch):
    """meter.app.current's link: published, delivered, backlog(); what a link does not have
    (yet) counts 0, a backlog that cannot be read -1."""
    import sys
    import types

    from simulator.device.wire import meter_counts

    class Link:
        published = 7
        delivered = 5

        def backlog(self):
            return 2

    app = types.SimpleNamespace(current=None)
    monkeypatch.setitem(sys.modules, "meter.app", app)
    assert meter_counts() is None  # no meter running
    app.current = types.SimpleNamespace(link=None)
    assert meter_counts() == [0, 0, 0]  # no MQTT configured
    app.current.link = Link()
    assert meter_counts() == [7, 5, 2]
    app.current.link = types.SimpleNamespace(published=3)
    assert meter_counts() == [3, 0, 0]

    def broken():
        raise OSError(5)

    app.current.link = types.SimpleNamespace(published=3, delivered=1, backlog=broken)
    assert meter_counts() == [3, 1, -1]


def test_local_port_commands_still_work():
    report = run(config={"control_mode": 2}, port_commands=[{"at_s": 10, "cmd": "disconnect"}])
    assert report["command_replies"] == ["0 ok"] and report["acks"] == []
    assert "received" not in report["telemetry"]  # no broker in this run


@pytest.mark.parametrize("raw, words", [
    ({"commands": [{"at_s": 1, "cmd": "explode"}]}, "commands[0].cmd: must be one of"),
    ({"commands": [{"cmd": "status"}]}, "commands[0].at_s: missing"),
    ({"commands": [{"at_s": 1, "cmd": "status", "args": []}]}, "args: must be a JSON object"),
    ({"commands": [{"at_s": 1, "cmd": "status", "ttl_s": 1.5}]}, "ttl_s: must be a whole"),
    ({"commands": [{"at_s": 1, "raw": 5}]}, "commands[0].raw: must be a string"),
    ({"commands": [{"at_s": 1, "raw": "x", "cmd": "status"}]}, "raw: is sent as it is, alone"),
    ({"commands": {"at_s": 1}}, "commands: must be a list"),
    ({"network_outages": [{"at_s": 1}]}, "network_outages[0].for_s: missing"),
    ({"network_outages": [{"at_s": 1, "for_s": -1}]}, "for_s: must not be negative"),
    ({"network_outages": [{"at_s": 1, "for_s": 5, "x": 1}]}, "network_outages[0].x: unknown key"),
    ({"network_outages": [{"at_s": 1, "for_s": 5}, {"at_s": 3, "for_s": 1}]},
     "network_outages[1]: overlaps network_outages[0]"),
    ({"broker": "nowhere"}, "broker: must be HOST:PORT"),
    ({"commands": [{"at_s": 1, "cmd": "status"}], "config": {"mqtt_host": "h"}},
     "config.mqtt_host: set by the run"),
])
def test_bad_network_input_is_rejected(raw, words):
    with pytest.raises(sc.ScenarioError) as err:
        sc.normalise({"duration_s": 10, **raw})
    assert words in str(err.value) and "\n" not in str(err.value)


def test_cli_runs_the_example_with_a_clean_report(tmp_path):
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "simulator", "run",
                          str(paths.ROOT / "tests" / "scenarios" / "remote_cutoff.json")],
                         cwd=paths.ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)  # the firmware's prints went to stderr
    assert [(a["cmd"], a["code"]) for a in report["acks"]] == [
        ("disconnect", 0), ("status", 0), ("reconnect", 0), ("raw", 7)]
    assert report["acks"][1]["output"] is False and report["relay_closed"]
    # off from 600 s to 2400 s: half the hour's energy
    assert report["true_import_wh"] == pytest.approx(240 * 6 * 0.97 * 0.5, abs=1)


def test_configuration_and_read_back_commands_in_a_scenario():
    """The commands beyond switching, from a scenario's head-end: the mode set remotely
    governs the next reconnect, a bad argument changes nothing, read-back pages come in the
    ack, the telemetry period takes effect at once."""
    report = run(duration_s=3700, config={"control_mode": 1, "telemetry_period_s": 600},
                 commands=[{"at_s": 10, "cmd": "set_control_mode", "args": {"mode": 9}},
                           {"at_s": 20, "cmd": "set_control_mode", "args": {"mode": 2}},
                           {"at_s": 30, "cmd": "disconnect"},
                           {"at_s": 40, "cmd": "reconnect"},
                           {"at_s": 50, "cmd": "set_telemetry_period", "args": {"seconds": 60}},
                           {"at_s": 3650, "cmd": "read_profile", "args": {"newest_first": True}},
                           {"at_s": 3660, "cmd": "billing_snapshot"}])
    acks = report["acks"]
    assert [a["cmd"] for a in acks] == ["set_control_mode"] * 2 + [
        "disconnect", "reconnect", "set_telemetry_period", "read_profile", "billing_snapshot"]
    assert all(a["mac_ok"] for a in acks)
    bad, mode, cut, back, period, page, bill = acks
    assert bad["code"] == 250 and "mode" in bad["reason"]
    assert (mode["code"], mode["mode"]) == (0, 2)
    # mode 2: a remote reconnect closes the relay at once (mode 1 would only arm it)
    assert (cut["code"], cut["state"], back["code"], back["state"]) == (0, 0, 0, 1)
    assert report["relay_operations"] == 2 and report["relay_closed"]
    assert (period["code"], period["seconds"]) == (0, 60)
    # telemetry at 0 s, then every 60 s from the change on: about 60 in the hour, not 7
    assert report["telemetry"]["received"]["telemetry"] >= 55
    rows = page["records"]  # newest first: the 3 quarter-hours and the hour closed so far
    assert page["code"] == 0 and [r[0] for r in rows] == [4, 3, 2, 1]
    assert [r[1] - rows[-1][1] for r in rows] == [2700, 1800, 900, 0]  # period ends
    assert bill["code"] == 0 and bill["record"][-1] == 1  # trigger 1: on command
    names = [e["name"] for e in report["events"]]
    assert "control_mode_set" in names and "telemetry_period_set" in names
    assert "billing_snapshot" in names
