"""Scenarios: the public entry. load_file() or normalise() checks a scenario (the schema in
simulator/schema.py) and turns it into the compact form the device runner reads; run() runs
it on either runtime (simulator/runtimes.py) and builds the report (simulator/report.py)."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator.device.timeutil import parse_iso
from simulator.micropython_port import HEAPSIZE
from simulator.report import build_report
from simulator.runtimes import RUNTIMES, Interrupted, interrupt, run_cpython, run_micropython
from simulator.schema import DEFAULT_START, ScenarioError, check

# the scenario API its callers use (the CLI, the bench, the live meter, tests)
__all__ = ["HEAPSIZE", "RUNTIMES", "ScenarioError", "check", "interrupt", "load_file",
           "normalise", "run", "run_cpython", "run_micropython"]


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def _windows(items: list, length_key: str = "for_s") -> list[list[int]]:
    return sorted([_ms(item["at_s"]), _ms(item[length_key])] for item in items)


def normalise(raw: Any) -> dict:
    """Check a scenario (check()) and turn it into the compact form the device runner reads."""
    check(raw)
    load = []
    for item in raw.get("load", []):
        load.append([_ms(item["at_s"]), float(item.get("volts", 240.0)),
                     float(item.get("amps", 0.0)), float(item.get("pf", 1.0)),
                     float(item.get("hz", 50.0))])
        if "neutral_amps" in item or "lead" in item:
            load[-1] += [float(item.get("neutral_amps", load[-1][2])),
                         item.get("lead", False)]
    load.sort(key=lambda p: p[0])
    if not load or load[0][0] > 0:
        volts = load[0][1] if load else 240.0
        load.insert(0, [0, volts, 0.0, 1.0, 50.0])
    port_commands = []
    for item in raw.get("port_commands", []):
        args = item.get("args", {})
        line = item["cmd"] + (" " + json.dumps(args, separators=(",", ":")) if args else "")
        port_commands.append([_ms(item["at_s"]), (line + "\n").encode()])
    port_commands.sort(key=lambda c: c[0])
    commands = []
    # Remote commands, sent over MQTT by the run's head-end: [at_ms, item] sorted by time.
    # item: {"cmd", "args", "ttl_s"} signed with the meter's key, or {"raw"}: the exact text
    # published (hostile input: forged, replayed, truncated, oversized...).
    for item in raw.get("commands", []):
        if "raw" in item:
            qos = item.get("qos", 1)
            commands.append([_ms(item["at_s"]), {"raw": item["raw"], "qos": qos} if qos != 1
                             else {"raw": item["raw"]}])
        else:
            commands.append([_ms(item["at_s"]), {"cmd": item["cmd"],
                             "args": item.get("args", {}), "ttl_s": item.get("ttl_s", 300)}])
    commands.sort(key=lambda c: c[0])
    return {
        "power_fail_input": raw.get("power_fail_input", True),
        "files": raw.get("files", {}),
        "command_key": raw.get("command_key", "").lower(),
        "duration_ms": _ms(raw["duration_s"]),
        "start_unix": parse_iso(raw.get("start", DEFAULT_START)),
        "board": raw.get("board", "sim"),
        "config": raw.get("config", {}),
        "load": load,
        "outages": _windows(raw.get("outages", [])),
        "faults": raw.get("faults", {}),
        "commands": commands,
        "port_commands": port_commands,
        "network_outages": _windows(raw.get("network_outages", [])),
        "broker": raw.get("broker", ""),
        "button": _windows(raw.get("button", []), "hold_s"),
        "cover_open": _windows(raw.get("cover_open", [])),
        "chip": raw.get("chip", {}),
        "calibrate": raw.get("calibrate", False),
    }


def load_file(path: str | Path) -> dict:
    """A scenario file, checked and normalised; ScenarioError names the problem without
    the path (the caller prints it once)."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"not valid JSON: {exc.msg} at line {exc.lineno} column "
                            f"{exc.colno}") from None
    except RecursionError:
        raise ScenarioError("not valid JSON: nested too deeply") from None
    return normalise(raw)


def run(scenario: dict, runtime: str = "cpython", progress: Callable | None = None,
        workdir: str | None = None, heapsize: str = HEAPSIZE, keep_flash: bool = False,
        broker: str | None = None) -> dict:
    """Run a normalised scenario and return its report. heapsize: MicroPython's GC heap;
    keep_flash: boot on the flash image already in workdir (a meter taken off one scenario
    and put into the next); broker: HOST:PORT of an MQTT broker to use instead of starting
    one (when the scenario has commands or network outages)."""
    if runtime not in RUNTIMES:
        raise ScenarioError(f"unknown runtime {runtime!r} (use cpython or micropython)")
    with tempfile.TemporaryDirectory() as tmp:
        flash_path = str(Path(workdir or tmp) / "flash.img")
        if os.path.exists(flash_path) and not keep_flash:
            os.remove(flash_path)
        started = time.monotonic()
        try:
            if runtime == "cpython":
                raw = run_cpython(scenario, flash_path, progress, broker=broker)
            else:
                raw = run_micropython(scenario, flash_path, progress, heapsize, broker=broker)
        except Interrupted as stop:
            raw = stop.raw
        raw["runtime"] = runtime
        wall = time.monotonic() - started
        report = build_report(scenario, raw, flash_path, wall)
        if "interrupted_at_s" in raw:
            # Ctrl-C: what the run had when stopped (no end-of-run readout, so no meter
            # registers); a complete run's report has no such keys
            report["interrupted"] = True
            report["interrupted_at_s"] = raw["interrupted_at_s"]
            report["sim_s_per_wall_s"] = round(raw["interrupted_at_s"] / max(wall, 1e-9), 1)
        return report
