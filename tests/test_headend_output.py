"""What the head-end prints: acks made by the real firmware (meter/remote/commands.py and the real
disconnect control, in-process as in tests/test_cmdx.py) through the head-end's command line,
in words by default and, with --json, as the same JSON lines as before."""

from __future__ import annotations

import json
import re

import pytest
from meter.runtime.clock import METER_EPOCH_UNIX
from meter.storage import events

from host_tools import headend
from simulator import event_names
from tests.test_cmdx import METER, START, Rig, fill_block, machine  # noqa: F401 (fixture)

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ ")


@pytest.fixture
def meter(monkeypatch, tmp_path):
    """headend.main() against a real firmware command path: send() hands the command to it."""
    (tmp_path / "flash").mkdir()
    rig = Rig(tmp_path / "flash")
    if not hasattr(rig.meter, "durable"):  # Meter.durable() (registers on flash first), which
        rig.meter.durable = lambda: True  # billing_snapshot calls on main since 9b72060
    acks = []

    def fake_send(broker, keys, meter_id, cmd, args, *rest):
        acks.append(rig.send(cmd, args))
        return acks[-1]

    monkeypatch.setattr(headend, "send", fake_send)
    keys = tmp_path / "keys.json"
    headend.KeyFile(keys).new_key(METER)
    base = ["--keys", str(keys), "--broker", "127.0.0.1:1883"]
    return rig, base, acks


def run(capsys, base, *argv) -> tuple[int, str]:
    code = headend.main(base + [argv[0], METER] + list(argv[1:]))
    return code, capsys.readouterr().out


def test_an_armed_reconnect_says_so_in_words(meter, capsys):
    rig, base, _acks = meter
    assert run(capsys, base, "disconnect")[0] == 0 and not rig.contact.closed
    code, out = run(capsys, base, "reconnect")  # control mode 1 (default): transition d
    assert code == 0  # the meter did what DLMS mode 1 asks; the words say what that means
    assert rig.ctl.state == 2 and not rig.contact.closed
    line, = out.splitlines()
    assert "reconnect: armed" in line
    assert "ready_for_reconnection, relay open (supply off)" in line
    assert "until the consumer presses the meter's button" in line
    # the consumer's button then closes it; status says so
    assert run(capsys, base, "status")[1].count("ready_for_reconnection") == 1
    rig.ctl.trigger(1, 1, 1)  # manual reconnect (the button): transition e
    code, out = run(capsys, base, "status")
    assert code == 0 and "status: ok; connected, relay closed (supply on), control mode 1" in out
    # a remote reconnect in mode 2 closes the relay directly: no "armed"
    assert run(capsys, base, "set_control_mode", "2")[0] == 0
    run(capsys, base, "disconnect")
    code, out = run(capsys, base, "reconnect")
    assert code == 0 and "armed" not in out and "connected, relay closed (supply on)" in out


def test_every_command_reads_in_words(meter, capsys, machine):  # noqa: F811
    rig, base, acks = meter
    fill_block(rig, 3, rig.clock.now() - 3 * 900)
    rig.log.log(rig.clock.now(), events.POWER_UP)
    cases = [
        (("status",), "status: ok; connected, relay closed (supply on), control mode 1"),
        (("disconnect",), "disconnect: ok; disconnected, relay open (supply off)"),
        (("set_control_mode", "3"), "set_control_mode: ok; disconnected, relay open"),
        (("set_load_limit", "5000", "--args", '{"over_s": 5}'), "load limit 5000 W (over_s 5)"),
        (("set_load_limit", "0"), "set_load_limit: ok; load limit off"),
        (("set_telemetry_period", "30"), "set_telemetry_period: ok; telemetry every 30 s"),
        (("time_sync", str(START + 5)), "time_sync: ok; clock stepped +5 s, meter time now"
                                        " 2026-01-01T00:00:05Z"),
        (("billing_snapshot",), "billing record #1 2026-01-01T00:00:05Z import 12345 Wh,"
                                " export 0 Wh, max demand 4200 W at 2025-12-31T23:50:00Z,"
                                " command"),
        (("read_profile",), "read_profile: ok; 3 block profile records; no more"),
        (("read_profile", "billing"), "1 billing profile records; no more"),
        (("read_events", "control"), "read_events: ok; 1 control events; no more"),
        (("set_telemetry_period", "60"), "telemetry every 60 s"),
        (("set_control_mode", "1"), "control mode 1"),
        (("read_events", "3"), "8 transaction events; more from --start 9"),
        (("read_events", "other"), "1 other events; no more"),
        (("reboot",), "reboot: ok; rebooting"),
        (("set_control_mode", "9"), "set_control_mode: refused, code 250 other: bad args: mode"
                                    " must be a whole number 0-6"),
    ]
    outputs = []
    for argv, want in cases:
        code, out = run(capsys, base, *argv)
        assert code == (1 if "refused" in want else 0), out
        head, *rows = out.splitlines()
        assert want in head, (argv, out)
        assert ISO.match(head) and f" {METER} {argv[0]}: " in head
        assert "{" not in out and "[" not in out  # no raw JSON for a person
        assert len(rows) == len(acks[-1].get("records", ()))  # one line per record
        outputs.append(out)
    text = "".join(outputs)
    from host_tools import readable

    # the block profile: times in ISO, volts, amps and flags in words
    assert "  #1 2025-12-31T23:15:00Z import 0 Wh, export 0 Wh, avg 240.00 V 1.000 A," \
        " flags -" in text
    # every event row carries its code with the firmware's name for it (the simulator's
    # reports use the same function), and its time in ISO
    events_seen = [r for a in acks if a.get("records") and len(a["records"][0]) == 8
                   for r in a["records"]]
    assert {r[3] for r in events_seen} >= {1, 150, 220, 221, 222, 223, 224, 225}
    for n, seq, t, code, *_rest in events_seen:
        name = event_names.event_name(code)
        assert name != "unknown"
        assert f"  #{n} seq {seq} {readable.iso(t)} {code} {name}: " in text
    assert "150 control_remote_disconnected" in text and "1 power_up" in text
    assert "220 control_mode_set" in text and "value 3" in text


