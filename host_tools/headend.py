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
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import shlex
import sys
import threading
import time
from pathlib import Path
from typing import Any

MAC_HEX = 64
PROG = ".venv/bin/python -m host_tools.headend"  # run from the checkout (README "Head-end")
ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (
    "disconnect", "reconnect", "status", "set_control_mode", "set_load_limit", "read_profile",
    "read_events", "billing_snapshot", "time_sync", "set_telemetry_period", "reboot",
)
EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 3
# The meter's ack codes (firmware/meter/commands.py); the meter sends only the number, and
# a "reason" of its own where one code has several causes (e.g. clock_unset, no_key).
REASONS = {
    0: "ok", 1: "hardware_fault", 2: "temporary_failure", 3: "denied", 4: "bad_mac",
    5: "replay", 6: "expired", 7: "malformed", 8: "wrong_meter", 9: "too_large",
    10: "unknown_command", 250: "other",
}


class KeyFileError(Exception):
    """The key file is missing, unreadable or lacks the meter."""


def mac(key: bytes, body: bytes, prefix: bytes = b"") -> bytes:
    return hmac.new(key, prefix + body, hashlib.sha256).digest()


def encode_command(key: bytes, meter_id: str, counter: int, cmd: str, args: dict | None = None,
                   issued: int | None = None, ttl_s: int = 300) -> bytes:
    """The wire form of one command: hex HMAC, a space, the JSON body it covers, in the one
    form the meter takes (README "Wire format": this key order, args' keys sorted, no
    whitespace)."""
    issued = int(time.time()) if issued is None else issued
    args = dict(sorted((args or {}).items()))
    body = json.dumps({"id": meter_id, "n": counter, "cmd": cmd, "args": args,
                       "t": issued, "exp": issued + ttl_s}, separators=(",", ":")).encode()
    return mac(key, body).hex().encode() + b" " + body


ACK_VERSION = 2  # acks bound to their command by "for" (README "Wire format")
ACK_FOR_HEX = 32


def ack_for(message: bytes) -> str:
    """An ack's "for" (ack v 2): the first 16 bytes of SHA-256 of all the bytes of the message
    it answers (MAC, space and body), hex. The meter hashes what it received, MAC included,
    so a forged message never gets an ack that names a genuine one."""
    return hashlib.sha256(message).hexdigest()[:ACK_FOR_HEX]


