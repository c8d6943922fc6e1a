"""Scenarios: check and normalise them, run them on either runtime, and build the report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simulator.device.timeutil import parse_iso

ROOT = Path(__file__).resolve().parent.parent
MPY_DIR = ROOT / "build" / "mpy"
DEFAULT_START = "2026-01-01T00:00:00+05:30"
# The firmware's heap budget on MicroPython: a hard cap (an ESP32 without PSRAM has ~110 KB,
# and this port's objects are twice its pointer size). The firmware's code runs in place from
# its ROMFS image, as on a board (simulator/device/romstart.py). The device process also
# carries the simulator's own device layer (the Python stand-ins for `machine`, `esp32`,
# `network`, which are C on a board, and the wire); its measured size is added on top, so
# the firmware gets exactly this much. The whole firmware (MQTT link, commands, supply
# control, store-and-forward) runs in it. See README, "Heap on MicroPython".
HEAPSIZE = "64k"
DEVICE_LAYER = ("simulator.device.shim", "simulator.device.wire", "socket", "struct")
_layer_bytes: list[int] = []


def heap_bytes(size: str) -> int:
    size = size.lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(size[-1:], 1)
    return int(size.rstrip("km")) * scale


def device_layer_bytes() -> int:
    """What the device process takes of MicroPython's heap before the firmware starts,
    measured once: its start-up (path and arguments, whose length depends on where the
    checkout lies), the ROMFS mount and the simulator's device layer. The firmware's budget
    comes on top, so it gets exactly that much wherever it runs."""
    if not _layer_bytes:
        from simulator.build_mpy import build

        build()
        probe = ("import romstart\n" + "".join(f"import {name}\n" for name in DEVICE_LAYER)
                 + "import gc\ngc.collect()\nprint(gc.mem_alloc())\n")
        out = subprocess.run(micropython_command("-c", probe, heapsize="1m"),
                             env=micropython_env(), capture_output=True, text=True, check=True)
        _layer_bytes.append(int(out.stdout.strip()))
    return _layer_bytes[0]

SCENARIO_KEYS = {"duration_s", "start", "board", "config", "load", "outages", "faults",
                 "commands", "button", "cover_open", "chip", "calibrate", "power_fail_input",
                 "command_key", "files", "port_commands", "network_outages", "broker"}
LOAD_KEYS = {"at_s", "volts", "amps", "pf", "hz", "neutral_amps", "lead"}
OUTAGE_KEYS = {"at_s", "for_s"}
RELAY_FAULTS = {"relay_weld_at_s", "relay_coil_open_at_s", "relay_shock_at_s"}
FAULT_KEYS = {"power_cut_at_write", "spi_bit_error_rate", "seed", "ic_resets_at_s",
              "watchdog_resets_at_s", "stuck_bus"} | RELAY_FAULTS
PORT_COMMAND_KEYS = {"at_s", "cmd", "args"}
PORT_COMMANDS = ("disconnect", "reconnect")  # the local command port's (meter/cmdport.py)
COMMAND_KEYS = {"at_s", "cmd", "args", "ttl_s", "raw", "qos"}
BUTTON_KEYS = {"at_s", "hold_s"}
# Configuration values with a range beyond their type.
CONFIG_RANGES = {"control_mode": (0, 6), "relay_retries": (0, 10), "relay_ops_per_min": (1, 60)}
CHIP_KEYS = {"u_gain_error", "i_gain_error", "n_gain_error", "phase_error_deg",
             "power_offset_w"}
STUCK_KEYS = {"at_s", "for_s", "level"}
BOARDS = {"sim", "sim_hbridge", "sim-ade7953"}
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


def _windows(scenario: dict, name: str, length_key: str = "for_s",
             keys: set = OUTAGE_KEYS) -> list[list[int]]:
    """A scenario list of {"at_s", length_key} objects as sorted [at_ms, length_ms] pairs."""
    items = scenario.get(name, [])
    if not isinstance(items, list):
        raise ScenarioError(f"{name} must be a list")
    windows = []
    for i, item in enumerate(items):
        item = _object(item, f"{name}[{i}]", keys)
        if "at_s" not in item or length_key not in item:
            raise ScenarioError(f"{name}[{i}] needs 'at_s' and '{length_key}'")
        windows.append([int(_number(item["at_s"], f"{name}[{i}].at_s") * 1000),
                        int(_number(item[length_key], f"{name}[{i}].{length_key}") * 1000)])
    windows.sort()
    return windows


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
        if "neutral_amps" in item or "lead" in item:
            lead = item.get("lead", False)
            if not isinstance(lead, bool):
                raise ScenarioError(f"load[{i}].lead must be true or false")
            neutral = item.get("neutral_amps", load[-1][2])
            load[-1] += [_number(neutral, f"load[{i}].neutral_amps"), lead]
    load.sort(key=lambda p: p[0])
    if not load or load[0][0] > 0:
        volts = load[0][1] if load else 240.0
        load.insert(0, [0, volts, 0.0, 1.0, 50.0])
    outages = _windows(scenario, "outages")
    faults = _check_faults(_object(scenario.get("faults", {}), "faults", FAULT_KEYS))
    port_commands = []
    items = scenario.get("port_commands", [])
    if not isinstance(items, list):
        raise ScenarioError("port_commands must be a list")
    for i, item in enumerate(items):
        item = _object(item, f"port_commands[{i}]", PORT_COMMAND_KEYS)
        if "at_s" not in item or "cmd" not in item:
            raise ScenarioError(f"port_commands[{i}] needs 'at_s' and 'cmd'")
        if item["cmd"] not in PORT_COMMANDS:
            raise ScenarioError(
                f"port_commands[{i}].cmd must be one of {', '.join(PORT_COMMANDS)}")
        args = item.get("args", {})
        if not isinstance(args, dict):
            raise ScenarioError(f"port_commands[{i}].args must be a JSON object")
        line = item["cmd"] + (" " + json.dumps(args, separators=(",", ":")) if args else "")
        port_commands.append([int(_number(item["at_s"], f"port_commands[{i}].at_s") * 1000),
                              (line + "\n").encode()])
    port_commands.sort(key=lambda c: c[0])
    commands = _check_commands(scenario.get("commands", []))
    network_outages = _windows(scenario, "network_outages")
    for (a, fa), (b, _fb) in zip(network_outages, network_outages[1:], strict=False):
        if b < a + fa:
            raise ScenarioError("network_outages must not overlap")
    broker = scenario.get("broker", "")
    if not isinstance(broker, str):
        raise ScenarioError("broker must be a string HOST:PORT")
    if broker:
        from simulator.mqttpath import parse_broker

        try:
            parse_broker(broker)
        except ValueError as exc:
            raise ScenarioError(str(exc)) from None
    if (commands or network_outages or broker) and (
            config.get("mqtt_host") or config.get("mqtt_tls")):
        raise ScenarioError("config.mqtt_host/mqtt_tls are set by the run when the scenario "
                            "has commands, network_outages or a broker (give 'broker')")
    button = _windows(scenario, "button", "hold_s", BUTTON_KEYS)
    cover = _windows(scenario, "cover_open")
    chip = _object(scenario.get("chip", {}), "chip", CHIP_KEYS)
    for key, value in chip.items():
        _number(value, f"chip.{key}", None)
        if key.endswith("gain_error") and abs(value) > 0.5:
            raise ScenarioError(f"chip.{key} must be within +/-0.5")
        if key == "phase_error_deg" and abs(value) > 10:
            raise ScenarioError("chip.phase_error_deg must be within +/-10")
    calibrate = scenario.get("calibrate", False)
    if not isinstance(calibrate, bool):
        raise ScenarioError("calibrate must be true or false")
    power_fail_input = scenario.get("power_fail_input", True)
    if not isinstance(power_fail_input, bool):
        raise ScenarioError("power_fail_input must be true or false")
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
        "power_fail_input": power_fail_input,
        "files": files,
        "command_key": command_key.lower(),
        "duration_ms": int(duration * 1000),
        "start_unix": start_unix,
        "board": board,
        "config": config,
        "load": load,
        "outages": outages,
        "faults": faults,
        "commands": commands,
        "port_commands": port_commands,
        "network_outages": network_outages,
        "broker": broker,
        "button": button,
        "cover_open": cover,
        "chip": chip,
        "calibrate": calibrate,
    }


def _check_commands(items: Any) -> list:
    """Remote commands, sent over MQTT by the run's head-end: [at_ms, item] sorted by time.
    item: {"cmd", "args", "ttl_s"} signed with the meter's key, or {"raw"}: the exact text
    published (hostile input: forged, replayed, truncated, oversized...)."""
    ensure_paths()
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)
    from meter.commands import _KNOWN

    known = _KNOWN.split()
    if not isinstance(items, list):
        raise ScenarioError("commands must be a list")
    commands = []
    for i, item in enumerate(items):
        item = _object(item, f"commands[{i}]", COMMAND_KEYS)
        if "at_s" not in item or ("cmd" not in item and "raw" not in item):
            raise ScenarioError(f"commands[{i}] needs 'at_s' and 'cmd' (or 'raw')")
        at_ms = int(_number(item["at_s"], f"commands[{i}].at_s") * 1000)
        if "raw" in item:
            if set(item) - {"qos"} != {"at_s", "raw"} or not isinstance(item["raw"], str):
                raise ScenarioError(f"commands[{i}]: 'raw' is a string, sent as it is, "
                                    "alone with 'at_s' (and 'qos')")
            qos = item.get("qos", 1)
            if qos not in (0, 1) or isinstance(qos, bool):
                raise ScenarioError(f"commands[{i}].qos must be 0 or 1")
            commands.append([at_ms, {"raw": item["raw"], "qos": qos} if qos != 1
                             else {"raw": item["raw"]}])
            continue
        if "qos" in item:
            raise ScenarioError(f"commands[{i}]: 'qos' is for 'raw' payloads only")
        if item["cmd"] not in known:
            raise ScenarioError(f"commands[{i}].cmd must be one of {', '.join(known)}")
        args = item.get("args", {})
        if not isinstance(args, dict):
            raise ScenarioError(f"commands[{i}].args must be a JSON object")
        ttl = item.get("ttl_s", 300)
        if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl < 2**30:
            raise ScenarioError(f"commands[{i}].ttl_s must be a whole number of seconds")
        commands.append([at_ms, {"cmd": item["cmd"], "args": args, "ttl_s": ttl}])
    commands.sort(key=lambda c: c[0])
    return commands


def uses_broker(scenario: dict) -> bool:
    """Whether a normalised scenario's run needs the MQTT path (simulator/mqttpath.py)."""
    return bool(scenario.get("commands") or scenario.get("network_outages")
                or scenario.get("broker"))


