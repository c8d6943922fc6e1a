"""Every remote command through the whole firmware over real mosquitto, on both runtimes
(MicroPython with the full-firmware heap budget), driven by the head-end command line:
control mode then disconnect/reconnect, profile read-back page by page, events, telemetry
period, billing snapshot, time sync, and a reboot after which the mode is still set."""

from __future__ import annotations

import json
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from host_tools import headend
from simulator import scenario as sc
from tests.test_remote_commands import Watcher, run_paced

RECORDS = 20


def block_profile(start_unix: int) -> str:
    """Hex of /p/block.0 holding RECORDS 15-min records ending before start_unix, written
    with the firmware's own ring code (as an earlier life of the meter would have)."""
    from meter.runtime.clock import METER_EPOCH_UNIX
    from meter.storage import profiles as profile

    from tests.conftest import DirFS

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "p").mkdir()
        ring = profile.block(DirFS(Path(tmp)))
        last = (start_unix - METER_EPOCH_UNIX) // 900 * 900
        for i in range(RECORDS):
            ring.append(last - (RECORDS - 1 - i) * 900, 100 + i, 0, 24000, 5000, 0)
        return (Path(tmp) / "p" / "block.0").read_bytes().hex()


@pytest.mark.mosquitto
# MicroPython only, to stay within the test-time budget: the heap is the question there;
# CPython runs the same handlers in tests/test_cmdx.py and the same MQTT path in
# tests/test_remote_commands.py (add "cpython" here to run this on it too: it passes).
@pytest.mark.parametrize("runtime", ["micropython"])
def test_every_command_over_mosquitto(mosquitto, mpy_build, tmp_path, runtime, capsys):
    host, port = mosquitto
    meter_id = f"cmdx-{runtime}-{time.time_ns() % 10**6}"
    keys = tmp_path / "keys.json"
    key = headend.KeyFile(keys).new_key(meter_id)
    start = int(time.time()) - 30  # the meter's clock is 30 s behind the head-end's
    scenario = sc.normalise({
        "duration_s": 35,
        "start": datetime.fromtimestamp(start, UTC).isoformat(),
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
        "config": {"meter_id": meter_id, "mqtt_host": host, "mqtt_port": port,
                   "telemetry_period_s": 60},
        "command_key": key.hex(),
        "files": {"/p/block.0": block_profile(start)},
    })
    watch = Watcher(host, port, meter_id)
    thread, out = run_paced(scenario, runtime, sc.HEAPSIZE)
    base = ["--json", "--broker", f"{host}:{port}", "--keys", str(keys), "--timeout", "8"]

    def cmd(*argv: str, code: int = 0) -> dict:
        assert headend.main(base + list(argv[:1]) + [meter_id] + list(argv[1:])) == (
            0 if code == 0 else 1), capsys.readouterr()
        lines = capsys.readouterr().out.splitlines()
        ack = json.loads(lines[-1])
        assert ack["code"] == code, ack
        return ack

    began = time.monotonic()
    try:
        assert watch.wait(lambda: b"online" in watch.status, 20), out
        # mode 2: a remote reconnect closes the relay directly
        assert cmd("set_control_mode", "2")["mode"] == 2
        ack = cmd("disconnect")
        assert (ack["state"], ack["output"]) == (0, False)
        ack = cmd("reconnect")
        assert (ack["state"], ack["output"]) == (1, True)
        assert "bad args" in cmd("set_control_mode", "9", code=250)["reason"]
        # the profile, page by page, oldest first, then newest first
        seen = []
        ack = cmd("read_profile")
        while True:
            seen += ack["records"]
            if not ack["next"]:
                break
            ack = cmd("read_profile", "--start", str(ack["next"]))
        assert [r[0] for r in seen] == list(range(1, RECORDS + 1))
        assert [r[2] for r in seen] == [100 + i for i in range(RECORDS)]
        assert all(a[1] + 900 == b[1] for a, b in zip(seen, seen[1:], strict=False))
        ack = cmd("read_profile", "--newest-first", "--since", str(seen[-3][1]))
        assert [r[0] for r in ack["records"]] == [RECORDS, RECORDS - 1, RECORDS - 2]
        ack = cmd("read_events", "control")
        assert [r[3] for r in ack["records"]][-2:] == [150, 151]  # remote disconnect, connect
        assert cmd("set_telemetry_period", "7")["seconds"] == 7
        ack = cmd("billing_snapshot")
        assert ack["record"][0] == 1 and ack["record"][2] > 0 and ack["record"][6] == 1
        ack = cmd("time_sync")
        assert 25 <= ack["step"] <= 40, ack  # 30 s, give or take the seconds in transit
        assert abs(ack["t"] - time.time()) < 3
        onlines = watch.status.count(b"online")
        assert cmd("reboot")["code"] == 0
        assert watch.wait(lambda: watch.status.count(b"online") > onlines, 20), watch.status
        ack = cmd("status")
        assert (ack["mode"], ack["state"]) == (2, 1)  # the mode survived the reboot
        assert abs(ack["t"] - time.time()) < 3  # and so did the time
        print(f"commands done {time.monotonic() - began:.1f} s into the run")
    finally:
        thread.join(60)
        watch.close()
    assert "error" not in out, out.get("error")
    report = out["report"]
    names = [e["name"] for e in report["events"]]
    for name in ("control_mode_set", "telemetry_period_set", "billing_snapshot", "time_set_old",
                 "time_set_new", "remote_reboot", "control_remote_disconnected",
                 "control_remote_connected"):
        assert name in names, (name, names)
    assert report["reboots"] == 1 and report["relay_closed"]
    if runtime == "micropython":
        print(f"heap peak {report['heap_peak_bytes']} B at {sc.HEAPSIZE}")