def decode_ack(key: bytes, payload: bytes) -> dict | None:
    """The ack's body if its MAC (over b"ack " + body) is right, else None. Says nothing about
    which command it answers: see match_ack."""
    if len(payload) < MAC_HEX + 3 or payload[MAC_HEX:MAC_HEX + 1] != b" ":
        return None
    body = payload[MAC_HEX + 1:]
    try:
        given = bytes.fromhex(payload[:MAC_HEX].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not hmac.compare_digest(given, mac(key, body, b"ack ")):
        return None
    try:
        ack = json.loads(body)
    except ValueError:
        return None
    if not isinstance(ack, dict) or type(ack.get("code")) is not int:
        return None
    if "reason" not in ack and ack["code"]:
        ack["reason"] = REASONS.get(ack["code"], "other")
    return ack


def match_ack(key: bytes, meter_id: str, command: bytes, payload: bytes
              ) -> tuple[str, dict | None]:
    """What one message on the meter's ack topic is to the head-end that sent `command`:
    ("ours", ack): signed with the meter's key, v >= 2, from this meter, and its "for" is the
    digest of exactly `command` (and its "n", when not null, the command's counter): the
    meter's answer to it, the only kind to act on;
    ("foreign", ack): signed with the meter's key but answering some other message (another
    head-end's command, a forged or replayed one: an attack symptom, or an old ack replayed),
    or an ack without that binding (firmware before ack v2);
    ("unsigned", None): its MAC does not verify with the meter's key (forged, made under an
    older key, or the meter holds another key or none)."""
    ack = decode_ack(key, payload)
    if ack is None:
        return "unsigned", None
    v, n = ack.get("v"), ack.get("n")
    try:
        counter = json.loads(command.split(b" ", 1)[1])["n"]
    except (IndexError, ValueError, KeyError, TypeError):
        counter = None
    if (type(v) is int and v >= ACK_VERSION and ack.get("id") == meter_id
            and ack.get("for") == ack_for(command) and (n is None or n == counter)):
        return "ours", ack
    return "foreign", ack


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


class KeyFile:
    """{"meters": {id: {"key": hex, "counter": last used}}}, mode 0600, updated atomically
    under a lock so two head-end processes never reuse a counter."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def _locked(self):
        lock = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"meters": {}}
        except (OSError, ValueError) as exc:
            kind = exc.__class__.__name__
            raise KeyFileError(f"cannot read key file {self.path}: {kind}") from None
        if not isinstance(data, dict) or not isinstance(data.get("meters"), dict):
            raise KeyFileError(f"{self.path} is not a head-end key file")
        return data

    def _write(self, data: dict) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def new_key(self, meter_id: str) -> bytes:
        """A fresh random key for the meter (rotation keeps its counter going upwards)."""
        key = secrets.token_bytes(32)
        with self._locked():
            data = self._read()
            entry = data["meters"].setdefault(meter_id, {"counter": 0})
            entry["key"] = key.hex()
            self._write(data)
        return key

    def key(self, meter_id: str) -> bytes:
        entry = self._read()["meters"].get(meter_id)
        if not entry or "key" not in entry:
            raise KeyFileError(f"no key for meter {meter_id!r} in {self.path}")
        return bytes.fromhex(entry["key"])

    def next_counter(self, meter_id: str) -> int:
        """Reserve the next counter; it is on disk before the command leaves."""
        with self._locked():
            data = self._read()
            entry = data["meters"].get(meter_id)
            if not entry or "key" not in entry:
                raise KeyFileError(f"no key for meter {meter_id!r} in {self.path}")
            entry["counter"] = int(entry.get("counter", 0)) + 1
            self._write(data)
            return entry["counter"]


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
    client.connect(broker[0], broker[1], keepalive=30)
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
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError("expected HOST:PORT")
    return host, int(port)


def _time(text: str) -> int:
    """Unix seconds, or an ISO-8601 time (UTC unless it carries an offset)."""
    try:
        return int(text)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r}") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def _category(text: str) -> int | str:
    """read_events CATEGORY: a name, or its number 0-6 (sent as a number)."""
    return int(text) if text.isdigit() else text


# The positional VALUE of each command: the argument's name and how it is parsed.
VALUE_ARGS = {
    "set_control_mode": ("mode", int), "set_load_limit": ("watts", int),
    "set_telemetry_period": ("seconds", int), "time_sync": ("unix", _time),
    "read_profile": ("profile", str), "read_events": ("category", _category),
}
READ_COMMANDS = ("read_profile", "read_events")


def command_args(opts: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """The command's arguments from --args, its VALUE and the read-back options."""
    try:
        args = json.loads(opts.args)
    except ValueError:
        parser.error("--args must be a JSON object")
    if not isinstance(args, dict):
        parser.error("--args must be a JSON object")
    name, kind = VALUE_ARGS.get(opts.command, (None, None))
    if opts.value is not None:
        if name is None:
            parser.error(f"{opts.command} takes no value")
        try:
            args[name] = kind(opts.value)
        except (ValueError, argparse.ArgumentTypeError):
            what = "a whole number" if kind is int else "a time"
            parser.error(f"{opts.command}: {name} must be {what}")
    elif opts.command in ("set_control_mode", "set_load_limit", "set_telemetry_period",
                          "read_events") and name not in args:
        parser.error(f"{opts.command} needs its {name.upper()}")
    reads = {"since": opts.since, "until": opts.until, "start": opts.start}
    if opts.command in READ_COMMANDS:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", required=True, help="head-end key file (created by newkey)")
    parser.add_argument("--broker", type=_broker, help="HOST:PORT of the MQTT broker")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ack")
    parser.add_argument("--ttl", type=int, default=300, help="command lifetime in seconds")
    parser.add_argument("--cafile", help="CA certificate: connect with TLS")
    parser.add_argument("--user", help="MQTT user name")
    parser.add_argument("--password-file", help="file holding the MQTT password")
    parser.add_argument("command", choices=("newkey",) + COMMANDS)
    parser.add_argument("meter_id")
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
    keys = KeyFile(opts.keys)
    try:
        if opts.command == "newkey":
            key = keys.new_key(opts.meter_id)
            if opts.out:
                fd = os.open(opts.out, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
            print(f"new key for {opts.meter_id} stored in {opts.keys}"
                  + (f"; meter copy in {opts.out} (copy it to /cmd.key on the meter's data"
                     " partition)" if opts.out else ""))
            return EXIT_OK
        if opts.broker is None:
            parser.error("--broker is required to send a command")
        args = command_args(opts, parser)
        auth = None
        if opts.user:
            password = Path(opts.password_file).read_text().strip() if opts.password_file else ""
            auth = (opts.user, password)
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