def _check_faults(faults: dict) -> dict:
    for key in ("power_cut_at_write", "seed"):
        value = faults.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ScenarioError(f"faults.{key} must be a whole number >= 0")
    for key in RELAY_FAULTS & set(faults):
        _number(faults[key], f"faults.{key}")
    ber = _number(faults.get("spi_bit_error_rate", 0.0), "faults.spi_bit_error_rate")
    if ber > 0.01:
        raise ScenarioError("faults.spi_bit_error_rate must be at most 0.01")
    for key in ("ic_resets_at_s", "watchdog_resets_at_s"):
        resets = faults.get(key, [])
        if not isinstance(resets, list):
            raise ScenarioError(f"faults.{key} must be a list of times")
        for i, t in enumerate(resets):
            _number(t, f"faults.{key}[{i}]")
    stuck = faults.get("stuck_bus", [])
    if not isinstance(stuck, list):
        raise ScenarioError("faults.stuck_bus must be a list")
    for i, item in enumerate(stuck):
        item = _object(item, f"faults.stuck_bus[{i}]", STUCK_KEYS)
        if "at_s" not in item or "for_s" not in item:
            raise ScenarioError(f"faults.stuck_bus[{i}] needs 'at_s' and 'for_s'")
        _number(item["at_s"], f"faults.stuck_bus[{i}].at_s")
        _number(item["for_s"], f"faults.stuck_bus[{i}].for_s")
        if item.get("level", 0xFF) not in (0x00, 0xFF):
            raise ScenarioError(f"faults.stuck_bus[{i}].level must be 0 or 255")
    return faults


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
        if key == "load_limiter":
            from meter.ctlboot import check_limiter

            problem = check_limiter(value)
            if problem:
                raise ScenarioError(f"config.{problem}")
            continue
        low, high = CONFIG_RANGES.get(key, (0, None))
        if isinstance(value, int) and (value < low or (high is not None and value > high)):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise ScenarioError(f"config.{key} must be {bound} (got {value})")


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
    """Real MicroPython with the firmware's ROMFS image in memory (simulator/romboot.py). A
    process that imports `romstart` first (the device process, the layer probe) loads the
    firmware from that image at /rom, independent of where the checkout lies; a unit-check
    script that does not loads the same .mpy files from build/mpy."""
    from simulator.build_mpy import ROMFS

    return [sys.executable, str(ROOT / "simulator" / "romboot.py"), str(ROMFS),
            "-X", f"heapsize={heapsize}", *args]


