"""The code's structure, checked from the sources (AST, no import): no import cycle; one table
of overlays that lists every module the firmware imports lazily and what each pulls in; one
command table that the firmware's dispatch follows by explicit references."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
# (folder, the folder its module names start from)
FIRMWARE_TREES = ((FIRMWARE, FIRMWARE), (ROOT / "boards", ROOT))
HOST_TREES = ((ROOT / "simulator", ROOT), (ROOT / "host_tools", ROOT))


def module_files(trees) -> dict[str, Path]:
    found = {}
    for folder, base in trees:
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(base).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


ALL = module_files(FIRMWARE_TREES + HOST_TREES)


def imports(name: str, path: Path) -> list[tuple[str, bool]]:
    """(module imported, inside a function) for each import in the file that names a module
    of ALL: import statements at any depth, and overlay("dotted.name") calls (the firmware's
    lazy import, meter/runtime/overlays.py)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []

    def target(base: str, attr: str) -> str:
        return f"{base}.{attr}" if f"{base}.{attr}" in ALL else base

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                               ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - child.level + 1]
                    base = ".".join(up + ([child.module] if child.module else []))
                found.extend((target(base, a.name), inner) for a in child.names)
            elif (isinstance(child, ast.Call) and isinstance(child.func, ast.Name)
                  and child.func.id == "overlay" and child.args
                  and isinstance(child.args[0], ast.Constant)):
                found.append((child.args[0].value, True))
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return [(m, lazy) for m, lazy in found if m in ALL]


def graph(modules: dict[str, Path]) -> dict[str, list[tuple[str, bool]]]:
    return {name: imports(name, path) for name, path in modules.items()}


