"""The head-end's acks as lines for a person (`host_tools/headend.py` without --json).

One line per ack: the meter's time, its id, the command, the outcome in words and what the
ack reports (state and relay in words, event codes with their names); a read-back adds one
indented line per record. Times are ISO 8601 in UTC ("Z"): the meter keeps UTC and reports
no offset of its own.

The names are the firmware's own, not a copy: the event codes, profile flags, billing
triggers and event categories come from the firmware's modules (imported on CPython with the
simulator's `micropython` shim, as the simulator runs them), the event and control-state
names from the simulator's host-side tables that its reports use (`simulator/event_names.py`
event_name, STATES), and the ack codes from `host_tools/wire.py` REASONS. Nothing here
runs on the meter, so its heap is untouched.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The fields every ack carries (meter/remote/commands.py); the rest depend on the command. v and
# for bind it to the command sent: the head-end checked them before taking it (match_ack).
ENVELOPE = ("v", "id", "for", "n", "code", "t", "reason")


@cache
def names() -> SimpleNamespace:
    """The firmware's names for what its acks carry as numbers."""
    firmware = str(ROOT / "firmware")
    if firmware not in sys.path:
        sys.path.append(firmware)  # after everything else: it shadows nothing
    from simulator.device.shim import micropython as shim

    sys.modules.setdefault("micropython", shim)
    from meter.remote import read_commands as cmdread
    from meter.remote import time_commands as cmdtime
    from meter.storage import profiles as profile

    from simulator import event_names

    flags = {profile.POWER_FAILED: "power_failed", profile.PARTIAL: "partial",
             profile.NO_SAMPLES: "no_samples", cmdtime._CLOCK_SET: "clock_set"}
    return SimpleNamespace(
        event=event_names.event_name, states=event_names.STATES, categories=cmdread._CATEGORIES,
        flags=flags, triggers={profile.BILL_MONTHLY: "monthly", profile.BILL_COMMAND: "command"})


def iso(unix: Any) -> str:
    """Unix seconds as ISO 8601 UTC; anything else as it came."""
    if type(unix) is not int:
        return repr(unix)
    try:
        return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(unix)


def state_name(state: Any) -> str:
    states = names().states
    if type(state) is int and 0 <= state < len(states):
        return states[state]
    return f"state {state!r}"


def event_text(code: Any) -> str:
    if type(code) is not int:
        return f"event {code!r}"
    return f"{code} {names().event(code)}"


def supply(ack: dict) -> str:
    """The disconnect control's state, relay and mode in words."""
    output = ack.get("output")
    relay = ("relay closed (supply on)" if output is True else
             "relay open (supply off)" if output is False else f"relay {output!r}")
    text = f"{state_name(ack.get('state'))}, {relay}"
    if "mode" in ack:
        text += f", control mode {ack['mode']}"
    return text


def _flags(bits: Any) -> str:
    if type(bits) is not int:
        return repr(bits)
    known = names().flags
    words = [word for bit, word in sorted(known.items()) if bits & bit]
    rest = bits & ~sum(known)
    if rest:
        words.append(hex(rest))
    return ",".join(words) if words else "-"


def _num(value: Any, scale: int, digits: int) -> str:
    return f"{value / scale:.{digits}f}" if type(value) is int else repr(value)


def billing_row(row: list) -> str:
    n, t, imp, exp, demand, when, trigger = row
    trig = names().triggers.get(trigger, f"trigger {trigger}")
    at = iso(when) if when else "none"
    return (f"#{n} {iso(t)} import {imp} Wh, export {exp} Wh, max demand {demand} W at {at},"
            f" {trig}")