def micropython_env() -> dict:
    from simulator.build_mpy import ROMSTART_DIR

    env = dict(os.environ)
    # .frozen: the modules frozen into MicroPython's own image (ssl...), on the path as on a
    # board; /rom first, as on a board with a romfs partition
    env["MICROPYPATH"] = f"/rom:{ROMSTART_DIR}:{MPY_DIR}:.frozen"
    return env


@contextmanager
def network(scenario: dict, broker: str | None = None) -> Iterator[tuple[dict, Any]]:
    """The scenario as the device runs it, and its network (None when it needs none): a
    broker, the meter's path to it and a head-end, torn down at the end."""
    if not (uses_broker(scenario) or broker):
        yield scenario, None
        return
    from simulator.mqttpath import NetworkError, ScenarioNetwork

    try:
        net = ScenarioNetwork(scenario, broker)
    except NetworkError as exc:
        raise ScenarioError(str(exc)) from None
    try:
        yield net.run_scenario(), net
    finally:
        net.close()


def _network_results(raw: dict, net: Any) -> dict:
    counts = raw.pop("meter_counts", None)
    keys = ("published", "delivered", "backlog")
    raw["telemetry"] = dict(zip(keys, counts, strict=True)) if counts else dict.fromkeys(keys)
    if net is not None:
        raw.update(net.finish())
    return raw


