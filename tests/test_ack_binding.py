"""Every ack names the exact command it answers (issue 17): over real mosquitto, on both
runtimes, an attacker who forges a command with the head-end's next counter just before the
genuine one, or replays a captured ack when a counter comes round again, cannot make the
head-end report anything but its own command's result; what he did is shown as a warning."""

from __future__ import annotations

import json
import time

import paho.mqtt.client as paho
import pytest

from host_tools import headend
from simulator import scenario as sc
from tests.test_remote_commands import Watcher, run_paced


class Attacker:
    """Watches the meter's topics (Watcher) and, the moment the head-end under test is
    subscribed to the ack topic and about to publish its command, gets its own message to
    the broker first: the tightest race a real attacker on the broker could win."""

    def __init__(self, watch: Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
        self.watch = watch
        self.next: tuple[str, bytes] | None = None  # (topic suffix, payload) for the next race
        self.sent: list[bytes] = []  # the head-end's commands, as published
        original = paho.Client.publish
        attacker = watch.client

        def publish(client, topic, payload=None, *args, **kwargs):
            if client is not attacker and topic.endswith("/cmd"):
                self.sent.append(payload)
                if self.next is not None:
                    suffix, forged = self.next
                    self.next = None
                    original(attacker, f"meters/{watch.meter_id}/{suffix}", forged,
                             qos=1).wait_for_publish(5)
            return original(client, topic, payload, *args, **kwargs)

        monkeypatch.setattr(paho.Client, "publish", publish)


@pytest.mark.mosquitto
@pytest.mark.parametrize("runtime", ["cpython", pytest.param("micropython",
                                                             marks=pytest.mark.micropython)])
def test_forged_command_race_and_replayed_ack(mosquitto, mpy_build, tmp_path, runtime, capsys,
                                              monkeypatch):
    host, port = mosquitto
    meter_id = f"bind-{runtime}-{time.time_ns() % 10**6}"
    keys = tmp_path / "keys.json"
    key = headend.KeyFile(keys).new_key(meter_id)
    scenario = sc.normalise({
        "duration_s": 16,
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
        "config": {"meter_id": meter_id, "mqtt_host": host, "mqtt_port": port,
                   "telemetry_period_s": 5},
        "command_key": key.hex(),
    })
    watch = Watcher(host, port, meter_id)
    attack = Attacker(watch, monkeypatch)
    thread, out = run_paced(scenario, runtime, sc.HEAPSIZE)
    kf = headend.KeyFile(keys)
    broker = (host, port)
    try:
        assert watch.wait(lambda: b"online" in watch.status, 15), out
        assert headend.send(broker, kf, meter_id, "status", timeout_s=5)["n"] == 1
        capsys.readouterr()

        # 1. The race: a forged disconnect (wrong key) with the head-end's next counter, 2,
        # reaches the meter just before the genuine one. The meter answers it "bad_mac"
        # with no counter and the forged message's digest; the head-end keeps waiting and
        # reports its own command's result, the forged ack as a warning.
        forged = headend.encode_command(bytes(32), meter_id, 2, "disconnect")
        attack.next = ("cmd", forged)
        ignored: list = []
        ack = headend.send(broker, kf, meter_id, "disconnect", timeout_s=5, ignored=ignored)
        assert ack is not None
        assert (ack["code"], ack["n"], ack["state"], ack["output"]) == (0, 2, 0, False)
        assert ack["for"] == headend.ack_for(attack.sent[-1])
        assert [(kind, a["code"], a["n"], a["for"]) for kind, a in ignored] == [
            ("foreign", 4, None, headend.ack_for(forged))]
        assert "answers another message" in capsys.readouterr().err

        # the same race through the command line: exit 0 (the genuine reconnect, which arms
        # the meter in mode 1), the forged ack shown on stderr
        attack.next = ("cmd", headend.encode_command(bytes(32), meter_id, 3, "reconnect"))
        argv = ["--broker", f"{host}:{port}", "--keys", str(keys), "--timeout", "5"]
        assert headend.main(argv + ["reconnect", meter_id]) == 0
        err = capsys.readouterr().err
        assert "ignored a signed ack (code 4 bad_mac)" in err

        # 2. A captured ack replayed for a later command with the same counter: the key file
        # restored from a backup taken before the reconnect, so the next command is 3 again.
        def reconnect_acks() -> list[bytes]:
            return [a for a in list(watch.acks)
                    if headend.match_ack(key, meter_id, attack.sent[-1], a)[0] == "ours"]

        assert watch.wait(lambda: reconnect_acks(), 5)
        captured = reconnect_acks()
        assert len(captured) == 1 and headend.decode_ack(key, captured[0])["code"] == 0
        data = json.loads(keys.read_text())
        data["meters"][meter_id]["counter"] = 2
        keys.write_text(json.dumps(data))
        attack.next = ("ack", captured[0])
        ignored = []
        ack = headend.send(broker, kf, meter_id, "disconnect", timeout_s=5, ignored=ignored)
        # the meter's real answer: a replay, nothing switched
        assert ack is not None and (ack["code"], ack["reason"], ack["n"]) == (5, "replay", 3)
        assert [(kind, a["code"], a["n"]) for kind, a in ignored] == [("foreign", 0, 3)]
        capsys.readouterr()
        ack = headend.send(broker, kf, meter_id, "status", timeout_s=5)
        assert (ack["code"], ack["n"], ack["state"]) == (0, 4, 2)  # still armed, not cut off
    finally:
        thread.join(60)
        watch.close()
    assert "error" not in out, out.get("error")
    report = out["report"]
    assert report["relay_operations"] == 1  # the genuine disconnect only
    names = [e["name"] for e in report["events"]]
    assert "cmd_rejected_bad_mac" in names