def record_line(kind: str, row: Any) -> str:
    """One read-back row (cmdread's layouts: README "Commands") in words."""
    try:
        if kind == "events":
            n, seq, t, code, cv, ma, wh, value = row
            return (f"#{n} seq {seq} {iso(t)} {event_text(code)}: {_num(cv, 100, 2)} V"
                    f" {_num(ma, 1000, 3)} A, import {wh} Wh, value {value}")
        if kind == "block":
            n, t, imp, exp, cv, ma, flags = row
            return (f"#{n} {iso(t)} import {imp} Wh, export {exp} Wh, avg {_num(cv, 100, 2)} V"
                    f" {_num(ma, 1000, 3)} A, flags {_flags(flags)}")
        if kind == "daily":
            n, t, imp, exp = row
            return f"#{n} {iso(t)} import {imp} Wh, export {exp} Wh (cumulative)"
        if kind == "billing":
            return billing_row(row)
    except (TypeError, ValueError):
        pass
    return f"{row!r}"  # a row of another shape: shown as it came, never dropped


def _details(cmd: str, ack: dict, args: dict) -> tuple[str, list[str], set]:
    """(what the ack says, record lines, the keys used) for the command's own fields."""
    if "state" in ack or "output" in ack:
        return supply(ack), [], {"state", "output", "mode"}
    if cmd == "set_load_limit" and "watts" in ack:
        watts = ack["watts"]
        text = "load limit off" if watts == 0 else f"load limit {watts} W"
        limiter = ack.get("load_limiter")
        if isinstance(limiter, dict) and limiter:
            text += " (" + ", ".join(f"{k} {v}" for k, v in sorted(limiter.items())) + ")"
        return text, [], {"watts", "load_limiter"}
    if cmd == "set_telemetry_period" and "seconds" in ack:
        return f"telemetry every {ack['seconds']} s", [], {"seconds"}
    if cmd == "time_sync" and "step" in ack:
        step = ack["step"]
        text = f"clock stepped {step:+d} s" if type(step) is int else f"step {step!r}"
        return text + f", meter time now {iso(ack.get('t'))}", [], {"step"}
    if "record" in ack:
        rec = ack["record"]
        return ("billing record " + (billing_row(rec) if isinstance(rec, list) and len(rec) == 7
                                     else repr(rec))), [], {"record"}
    if "records" in ack and isinstance(ack["records"], list):
        if cmd == "read_events":
            kind = "events"
            cat = args.get("category")
            if type(cat) is int and 0 <= cat < len(names().categories):
                cat = names().categories[cat]
            what = f"{cat} events"
        else:
            kind = args.get("profile", "block")
            what = f"{kind} profile records"
        rows = ack["records"]
        text = f"{len(rows)} {what}"
        nxt = ack.get("next")
        text += f"; more from --start {nxt}" if nxt else "; no more"
        return text, ["  " + record_line(kind, row) for row in rows], {"records", "next"}
    if cmd == "reboot" and ack.get("code") == 0:
        return "rebooting (it saves its energy registers, then resets)", [], set()
    return "", [], set()


def lines(cmd: str, ack: dict, args: dict | None = None) -> list[str]:
    """The readable lines for one ack of command `cmd` sent with `args`."""
    from host_tools.wire import REASONS

    args = args or {}
    code = ack.get("code")
    reason = ack.get("reason")
    details, rows, used = _details(cmd, ack, args)
    armed = (cmd == "reconnect" and code == 0 and ack.get("state") == 2
             and ack.get("output") is False)
    if armed:
        # DLMS transition d: the meter is Ready_for_reconnection; the consumer's button
        # (manual reconnect, transition e) closes the relay. The exit status stays 0.
        verdict = "armed: the supply stays off until the consumer presses the meter's button"
        if reason == "no change":
            verdict += " (it already was armed)"
    elif code == 0:
        verdict = "ok" if reason in (None, "ok") else f"ok ({reason})"
    else:
        name = REASONS.get(code, "other") if type(code) is int else "other"
        verdict = f"refused, code {code!r} {name}"
        if reason and reason != name:
            verdict += f": {reason}"
    head = f"{iso(ack.get('t'))} {ack.get('id')} {cmd}: {verdict}"
    if details:
        head += "; " + details
    extra = [f"{k} {ack[k]!r}" for k in sorted(ack) if k not in ENVELOPE and k not in used]
    if extra:  # fields this view does not know yet: shown, never dropped
        head += "; " + ", ".join(extra)
    return [head] + rows