def run_cpython(scenario: dict, flash_path: str, progress: Callable | None,
                on_tick: Callable | None = None, broker: str | None = None,
                on_world: Callable | None = None) -> dict:
    """Run the firmware in this process, against the world directly. on_world(world): called
    once the world is built (the live simulator acts on it: the button, the cover)."""
    ensure_paths()
    from simulator.device import runner

    duration = scenario["duration_ms"]
    tick = on_tick
    if progress is not None:
        def tick(now_ms: int) -> None:
            progress(min(now_ms, duration) / duration)
    with network(scenario, broker) as (device_scenario, net):
        def attach(world: Any) -> None:
            if net is not None:
                net.attach(world)
            if on_world is not None:
                on_world(world)

        raw = runner.run(device_scenario, flash_path, tick, measure_loss, attach)
        return _network_results(raw, net)


def run_micropython(scenario: dict, flash_path: str, progress: Callable | None,
                    heapsize: str = HEAPSIZE, on_tick: Callable | None = None,
                    broker: str | None = None, on_world: Callable | None = None) -> dict:
    """Run the firmware on the MicroPython unix port against a world served from here.
    heapsize is the firmware's budget; the device layer's measured size comes on top;
    on_world as for run_cpython (the world lives here, in the host process)."""
    ensure_paths()
    from simulator.build_mpy import build
    from simulator.device import runner
    from simulator.host import DeviceServer

    build()
    with network(scenario, broker) as (device_scenario, net):
        world, board_module = runner.prepare(device_scenario, flash_path)
        if net is not None:
            net.attach(world)
        if on_world is not None:
            on_world(world)
        duration = scenario["duration_ms"]
        world.on_tick = on_tick
        world.on_restore = measure_loss
        if progress is not None:
            world.on_tick = lambda now_ms: progress(min(now_ms, duration) / duration)

        layer = device_layer_bytes()
        total = str(heap_bytes(heapsize) + layer)

        def command(port: int) -> list[str]:
            return micropython_command("-m", "romstart", str(port),
                                       board_module, heapsize=total)

        server = DeviceServer(world, command, micropython_env())
        server.run()
        raw = runner.results(world, max(world.heap_peak - layer, 0))
        raw["heap_device_layer_bytes"] = layer
        return _network_results(raw, net)


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
        if runtime == "cpython":
            raw = run_cpython(scenario, flash_path, progress, broker=broker)
        else:
            raw = run_micropython(scenario, flash_path, progress, heapsize, broker=broker)
        raw["runtime"] = runtime
        wall = time.monotonic() - started
        return build_report(scenario, raw, flash_path, wall)


@contextmanager
def image_parts(flash_path: str) -> Iterator[tuple]:
    """The meter's data filesystem (None when it holds none) and its last-gasp journal
    partition on a flash image, for reading them with the firmware's own readers."""
    ensure_paths()
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip
    from simulator.device.shim import Partition, micropython

    sys.modules.setdefault("micropython", micropython)
    chip = FlashChip(flash_path, 64)
    try:
        try:
            fs = lfs_vfs.VfsLfs2(Partition(chip, "meterdata"))
        except OSError:
            fs = None
        yield fs, Partition(chip, "lastgasp")
    finally:
        chip.close()