def cycles(edges: dict[str, list[tuple[str, bool]]]) -> list[list[str]]:
    """One cycle (a path back to its start) for each strongly connected group (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w, _ in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1 or any(w == v for w, _ in edges.get(v, ())):
                groups.append(set(group))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10000))
    try:
        for v in sorted(edges):
            if v not in index:
                strong(v)
    finally:
        sys.setrecursionlimit(limit)
    found = []
    for group in groups:  # a shortest way round from the group's first module
        start = min(group)
        paths = {start: [start]}
        todo = [start]
        loop = None
        while todo and loop is None:
            v = todo.pop(0)
            for w, lazy in edges[v]:
                step = paths[v] + [w + (" (in a function)" if lazy else "")]
                if w == start:
                    loop = step
                    break
                if w in group and w not in paths:
                    paths[w] = step
                    todo.append(w)
        more = len(group) > len(loop) - 1
        found.append(loop + ([f"(all of: {', '.join(sorted(group))})"] if more else []))
    return found


def test_the_cycle_finder_finds_a_cycle():
    edges = {"a": [("b", False)], "b": [("c", True)], "c": [("a", False)], "d": [("a", False)]}
    assert cycles(edges) == [["a", "b", "c (in a function)", "a"]]
    assert cycles({"a": [("b", True)], "b": []}) == []


def test_no_import_cycle():
    """Dependencies point one way, in firmware/, boards/, simulator/ and host_tools/ taken
    together (simulator -> firmware, host_tools -> the protocol's definitions, never back):
    module-level and function-level imports alike (a cycle through a function-level import
    still ties two modules together)."""
    found = cycles(graph(ALL))
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


# --- the overlay table --------------------------------------------------------------------
FW = module_files(((FIRMWARE, FIRMWARE),))
FW_EDGES = graph(FW)


def closure(roots, edges=FW_EDGES) -> set[str]:
    """The modules loaded by importing roots: their module-level imports, transitively."""
    seen, todo = set(), list(roots)
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(w for w, lazy in edges.get(m, ()) if not lazy)
    return seen


def overlay_table():
    tree = ast.parse((FIRMWARE / "meter" / "runtime" / "overlay_table.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "OVERLAYS":
            return [(name.value, tuple(p.value for p in pulled.elts), when.id)
                    for name, pulled, when in (e.elts for e in node.value.elts)]
    raise AssertionError("no OVERLAYS table")


# Always in RAM: the main program, the board (any of the deployable ones) and the app
# with what they import at module level.
BOARDS = ("esp32_ade7953", "esp32_atm90e26")


def resident() -> set[str]:
    roots = {"main", "meter.app"}
    for board in BOARDS:
        path = ROOT / "boards" / f"{board}.py"
        roots |= {m for m, lazy in imports(board, path) if not lazy and m in FW}
    return closure(roots)


def test_the_overlay_table_lists_every_lazily_imported_module():
    """Each module imported inside a function or through overlay("...") and not resident is
    in the table (left out, its names would be missing from the boot's priming and the name
    table's ~6.4 KB step could come hours into a run), and nothing else is."""
    lazy = {m for edges in FW_EDGES.values() for m, inside in edges if inside}
    expected = lazy - resident()
    listed = [name for name, _pulled, _when in overlay_table()]
    assert len(listed) == len(set(listed)), "listed twice"
    assert set(listed) == expected, (
        f"missing from meter/runtime/overlay_table.py: {sorted(expected - set(listed))}; "
        f"listed but not lazily imported: {sorted(set(listed) - expected)}")


def test_the_overlay_table_says_what_each_overlay_pulls_in():
    """What an overlay imports at module level (not resident) loads and must go with it."""
    keep = resident()
    for name, pulled, when in overlay_table():
        assert when in ("BOOT", "LATE"), name
        expected = closure([name]) - keep - {name}
        assert set(pulled) == expected, (name, sorted(expected))


def test_the_resident_set_is_what_the_heap_test_measures():
    """The resident modules assumed here include those tests/test_micropython.py measures."""
    from tests.test_micropython import RESIDENT

    loaded = resident() | {"meter.remote.link", "meter.supply.control"}  # kept once built
    assert set(RESIDENT) - {"umqtt.simple"} <= loaded


# --- the command table --------------------------------------------------------------------
def firmware_module(name: str):
    sys.path.insert(0, str(FIRMWARE))
    try:
        __import__(name)
        return sys.modules[name]
    finally:
        sys.path.remove(str(FIRMWARE))


GROUP_MODULES = {1: "meter.remote.config_commands", 2: "meter.remote.time_commands",
                 3: "meter.remote.read_commands"}


def dispatched() -> dict[str, str]:
    """cmd -> the module whose function of that name meter/remote/dispatch.py calls for it:
    `if cmd == "x": return overlay("m").x(...)`, read from its source."""
    tree = ast.parse((FIRMWARE / "meter" / "remote" / "dispatch.py").read_text())
    found = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
            cmd = node.test.comparators[0].value
            call = node.body[0].value
            module = call.func.value.args[0].value
            assert call.func.attr == cmd, (cmd, call.func.attr)
            found[cmd] = module
    return found


def test_every_command_has_its_handler_by_name():
    table = firmware_module("meter.remote.command_table")
    from meter.supply.control import Control

    routes = dispatched()
    for cmd, (group, flags, value, kind) in table.COMMANDS.items():
        assert group in (table.SUPPLY, table.CONFIG, table.TIME, table.READ), cmd
        if group == table.SUPPLY:
            assert callable(getattr(Control, cmd, None)), cmd
            assert cmd not in routes, cmd
        else:
            module = firmware_module(GROUP_MODULES[group])
            assert callable(getattr(module, cmd, None)), (cmd, module.__name__)
            assert routes.get(cmd) == module.__name__, (cmd, routes.get(cmd))
        assert (value is None) == (kind == 0), cmd
        assert not flags & ~(table.ONCE | table.NEEDED | table.PAGED), cmd
    assert set(routes) <= set(table.COMMANDS), sorted(set(routes) - set(table.COMMANDS))


def test_the_head_end_and_the_scenario_check_take_the_firmware_s_command_set():
    from host_tools import headend
    from simulator import scenario as sc

    table = firmware_module("meter.remote.command_table")
    assert headend.commands() == tuple(table.COMMANDS)
    for cmd in table.COMMANDS:  # every command passes the scenario schema
        raw = {"duration_s": 60, "commands": [{"at_s": 1, "cmd": cmd}]}
        try:
            sc.normalise(raw)
        except sc.ScenarioError as exc:
            assert "commands[0].cmd" not in str(exc), exc
    with pytest.raises(sc.ScenarioError, match=r"commands\[0\]\.cmd"):
        sc.normalise({"duration_s": 60, "commands": [{"at_s": 1, "cmd": "self_destruct"}]})


def test_firmware_dispatch_names_no_attribute_by_a_variable():
    """No getattr(x, name) with a computed name, no built module names: a command is followed
    from the wire to its handler by grep. (The overlay's and the socket wrapper's
    __getattr__ only pass an attribute on.)"""
    for name, path in FW.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                if node.func.id == "getattr":
                    inside = name in ("meter.runtime.overlays", "meter.remote.link")
                    assert inside or isinstance(node.args[1], ast.Constant), (name, node.lineno)
                if node.func.id in ("__import__", "overlay"):
                    ok = isinstance(node.args[0], ast.Constant) or name in (
                        "meter.runtime.overlays", "meter.runtime.overlay_table")
                    assert ok, (name, node.lineno)