def test_flags_triggers_and_states_are_the_firmwares():
    from meter.storage import profiles as profile
    from meter.supply.control import _READY

    from host_tools import readable

    assert readable.state_name(_READY) == "ready_for_reconnection"
    got = readable.record_line("block", [7, START, 1, 2, 23456, 789,
                                         profile.POWER_FAILED | profile.PARTIAL | 8 | 64])
    assert got.endswith("avg 234.56 V 0.789 A, flags power_failed,partial,clock_set,0x40")
    got = readable.record_line("billing", [2, START, 5, 6, 7, 0, profile.BILL_MONTHLY])
    assert got.endswith("max demand 7 W at none, monthly")
    assert readable.record_line("daily", ["odd"]) == "['odd']"  # another shape: as it came
    assert readable.iso(METER_EPOCH_UNIX) == "2020-01-01T00:00:00Z"


def test_rejections_and_unknown_fields_are_not_lost(meter, capsys):
    rig, base, _acks = meter
    rig.n = 10
    run(capsys, base, "status")
    rig.n = 10  # the same counter again, another message: a replay (the very same bytes
    # would get the recorded answer, "repeat": README "Wire format")
    code, out = run(capsys, base, "reconnect")
    assert code == 1 and out.endswith("reconnect: refused, code 5 replay\n")
    from host_tools import readable

    ack = {"id": METER, "n": 3, "code": 0, "t": START, "extra": [1]}
    assert readable.lines("status", ack) == [
        f"2026-01-01T00:00:00Z {METER} status: ok; extra [1]"]


def test_json_is_the_same_bytes_as_before(meter, capsys, machine):  # noqa: F811
    rig, base, acks = meter
    fill_block(rig, 20, rig.clock.now() - 20 * 900)
    for argv in (("status",), ("disconnect",), ("reconnect",), ("set_control_mode", "9"),
                 ("read_profile", "--all")):
        code, out = run(capsys, ["--json"] + base, *argv)
        assert out == "".join(json.dumps(a, sort_keys=True) + "\n" for a in acks)
        acks.clear()
    # and, pinned byte for byte, an ack as the head-end printed it before, with the two
    # keys of ack version 2 (README "Wire format") that bind it to its command
    assert run(capsys, ["--json"] + base, "reconnect")[1] == (
        '{"code": 0, "for": "23f96fba0af2692aa05b5e31890de02c", "id": "meter-0042", "mode": 1,'
        ' "n": 8, "output": false, "reason": "no change", "state": 2, "t": 1767225600,'
        ' "v": 2}\n')


def test_an_ack_that_cannot_be_put_in_words_is_printed_as_json(meter, capsys, monkeypatch):
    from host_tools import readable

    def broken():
        raise ImportError("no module named 'meter'")

    monkeypatch.setattr(readable, "names", broken)
    _rig, base, acks = meter
    code = headend.main(base + ["disconnect", METER])
    out, err = capsys.readouterr()
    assert code == 0 and out == json.dumps(acks[-1], sort_keys=True) + "\n"
    assert "cannot put this ack in words (ImportError" in err