@contextmanager
def image_fs(flash_path: str) -> Iterator[Any]:
    """The meter's data filesystem on a flash image; None when it holds no filesystem."""
    with image_parts(flash_path) as (fs, _journal):
        yield fs


def read_store(flash_path: str) -> dict:
    """What the meter would restore at boot, read from the flash image with the firmware's
    own readers (LittleFS checkpoint or a newer last-gasp journal record): energy registers
    (Wh) and the block-profile record count."""
    with image_parts(flash_path) as (fs, journal):
        if fs is None:
            return {"wh": 0.0, "profile_records": 0}
        from meter import profile, store
        from meter.energy import Register

        imp, exp = Register(1000), Register(1000)
        energy = store.EnergyStore(fs, journal)
        energy.load(imp, exp)
        ring = profile.block(fs, energy.profile_head)
        count = ring.n if ring.n < ring.capacity else ring.capacity
        return {"wh": imp.wh_float() + exp.wh_float(), "profile_records": count,
                "import_wh": imp.wh_float()}


def measure_loss(world: Any) -> None:
    """Before each reboot: how much of what flowed the meter lost over this power cut
    (true energy minus what it restores, less the shortfall it already had)."""
    world.flash.fh.flush()
    restored = read_store(world.flash.path)["wh"]
    deficit = world.true_import_wh + world.true_export_wh - restored
    before = getattr(world, "deficit_wh", 0.0)
    world.losses_wh = getattr(world, "losses_wh", [])
    world.losses_wh.append(deficit - before)
    world.deficit_wh = deficit


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


# Names of the metering events (codes 120-128), kept host-side to spare the meter's heap.
METERING_EVENT_NAMES = {
    120: "read_rejected", 121: "bus_fault", 122: "bus_restored", 123: "tamper_neutral",
    124: "tamper_neutral_end", 125: "reverse_flow", 126: "reverse_flow_end",
    127: "calibration_loaded", 128: "calibration_bad",
    130: "backlog_lost",  # store-and-forward (meter/forward.py)
}


def read_events(flash_path: str, start_unix: int) -> list[dict]:
    """The firmware's event log, read from the flash image with the firmware's own reader."""
    with image_fs(flash_path) as fs:
        if fs is None:
            return []
        from meter import maint
        from meter.clock import METER_EPOCH_UNIX

        # by sequence: the order logged; flag 1: stamped while the clock was invalid
        records = sorted(rec for cat in range(len(maint.CATEGORY_NAMES))
                         for _n, rec in maint.read_events(fs, cat))
    events = []
    for _seq, t, code, _cat, flags, *_rest in records:
        event = {"t_s": t + METER_EPOCH_UNIX - start_unix, "code": code,
                 "name": event_name(code)}
        if flags & 1:
            event["clock_invalid"] = True
        events.append(event)
    return events


# Accepted configuration commands (firmware/meter/cmdx.py), named host-side like the above.
COMMAND_EVENT_NAMES = {
    220: "control_mode_set", 221: "load_limit_set", 222: "telemetry_period_set",
    223: "time_set_old", 224: "time_set_new", 225: "billing_snapshot", 226: "remote_reboot",
}
CAUSES = ("remote", "manual", "limiter", "tamper")
STATES = ("disconnected", "connected", "ready_for_reconnection")


def event_name(code: int) -> str:
    """Names of the firmware's event codes; supply control's are composed from the code."""
    from meter import events

    if code in events.NAMES:
        return events.NAMES[code]
    if code in METERING_EVENT_NAMES:
        return METERING_EVENT_NAMES[code]
    extra = {events.RELAY_FAULT: "relay_fault", events.RELAY_REASSERTED: "relay_reasserted",
             events.LIMITER_LOCKOUT: "limiter_lockout"}
    if code in extra:
        return extra[code]
    offset = code - events.CONTROL
    if 0 <= offset < len(CAUSES) * 3:
        return f"control_{CAUSES[offset // 3]}_{STATES[offset % 3]}"
    if code in COMMAND_EVENT_NAMES:
        return COMMAND_EVENT_NAMES[code]
    if events.CMD_REJECTED < code < events.CMD_REJECTED + 50:
        from host_tools.headend import REASONS

        return "cmd_rejected_" + REASONS.get(code - events.CMD_REJECTED, "other")
    return "unknown"


