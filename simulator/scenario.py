"""Scenarios: check and normalise them, run them on either runtime, and build the report."""

from __future__ import annotations

import calendar
import importlib
import json
import math
import os
import string
import subprocess
import sys
import tempfile
import threading
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

# The scenario schema: every key with its type and range, in one table (SCHEMA below).
# docs/scenarios.md "Ranges" states the same ranges; tests/test_scenario_schema.py keeps them
# in step.
MAX_DURATION_S = 366 * 86400  # a leap year of virtual time
# start: any clock reading the meter copes with (a lost RTC reads 2000; 2106 is past 32-bit
# Unix time: meter/runtime/clock.py takes both as lost), from Unix time 0 to ISO-8601's last year
START_MIN = "1970-01-01T00:00:00Z"
END_MAX = "9999-12-31T23:59:59Z"
MAX_VOLTS = 480.0  # twice a 240 V supply: a lost neutral puts line voltage on the meter
AMPS_PER_IMAX = 2  # current (line or neutral) up to this many times config imax_a
FILES_MAX_BYTES = 64 * 1024  # all `files` together: a quarter of the data partition
MAX_ITEMS = 10_000  # entries in any one list
BIG = 2**30 - 1  # the firmware's small ints
_END = "duration_s"  # a bound that is the scenario's own duration
_AMPS = "amps"  # a bound that is AMPS_PER_IMAX * config imax_a


