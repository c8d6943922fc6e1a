"""The control room's head-end: holds the per-meter command keys, signs commands, publishes
them on `meters/<id>/cmd` and waits for the meter's signed ack on `meters/<id>/ack`.

    .venv/bin/python -m host_tools.headend --keys KEYS newkey METER_ID --out METER_ID.key
    .venv/bin/python -m host_tools.headend --broker HOST:PORT --keys KEYS status METER_ID
    .venv/bin/python -m host_tools.headend --broker HOST:PORT --keys KEYS COMMAND METER_ID [VALUE]

COMMAND [VALUE]: status, disconnect, reconnect, set_control_mode MODE,
    set_load_limit WATTS [--args '{"over_s": 5}'], set_telemetry_period SECONDS,
    time_sync [UNIX_OR_ISO] (default: now), billing_snapshot, reboot,
    read_profile [block|daily|billing], read_events CATEGORY,
    the read_* with [--since T] [--until T] [--newest-first] [--start N] [--all]

Times (T) are Unix seconds or ISO-8601 (UTC unless an offset is given). --all follows the
pages of read_profile / read_events (one command each) and prints every ack.
Run it from the checkout with its venv's python (`make sim` makes .venv), as above.
Each ack is printed as one line for a person: the meter's time (ISO 8601, UTC), the outcome
and what the ack reports, in words and the firmware's names (a read-back adds one indented
line per record); --json prints it as JSON instead, one line per ack, for programs.
Exit status: 0 the meter acked success (a reconnect that only armed the meter, waiting for
the consumer's button, included: the line says so), 1 it acked anything else (denied,
rejected, failed), 2 usage or key-file error, 3 no valid ack in time.
Keys are never printed or logged.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import math
import os
import secrets
import shlex
import sys
import threading
import time
from functools import cache
from pathlib import Path
from typing import Any

# the wire format (host_tools/wire.py), under the head-end's names as well
from host_tools.wire import (  # noqa: F401
    ACK_FOR_HEX,
    ACK_VERSION,
    MAC_HEX,
    REASONS,
    ack_for,
    decode_ack,
    encode_command,
    mac,
    match_ack,
)

PROG = ".venv/bin/python -m host_tools.headend"  # run from the checkout (README "Head-end")
ROOT = Path(__file__).resolve().parent.parent
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3


class KeyFileError(Exception):
    """The key file is missing, unreadable, damaged or lacks the meter: one line that names
    the file, the meter and what is wrong."""


def ignored_line(meter_id: str, kind: str, ack: dict | None) -> str:
    """The warning for one message on the ack topic that is not the answer to our command."""
    if kind == "unsigned":
        return (f"warning: meters/{meter_id}/ack: ignored a message whose MAC does not verify"
                " with this meter's key (forged, replayed from an older key, or the meter"
                " holds another key)")
    ack = ack or {}
    what = f"code {ack.get('code')} {ack.get('reason', 'ok')}"
    if type(ack.get("v")) is not int or ack.get("v") < ACK_VERSION or "for" not in ack:
        return (f"warning: meters/{meter_id}/ack: ignored a signed ack ({what}) that does not"
                " say which command it answers (firmware before ack v2?): not trusted")
    return (f"warning: meters/{meter_id}/ack: ignored a signed ack ({what}) that answers"
            " another message, not this command: another head-end at work, or an attack"
            " (a forged or replayed command, or an old ack replayed)")


KEY_BYTES = 32  # the meter's command key (firmware/meter/remote/commands.py takes 32 bytes)
COUNTER_MAX = (1 << 30) - 1  # the meter takes counters 1 to 2^30 - 1 (meter/remote/commands.py)
TIMEOUT_MAX_S = 86400
TTL_MAX_S = 86400


@cache
def firmware_rules() -> Any:
    """firmware/meter/storage/config_rules.py, imported on CPython: the meter id rule (valid_id) is
    the firmware's, not a copy."""
    firmware = str(ROOT / "firmware")
    if firmware not in sys.path:
        sys.path.append(firmware)  # after everything else: it shadows nothing
    from meter.storage import config_rules as cfgcheck

    return cfgcheck


