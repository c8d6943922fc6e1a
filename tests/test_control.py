"""Supply control: the emulated latching relay, the firmware's relay driver and DLMS
disconnect control, the button, the load limiter, relay faults, boot re-assertion."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simulator import paths
from simulator import scenario as sc
from simulator.device.relay_emu import LatchingRelay
from simulator.device.world import World
from simulator.micropython_port import micropython_command, micropython_env
from tests.conftest import DirFS

ROOT = Path(__file__).resolve().parent.parent
LOAD = [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}]  # 2.4 kW


def run(runtime="cpython", heapsize=sc.HEAPSIZE, **keys):
    raw = {"duration_s": 600, "load": LOAD}
    raw.update(keys)
    report = sc.run(sc.normalise(raw), runtime, heapsize=heapsize)
    assert report["coil_conflicts"] == 0
    assert report["relay_max_pulse_ms"] <= 100
    return report


def names(report):
    return [e["name"] for e in report["control_events"]]


def codes(report):
    """(code, reason) of each ack the run's head-end verified, in order."""
    assert all(a["mac_ok"] for a in report["acks"])
    return [(a["code"], a.get("reason")) for a in report["acks"]]


# --- the emulated relay on its own ------------------------------------------------------
def make_relay(hbridge=False):
    world = World(7_200_000, 0, [[0, 240.0, 10.0, 1.0, 50.0]], [])
    relay = LatchingRelay(world, 25, 26, 34, hbridge)
    return world, relay


def pulse(world, pin, ms):
    world.pin_write(pin, 1)
    world.advance(ms)
    world.pin_write(pin, 0)


@pytest.mark.parametrize("hbridge", [False, True])
def test_relay_moves_only_on_a_long_enough_pulse(hbridge):
    world, relay = make_relay(hbridge)
    assert relay.closed and world.supply_on and world.pin_read(34) == 1
    pulse(world, 26, 10)  # too short to overcome the magnet
    assert relay.closed and relay.operations == 0 and relay.pulses == 1
    pulse(world, 26, 30)
    assert not relay.closed and not world.supply_on and world.pin_read(34) == 0
    pulse(world, 26, 100)  # already open: no movement
    assert relay.operations == 1
    pulse(world, 25, 100)
    assert relay.closed and relay.operations == 2 and relay.max_pulse_ms == 100


def test_relay_records_both_coils_driven():
    world, relay = make_relay()
    world.pin_write(25, 1)
    world.pin_write(26, 1)
    world.advance(100)
    world.pin_write(25, 0)
    world.pin_write(26, 0)
    assert relay.coil_conflicts == 1 and relay.closed


def test_relay_faults_and_power_loss():
    world, relay = make_relay()
    relay.open_coil()
    pulse(world, 26, 100)
    assert relay.closed
    world2, relay2 = make_relay()
    relay2.weld()
    pulse(world2, 26, 100)
    assert relay2.closed and world2.supply_on
    # a coil energised when the board dies de-energises with it
    world3, relay3 = make_relay()
    world3.pin_write(26, 1)
    world3.advance(50)
    relay3.release()
    assert not relay3.closed and relay3.drive == 0


def test_energy_stops_while_disconnected():
    world, relay = make_relay()
    world.advance(1_800_000)
    pulse(world, 26, 100)
    world.advance(1_800_000)
    assert world.true_import_wh == pytest.approx(2400 * 0.5, abs=0.1)


# --- the pure state machine and relay driver (the same script runs on MicroPython) -----
def test_transition_table_and_driver_on_cpython():
    sys.path.insert(0, str(ROOT / "tests" / "mp"))
    try:
        import control_checks
    finally:
        sys.path.pop(0)
    cases, bad = control_checks.transition_table()
    assert cases == 126 and bad == []
    assert control_checks.main() == 0


