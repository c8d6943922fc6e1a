"""Scenarios: check and normalise them, run them on either runtime, and build the report."""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from simulator.device.timeutil import parse_iso

ROOT = Path(__file__).resolve().parent.parent
MPY_DIR = ROOT / "build" / "mpy"
DEFAULT_START = "2026-01-01T00:00:00+05:30"
HEAPSIZE = "64k"

SCENARIO_KEYS = {"duration_s", "start", "board", "config", "load", "outages", "faults",
                 "command_key", "files"}
LOAD_KEYS = {"at_s", "volts", "amps", "pf", "hz"}
OUTAGE_KEYS = {"at_s", "for_s"}
FAULT_KEYS = {"power_cut_at_write"}
BOARDS = {"sim"}
RUNTIMES = ("cpython", "micropython")


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the problem in one line."""


def ensure_paths() -> None:
    """Make the firmware package and the fetched umqtt importable on CPython."""
    for path in (ROOT, ROOT / "firmware", ROOT / "build" / "lib"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def _number(value: Any, where: str, minimum: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ScenarioError(f"{where} must be a number, not {json.dumps(value)}")
    if minimum is not None and value < minimum:
        raise ScenarioError(f"{where} must not be negative (got {value})")
    return float(value)


def _object(value: Any, where: str, allowed: set[str]) -> dict:
    if not isinstance(value, dict):
        raise ScenarioError(f"{where} must be a JSON object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ScenarioError(f"unknown key {unknown[0]!r} in {where}")
    return value


def normalise(raw: Any) -> dict:
    """Check a scenario and turn it into the compact form the device runner reads."""
    scenario = _object(raw, "the scenario", SCENARIO_KEYS)
    if "duration_s" not in scenario:
        raise ScenarioError("missing required key 'duration_s'")
    duration = _number(scenario["duration_s"], "duration_s")
    if duration <= 0:
        raise ScenarioError("duration_s must be greater than zero")
    start_text = scenario.get("start", DEFAULT_START)
    if not isinstance(start_text, str):
        raise ScenarioError("start must be an ISO-8601 string")
    try:
        start_unix = parse_iso(start_text)
    except ValueError as exc:
        raise ScenarioError(str(exc)) from None
    board = scenario.get("board", "sim")
    if board not in BOARDS:
        raise ScenarioError(f"unknown board {board!r} (known: {', '.join(sorted(BOARDS))})")
    config = scenario.get("config", {})
    if not isinstance(config, dict):
        raise ScenarioError("config must be a JSON object")
    _check_config(config)
    load = []
    items = scenario.get("load", [])
    if not isinstance(items, list):
        raise ScenarioError("load must be a list")
    for i, item in enumerate(items):
        item = _object(item, f"load[{i}]", LOAD_KEYS)
        if "at_s" not in item:
            raise ScenarioError(f"load[{i}] needs 'at_s'")
        pf = _number(item.get("pf", 1.0), f"load[{i}].pf", None)
        if not -1.0 <= pf <= 1.0:
            raise ScenarioError(f"load[{i}].pf must be between -1 and 1")
        load.append([
            int(_number(item["at_s"], f"load[{i}].at_s") * 1000),
            _number(item.get("volts", 240.0), f"load[{i}].volts"),
            _number(item.get("amps", 0.0), f"load[{i}].amps"),
            pf,
            _number(item.get("hz", 50.0), f"load[{i}].hz"),
        ])
    load.sort(key=lambda p: p[0])
    if not load or load[0][0] > 0:
        volts = load[0][1] if load else 240.0
        load.insert(0, [0, volts, 0.0, 1.0, 50.0])
    outages = []
    items = scenario.get("outages", [])
    if not isinstance(items, list):
        raise ScenarioError("outages must be a list")
    for i, item in enumerate(items):
        item = _object(item, f"outages[{i}]", OUTAGE_KEYS)
        if "at_s" not in item or "for_s" not in item:
            raise ScenarioError(f"outages[{i}] needs 'at_s' and 'for_s'")
        outages.append([
            int(_number(item["at_s"], f"outages[{i}].at_s") * 1000),
            int(_number(item["for_s"], f"outages[{i}].for_s") * 1000),
        ])
    outages.sort()
    faults = _object(scenario.get("faults", {}), "faults", FAULT_KEYS)
    for key, value in faults.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ScenarioError(f"faults.{key} must be a whole number >= 0")
    command_key = scenario.get("command_key", "")
    hexdigits = "0123456789abcdefABCDEF"
    if not isinstance(command_key, str) or (command_key and (
            len(command_key) != 64 or any(c not in hexdigits for c in command_key))):
        raise ScenarioError("command_key must be 64 hex digits (the meter's 32-byte key)")
    files = scenario.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and k.startswith("/") and isinstance(v, str) for k, v in
            files.items()):
        raise ScenarioError("files must map absolute paths to hex strings")
    for path, data in files.items():
        try:
            bytes.fromhex(data)
        except ValueError:
            raise ScenarioError(f"files[{path!r}] is not hex") from None
    return {
        "files": files,
        "command_key": command_key.lower(),
        "duration_ms": int(duration * 1000),
        "start_unix": start_unix,
        "board": board,
        "config": config,
        "load": load,
        "outages": outages,
        "faults": faults,
    }


def _check_config(config: dict) -> None:
    ensure_paths()
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)
    from meter.config import DEFAULTS

    for key, value in config.items():
        if key not in DEFAULTS:
            raise ScenarioError(f"unknown config key {key!r}")
        if type(value) is not type(DEFAULTS[key]):
            kind = type(DEFAULTS[key]).__name__
            raise ScenarioError(f"config.{key} must be of type {kind}")


def load_file(path: str | Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ScenarioError(f"cannot read {path}: {exc.strerror}") from None
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return normalise(raw)


def micropython_command(*args: str, heapsize: str = HEAPSIZE) -> list[str]:
    exe = Path(sys.executable).parent / "micropython"
    return [str(exe) if exe.exists() else "micropython", "-X", f"heapsize={heapsize}", *args]


def micropython_env() -> dict:
    env = dict(os.environ)
    # .frozen: the modules frozen into the firmware image (ssl...), on the path as on a board
    env["MICROPYPATH"] = f"{MPY_DIR}:.frozen"
    return env


def run_cpython(scenario: dict, flash_path: str, progress: Callable | None,
                on_tick: Callable | None = None) -> dict:
    """Run the firmware in this process, against the world directly."""
    ensure_paths()
    from simulator.device import runner

    duration = scenario["duration_ms"]
    tick = on_tick
    if progress is not None:
        def tick(now_ms: int) -> None:
            progress(min(now_ms, duration) / duration)
    return runner.run(scenario, flash_path, tick)


def run_micropython(scenario: dict, flash_path: str, progress: Callable | None,
                    heapsize: str = HEAPSIZE, on_tick: Callable | None = None) -> dict:
    """Run the firmware on the MicroPython unix port against a world served from here."""
    ensure_paths()
    from simulator.build_mpy import build
    from simulator.device import runner
    from simulator.host import DeviceServer

    build()
    world, board_module = runner.prepare(scenario, flash_path)
    duration = scenario["duration_ms"]
    world.on_tick = on_tick
    if progress is not None:
        world.on_tick = lambda now_ms: progress(min(now_ms, duration) / duration)

    def command(port: int) -> list[str]:
        return micropython_command("-m", "simulator.device.remote", str(port), board_module,
                                   heapsize=heapsize)

    server = DeviceServer(world, command, micropython_env())
    server.run()
    return runner.results(world, server.heap_peak)


def run(scenario: dict, runtime: str = "cpython", progress: Callable | None = None,
        workdir: str | None = None) -> dict:
    """Run a normalised scenario and return its report."""
    if runtime not in RUNTIMES:
        raise ScenarioError(f"unknown runtime {runtime!r} (use cpython or micropython)")
    with tempfile.TemporaryDirectory() as tmp:
        flash_path = str(Path(workdir or tmp) / "flash.img")
        if os.path.exists(flash_path):
            os.remove(flash_path)
        started = time.monotonic()
        if runtime == "cpython":
            raw = run_cpython(scenario, flash_path, progress)
        else:
            raw = run_micropython(scenario, flash_path, progress)
        raw["runtime"] = runtime
        wall = time.monotonic() - started
        return build_report(scenario, raw, flash_path, wall)


def parse_readout(text: str) -> dict:
    """OBIS code -> value text from an IEC 62056-21 style data block."""
    values = {}
    for line in text.replace("\x02", "\r\n").split("\r\n"):
        if "(" in line and line.endswith(")"):
            code, _, rest = line.partition("(")
            values[code] = rest[:-1].split("*")[0]
    return values


def kwh_text_to_wh(text: str | None) -> float | None:
    """'12.345678' kWh -> 12345.678 Wh, exactly from the digits."""
    if text is None:
        return None
    whole, _, frac = text.partition(".")
    frac = (frac + "000000")[:6]
    return (int(whole) * 1_000_000 + int(frac)) / 1000


def read_events(flash_path: str, start_unix: int) -> list[dict]:
    """The firmware's event log, read from the flash image with the firmware's own reader."""
    ensure_paths()
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)
    from meter import events
    from meter.clock import METER_EPOCH_UNIX

    chip = FlashChip(flash_path, 64)
    try:
        try:
            fs = lfs_vfs.VfsLfs2(chip)
        except OSError:
            return []
        records = sorted(events.EventLog(fs).records())
    finally:
        chip.close()
    return [
        {"t_s": t + METER_EPOCH_UNIX - start_unix, "code": code, "name": event_name(code)}
        for _seq, t, code in records
    ]


def event_name(code: int) -> str:
    from meter import events

    if code in events.NAMES:
        return events.NAMES[code]
    if events.CMD_REJECTED < code < events.CMD_REJECTED + 50:
        from host_tools.headend import REASONS

        return "cmd_rejected_" + REASONS.get(code - events.CMD_REJECTED, "other")
    return "unknown"


def build_report(scenario: dict, raw: dict, flash_path: str, wall_s: float) -> dict:
    readout = parse_readout(raw["readout"])
    report = {
        "true_import_wh": round(raw["true_import_wh"], 3),
        "true_export_wh": round(raw["true_export_wh"], 3),
        "meter_import_wh": kwh_text_to_wh(readout.get("1.8.0")),
        "meter_export_wh": kwh_text_to_wh(readout.get("2.8.0")),
        "reboots": raw["reboots"],
        "events": read_events(flash_path, scenario["start_unix"]),
        "flash": {"bytes_written": raw["flash_bytes_written"], "erases": raw["flash_erases"]},
        "runtime": raw["runtime"],
        "wall_s": round(wall_s, 3),
        "sim_s_per_wall_s": round(scenario["duration_ms"] / 1000 / max(wall_s, 1e-9), 1),
    }
    if raw["runtime"] == "micropython":
        report["heap_peak_bytes"] = raw["heap_peak_bytes"]
    return report
