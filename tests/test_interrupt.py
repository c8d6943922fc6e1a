"""Ctrl-C and strangers: `make sim` / `python -m simulator live` stop with one line and
status 0 when a terminal's Ctrl-C (SIGINT to the whole foreground process group) or a SIGINT
to the top process lands; an interrupted `run` writes its partial report; nothing that
connects from outside can stop the simulated meter; a device that dies says so in one line.
Every child process is gone afterwards."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import read_pty_until

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def descendants(pid: int) -> set[int]:
    """The live processes below pid (any session), from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat.rpartition(")")[2].split()
            if fields[0] != "Z":
                parents[int(entry)] = int(fields[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in parents.items():
            if ppid == parent and child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return ""  # gone meanwhile


def wait_gone(pids: set[int], timeout_s: float = 10) -> set[int]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if alive(p)}


def start(args: list[str], **kw) -> subprocess.Popen:
    # its own session: a process group of its own, as a terminal's foreground job
    return subprocess.Popen(args, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, **kw)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float = 60) -> list[str]:
    lines = []
    deadline = time.monotonic() + timeout_s
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return lines
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise AssertionError(f"no {needle!r} line: {''.join(lines)}{proc.stderr.read()}")


def live_args(runtime: str, tmp_path: Path) -> list[str]:
    return [PY, "-m", "simulator", "live", "--runtime", runtime, "--period", "1",
            "--keys", str(tmp_path / "keys.json")]


def interrupt(proc: subprocess.Popen, target: str, twice: bool) -> None:
    send = (lambda: os.killpg(proc.pid, signal.SIGINT)) if target == "group" else (
        lambda: proc.send_signal(signal.SIGINT))
    send()
    if twice:  # a second Ctrl-C while it stops
        time.sleep(0.3)
        if proc.poll() is None:
            send()


def check_stopped(proc: subprocess.Popen, before: list[str], children: set[int],
                  code: int = 0) -> None:
    out, err = proc.communicate(timeout=60)
    text = "".join(before) + out + err
    assert proc.returncode == code, text
    assert "Traceback" not in text and "error" not in text, text
    # one short line besides the view's own (readings, events: each starts with the time)
    said = [line for line in out.splitlines()
            if line.strip() and not re.match(r"\d\d:\d\d:\d\d  ", line)]
    assert said == ["stopped."], text
    assert err == "", text
    assert not wait_gone(children), f"left running: {children} {text}"


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
@pytest.mark.parametrize("target", ["group", "top"])
def test_live_stops_on_ctrl_c(runtime, target, tmp_path):
    proc = start(live_args(runtime, tmp_path))
    try:
        before = wait_for_line(proc, " W  PF ")  # the meter is publishing
        children = descendants(proc.pid)
        if runtime == "micropython":
            assert children, "no device process"
            # a terminal's Ctrl-C reaches only the host, which ends the device itself
            assert all(os.getpgid(c) != proc.pid for c in children)
        interrupt(proc, target, twice=target == "group")
        check_stopped(proc, before, children)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_make_sim_on_ctrl_c(tmp_path):
    """`make sim` with the terminal's Ctrl-C: the simulator stops cleanly (status 0, one
    line) and GNU make, which had the SIGINT too, waits for it, then ends itself by the same
    signal (it always does; the shell shows 130) and prints nothing more."""
    # -o: the venv is set up (a worktree's requirements.txt may look newer than its stamp)
    proc = start(["make", "--no-print-directory", "-o", ".venv/.installed", "sim"])
    try:
        before = wait_for_line(proc, " W  PF ")
        sim = [p for p in descendants(proc.pid) if "simulator" in cmdline(p)]
        children = descendants(proc.pid)
        interrupt(proc, "group", twice=False)
        check_stopped(proc, before, children, code=-signal.SIGINT)
        assert sim
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.skipif(shutil.which("make") is None or not hasattr(os, "fork"),
                    reason="needs make and a pseudo-terminal")