def test_transition_table_and_driver_on_micropython(mpy_build):
    result = subprocess.run(
        micropython_command(str(ROOT / "tests" / "mp" / "control_checks.py")),
        env=micropython_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "control: 4 passed, 0 failed" in result.stdout


# --- whole-meter scenarios ----------------------------------------------------------------
@pytest.mark.parametrize("board", ["sim", "sim_hbridge"])
def test_remote_disconnect_and_reconnect(board):
    report = run(board=board, config={"control_mode": 2}, commands=[
        {"at_s": 100, "cmd": "disconnect"}, {"at_s": 300, "cmd": "reconnect"},
        {"at_s": 400, "cmd": "disconnect", "args": {"reason": "unpaid"}},
        {"at_s": 500, "cmd": "disconnect"}])
    # none of them takes an argument: one given is refused, the relay left alone (issue 18)
    assert codes(report) == [(0, "ok"), (0, "ok"), (250, "bad args: unknown argument reason"),
                             (0, "ok")]
    assert [(a.get("state"), a.get("output")) for a in report["acks"]] == [
        (0, False), (1, True), (None, None), (0, False)]
    assert names(report) == ["control_remote_disconnected", "control_remote_connected",
                             "control_remote_disconnected"]
    assert report["relay_operations"] == 3 and report["relay_pulses"] == 3
    assert not report["relay_closed"] and report["control_state"] == 0
    assert report["output_state"] is False
    # energy flowed 0-100 s and 300-500 s only (plus the 100 ms pulses and the up to
    # 200 ms the meter takes to look for commands)
    assert report["true_import_wh"] == pytest.approx(2400 * 300 / 3600, abs=0.4)


def test_mode_1_reconnect_needs_the_button():
    report = run(config={"control_mode": 1},
                 commands=[{"at_s": 100, "cmd": "disconnect"}, {"at_s": 200, "cmd": "reconnect"}],
                 button=[{"at_s": 300, "hold_s": 0.5}, {"at_s": 400, "hold_s": 3.5}])
    assert codes(report) == [(0, "ok"), (0, "ok")]
    assert report["acks"][1]["state"] == 2  # ready: armed, waiting for the button
    assert names(report) == ["control_remote_disconnected",
                             "control_remote_ready_for_reconnection",
                             "control_manual_connected"]
    assert [e["t_s"] for e in report["control_events"]][2] in (402, 403, 404)
    assert report["relay_closed"] and report["relay_operations"] == 2


def test_button_disconnects_only_where_the_mode_allows():
    held = [{"at_s": 100, "hold_s": 5}]
    allowed = run(config={"control_mode": 1}, button=held)
    assert names(allowed) == ["control_manual_ready_for_reconnection"]
    assert not allowed["relay_closed"] and allowed["control_state"] == 2
    for mode in (3, 0):
        denied = run(config={"control_mode": mode}, button=held)
        assert denied["relay_pulses"] == 0 and denied["relay_closed"]
        assert names(denied) == [] and denied["control_state"] == 1


def test_refused_remote_commands_never_touch_the_relay():
    report = run(config={"control_mode": 0}, commands=[
        {"at_s": 10, "cmd": "disconnect"}, {"at_s": 20, "cmd": "reconnect"}])
    assert [c for c, _r in codes(report)] == [3, 3]
    assert report["relay_pulses"] == 0 and report["relay_closed"]


def test_rate_limit_refuses_with_a_reason():
    commands = [{"at_s": 10 + 5 * i, "cmd": ("disconnect", "reconnect")[i % 2]}
                for i in range(8)]
    commands.append({"at_s": 100, "cmd": "disconnect"})
    report = run(config={"control_mode": 2}, commands=commands)
    replies = codes(report)
    assert replies[:6] == [(0, "ok")] * 6
    assert replies[6] == (2, "rate limit: 6 operations per minute")  # refused, not queued
    assert replies[7] == (0, "no change")  # the refused disconnect left it connected
    assert replies[8] == (0, "ok")  # a minute later it works again
    assert report["relay_operations"] == 7


def test_state_survives_power_loss_without_boot_pulses():
    report = run(config={"control_mode": 2}, port_commands=[{"at_s": 100, "cmd": "disconnect"}],
                 outages=[{"at_s": 200, "for_s": 60}, {"at_s": 400, "for_s": 10}])
    assert report["reboots"] == 2
    assert report["relay_pulses"] == 1 and not report["relay_closed"]
    assert report["control_state"] == 0 and "relay_reasserted" not in names(report)


def test_boot_reasserts_after_a_shock():
    report = run(config={"control_mode": 2}, port_commands=[{"at_s": 100, "cmd": "disconnect"}],
                 outages=[{"at_s": 200, "for_s": 60}], faults={"relay_shock_at_s": 230})
    assert not report["relay_closed"] and report["relay_pulses"] == 2
    assert [e["t_s"] for e in report["events"] if e["name"] == "relay_reasserted"] == [260]


@pytest.mark.parametrize("cut_ms, moved", [(10, False), (50, True)])
def test_power_cut_mid_pulse_is_completed_at_boot(cut_ms, moved):
    # The command is served at 100 s and its pulse starts right then. Cut 10 ms into it the
    # contact has not moved; 50 ms in it has. The intent was saved first, so either way the
    # relay ends open, and it is pulsed again at boot only when it had not moved. Modelled
    # on a board without the power-fail input, whose hold-up would carry the pulse on.
    report = run(config={"control_mode": 2}, port_commands=[{"at_s": 100, "cmd": "disconnect"}],
                 outages=[{"at_s": 100 + cut_ms / 1000, "for_s": 30}],
                 power_fail_input=False)
    assert report["reboots"] == 1
    assert not report["relay_closed"] and report["control_state"] == 0
    assert report["relay_operations"] == 1
    assert report["relay_pulses"] == (1 if moved else 2)
    assert ("relay_reasserted" in names(report)) is not moved


@pytest.mark.parametrize("fault, stuck", [("relay_weld_at_s", "closed"),
                                          ("relay_coil_open_at_s", "closed")])
def test_relay_fault_reports_the_real_state(fault, stuck):
    report = run(config={"control_mode": 2}, commands=[{"at_s": 100, "cmd": "disconnect"}],
                 faults={fault: 50})
    assert codes(report) == [(1, f"relay stuck {stuck}")]
    assert (report["acks"][0]["state"], report["acks"][0]["output"]) == (1, True)
    assert report["relay_pulses"] == 3  # one pulse and two retries
    assert report["relay_closed"] and report["control_state"] == 1 and report["output_state"]
    assert names(report) == ["relay_fault"]
    assert report["true_import_wh"] == pytest.approx(400, abs=0.1)  # never cut


def test_limiter_trips_reconnects_and_locks_out():
    load = [{"at_s": 0, "amps": 5}, {"at_s": 100, "amps": 20}]  # 1.2 kW, then 4.8 kW
    report = run(duration_s=2400, load=load,
                 config={"control_mode": 5, "load_limit_w": 3000,
                         "load_limiter": {"reconnect_s": 120, "attempts": 2, "lockout_s": 300}})
    events = [(e["t_s"], e["name"]) for e in report["control_events"]]
    kinds = {"control_limiter_ready_for_reconnection": "trip",
             "control_limiter_connected": "reconnect", "limiter_lockout": "lockout"}
    seq = [(t, kinds[n]) for t, n in events]
    assert [k for _t, k in seq[:8]] == ["trip", "reconnect", "trip", "reconnect", "trip",
                                        "lockout", "reconnect", "trip"]
    times = [t for t, _k in seq]
    # overload from 100 s (seen on the next poll): trip after 10 s, retry 120 s later,
    # twice, then a 300 s lockout; the power reading lags the load by up to one poll
    assert 110 <= times[0] <= 112
    for trip, retry in ((0, 1), (2, 3)):
        assert 120 <= times[retry] - times[trip] <= 122
        assert 10 <= times[retry + 1] - times[retry] <= 12
    assert times[5] == times[4] and 300 <= times[6] - times[5] <= 302
    assert report["coil_conflicts"] == 0


def test_limiter_without_local_reconnection_waits_for_the_button():
    load = [{"at_s": 0, "amps": 20}, {"at_s": 200, "amps": 5}]
    report = run(load=load, config={"control_mode": 1, "load_limit_w": 3000},
                 button=[{"at_s": 300, "hold_s": 3}])
    assert names(report) == ["control_limiter_ready_for_reconnection",
                             "control_manual_connected"]
    assert 10 <= report["control_events"][0]["t_s"] <= 12 and report["relay_closed"]


def test_limiter_emergency_threshold():
    from meter.runtime.clock import METER_EPOCH_UNIX

    start = sc.normalise({"duration_s": 1})["start_unix"] - METER_EPOCH_UNIX
    report = run(config={"control_mode": 5, "load_limit_w": 5000, "load_limiter": {
        "emergency_w": 2000, "emergency_at": start + 300, "emergency_s": 200}})
    trips = [e["t_s"] for e in report["control_events"]
             if e["name"] == "control_limiter_ready_for_reconnection"]
    assert trips and 310 <= trips[0] <= 312


def test_pulses_are_exact_while_the_broker_is_unreachable():
    # Telemetry fails and retries all along; a pulse is a synchronous sleep, never stretched.
    report = run(config={"control_mode": 2, "mqtt_host": "127.0.0.1", "mqtt_port": 9,
                         "telemetry_period_s": 5},
                 port_commands=[{"at_s": 30 * i, "cmd": ("reconnect", "disconnect")[i % 2]}
                                for i in range(1, 10)])
    assert report["relay_pulses"] == 9 and report["relay_max_pulse_ms"] == 100


@pytest.mark.parametrize("raw, words", [
    ({"port_commands": [{"at_s": 1, "cmd": "explode"}]}, "port_commands[0].cmd: must be one"),
    ({"port_commands": [{"at_s": 1, "cmd": "status"}]}, "one of disconnect, reconnect"),
    ({"port_commands": [{"cmd": "disconnect"}]}, "port_commands[0].at_s: missing"),
    ({"port_commands": [{"at_s": 1, "cmd": "reconnect", "args": 3}]}, "args: must be a JSON"),
    ({"button": [{"at_s": 1}]}, "button[0].hold_s: missing"),
    ({"button": [{"at_s": 1, "hold_s": -2}]}, "must not be negative"),
    ({"config": {"control_mode": 7}}, "config.control_mode: must be a whole number from 0 to 6"),
    ({"config": {"load_limit_w": -1}}, "config.load_limit_w: must not be negative"),
    ({"config": {"load_limiter": {"over_s": -1}}}, "config.load_limiter.over_s: must be a whole"),
    ({"config": {"load_limiter": {"bogus": 1}}}, "unknown load_limiter key bogus"),
    ({"faults": {"relay_weld_at_s": "soon"}}, "faults.relay_weld_at_s: must be a number"),
])
def test_bad_control_input_is_rejected(raw, words):
    with pytest.raises(sc.ScenarioError, match=words.replace("[", r"\[").replace("]", r"\]")):
        sc.normalise({"duration_s": 10, **raw})


@pytest.mark.micropython
def test_same_control_report_on_both_runtimes(mpy_build):
    keys = dict(config={"control_mode": 1, "load_limit_w": 3000},
                load=[{"at_s": 0, "amps": 5}, {"at_s": 60, "amps": 20}, {"at_s": 90, "amps": 5}],
                port_commands=[{"at_s": 150, "cmd": "disconnect"},
                               {"at_s": 200, "cmd": "reconnect"}],
                button=[{"at_s": 250, "hold_s": 3}, {"at_s": 400, "hold_s": 1}],
                outages=[{"at_s": 300, "for_s": 20}], faults={"relay_shock_at_s": 310})
    cpy = run("cpython", **keys)
    mpy = run("micropython", **keys)
    for key in ("events", "control_state", "output_state", "relay_closed", "relay_operations",
                "relay_pulses", "coil_conflicts", "command_replies", "true_import_wh"):
        assert mpy[key] == cpy[key], key
    assert names(cpy) == ["control_limiter_ready_for_reconnection",
                          "control_remote_disconnected",
                          "control_remote_ready_for_reconnection",
                          "control_manual_connected", "relay_reasserted"]


@pytest.mark.micropython
def test_control_with_telemetry_on_micropython(mpy_build):
    """Commands over MQTT load the transition table and relay driver while MQTT is loaded
    too; the run's own mosquitto."""
    report = run("micropython", heapsize=sc.HEAPSIZE, duration_s=240,
                 config={"control_mode": 1, "telemetry_period_s": 10},
                 commands=[{"at_s": 100, "cmd": "disconnect"},
                           {"at_s": 130, "cmd": "reconnect"}],
                 button=[{"at_s": 160, "hold_s": 3}, {"at_s": 200, "hold_s": 3}])
    assert codes(report) == [(0, "ok"), (0, "ok")]
    assert names(report) == ["control_remote_disconnected",
                             "control_remote_ready_for_reconnection",
                             "control_manual_connected", "control_manual_ready_for_reconnection"]
    assert report["reboots"] == 0 and report["heap_peak_bytes"] < 80 * 1024
    tele = report["telemetry"]
    assert tele["published"] >= tele["received"]["telemetry"] == 24  # every 10 s


@pytest.mark.parametrize("enabled", [True, False])
def test_cover_open_disconnects_when_configured(enabled):
    report = run(config={"control_mode": 1, "tamper_disconnect": enabled},
                 cover_open=[{"at_s": 100, "for_s": 50}, {"at_s": 200, "for_s": 20}],
                 button=[{"at_s": 300, "hold_s": 3}] if enabled else [])
    # every opening is logged in the cover log, whether or not it disconnects
    opened = [(e["t_s"], e["name"]) for e in report["events"] if e["code"] == 140]
    assert opened == [(100, "cover_open"), (200, "cover_open")]
    if enabled:
        assert names(report) == ["control_tamper_ready_for_reconnection",
                                 "control_manual_connected"]
        assert report["control_events"][0]["t_s"] == 100
        assert report["relay_operations"] == 2
    else:
        assert names(report) == [] and report["relay_pulses"] == 0
    assert report["relay_closed"]


def test_control_record_of_earlier_firmware_is_read(tmp_path):
    """Issue 18 made the control record (state, mode, transition event, control log head);
    a meter updated in the field still finds its (state, mode) record: a disconnected
    consumer stays disconnected across the update."""
    paths.ensure_paths()
    from meter.storage.checkpoint import Slots
    from meter.supply import startup as ctlboot

    fs = DirFS(tmp_path)
    old = Slots(fs, "/control", "<BB")
    for state, mode in ((1, 2), (0, 2)):  # the newest: Disconnected
        old.save(state, mode)
    assert ctlboot.load(fs) == (2, 0, 2, 0, 0)
    assert ctlboot.missing(fs, ctlboot.load(fs)) == 0  # no event to complete
    new = Slots(fs, "/control", "<BBBI")
    new.seq = 2
    new.save(1, 2, 151, 0)  # a reconnect's intent, written over the older slot
    assert ctlboot.load(fs) == (3, 1, 2, 151, 0)