@cache
def command_table() -> Any:
    """firmware/meter/remote/command_table.py, imported on CPython: the command set (names,
    groups, each command's VALUE) is the firmware's, not a copy."""
    firmware_rules()  # firmware/ on the path
    from meter.remote import command_table as table

    return table


def commands() -> tuple[str, ...]:
    return tuple(command_table().COMMANDS)


def valid_id(meter_id: str) -> bool:
    return firmware_rules().valid_id(meter_id)


def id_rule() -> str:
    """The id rule in the firmware's words: "must be 1 to 32 letters ..."."""
    return firmware_rules().check({"meter_id": ""}).removeprefix("config key meter_id ")


def shown(text: str, most: int = 40) -> str:
    """A meter id (or any text) fit for one line: quoted, non-ASCII escaped, cut short."""
    return ascii(text[:most]) + (f"... ({len(text)} characters)" if len(text) > most else "")


def json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words."""
    if value is None:
        return "null"
    return {bool: "true/false", int: "a number", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def entry_problem(meter_id: Any, entry: Any) -> str | None:
    """What is wrong with one meter's entry of a key file (None: nothing)."""
    if not valid_id(meter_id):
        return "not a meter id: an id " + id_rule()
    if not isinstance(entry, dict):
        return f"the entry is {json_kind(entry)}, not an object with key and counter"
    key = entry.get("key")
    if "key" in entry:  # an entry without one: a meter whose key was withdrawn
        if type(key) is not str:
            return f"key is {json_kind(key)}, not a string of hex digits"
        if not all(c in "0123456789abcdefABCDEF" for c in key):
            return "key is not hex digits"
        if len(key) != 2 * KEY_BYTES:
            return (f"key has {len(key)} hex digits, not {2 * KEY_BYTES} (the meter's key is"
                    f" {KEY_BYTES} bytes)")
    if "counter" not in entry:
        return "no counter (the last one used; 0 for none)"
    counter = entry["counter"]
    if type(counter) is not int:  # not true/false, not 5.0
        return f"counter is {json_kind(counter)}, not a whole number"
    if not 0 <= counter <= COUNTER_MAX:
        return f"counter {counter} is outside 0 to {COUNTER_MAX}"
    return None


