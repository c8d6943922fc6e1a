"""`make sim` (simulator/live.py) driven as a person at its terminal would: keys press the
meter's button and open its terminal cover, and the live view shows the relay, the control
state and each event by name as they happen; the live meter's clock is the wall clock's."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from simulator import scenario as sc
from tests.conftest import read_pty_until

ROOT = Path(__file__).resolve().parent.parent


class Live:
    """`python -m simulator live` in a subprocess, its stdin a pipe, its output collected."""

    def __init__(self, tmp_path: Path, runtime: str, duration: int, stdin: int | None = None,
                 ) -> None:
        self.lines: list[str] = []
        self.fresh: queue.Queue = queue.Queue()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "simulator", "live", "--runtime", runtime,
             "--duration", str(duration), "--period", "2", "--keys",
             str(tmp_path / "keys.json")],
            cwd=ROOT, stdin=subprocess.PIPE if stdin is None else stdin,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))
            self.fresh.put(line)

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 40) -> int:
        """The index of the first line from `after` on matching pattern."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for i, line in enumerate(self.lines[after:], after):
                if re.search(pattern, line):
                    return i
            if self.proc.poll() is not None and self.fresh.empty():
                break
            try:
                self.fresh.get(timeout=0.2)
            except queue.Empty:
                pass
        raise AssertionError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines))

    def key(self, text: str) -> None:
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)


def watch_telemetry(port: int, meter_id: str = "demo-meter-0001") -> tuple:
    """(client, [(meter's t, wall time when received)]) on the live run's embedded broker."""
    import paho.mqtt.client as mqtt

    seen: list[tuple] = []

    def on_message(_c, _u, msg) -> None:  # type: ignore[no-untyped-def]
        seen.append((json.loads(msg.payload)["t"], time.time()))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"test-live-{port}")
    client.on_message = on_message
    client.connect("127.0.0.1", port)
    client.subscribe(f"meters/{meter_id}/telemetry")
    client.loop_start()
    return client, seen


@pytest.mark.parametrize("runtime", sc.RUNTIMES)
def test_keys_act_on_the_meter_and_the_view_shows_the_supply(tmp_path, runtime):
    """Mode 1 (the default): the button disconnects (f, Connected -> Ready_for_reconnection),
    the view shows the relay open and the state, a reading at 0 A says why; the cover opening
    is logged and shown by name; the button again reconnects (e). The meter's clock (its
    telemetry's t) is the wall clock's."""
    live = Live(tmp_path, runtime, duration=35)
    client = None
    try:
        i = live.wait_for(r"embedded MQTT broker on 127\.0\.0\.1:(\d+)", timeout=20)
        port = int(re.search(r":(\d+)$", live.lines[i]).group(1))
        client, seen = watch_telemetry(port)
        live.wait_for(r"#2 .* kWh")
        assert seen, "no telemetry received"
        for t, wall in seen:
            assert abs(t - wall) < 60, (t, wall)  # the present, not 2026-01-01
        live.wait_for(r"keys: b = press the meter's button", timeout=1)  # raises if absent
        live.wait_for(r"#1 .* kWh  relay closed, connected")
        live.wait_for(r"event #\d+  power_up \(1\)")
        live.key("b")
        i = live.wait_for(r"button pressed")
        j = live.wait_for(r"event #\d+  control_manual_ready_for_reconnection \(155\)", i)
        live.wait_for(r"relay open$", i)
        # a reading with the supply cut: no load, and the view says why
        live.wait_for(r" 0\.00 A .* relay open, ready_for_reconnection$", j)
        live.key("c")
        i = live.wait_for(r"terminal cover opened")
        live.wait_for(r"event #\d+  cover_open \(140\)", i)
        live.key("b")
        i = live.wait_for(r"button pressed", i)
        live.wait_for(r"event #\d+  control_manual_connected \(154\) .*relay closed, connected",
                      i)
        live.wait_for(r"relay closed$", i)
        live.wait_for(r"#\d+ .* kWh  relay closed, connected$", i)
        for t, wall in seen:
            assert abs(t - wall) < 60, (t, wall)
        assert live.proc.wait(60) == 0
    finally:
        if client is not None:
            client.loop_stop()
            client.disconnect()
        live.close()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs a pseudo-terminal")
