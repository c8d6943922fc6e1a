"""The scenario schema: every key with its type and range, in one table (SCHEMA), and check(),
which applies it and the rules across keys. docs/scenarios.md "Ranges" states the same ranges;
tests/test_scenario_schema.py keeps them in step."""

from __future__ import annotations

import calendar
import json
import math
import string
from collections.abc import Callable, Iterator
from typing import Any

from simulator.device.timeutil import parse_iso
from simulator.paths import firmware

DEFAULT_START = "2026-01-01T00:00:00+05:30"


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the problem in one line."""


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
    if firmware("meter.storage.config_rules").valid_id(text):
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


def check(raw: Any) -> dict:
    """Check a scenario against SCHEMA and the rules across keys; raise ScenarioError with
    one line naming the key, or return the context (duration, current limit)."""
    top = Obj({"duration_s": SCHEMA["duration_s"]}, ("duration_s",))
    if isinstance(raw, dict):
        top.check({"duration_s": raw["duration_s"]} if "duration_s" in raw else {}, "", {})
    else:
        top.check(raw, "", {})
    config = raw.get("config", {})
    defaults = firmware("meter.storage.config").defaults()
    # the firmware's keys; one without a range here gets its type checked only (a test
    # insists that every key has one)
    Obj({key: CONFIG_SCHEMA.get(key) for key in defaults}).check(config, "config", {})
    for key, value in config.items():
        if type(value) is not type(defaults[key]):
            raise ScenarioError(f"config.{key}: must be of type {type(defaults[key]).__name__}"
                                f", not {_show(value)}")
    problem = firmware("meter.supply.startup").check_limiter(config.get("load_limiter", {}))
    if problem:
        raise ScenarioError(f"config.{problem.replace(' must', ': must')}")
    for key, value in config.get("load_limiter", {}).items():
        LIMITER_SPEC.check(value, f"config.load_limiter.{key}", {})
    ctx = {_END: raw["duration_s"],
           _AMPS: AMPS_PER_IMAX * config.get("imax_a", defaults["imax_a"])}
    Obj(SCHEMA).check(raw, "", ctx)
    known = list(firmware("meter.remote.command_table").COMMANDS)
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