@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_make_sim_on_a_terminals_ctrl_c_exits_0(runtime):
    """`make sim` on a real (pseudo-)terminal, as a person runs it: Ctrl-C typed at it stops
    the meter with one line, Ctrl-Z does not stop it, and make exits 0 (the live meter takes
    the terminal's foreground group, so make never sees the SIGINT), nothing left running."""
    import pty

    pid, fd = pty.fork()
    if pid == 0:  # the child: make with the pty as its controlling terminal
        os.chdir(ROOT)
        os.execvp("make", ["make", "--no-print-directory", "-o", ".venv/.installed", "sim",
                           f"RUNTIME={runtime}"])
    out = bytearray()

    def read_until(pattern: bytes, timeout: float = 60) -> None:
        read_pty_until(fd, out, pattern, timeout)

    try:
        read_until(rb"#2 .* kWh")
        children = descendants(pid)
        assert any("simulator" in cmdline(c) for c in children)
        os.write(fd, b"\x1a")  # Ctrl-Z: a meter in real time does not pause
        read_until(rb"#3 .* kWh")
        os.write(fd, b"\x03")  # Ctrl-C
        read_until(rb"stopped\.", 30)
        deadline = time.monotonic() + 30
        while (done := os.waitpid(pid, os.WNOHANG))[0] == 0:
            assert time.monotonic() < deadline, "still running after Ctrl-C"
            time.sleep(0.1)
        pid = 0
        with_tail = out.decode(errors="replace")
        assert os.waitstatus_to_exitcode(done[1]) == 0, with_tail
        assert "Traceback" not in with_tail and "rror" not in with_tail, with_tail
        assert not wait_gone(children), f"left running: {children}"
    finally:
        if pid:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)


def long_scenario(tmp_path: Path, network: bool, cuts: int = 200) -> Path:
    scenario = {
        "duration_s": 30 * 86400,
        "config": {"meter_id": "meter-0042", "telemetry_period_s": 60},
        "load": [{"at_s": 0, "volts": 240, "amps": 6, "pf": 0.97}],
        "outages": [{"at_s": 120 + 3600 * i, "for_s": 60} for i in range(cuts)],
    }
    if network:
        scenario["commands"] = [{"at_s": 60, "cmd": "status"}]
    path = tmp_path / "long.json"
    path.write_text(json.dumps(scenario))
    return path


def running(proc: subprocess.Popen, runtime: str) -> bool:
    """The run's firmware has started (its device process, on MicroPython)."""
    children = descendants(proc.pid)
    if runtime == "cpython":
        return bool(children)  # the run's mosquitto: the firmware comes next, in-process
    return any("\0-m\0romstart\0" in cmdline(p) for p in children)


@pytest.mark.parametrize("runtime,target,to_file", [
    ("cpython", "group", True), ("micropython", "group", True),
    ("micropython", "top", False),
])
def test_interrupted_run_writes_partial_report(runtime, target, to_file, tmp_path):
    report = tmp_path / "report.json"
    args = [PY, "-m", "simulator", "run", str(long_scenario(tmp_path, network=True)),
            "--runtime", runtime]
    proc = start(args + (["--report", str(report)] if to_file else []))
    try:
        deadline = time.monotonic() + 60
        while not running(proc, runtime) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # well into the run (30 virtual days take far longer)
        assert proc.poll() is None
        children = descendants(proc.pid)  # mosquitto, the device process
        interrupt(proc, target, twice=True)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in out + err, err
    assert "error" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted at ") and "partial report written to" in last, err
    data = json.loads(report.read_text() if to_file else out)
    assert data["interrupted"] is True
    assert 0 < data["interrupted_at_s"] < 30 * 86400
    assert data["reboots"] >= 1 and data["true_import_wh"] > 0
    assert data["meter_import_wh"] is None  # no end-of-run readout: nothing invented
    assert data["profile_records"] >= 1 and data["events"]
    assert data["acks"] and data["acks"][0]["cmd"] == "status"
    assert not wait_gone(children), "left running"