class KeyFile:
    """{"meters": {id: {"key": hex, "counter": last used}}}, mode 0600, updated atomically
    under a lock so two head-end processes never reuse a counter. Every read checks the whole
    file (each id, key and counter): a damaged file is an error and is never rewritten."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def _error(self, meter_id: str, what: str) -> KeyFileError:
        return KeyFileError(f"key file {self.path} (meter {shown(meter_id)}): {what}")

    @contextlib.contextmanager
    def _locked(self, meter_id: str):
        lock = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        except OSError as exc:
            raise self._error(meter_id, f"cannot lock {lock}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self, meter_id: str, missing_ok: bool = True) -> dict:
        try:
            data = json.loads(self.path.read_bytes(), parse_constant=_no_constant)
        except FileNotFoundError:
            if missing_ok:
                return {"meters": {}}
            raise self._error(meter_id, "no such file (newkey creates it)") from None
        except OSError as exc:
            raise self._error(meter_id, f"cannot read it: {exc.strerror}") from None
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            raise self._error(meter_id, f"not valid JSON ({exc.__class__.__name__}:"
                              f" {str(exc)[:80]})") from None
        if not isinstance(data, dict) or not isinstance(data.get("meters"), dict):
            raise self._error(meter_id, 'not a head-end key file ({"meters": {...}})')
        for other, entry in data["meters"].items():
            problem = entry_problem(other, entry)
            if problem is not None:
                raise KeyFileError(f"key file {self.path}: meter {shown(other)}: {problem}"
                                   " (the file is left as it is)")
        return data

    def _write(self, meter_id: str, data: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                json.dump(data, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise self._error(meter_id, f"cannot write it: {exc.strerror}") from None

    def new_key(self, meter_id: str) -> bytes:
        """A fresh random key for the meter (rotation keeps its counter going upwards)."""
        key = secrets.token_bytes(KEY_BYTES)
        with self._locked(meter_id):
            data = self._read(meter_id)
            entry = data["meters"].setdefault(meter_id, {"counter": 0})
            entry["key"] = key.hex()
            self._write(meter_id, data)
        return key

    def key(self, meter_id: str) -> bytes:
        entry = self._read(meter_id, missing_ok=False)["meters"].get(meter_id)
        if not entry or "key" not in entry:
            raise KeyFileError(f"no key for meter {shown(meter_id)} in {self.path}")
        return bytes.fromhex(entry["key"])

    def next_counter(self, meter_id: str) -> int:
        """Reserve the next counter; it is on disk before the command leaves."""
        with self._locked(meter_id):
            data = self._read(meter_id, missing_ok=False)
            entry = data["meters"].get(meter_id)
            if not entry or "key" not in entry:
                raise KeyFileError(f"no key for meter {shown(meter_id)} in {self.path}")
            if entry["counter"] >= COUNTER_MAX:
                raise self._error(meter_id, f"every counter up to {COUNTER_MAX} is used: the"
                                  " meter takes no higher one")
            entry["counter"] += 1
            self._write(meter_id, data)
            return entry["counter"]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def send(broker: tuple[str, int], keys: KeyFile, meter_id: str, cmd: str,
         args: dict | None = None, timeout_s: float = 10.0, ttl_s: int = 300,
         tls: dict | None = None, auth: tuple[str, str] | None = None,
         ignored: list | None = None) -> dict | None:
    """Sign, publish and wait for the meter's signed ack to exactly this command (match_ack);
    None on time-out. Every other message on the ack topic meanwhile is counted, appended to
    `ignored` as (kind, ack) and shown on stderr as a warning: it never ends the wait."""
    import paho.mqtt.client as mqtt

    key = keys.key(meter_id)
    counter = keys.next_counter(meter_id)
    issued = int(time.time())
    if cmd == "time_sync" and (args or {}).get("unix") is None:
        args = dict(args or {}, unix=issued)  # now: within the command's own validity
    payload = encode_command(key, meter_id, counter, cmd, args, issued=issued, ttl_s=ttl_s)
    got: list[dict] = []
    others: list[tuple[str, dict | None]] = []
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        if done.is_set():
            return
        kind, ack = match_ack(key, meter_id, payload, msg.payload)
        if kind == "ours":
            got.append(ack)
            done.set()
        else:
            others.append((kind, ack))

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                         client_id=f"headend-{os.getpid()}-{secrets.token_hex(4)}")
    if auth is not None:
        client.username_pw_set(*auth)
    if tls is not None:
        client.tls_set(**tls)
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    try:
        client.connect(broker[0], broker[1], keepalive=30)
    except ValueError as exc:  # e.g. a host name the resolver refuses (UnicodeError)
        raise OSError(f"cannot connect: {exc}") from None
    client.loop_start()
    try:
        client.subscribe(f"meters/{meter_id}/ack", qos=1)
        if not subscribed.wait(timeout_s):
            return None
        client.publish(f"meters/{meter_id}/cmd", payload, qos=1).wait_for_publish(timeout_s)
        done.wait(timeout_s)
    finally:
        client.loop_stop()
        client.disconnect()
        for kind, ack in others:
            print(ignored_line(meter_id, kind, ack), file=sys.stderr)
        if ignored is not None:
            ignored.extend(others)
    return got[0] if got else None


def _broker(text: str) -> tuple[str, int]:
    """HOST:PORT; an IPv6 address in brackets ([::1]:1883); port 1 to 65535."""
    host, _, port = text.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or not port.isascii() or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT (got {shown(text)})")
    if not 0 < int(port) < 65536:
        raise argparse.ArgumentTypeError(f"port must be 1 to 65535 (got {shown(port)})")
    try:
        host.encode("idna")
    except UnicodeError:
        raise argparse.ArgumentTypeError(f"not a host name: {shown(host)}") from None
    if len(host) > 253 or not host.isprintable() or " " in host:
        raise argparse.ArgumentTypeError(f"not a host name: {shown(host)}")
    return host, int(port)


def _meter_id(text: str) -> str:
    if not valid_id(text):
        raise argparse.ArgumentTypeError(f"meter id {shown(text)}: an id " + id_rule())
    return text


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= TIMEOUT_MAX_S:  # also nan, inf
        raise argparse.ArgumentTypeError(f"must be seconds, more than 0 and at most"
                                         f" {TIMEOUT_MAX_S} (got {shown(text)})")
    return value


def _ttl(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 0 < value <= TTL_MAX_S:
        raise argparse.ArgumentTypeError(f"must be whole seconds, 1 to {TTL_MAX_S}"
                                         f" (got {shown(text)})")
    return value


def _time(text: str) -> int:
    """Unix seconds, or an ISO-8601 time (UTC unless it carries an offset)."""
    try:
        return int(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return int(when.timestamp())
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"not a time: {shown(text)}") from None


def _category(text: str) -> int | str:
    """read_events CATEGORY: a name, or its number 0-6 (sent as a number)."""
    return int(text) if text.isascii() and text.isdigit() else text


# How the positional VALUE of a command is parsed, by its kind in the firmware's command table.
VALUE_KINDS = {1: int, 2: _time, 3: str, 4: _category}


def command_args(opts: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The command's arguments from --args, its VALUE and the read-back options."""
    try:
        args = json.loads(opts.args, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        parser.error("--args must be a JSON object")
    if not isinstance(args, dict):
        parser.error("--args must be a JSON object")
    table = command_table()
    _group, flags, name, kind = table.COMMANDS[opts.command]
    kind = VALUE_KINDS.get(kind)
    if opts.value is not None:
        if name is None:
            parser.error(f"{opts.command} takes no value")
        try:
            args[name] = kind(opts.value)
        except (ValueError, argparse.ArgumentTypeError):
            what = "a whole number" if kind is int else "a time"
            parser.error(f"{opts.command}: {name} must be {what}")
    elif flags & table.NEEDED and name not in args:
        parser.error(f"{opts.command} needs its {name.upper()}")
    reads = {"since": opts.since, "until": opts.until, "start": opts.start}
    if flags & table.PAGED:
        args.update({k: v for k, v in reads.items() if v is not None})
        if opts.newest_first:
            args["newest_first"] = True
    elif any(v is not None for v in reads.values()) or opts.newest_first or opts.all:
        parser.error("--since/--until/--start/--newest-first/--all are for read_profile and"
                     " read_events")
    return args


def show(opts: argparse.Namespace, ack: dict, args: dict) -> None:
    """Print one ack: a JSON line with --json (the same bytes as ever), else in words."""
    if not opts.json:
        try:
            from host_tools.readable import lines

            print("\n".join(lines(opts.command, ack, args)), flush=True)
            return
        except Exception as exc:  # e.g. no firmware/ beside host_tools/: the ack is not lost
            print(f"note: cannot put this ack in words ({exc.__class__.__name__}: {exc});"
                  " here it is as JSON", file=sys.stderr)
    print(json.dumps(ack, sort_keys=True))


def command_line(argv: list[str]) -> str:
    """A shell line that runs the head-end with argv from any directory on this machine: to
    the checkout, then the interpreter running now (the venv's, which has paho)."""
    def rel(text: str) -> str:
        path = Path(text)
        if path.is_absolute() and path.is_relative_to(ROOT):
            return str(path.relative_to(ROOT))
        return text

    python = rel(sys.executable)
    words = [python, "-m", "host_tools.headend"] + [rel(a) for a in argv]
    return f"cd {shlex.quote(str(ROOT))} && " + shlex.join(words)


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not the usage text before it
        self.exit(EXIT_USAGE, f"error: {message} (usage: {self.prog} --help)\n")


def _read_file(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise KeyFileError(f"{what} {path}: cannot read it:"
                           f" {exc.strerror or exc.__class__.__name__}") from None


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog=PROG, description=__doc__,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", required=True, help="head-end key file (created by newkey)")
    parser.add_argument("--broker", type=_broker, help="HOST:PORT of the MQTT broker")
    parser.add_argument("--timeout", type=_timeout, default=10.0,
                        help=f"seconds to wait for the ack (up to {TIMEOUT_MAX_S})")
    parser.add_argument("--ttl", type=_ttl, default=300,
                        help=f"command lifetime in seconds (1 to {TTL_MAX_S})")
    parser.add_argument("--cafile", help="CA certificate: connect with TLS")
    parser.add_argument("--user", help="MQTT user name")
    parser.add_argument("--password-file", help="file holding the MQTT password")
    parser.add_argument("command", choices=("newkey",) + commands())
    parser.add_argument("meter_id", type=_meter_id, help="the meter's id: 1 to 32 letters,"
                        " digits, '-' or '_' (firmware/meter/storage/config_rules.py valid_id)")
    parser.add_argument("value", nargs="?", help="the command's value: set_control_mode MODE,"
                        " set_load_limit WATTS, set_telemetry_period SECONDS, time_sync TIME,"
                        " read_profile block|daily|billing, read_events CATEGORY")
    parser.add_argument("--args", default="{}", help="command arguments as a JSON object")
    parser.add_argument("--since", type=_time, help="read_*: from this time (inclusive)")
    parser.add_argument("--until", type=_time, help="read_*: up to this time (inclusive)")
    parser.add_argument("--start", type=int, help="read_*: the record number to start at (an"
                        " ack's next)")
    parser.add_argument("--newest-first", action="store_true", help="read_*: newest first")
    parser.add_argument("--all", action="store_true", help="read_*: follow every page")
    parser.add_argument("--out", help="newkey: write the meter's raw key file here (mode 0600)")
    parser.add_argument("--json", action="store_true", help="print each ack as a JSON line (for"
                        " programs) instead of a line in words")
    opts = parser.parse_args(argv)
    if Path(opts.keys).name in ("", ".", ".."):
        parser.error(f"--keys {opts.keys!r} is not a file name")
    keys = KeyFile(opts.keys)
    try:
        if opts.command == "newkey":
            out = None
            tmp = f"{opts.out}.tmp"
            if opts.out:  # a file beside it first: a key the meter cannot get is never stored
                try:
                    if os.path.isdir(opts.out):
                        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
                    out = os.fdopen(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600),
                                    "wb")
                except OSError as exc:
                    raise KeyFileError(f"--out {opts.out} (meter {shown(opts.meter_id)}):"
                                       f" cannot write it: {exc.strerror}") from None
            try:
                key = keys.new_key(opts.meter_id)
            except KeyFileError:
                if out is not None:
                    out.close()
                    with contextlib.suppress(OSError):
                        os.unlink(tmp)
                raise
            if out is not None:
                try:
                    with out:
                        out.write(key)
                    os.replace(tmp, opts.out)
                except OSError as exc:
                    raise KeyFileError(f"--out {opts.out} (meter {shown(opts.meter_id)}):"
                                       f" cannot write it: {exc.strerror}; the key file holds"
                                       " the new key: run newkey again") from None
            print(f"new key for {opts.meter_id} stored in {opts.keys}"
                  + (f"; meter copy in {opts.out} (copy it to /cmd.key on the meter's data"
                     " partition)" if opts.out else ""))
            return EXIT_OK
        if opts.broker is None:
            parser.error("--broker is required to send a command")
        args = command_args(opts, parser)
        auth = None
        if opts.user:
            password = (_read_file(opts.password_file, "--password-file").decode(
                "utf-8", "replace").strip() if opts.password_file else "")
            auth = (opts.user, password)
        if opts.cafile:
            _read_file(opts.cafile, "--cafile")  # readable, before a counter is spent
        tls = {"ca_certs": opts.cafile} if opts.cafile else None
        while True:
            ack = send(opts.broker, keys, opts.meter_id, opts.command, args, opts.timeout,
                       opts.ttl, tls, auth)
            if ack is None or not opts.all or ack.get("code") != 0 or not ack.get("next"):
                break
            show(opts, ack, args)
            args = dict(args, start=ack["next"])
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"error: broker {opts.broker[0]}:{opts.broker[1]}: {exc.strerror or exc}",
              file=sys.stderr)
        return EXIT_TIMEOUT
    if ack is None:
        print(f"error: no valid ack from {opts.meter_id} within {opts.timeout:g} s",
              file=sys.stderr)
        return EXIT_TIMEOUT
    show(opts, ack, args)
    return EXIT_OK if ack.get("code") == 0 else EXIT_REFUSED


if __name__ == "__main__":
    raise SystemExit(main())
