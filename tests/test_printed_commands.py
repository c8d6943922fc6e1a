"""Every command the README, docs/ and the simulator print runs as printed on a machine set up
by `make` (the venv in .venv, never activated): with the venv's python, from the checkout."""

from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from host_tools import headend

ROOT = Path(__file__).resolve().parent.parent
VENV_PY = ".venv/bin/python"
# A fresh login's environment: no venv activated, only the system's own PATH.
CLEAN = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
MODULE = re.compile(r"([^\s`\"'=(]+) -m (host_tools\.\w+|simulator\b)")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def commands_in(text: str) -> list[tuple[str, str]]:
    """(interpreter, module) of every `... -m host_tools.X` / `-m simulator` in text."""
    return MODULE.findall(text)


def test_readme_docs_and_host_tools_print_the_venv_python():
    assert len(commands_in((ROOT / "README.md").read_text())) >= 5  # each user's tour
    found = [hit for page in PAGES for hit in commands_in(page.read_text())]
    assert len(found) >= 20  # the head-end's 12 and the tour's, the simulator's, calibration's
    for source in ("host_tools/headend.py", "host_tools/calibrate.py"):
        found += commands_in((ROOT / source).read_text())
    bad = [f"{py} -m {mod}" for py, mod in found if py != VENV_PY]
    assert bad == []


@pytest.mark.parametrize("module", ["host_tools.headend", "host_tools.calibrate"])
def test_help_runs_as_printed_without_an_activated_venv(module):
    result = subprocess.run([*f"{VENV_PY} -m {module} --help".split()], cwd=ROOT, env=CLEAN,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {VENV_PY} -m {module}")


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    got: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            got.put(line)
        got.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return got


def wait_for(got: queue.Queue, seen: list[str], pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = got.get(timeout=0.5)
        except queue.Empty:
            continue
        if line is None:
            break
        seen.append(line)
        if pattern in line:
            return line
    raise AssertionError(f"no {pattern!r} in {''.join(seen)!r}")


@pytest.mark.mosquitto
def test_the_command_make_sim_prints_runs_as_printed(mosquitto, tmp_path):
    host, port = mosquitto
    meter_id = f"printed-{time.time_ns() % 10**6}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulator", "live", "--runtime", "cpython", "--broker",
         f"{host}:{port}", "--meter-id", meter_id, "--keys", str(tmp_path / "keys.json"),
         "--duration", "60"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True)
    seen: list[str] = []
    try:
        got = lines_of(proc)
        line = wait_for(got, seen, "commands, from another terminal: ", 30)
        printed = line.split("commands, from another terminal: ", 1)[1].strip()
        wait_for(got, seen, " kWh", 30)  # a reading: the meter is online
        # a second terminal: somewhere else, no venv, the line pasted into a shell
        result = subprocess.run(["/bin/sh", "-c", printed], cwd=tmp_path, env=CLEAN,
                                capture_output=True, text=True, timeout=60)
    finally:
        proc.terminate()  # the live meter this test started, by its PID
        proc.wait(20)
    assert result.returncode == 0, (printed, result.stdout, result.stderr)
    assert f" {meter_id} status: ok; connected, relay closed (supply on), control mode 1" in (
        result.stdout)
    assert printed.startswith(f"cd {ROOT} && {VENV_PY} -m host_tools.headend ")
    assert printed == headend.command_line(["--broker", f"{host}:{port}", "--keys",
                                            str(tmp_path / "keys.json"), "status", meter_id])


def printed_lines(module: str) -> list[str]:
    """Every `.venv/bin/python -m MODULE ...` line of the code blocks in README and docs/,
    continuation lines joined and comments dropped, in page order."""
    lines = []
    for page in PAGES:
        for block in re.findall(r"^```sh\n(.*?)^```", page.read_text(), re.S | re.M):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if line.startswith(f"{VENV_PY} -m {module} "):
                    lines.append(line)
    return lines


def refused_port() -> int:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_printed_head_end_and_calibration_command_runs_as_printed(tmp_path):
    """In a fresh folder holding only the venv and the tools (the commands' own files are
    written there): calibration runs to the end; every head-end command passes all the
    head-end's checks of its arguments and key file (exit 2 otherwise) and stops only at the
    broker, here a refused loopback port instead of localhost:1883."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "host_tools").symlink_to(ROOT / "host_tools")
    (tmp_path / "build").mkdir()
    broker = f"127.0.0.1:{refused_port()}"
    env = dict(CLEAN, B=f"--broker {broker} --keys keys.json")

    def run(line: str) -> subprocess.CompletedProcess:
        return subprocess.run(["/bin/sh", "-c", line.replace("localhost:1883", broker)],
                              cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)

    calibrations = printed_lines("host_tools.calibrate")
    assert len(calibrations) >= 3
    for line in calibrations:
        result = run(line)
        assert result.returncode == 0, (line, result.stderr)
    headend_lines = printed_lines("host_tools.headend")
    assert " newkey " in headend_lines[0] and len(headend_lines) >= 14
    for line in headend_lines:
        result = run(line)
        if " newkey " in line:
            assert result.returncode == 0, (line, result.stderr)
            continue
        assert result.returncode == 3, (line, result.stdout, result.stderr)
        assert result.stderr.strip().endswith("Connection refused"), (line, result.stderr)