def read_control(flash_path: str) -> tuple | None:
    """(state, mode) persisted by the firmware's control, read with its own slot reader."""
    with image_fs(flash_path) as fs:
        if fs is None:
            return None
        from meter.ctlboot import load

        rec = load(fs)
    return rec[1:3] if rec else None


def build_report(scenario: dict, raw: dict, flash_path: str, wall_s: float) -> dict:
    readout = parse_readout(raw["readout"])
    report = {
        "true_import_wh": round(raw["true_import_wh"], 3),
        "true_export_wh": round(raw["true_export_wh"], 3),
        "meter_import_wh": kwh_text_to_wh(readout.get("1.8.0")),
        "meter_export_wh": kwh_text_to_wh(readout.get("2.8.0")),
        "reboots": raw["reboots"],
        "events": read_events(flash_path, scenario["start_unix"]),
        "flash": {"bytes_written": raw["flash_bytes_written"], "erases": raw["flash_erases"],
                  "erases_max_block": raw["flash_erases_max_block"],
                  "erases_per_block": raw.get("flash_erases_per_block", [])},
        "lost_wh_per_outage_max": round(max(raw["losses_wh"], default=0.0), 3),
        # last gasps the hold-up did not cover: a flash operation outlasted the supply
        "holdup_overruns": raw.get("holdup_overruns", 0),
        "profile_records": read_store(flash_path)["profile_records"],
        "runtime": raw["runtime"],
        "wall_s": round(wall_s, 3),
        "sim_s_per_wall_s": round(scenario["duration_ms"] / 1000 / max(wall_s, 1e-9), 1),
    }
    control = read_control(flash_path)
    state, mode = control if control else (1, scenario["config"].get("control_mode", 1))
    report.update({
        "control_state": state,
        "control_mode": mode,
        "output_state": state == 1,
        "relay_closed": raw["relay_closed"],
        "relay_operations": raw["relay_operations"],
        "relay_pulses": raw["relay_pulses"],
        "relay_max_pulse_ms": raw["relay_max_pulse_ms"],
        "coil_conflicts": raw["coil_conflicts"],
        "command_replies": raw["command_replies"],
        "control_events": [e for e in report["events"] if 150 <= e["code"] <= 199],
    })
    instant = {}
    for code, key in (("32.7.0", "volts"), ("31.7.0", "amps"), ("91.7.0", "neutral_amps"),
                      ("1.7.0", "watts"), ("3.7.0", "var"), ("9.7.0", "va"),
                      ("13.7.0", "pf"), ("14.7.0", "hz")):
        if code in readout:
            instant[key] = float(readout[code])
    report["instant"] = instant
    # Reactive energy (registers since the meter's last boot) and its truth.
    report["true_q_import_varh"] = round(raw.get("true_q_import_varh", 0.0), 3)
    report["true_q_export_varh"] = round(raw.get("true_q_export_varh", 0.0), 3)
    report["meter_q_import_varh"] = kwh_text_to_wh(readout.get("3.8.0"))
    report["meter_q_export_varh"] = kwh_text_to_wh(readout.get("4.8.0"))
    for code, key in (("C.90.1", "rejected_reads"), ("C.90.2", "ic_reinits")):
        if code in readout:
            report[key] = int(readout[code])
    report["telemetry"] = raw.get("telemetry", {})
    report["acks"] = raw.get("acks", [])
    if "received" in raw:
        # What the run's head-end received per topic (the broker's own last will aside).
        report["telemetry"]["received"] = raw["received"]
        report["telemetry"]["records_received"] = raw.get("records_received", {})
        report["telemetry"]["seq_gaps"] = raw.get("seq_gaps", {})
        report["telemetry"]["register_decreases"] = raw.get("register_decreases", [])
        report["telemetry"]["registers_published_max_mwh"] = raw.get(
            "registers_published_max_mwh", {})
        report["commands_delivered"] = raw["commands_delivered"]
        # waits for the network that ran out (0 unless the machine is badly overloaded or the
        # broker misbehaves): the report is then not guaranteed to be reproducible
        report["network_late"] = raw["network_late"]
        report["connections"] = raw["connections"]  # the meter's to the broker (proxy)
    if raw["runtime"] == "micropython":
        report["heap_peak_bytes"] = raw["heap_peak_bytes"]  # the firmware's, layer excluded
        report["heap_device_layer_bytes"] = raw["heap_device_layer_bytes"]
    return report