def test_complete_run_is_not_marked_interrupted(tmp_path):
    scenario = tmp_path / "short.json"
    scenario.write_text(json.dumps({"duration_s": 600, "load": [
        {"at_s": 0, "volts": 240, "amps": 1, "pf": 1}]}))
    out = subprocess.run([PY, "-m", "simulator", "run", str(scenario)], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "interrupted" not in json.loads(out.stdout)


def listening_ports(pid: int) -> set[int]:
    """The TCP ports pid's own sockets listen on (from /proc)."""
    from simulator.netproxy import socket_inodes

    inodes = socket_inodes(pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # LISTEN
                ports.add(int(cols[1].rpartition(":")[2], 16))
    return ports


STRANGER_SCENARIO = {
    "duration_s": 6 * 3600,
    "config": {"meter_id": "meter-0042", "telemetry_period_s": 300},
    "load": [{"at_s": 0, "volts": 240, "amps": 6, "pf": 0.97}],
    "outages": [{"at_s": 1800 * i, "for_s": 30} for i in range(1, 12)],
    "commands": [{"at_s": 600 + 1800 * i, "cmd": "status"} for i in range(11)],
    "network_outages": [{"at_s": 7000, "for_s": 600}],
}
SAME = ("network_late", "true_import_wh", "meter_import_wh", "reboots", "events",
        "profile_records", "acks", "telemetry", "commands_delivered", "control_state",
        "relay_operations")


def run_with_strangers(tmp_path: Path, strangers: bool) -> tuple[dict, set[int]]:
    """A MicroPython run with power cuts and a network; with strangers, anything on this
    machine connects to every port the run listens on, over and over, sending garbage or
    nothing."""
    scenario = tmp_path / "cuts.json"
    scenario.write_text(json.dumps(STRANGER_SCENARIO))
    report = tmp_path / f"report-{strangers}.json"
    proc = start([PY, "-m", "simulator", "run", str(scenario), "--runtime", "micropython",
                  "--report", str(report)])
    probed: set[int] = set()
    held: list[tuple[float, socket.socket]] = []  # some stay open a while, silent
    try:
        n = 0
        while strangers and proc.poll() is None:
            for port in listening_ports(proc.pid):
                probed.add(port)
                try:
                    s = socket.create_connection(("127.0.0.1", port), timeout=1)
                    if n % 2:
                        s.sendall(b"\x10\x05\x00garbage\xff" * 4)
                except OSError:
                    continue
                if n % 3:
                    s.close()
                else:
                    held.append((time.monotonic() + 2, s))
            while held and held[0][0] < time.monotonic():
                held.pop(0)[1].close()
            n += 1
            time.sleep(0.02)
        out, err = proc.communicate(timeout=120)
    finally:
        for _t, s in held:
            s.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    return json.loads(report.read_text()), probed


def test_strangers_cannot_stop_the_meter(tmp_path):
    """The run completes, and its report is the one without strangers: the device's wire
    has no port at all (an inherited socket pair), and the meter's path to the broker (the
    scenario's network proxy) closes any connection that is not the meter's."""
    reference, _ = run_with_strangers(tmp_path, strangers=False)
    got, probed = run_with_strangers(tmp_path, strangers=True)
    assert reference["reboots"] == 11 and len(reference["acks"]) >= 5
    assert {k: got.get(k) for k in SAME} == {k: reference.get(k) for k in SAME}
    assert probed  # the proxy's port was found and hammered


def test_device_killed_is_one_line(tmp_path):
    """The device process dies under the host (killed from outside): one line saying so."""
    scenario = long_scenario(tmp_path, network=False, cuts=0)
    proc = start([PY, "-m", "simulator", "run", str(scenario), "--runtime", "micropython"])
    try:
        deadline = time.monotonic() + 60
        device = []
        while not device and time.monotonic() < deadline:
            time.sleep(0.1)
            device = [p for p in descendants(proc.pid)
                      if "\0-m\0romstart\0" in cmdline(p)]
        time.sleep(1)  # running (no power cuts: the same process all along)
        os.kill(device[0], signal.SIGKILL)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip() and "progress" not in line]
    assert lines == ["error: the firmware's process stopped by itself (killed by SIGKILL) "
                     "without a word"], err


def test_the_network_proxy_refuses_strangers(mosquitto):
    """The scenario's network proxy (the meter's path to the broker) takes only connections
    from this run (its own process, its device process): another process's connection is
    closed unanswered, and what it sent is neither forwarded nor counted as the meter's."""
    from simulator.netproxy import NetProxy

    proxy = NetProxy(mosquitto)
    try:
        publish = bytes((0x30, 9, 0, 5)) + b"m/x/yhey"  # a PUBLISH to m/x/y
        # a process that is no child of this one (the shell's child)
        stranger = "\n".join([
            "import socket, time",
            f"s = socket.create_connection(('127.0.0.1', {proxy.port}))",
            "try:",
            f"    s.sendall({bytes((0x10, 0)) + publish!r})",
            "    print(repr(s.recv(10)))",
            "except ConnectionError:",
            "    print('reset')",
            "time.sleep(0.5)"])
        got = subprocess.run(["sh", "-c", f"{PY} -c \"$1\"; true", "sh", stranger],
                             capture_output=True, text=True, timeout=30)
        assert got.stdout.strip() in ("b''", "reset"), got  # closed, nothing answered
        assert (proxy.connections, proxy.meter_publishes()) == (0, 0)
        assert proxy.strangers == 1
        with socket.create_connection(("127.0.0.1", proxy.port)):  # this run's own
            deadline = time.monotonic() + 5
            while proxy.connections == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        assert (proxy.connections, proxy.strangers) == (1, 1)
    finally:
        proxy.close()


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_a_lost_ctrl_c_still_stops_the_run(runtime):
    """A KeyboardInterrupt raised inside a callback from C (littlefs-python's block device
    callbacks only print it) is lost; the run still stops, at the firmware's next sleep, with
    its partial report."""
    from simulator import scenario as sc

    scenario = sc.normalise({"duration_s": 30 * 86400, "load": [
        {"at_s": 0, "volts": 240, "amps": 6, "pf": 0.97}]})
    seen = []

    def progress(fraction: float) -> None:
        seen.append(fraction)
        if len(seen) == 200:
            try:
                sc.interrupt()  # what simulator.cli's SIGINT handler calls
            except KeyboardInterrupt:
                pass  # lost, as in a callback from C
    sc.interrupt(clear=True)
    try:
        report = sc.run(scenario, runtime, progress)
    finally:
        sc.interrupt(clear=True)
    assert report["interrupted"] is True and report["interrupted_at_s"] < 30 * 86400
    assert len(seen) == 200  # stopped at the very next tick, before its progress


def test_a_late_second_ctrl_c_cannot_end_the_process_by_the_signal(monkeypatch):
    """After a Ctrl-C the handler stays ignoring: a second one that lands after the command
    returned (a slow machine) must not kill the process before it exits with its status."""
    from simulator import cli

    def run(_args):
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the first Ctrl-C, during the run
            time.sleep(5)
        return cli.INTERRUPTED

    monkeypatch.setattr(cli, "cmd_run", run)
    try:
        assert cli.main(["run", "whatever.json"]) == cli.INTERRUPTED
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGINT)  # the late second one: ignored
        time.sleep(0.1)
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def test_without_ctrl_c_the_handler_is_given_back(monkeypatch):
    from simulator import cli

    monkeypatch.setattr(cli, "cmd_run", lambda _args: 0)
    assert cli.main(["run", "whatever.json"]) == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
