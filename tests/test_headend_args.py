"""The head-end command line builds each command's arguments (no broker: `send` is
replaced by a recorder), and follows read-back pages with --all."""

from __future__ import annotations

import json
import time

import pytest

from host_tools import headend


@pytest.fixture
def sent(monkeypatch, tmp_path):
    calls: list[tuple[str, dict]] = []
    pages = {0: 9, 9: 17, 17: 0}

    def fake_send(broker, keys, meter_id, cmd, args, *rest):
        calls.append((cmd, dict(args)))
        ack = {"code": 0, "n": len(calls), "id": meter_id}
        if cmd.startswith("read_"):
            ack["next"] = pages.get(args.get("start", 0), 0)
        return ack

    monkeypatch.setattr(headend, "send", fake_send)
    keys = tmp_path / "keys.json"
    headend.KeyFile(keys).new_key("m1")
    base = ["--json", "--keys", str(keys), "--broker", "127.0.0.1:1883"]
    return calls, base


@pytest.mark.parametrize("argv,cmd,args", [
    (["set_control_mode", "m1", "3"], "set_control_mode", {"mode": 3}),
    (["set_load_limit", "m1", "5000", "--args", '{"over_s": 5}'], "set_load_limit",
     {"watts": 5000, "over_s": 5}),
    (["set_telemetry_period", "m1", "30"], "set_telemetry_period", {"seconds": 30}),
    (["time_sync", "m1", "2026-01-01T00:00:00"], "time_sync", {"unix": 1767225600}),
    (["time_sync", "m1", "1767225600"], "time_sync", {"unix": 1767225600}),
    (["time_sync", "m1"], "time_sync", {}),  # send() fills in the signing time
    (["read_profile", "m1", "--since", "2026-01-01T05:30:00+05:30", "--until", "1767229200",
      "--newest-first"], "read_profile",
     {"since": 1767225600, "until": 1767229200, "newest_first": True}),
    (["read_profile", "m1", "daily", "--start", "4"], "read_profile",
     {"profile": "daily", "start": 4}),
    (["read_events", "m1", "control"], "read_events", {"category": "control"}),
    (["read_events", "m1", "5"], "read_events", {"category": 5}),  # its number, as a number
    (["billing_snapshot", "m1"], "billing_snapshot", {}),
    (["reboot", "m1"], "reboot", {}),
    (["set_control_mode", "m1", "--args", '{"mode": "x"}'], "set_control_mode",
     {"mode": "x"}),  # raw --args reach the meter, which refuses them with a reason
])
def test_arguments(sent, capsys, argv, cmd, args):
    calls, base = sent
    assert headend.main(base + argv) == 0
    assert calls == [(cmd, args)]
    assert json.loads(capsys.readouterr().out)["code"] == 0


@pytest.mark.parametrize("argv", [
    ["set_control_mode", "m1"], ["set_control_mode", "m1", "three"],
    ["set_telemetry_period", "m1", "1.5"], ["status", "m1", "4"],
    ["time_sync", "m1", "soon"], ["read_events", "m1"],
    ["disconnect", "m1", "--since", "5"], ["reboot", "m1", "--all"],
    ["read_profile", "m1", "--args", "[1]"],
])
def test_usage_errors(sent, argv):
    calls, base = sent
    with pytest.raises(SystemExit) as exc:
        headend.main(base + argv)
    assert exc.value.code == headend.EXIT_USAGE and calls == []


def test_all_follows_pages(sent, capsys):
    calls, base = sent
    assert headend.main(base + ["read_profile", "m1", "--all"]) == 0
    assert [a.get("start") for _c, a in calls] == [None, 9, 17]
    out = capsys.readouterr().out
    assert [json.loads(line)["next"] for line in out.splitlines()] == [9, 17, 0]
    assert out == ('{"code": 0, "id": "m1", "n": 1, "next": 9}\n'  # --json: as it always was
                   '{"code": 0, "id": "m1", "n": 2, "next": 17}\n'
                   '{"code": 0, "id": "m1", "n": 3, "next": 0}\n')


def test_time_sync_unix_is_the_signing_time(monkeypatch, tmp_path):
    got = []

    class Signed(Exception):
        pass

    def encode(key, meter_id, counter, cmd, args=None, issued=None, ttl_s=300):
        got.append((args, issued))
        raise Signed  # stop before any network

    monkeypatch.setattr(headend, "encode_command", encode)
    keys = headend.KeyFile(tmp_path / "k.json")
    keys.new_key("m1")
    with pytest.raises(Signed):
        headend.send(("h", 1), keys, "m1", "time_sync", {})
    (args, issued), = got
    assert args == {"unix": issued} and abs(issued - time.time()) < 5
