"""Commands over real mosquitto to the unmodified firmware on both runtimes, paced to real
time: the head-end command line signs and waits for the ack; captured, forged and oversized
messages are refused with an ack and an event, and the meter keeps metering."""

from __future__ import annotations

import json
import tempfile
import threading
import time
from pathlib import Path

import pytest

from host_tools import headend
from simulator import scenario as sc
from simulator.report import build_report
from tests.conftest import subscribe


def run_paced(scenario: dict, runtime: str, heapsize: str = sc.HEAPSIZE):
    """Run a scenario in a thread with virtual time paced to the wall clock."""
    out: dict = {}
    started = time.monotonic()

    def pace(now_ms: int) -> None:
        ahead = now_ms / 1000 - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)

    def body() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            flash = str(Path(tmp) / "flash.img")
            try:
                if runtime == "cpython":
                    raw = sc.run_cpython(scenario, flash, None, on_tick=pace)
                else:
                    raw = sc.run_micropython(scenario, flash, None, heapsize, on_tick=pace)
                raw["runtime"] = runtime
                out["report"] = build_report(scenario, raw, flash, 0.0)
            except BaseException as exc:  # reported by the test
                out["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, out


class Watcher:
    """Subscribes to a meter's ack and status topics; keeps what arrives."""

    def __init__(self, host: str, port: int, meter_id: str) -> None:
        self.acks: list[bytes] = []
        self.status: list[bytes] = []

        def on_message(_c, _u, msg):
            (self.acks if msg.topic.endswith("/ack") else self.status).append(msg.payload)

        self.client = subscribe(host, port, [(f"meters/{meter_id}/ack", 1),
                                             (f"meters/{meter_id}/status", 1)], on_message, "w")
        self.meter_id = meter_id

    def raw(self, payload: bytes) -> None:
        self.client.publish(f"meters/{self.meter_id}/cmd", payload, qos=1).wait_for_publish(5)

    def wait(self, cond, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.mosquitto
@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_commands_over_mosquitto(mosquitto, mpy_build, tmp_path, runtime, capsys):
    host, port = mosquitto
    meter_id = f"cmd-{runtime}-{time.time_ns() % 10**6}"
    keys = tmp_path / "keys.json"
    assert headend.main(["--keys", str(keys), "newkey", meter_id]) == 0
    key = headend.KeyFile(keys).key(meter_id)
    assert key.hex() not in capsys.readouterr().out  # the key is never printed
    scenario = sc.normalise({
        "duration_s": 12,
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
        "config": {"meter_id": meter_id, "mqtt_host": host, "mqtt_port": port,
                   "telemetry_period_s": 5},
        "command_key": key.hex(),
    })
    watch = Watcher(host, port, meter_id)
    thread, out = run_paced(scenario, runtime, sc.HEAPSIZE)
    try:
        assert watch.wait(lambda: b"online" in watch.status, 15), out
        broker = ["--json", "--broker", f"{host}:{port}", "--keys", str(keys), "--timeout", "5"]
        # status: accepted, exit 0, the ack printed as JSON
        assert headend.main(broker + ["status", meter_id]) == 0
        ack = json.loads(capsys.readouterr().out)
        assert (ack["code"], ack["n"], ack["id"]) == (0, 1, meter_id)
        # disconnect: accepted by the disconnect control (mode 1 by default): state 0, the
        # relay opened
        assert headend.main(broker + ["disconnect", meter_id]) == 0
        ack = json.loads(capsys.readouterr().out)
        assert (ack["code"], ack["state"], ack["output"]) == (0, 0, False)
        # reconnect in mode 1 arms the meter (Ready_for_reconnection, the relay stays open):
        # success, and the head-end says so in words (its default output)
        assert headend.main(broker[1:] + ["reconnect", meter_id]) == 0
        said = capsys.readouterr().out
        assert f" {meter_id} reconnect: armed: the supply stays off until the consumer" in said
        assert "ready_for_reconnection, relay open (supply off), control mode 1" in said
        # a captured command replayed, a forged one: refused, with acks
        captured = headend.encode_command(key, meter_id, 2, "disconnect")
        forged = headend.encode_command(bytes(32), meter_id, 50, "disconnect")
        for payload in (captured, forged):
            watch.raw(payload)
        assert watch.wait(lambda: len(watch.acks) >= 5, 10), watch.acks
        reasons = [(headend.decode_ack(key, a) or {}).get("reason") for a in watch.acks[3:]]
        assert reasons == ["replay", "bad_mac"]
        # an oversized one: acked "too_large"; or, where the 64 KiB heap cannot hold it
        # (MicroPython), the link drops and comes back. Never a crash, never an action.
        onlines = watch.status.count(b"online")
        watch.raw(b"x" * 1100)
        assert watch.wait(lambda: len(watch.acks) >= 6
                          or watch.status.count(b"online") > onlines, 10)
        if len(watch.acks) >= 6:
            assert headend.decode_ack(key, watch.acks[5])["reason"] == "too_large"
        else:
            assert runtime == "micropython"
        # still answering afterwards
        assert headend.main(broker + ["status", meter_id]) == 0
        capsys.readouterr()
    finally:
        thread.join(60)
    assert "error" not in out, out.get("error")
    report = out["report"]
    assert report["meter_import_wh"] > 0
    names = [e["name"] for e in report["events"]]
    assert names.count("cmd_rejected_replay") == 1  # the rest were rate-limited
    assert not any(n.startswith("cmd_rejected_") and n != "cmd_rejected_replay" for n in names)
    # once the meter is gone (its process killed or its RAM dropped), the broker publishes
    # its last will on the retained status topic
    try:
        assert watch.wait(lambda: watch.status[-1:] == [b"offline"], 10), watch.status
    finally:
        watch.close()