def _show(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 24 else text[:21] + "..."


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _join(where: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else key


class Num:
    """A finite number (or whole number) in [lo, hi]; lo/hi may be _END or _AMPS, the
    scenario's duration and current limit; hi_open excludes hi."""

    def __init__(self, lo: float | str, hi: float | str, unit: str = "", whole: bool = False,
                 hi_open: bool = False) -> None:
        self.lo, self.hi, self.unit, self.whole = lo, hi, unit, whole
        self.hi_open = hi_open

    def _bound(self, bound: float | str, ctx: dict) -> float:
        return ctx[bound] if isinstance(bound, str) else bound

    def describe(self, ctx: dict | None = None) -> str:
        """E.g. 'from 0 to 480 V', 'from 0 s to less than duration_s' (with ctx: 'from 0 to
        less than 3600 s (duration_s)')."""
        notes = []

        def name(bound: float | str) -> str:
            if isinstance(bound, str):
                note = "duration_s" if bound == _END else f"{AMPS_PER_IMAX} x config.imax_a"
                if ctx is None:
                    return note
                notes.append(note)
                bound = ctx[bound]
            return _num(bound)

        lo, hi = name(self.lo), name(self.hi)
        unit = f" {self.unit}" if self.unit else ""
        if ctx is None and isinstance(self.hi, str):  # 'from 0 s to less than duration_s'
            lo, unit = lo + unit, ""
        text = f"from {lo} to {'less than ' if self.hi_open else ''}{hi}"
        text += unit
        text += f" ({', '.join(notes)})" if notes else ""
        return ("a whole number " if self.whole else "") + text

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if isinstance(value, bool) or not isinstance(value, int if self.whole else (int, float)):
            kind = "a whole number" if self.whole else "a number"
            raise ScenarioError(f"{where}: must be {kind}, not {_show(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise ScenarioError(f"{where}: must be a finite number, not {_show(value)}")
        lo, hi = self._bound(self.lo, ctx), self._bound(self.hi, ctx)
        if value < 0 <= lo:
            raise ScenarioError(f"{where}: must not be negative (got {_show(value)})")
        if value < lo or value > hi or (self.hi_open and value == hi):
            raise ScenarioError(f"{where}: must be {self.describe(ctx)} (got {_show(value)})")
        return value


class DayPart(Num):
    """A period that lines up with midnight: a whole division of a day."""

    def describe(self, ctx: dict | None = None) -> str:
        return super().describe(ctx) + " dividing a day (86400 s)"

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        super().check(value, where, ctx)
        if 86_400 % value:
            raise ScenarioError(f"{where}: must be {self.describe(ctx)} (got {value})")
        return value


class Flag:
    def describe(self, ctx: dict | None = None) -> str:
        return "true or false"

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if not isinstance(value, bool):
            raise ScenarioError(f"{where}: must be true or false, not {_show(value)}")
        return value


class OneOf:
    def __init__(self, *values: Any) -> None:
        self.values = values

    def describe(self, ctx: dict | None = None) -> str:
        return "one of " + ", ".join(str(v) for v in self.values)

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if isinstance(value, bool) or value not in self.values:
            raise ScenarioError(f"{where}: must be {self.describe()}, not {_show(value)}")
        return value


class Text:
    """A string of lo..hi characters, each in chars (when given), then test(value): None or
    what is wrong with it."""

    def __init__(self, lo: int, hi: int, chars: str = "", about: str = "",
                 test: Callable | None = None) -> None:
        self.lo, self.hi, self.chars, self.about, self.test = lo, hi, chars, about, test

    def describe(self, ctx: dict | None = None) -> str:
        return self.about or f"a string of up to {self.hi} characters"

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if not isinstance(value, str):
            raise ScenarioError(f"{where}: must be a string, not {_show(value)}")
        if not self.lo <= len(value) <= self.hi or (
                self.chars and any(c not in self.chars for c in value)):
            raise ScenarioError(f"{where}: must be {self.describe()}, not {_show(value)}")
        problem = self.test(value) if self.test else None
        if problem:
            raise ScenarioError(f"{where}: {problem}")
        return value


class Obj:
    """A JSON object of these fields (None: any JSON object, e.g. a command's args)."""

    def __init__(self, fields: dict | None, required: tuple = ()) -> None:
        self.fields, self.required = fields, required

    def describe(self, ctx: dict | None = None) -> str:
        return "a JSON object"

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if not isinstance(value, dict):
            raise ScenarioError(f"{where or 'the scenario'}: must be a JSON object, "
                                f"not {_show(value)}")
        if self.fields is None:
            return value
        for key in value:
            if key not in self.fields:
                known = ", ".join(sorted(self.fields))
                raise ScenarioError(f"{_join(where, key)}: unknown key (known: {known})")
        for key in self.required:
            if key not in value:
                raise ScenarioError(f"{_join(where, key)}: missing (required"
                                    + (f" in {where})" if where else ")"))
        for key, spec in self.fields.items():
            if key in value and spec is not None:
                spec.check(value[key], _join(where, key), ctx)
        return value


class Items:
    def __init__(self, item: Any) -> None:
        self.item = item

    def describe(self, ctx: dict | None = None) -> str:
        return f"a list of up to {MAX_ITEMS}"

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if not isinstance(value, list):
            raise ScenarioError(f"{where}: must be a list, not {_show(value)}")
        if len(value) > MAX_ITEMS:
            raise ScenarioError(f"{where}: at most {MAX_ITEMS} entries (got {len(value)})")
        for i, item in enumerate(value):
            self.item.check(item, _join(where, i), ctx)
        return value


class Files:
    """`files`: absolute path -> hex contents, written to the data partition before boot.
    A path is /NAME or /FOLDER/NAME (the folder is made), names of letters, digits, . _ -."""

    def describe(self, ctx: dict | None = None) -> str:
        return (f"/NAME or /FOLDER/NAME (names of 1 to 32 letters, digits, . _ -) -> hex, "
                f"{FILES_MAX_BYTES} bytes in all")

    def check(self, value: Any, where: str, ctx: dict) -> Any:
        if not isinstance(value, dict):
            raise ScenarioError(f"{where}: must be a JSON object of path -> hex")
        total = 0
        for path, data in value.items():
            at = f"{where}[{json.dumps(path)}]"
            parts = path.split("/")
            if (parts[0] or len(parts) not in (2, 3)
                    or not all(0 < len(p) <= 32 and p.strip(".") and
                               all(c in self.NAME for c in p) for p in parts[1:])):
                raise ScenarioError(f"{at}: the path must be /NAME or /FOLDER/NAME, names of "
                                    "1 to 32 letters, digits, '.', '_' or '-'")
            if not isinstance(data, str):
                raise ScenarioError(f"{at}: must be a hex string")
            try:
                total += len(bytes.fromhex(data))
            except ValueError:
                raise ScenarioError(f"{at}: is not hex") from None
        folders = {path.rpartition("/")[0] for path in value} & set(value)
        if folders:
            raise ScenarioError(f"{where}[{json.dumps(min(folders))}]: is a folder of another "
                                "entry, so cannot be a file")
        if total > FILES_MAX_BYTES:
            raise ScenarioError(f"{where}: {total} bytes in all, at most {FILES_MAX_BYTES}")
        return value


_ID_CHARS = string.ascii_letters + string.digits + "-_"
Files.NAME = _ID_CHARS + "."  # a file's or folder's name


def _start_problem(text: str) -> str | None:
    try:
        unix = parse_iso(text)
    except ValueError as exc:
        return str(exc).removeprefix("start ")
    if not parse_iso(START_MIN) <= unix <= parse_iso(END_MAX):
        return f"must be from {START_MIN} to {END_MAX} (got {text})"
    if int(text[8:10]) > calendar.monthrange(int(text[0:4]), int(text[5:7]))[1]:
        return f"has no such day (got {text})"
    return None


def _broker_problem(text: str) -> str | None:
    from simulator.mqttpath import parse_broker

    try:
        parse_broker(text)
    except ValueError as exc:
        return str(exc).removeprefix("broker ")
    return None


def _id_problem(text: str) -> str | None:
    """The firmware's one rule for meter ids (firmware/meter/storage/config_rules.py valid_id)."""
    if _firmware("meter.storage.config_rules").valid_id(text):
        return None
    return "must be 1 to 32 letters, digits, '-' or '_'"


def _wifi_key_problem(text: str) -> str | None:
    if text and not (8 <= len(text) <= 63 or (len(text) == 64 and all(
            c in string.hexdigits for c in text))):
        return "must be empty, a WPA passphrase of 8 to 63 characters or 64 hex digits"
    return None


def _path_problem(text: str) -> str | None:
    return None if text.startswith("/") else "must be an absolute path on the data partition"


AT = Num(0, _END, "s", hi_open=True)  # when something happens: within the run
SPAN = Num(0.001, _END, "s")  # how long: a millisecond (virtual time's step) to the run
WINDOW = Obj({"at_s": AT, "for_s": SPAN}, ("at_s", "for_s"))
LIMITER_SPEC = Num(0, BIG, whole=True)
# firmware/meter/storage/config.py's keys: the type is its default's; the range is here.
CONFIG_SCHEMA = {
    "meter_id": Text(0, BIG, about="1 to 32 letters, digits, '-' or '_'", test=_id_problem),
    "poll_ms": Num(100, 60_000, "ms", whole=True),
    "meter_constant": Num(100, 100_000, "imp/kWh", whole=True),
    "telemetry_period_s": Num(1, 86_400, "s", whole=True),
    "mqtt_host": Text(0, 253, string.ascii_letters + string.digits + "-.:",
                      "a host name or address (up to 253 characters)"),
    "mqtt_port": Num(1, 65_535, whole=True),
    "mqtt_keepalive_s": Num(10, 65_535, "s", whole=True),
    "mqtt_timeout_s": Num(1, 60, "s", whole=True),
    "mqtt_user": Text(0, 128), "mqtt_password": Text(0, 128),
    "mqtt_tls": Flag(),
    "mqtt_ca": Text(1, 64, about="an absolute path of up to 64 characters", test=_path_problem),
    "wifi_ssid": Text(0, 32),
    "wifi_key": Text(0, 64, about="empty, 8 to 63 characters or 64 hex digits",
                     test=_wifi_key_problem),
    "checkpoint_s": Num(1, 86_400, "s", whole=True),
    "checkpoint_wh": Num(1, 1000, "Wh", whole=True),
    "checkpoint_min_s": Num(0, 3600, "s", whole=True),
    "profile_period_s": DayPart(60, 86_400, "s", whole=True),
    "control_mode": Num(0, 6, whole=True),
    "relay_retries": Num(0, 10, whole=True),
    "relay_ops_per_min": Num(1, 60, whole=True),
    "load_limit_w": Num(0, 100_000, "W", whole=True),
    "tamper_disconnect": Flag(),
    "load_limiter": None,  # firmware/meter/supply/startup.py's own check, below
    "vref_v": Num(100, 300, "V", whole=True),
    "imax_a": Num(1, 200, "A", whole=True),
    "import_only": Flag(),
}
CHIP_SCHEMA = {
    "u_gain_error": Num(-0.5, 0.5), "i_gain_error": Num(-0.5, 0.5),
    "n_gain_error": Num(-0.5, 0.5), "phase_error_deg": Num(-10, 10, "deg"),
    "power_offset_w": Num(-100, 100, "W"),
}
CHIP_KEYS = set(CHIP_SCHEMA)
RELAY_FAULTS = ("relay_weld_at_s", "relay_coil_open_at_s", "relay_shock_at_s")
FAULT_SCHEMA = {
    "power_cut_at_write": Num(0, BIG, whole=True), "seed": Num(0, 2**32 - 1, whole=True),
    "spi_bit_error_rate": Num(0, 0.01), "ic_resets_at_s": Items(AT),
    "watchdog_resets_at_s": Items(AT),
    "stuck_bus": Items(Obj({"at_s": AT, "for_s": SPAN, "level": OneOf(0, 255)},
                           ("at_s", "for_s"))),
    **dict.fromkeys(RELAY_FAULTS, AT),
}
# the local command port's (meter/local/command_port.py)
PORT_COMMANDS = ("disconnect", "reconnect")
SCHEMA = {
    "duration_s": Num(1, MAX_DURATION_S, "s"),
    "start": Text(0, 64, test=_start_problem, about=f"ISO-8601 with offset, from {START_MIN}; "
                  f"the run ends by {END_MAX}"),
    "board": OneOf("sim", "sim-ade7953", "sim_hbridge"),
    "config": None,  # CONFIG_SCHEMA, over firmware/meter/storage/config.py's keys: check()
    # a load profile may run past the end (a day's profile for a shorter run); events not
    "load": Items(Obj({"at_s": Num(0, MAX_DURATION_S, "s"), "volts": Num(0, MAX_VOLTS, "V"),
                       "amps": Num(0, _AMPS, "A"), "pf": Num(-1, 1), "hz": Num(45, 65, "Hz"),
                       "neutral_amps": Num(0, _AMPS, "A"), "lead": Flag()}, ("at_s",))),
    "outages": Items(WINDOW),
    "faults": Obj(FAULT_SCHEMA),
    "commands": Items(Obj({"at_s": AT, "cmd": None, "args": Obj(None),
                           "ttl_s": Num(0, BIG, "s", whole=True), "raw": Text(0, 1 << 20),
                           "qos": OneOf(0, 1)},  # qos: how a raw payload is published
                          ("at_s",))),
    "button": Items(Obj({"at_s": AT, "hold_s": Num(0, 3600, "s")}, ("at_s", "hold_s"))),
    "cover_open": Items(WINDOW),
    "chip": Obj(CHIP_SCHEMA),
    "calibrate": Flag(),
    "power_fail_input": Flag(),
    "command_key": Text(0, 64, string.hexdigits, "empty or 64 hex digits (the meter's key)",
                        lambda t: t and len(t) != 64 and "must be 64 hex digits"),
    "files": Files(),
    "port_commands": Items(Obj({"at_s": AT, "cmd": OneOf(*PORT_COMMANDS), "args": Obj(None)},
                               ("at_s", "cmd"))),
    "network_outages": Items(WINDOW),
    "broker": Text(0, 300, about="HOST:PORT", test=lambda t: t and _broker_problem(t)),
}
SCENARIO_KEYS = set(SCHEMA)
BOARDS = set(SCHEMA["board"].values)
RUNTIMES = ("cpython", "micropython")


def _rows(fields: dict, where: str) -> Iterator[tuple[str, str]]:
    for key, spec in fields.items():
        path = _join(where, key)
        if key == "config" and spec is None:
            yield from _rows(CONFIG_SCHEMA, "config")
        elif isinstance(spec, Obj) and spec.fields:
            yield from _rows(spec.fields, path)
        elif isinstance(spec, Items):
            if isinstance(spec.item, Obj):
                yield from _rows(spec.item.fields, path + "[]")
            else:
                yield path + "[]", spec.item.describe()
        elif isinstance(spec, (Num, OneOf, Text, Files)):
            yield path, spec.describe()
        elif spec is None and key == "load_limiter":
            yield path + ".*", LIMITER_SPEC.describe()


def ranges_table() -> list[str]:
    """The schema's ranges as docs/scenarios.md's table: keys with the same range share a row."""
    rows: dict[str, list[str]] = {}
    for path, text in _rows(SCHEMA, ""):
        rows.setdefault(text, []).append(f"`{path}`")
    return ["| keys | range |", "|---|---|"] + [
        f"| {', '.join(keys)} | {text} |" for text, keys in rows.items()]


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the problem in one line."""


def ensure_paths() -> None:
    """Make the firmware package and the fetched umqtt importable on CPython."""
    for path in (ROOT, ROOT / "firmware", ROOT / "build" / "lib"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def _firmware(module: str) -> Any:
    ensure_paths()
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)
    return importlib.import_module(module)


def check(raw: Any) -> dict:
    """Check a scenario against SCHEMA and the rules across keys; raise ScenarioError with
    one line naming the key, or return the context (duration, current limit)."""
    top = Obj({"duration_s": SCHEMA["duration_s"]}, ("duration_s",))
    if isinstance(raw, dict):
        top.check({"duration_s": raw["duration_s"]} if "duration_s" in raw else {}, "", {})
    else:
        top.check(raw, "", {})
    config = raw.get("config", {})
    defaults = _firmware("meter.storage.config").defaults()
    # the firmware's keys; one without a range here gets its type checked only (a test
    # insists that every key has one)
    Obj({key: CONFIG_SCHEMA.get(key) for key in defaults}).check(config, "config", {})
    for key, value in config.items():
        if type(value) is not type(defaults[key]):
            raise ScenarioError(f"config.{key}: must be of type {type(defaults[key]).__name__}"
                                f", not {_show(value)}")
    problem = _firmware("meter.supply.startup").check_limiter(config.get("load_limiter", {}))
    if problem:
        raise ScenarioError(f"config.{problem.replace(' must', ': must')}")
    for key, value in config.get("load_limiter", {}).items():
        LIMITER_SPEC.check(value, f"config.load_limiter.{key}", {})
    ctx = {_END: raw["duration_s"],
           _AMPS: AMPS_PER_IMAX * config.get("imax_a", defaults["imax_a"])}
    Obj(SCHEMA).check(raw, "", ctx)
    known = list(_firmware("meter.remote.command_table").COMMANDS)
    for i, item in enumerate(raw.get("commands", [])):
        where = f"commands[{i}]"
        if "raw" in item:
            if set(item) - {"qos"} != {"at_s", "raw"}:
                raise ScenarioError(f"{where}.raw: is sent as it is, alone with 'at_s' (and "
                                    "'qos'; no cmd, args or ttl_s)")
        elif "qos" in item:
            raise ScenarioError(f"{where}.qos: is for 'raw' payloads only")
        elif "cmd" not in item:
            raise ScenarioError(f"{where}.cmd: missing (needs 'cmd' or 'raw')")
        else:
            OneOf(*known).check(item["cmd"], f"{where}.cmd", ctx)
    start_unix = parse_iso(raw.get("start", DEFAULT_START))
    if start_unix + raw["duration_s"] > parse_iso(END_MAX):
        raise ScenarioError(f"duration_s: the run would end after {END_MAX}")
    for name in ("outages", "network_outages", "cover_open", "button"):
        length = "hold_s" if name == "button" else "for_s"
        spans = sorted((item["at_s"], item[length], i) for i, item in
                       enumerate(raw.get(name, [])))
        for (a, fa, i), (b, _fb, j) in zip(spans, spans[1:], strict=False):
            if b < a + fa:
                raise ScenarioError(f"{name}[{j}]: overlaps {name}[{i}] (at_s {a:g}, "
                                    f"{length} {fa:g})")
    if ((raw.get("commands") or raw.get("network_outages") or raw.get("broker"))
            and (config.get("mqtt_host") or config.get("mqtt_tls"))):
        raise ScenarioError("config.mqtt_host: set by the run when the scenario has commands, "
                            "network_outages or a broker (give 'broker'; also mqtt_tls)")
    return ctx


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


def uses_broker(scenario: dict) -> bool:
    """Whether a normalised scenario's run needs the MQTT path (simulator/mqttpath.py)."""
    return bool(scenario.get("commands") or scenario.get("network_outages")
                or scenario.get("broker"))


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
        # an interrupted run waits for nothing more (its broker may have had the Ctrl-C too)
        raw.update(net.finish(settle="interrupted_at_s" not in raw))
    return raw


_STOP = threading.Event()  # Ctrl-C seen: a run stops at its next tick (see interrupt())


def interrupt(clear: bool = False) -> None:
    """Ctrl-C (simulator.cli's SIGINT handler): raises KeyboardInterrupt where the program
    is, and marks the run stopped, so that it also stops at the firmware's next sleep when
    that KeyboardInterrupt is lost (raised inside a callback from C, e.g. littlefs's, which
    only prints it). clear: a new command starts, nothing is stopped."""
    if clear:
        _STOP.clear()
        return
    _STOP.set()
    raise KeyboardInterrupt


def _stoppable(tick: Callable | None) -> Callable:
    """The world's on_tick, raising KeyboardInterrupt once Ctrl-C was seen."""
    def checked(now_ms: int) -> None:
        if _STOP.is_set():
            raise KeyboardInterrupt
        if tick is not None:
            tick(now_ms)
    return checked


class Interrupted(KeyboardInterrupt):
    """Ctrl-C mid-run, carrying the raw results so far (run() makes the partial report)."""

    def __init__(self, raw: dict) -> None:
        super().__init__()
        self.raw = raw


def _interrupted(world: Any, raw: dict, net: Any) -> Interrupted:
    """Ctrl-C mid-run: the results so far, marked with the virtual time the run reached."""
    raw["interrupted_at_s"] = world.now_ms / 1000
    return Interrupted(_network_results(raw, net))


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
        built = []

        def attach(world: Any) -> None:
            built.append(world)
            if net is not None:
                net.attach(world)
            if on_world is not None:
                on_world(world)

        try:
            raw = runner.run(device_scenario, flash_path, _stoppable(tick), measure_loss,
                             attach)
        except KeyboardInterrupt:
            if not built:
                raise
            runner.forget_firmware()  # stopped wherever it was, as by a power cut
            world = built[0]
            raise _interrupted(world, runner.results(world, world.heap_peak), net) from None
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
        world.on_tick = _stoppable(world.on_tick)

        layer = device_layer_bytes()
        total = str(heap_bytes(heapsize) + layer)

        def command(wire_fd: int) -> list[str]:
            return micropython_command("-m", "romstart", str(wire_fd),
                                       board_module, heapsize=total)

        server = DeviceServer(world, command, micropython_env())
        interrupted = False
        try:
            server.run()  # on Ctrl-C, it has ended the device process
        except KeyboardInterrupt:
            interrupted = True
        raw = runner.results(world, max(world.heap_peak - layer, 0))
        raw["heap_device_layer_bytes"] = layer
        if interrupted:
            raise _interrupted(world, raw, net)
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
        from meter.metering.energy import Register
        from meter.storage import checkpoint as store
        from meter.storage import profiles as profile

        imp, exp = Register(1000), Register(1000)
        energy = store.EnergyStore(fs, journal)
        from meter.storage.restore import load_energy

        load_energy(energy, imp, exp)
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
    130: "backlog_lost",  # store-and-forward (meter/remote/forward.py)
}


def read_events(flash_path: str, start_unix: int) -> list[dict]:
    """The firmware's event log, read from the flash image with the firmware's own reader."""
    with image_fs(flash_path) as fs:
        if fs is None:
            return []
        from meter.runtime.clock import METER_EPOCH_UNIX
        from meter.storage import reader as maint

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


# Accepted configuration commands (firmware/meter/remote/dispatch.py), named host-side like the
# above.
COMMAND_EVENT_NAMES = {
    220: "control_mode_set", 221: "load_limit_set", 222: "telemetry_period_set",
    223: "time_set_old", 224: "time_set_new", 225: "billing_snapshot", 226: "remote_reboot",
}
CAUSES = ("remote", "manual", "limiter", "tamper")
STATES = ("disconnected", "connected", "ready_for_reconnection")


def event_name(code: int) -> str:
    """Names of the firmware's event codes; supply control's are composed from the code."""
    from meter.storage import events

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
        from meter.supply.startup import load

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