def test_single_keys_on_a_terminal_and_the_terminal_restored_after_ctrl_c(tmp_path):
    """On a terminal a key acts at once (cbreak: no Enter, no echo); Ctrl-C still stops the
    run (SIGINT), and the terminal is back in its own mode afterwards."""
    import pty
    import termios

    pid, fd = pty.fork()
    if pid == 0:  # the child: the live simulator with the pty as its controlling terminal
        os.chdir(ROOT)
        os.execv(sys.executable, [sys.executable, "-m", "simulator", "live", "--runtime",
                                  "cpython", "--duration", "120", "--period", "2", "--keys",
                                  str(tmp_path / "keys.json")])
    out = bytearray()

    def read_until(pattern: bytes, timeout: float = 40) -> None:
        read_pty_until(fd, out, pattern, timeout)

    try:
        read_until(rb"#1 .* kWh  relay closed, connected")
        mode = termios.tcgetattr(fd)[3]
        assert not mode & termios.ICANON and not mode & termios.ECHO  # cbreak while running
        os.write(fd, b"b")  # no Enter
        read_until(rb"control_manual_ready_for_reconnection \(155\)")
        os.write(fd, b"\x03")  # Ctrl-C
        read_until(rb"stopped\.", 20)
        deadline = time.monotonic() + 20
        while os.waitpid(pid, os.WNOHANG)[0] == 0:
            assert time.monotonic() < deadline, "still running after Ctrl-C"
            time.sleep(0.2)
        pid = 0
        mode = termios.tcgetattr(fd)[3]
        assert mode & termios.ICANON and mode & termios.ECHO  # the terminal as it was
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


@pytest.mark.parametrize("option, key", [
    (["--meter-id", "a/b"], "config.meter_id"), (["--meter-id", "x" * 70_000], "config.meter_id"),
    (["--broker", "nohost"], "HOST:PORT"), (["--broker", "localhost:0"], "HOST:PORT"),
    (["--period", "0"], "telemetry_period_s"), (["--duration", "1e400"], "duration_s"),
    (["--keys"], "key file")])
def test_bad_options_are_one_line_before_anything_starts(tmp_path, option, key) -> None:
    if option == ["--keys"]:  # a damaged key file: said, and left as it is
        (tmp_path / "keys.json").write_text('{"meters": {"demo-meter-0001": []}}')
        option = []
    out = subprocess.run([sys.executable, "-m", "simulator", "live", "--keys",
                          str(tmp_path / "keys.json"), *option], cwd=ROOT, timeout=60,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and key in out.stderr and "Traceback" not in out.stderr
    assert "broker on" not in out.stdout  # nothing was started
    if key == "key file":
        assert (tmp_path / "keys.json").read_text() == '{"meters": {"demo-meter-0001": []}}'
    else:
        assert not (tmp_path / "keys.json").exists()


def test_an_event_sent_again_after_a_reboot_is_shown_once(capsys) -> None:
    from simulator.live import Console

    console = Console(stdin=open(os.devnull))
    event = {"id": "m", "seq": 4, "code": 154, "t": 1_790_000_000}
    console.event(event)
    console.event(dict(event))  # the same record, forwarded again with its own seq
    console.event({**event, "seq": 5, "code": 150})
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("  ")[2:4] for line in lines] == [
        ["event #4", "control_manual_connected (154) at " + time.strftime(
            "%H:%M:%S", time.localtime(1_790_000_000))],
        ["event #5", "control_remote_disconnected (150) at " + time.strftime(
            "%H:%M:%S", time.localtime(1_790_000_000))]]
