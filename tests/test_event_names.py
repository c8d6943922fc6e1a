"""One table of event names (firmware/meter/storage/event_names.py): every code the firmware can
log has a name there, the meter never loads it, and the head-end and the simulator's reports
name events (and ack codes) from it, with no copy of their own."""

from __future__ import annotations

import ast
from pathlib import Path

from meter.storage import event_names

ROOT = Path(__file__).resolve().parent.parent
METER = ROOT / "firmware" / "meter"
# A log call whose code is a variable set elsewhere: where its value comes from, as a family.
INDIRECT = {
    # the persisted intent of a cut-short transition (meter/supply/transitions.py save())
    ("supply/startup.py", "lost"): "control",
    # the argument module's log() helper passes its callers' codes on (each caller is checked)
    ("remote/arguments.py", "code"): None,
}


def consts(tree: ast.Module) -> dict[str, int]:
    """Module-level NAME = const(N) of a parsed module."""
    out = {}
    for node in tree.body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call)
                and getattr(node.value.func, "id", "") == "const"):
            value = node.value.args[0]
            if isinstance(value, ast.Constant) and type(value.value) is int:
                out[node.targets[0].id] = value.value
    return out


EVENTS = consts(ast.parse((METER / "storage" / "events.py").read_text()))


def ack_codes() -> set[int]:
    """The codes Commands.check can reject a command with (meter/remote/commands.py): each
    rejection is logged as CMD_REJECTED + its code."""
    tree = ast.parse((METER / "remote" / "commands.py").read_text())
    names = consts(tree)
    check = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "check")
    codes = set()
    for node in ast.walk(check):
        if isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            first = node.value.elts[0]
            code = first.value if isinstance(first, ast.Constant) else names[first.id]
            if code:
                codes.add(code)
    return codes


def family(name: str) -> set[int]:
    if name == "control":
        return {EVENTS["CONTROL"] + cause * 3 + state
                for cause in range(len(event_names.CAUSES))
                for state in range(len(event_names.STATES))}
    assert name == "rejected"
    return {EVENTS["CMD_REJECTED"] + code for code in ack_codes()}


def resolve(expr: ast.expr, local: dict[str, int], func: ast.AST | None,
            site: tuple[str, str | None]) -> set[int] | None:
    """The codes an expression passed to log() can be; None: passed on from a caller."""
    if isinstance(expr, ast.Constant) and type(expr.value) is int:
        return {expr.value}
    if isinstance(expr, ast.Attribute) and getattr(expr.value, "id", "") == "events":
        return {EVENTS[expr.attr]}
    if isinstance(expr, ast.BinOp):
        base = expr.left
        while isinstance(base, ast.BinOp):
            base = base.left
        base_name = base.attr if isinstance(base, ast.Attribute) else base.id
        return family({"CONTROL": "control", "CMD_REJECTED": "rejected"}[base_name])
    if isinstance(expr, ast.Name):
        if expr.id in local:
            return {local[expr.id]}
        if (site[0], expr.id) in INDIRECT:
            kind = INDIRECT[(site[0], expr.id)]
            return None if kind is None else family(kind)
        # assigned in the same function: each value it can take
        for node in ast.walk(func):
            if (isinstance(node, ast.Assign) and any(getattr(t, "id", "") == expr.id
                                                     for t in node.targets)):
                value = node.value
                if isinstance(value, ast.IfExp):
                    return (resolve(value.body, local, func, site)
                            | resolve(value.orelse, local, func, site))
                return resolve(value, local, func, site)
    raise AssertionError(f"{site[0]}: cannot tell which code {ast.unparse(expr)} is")


def logged_codes() -> dict[int, str]:
    """Every event code a firmware source can log, with where."""
    found: dict[int, str] = {}
    for path in sorted(METER.rglob("*.py")):
        rel = str(path.relative_to(METER))
        tree = ast.parse(path.read_text())
        local = consts(tree) | {n: EVENTS[n] for node in ast.walk(tree)
                                if isinstance(node, ast.ImportFrom)
                                and node.module == "meter.storage.events"
                                for n in (a.name for a in node.names) if n in EVENTS}
        for func in ast.walk(tree):
            if not isinstance(func, ast.FunctionDef):
                continue
            for call in ast.walk(func):
                if not isinstance(call, ast.Call) or len(call.args) < 2:
                    continue
                f = call.func
                is_log = (isinstance(f, ast.Attribute) and f.attr == "log") or (
                    isinstance(f, ast.Name) and f.id == "log")
                if not is_log:
                    continue
                codes = resolve(call.args[1], local, func, (rel, None))
                for code in codes or ():
                    found.setdefault(code, f"{rel}:{call.lineno}")
    return found


def test_every_code_the_firmware_can_log_has_a_name():
    found = logged_codes()
    # the scan sees each kind of site: a const, a literal group code, a composed code
    assert {EVENTS["POWER_UP"], 140, 225, EVENTS["CONTROL"] + 4, 204} <= set(found)
    unnamed = {code: where for code, where in found.items() if code not in event_names.NAMES}
    assert not unnamed, unnamed
    # and every code events.py defines (but the bases the codes are composed from)
    codes = {v for k, v in EVENTS.items()
             if not k.startswith("CAT_")
             and k not in ("CLOCK_INVALID", "CONTROL", "CMD_REJECTED", "EVENT_SIZE")}
    assert codes <= set(event_names.NAMES), codes - set(event_names.NAMES)
    assert len(set(event_names.NAMES.values())) == len(event_names.NAMES)  # no name twice


def test_the_meter_never_loads_the_names():
    """No firmware module imports event_names: the names cost the meter no heap."""
    for path in sorted((ROOT / "firmware").rglob("*.py")):
        if path.name == "event_names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                mods = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            else:
                continue
            assert not any(m.endswith("event_names") for m in mods), path


def test_host_tools_and_reports_name_events_from_the_table():
    from host_tools import headend, readable
    from simulator import event_names as simulator_names

    # (equal, not identical: other tests load the firmware's modules afresh)
    assert headend.REASONS == event_names.REASONS
    names = readable.names()
    assert names.states == event_names.STATES
    for code in range(0, 300):
        assert simulator_names.event_name(code) == names.event(code) == event_names.name(code)
    assert readable.event_text(225) == "225 billing_snapshot"
    # no host-side copy of the names: each appears in the firmware's table only
    for folder in ("host_tools", "simulator"):
        for path in (ROOT / folder).rglob("*.py"):
            text = path.read_text()
            for name in ("cmd_rejected_", "control_mode_set", "calibration_bad", "relay_fault",
                         "ready_for_reconnection", '"bad_mac"'):
                assert name not in text, (path, name)
