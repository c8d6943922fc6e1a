"""Are this tree's scenario reports the same as a base revision's?

    .venv/bin/python -m simulator.samereports --base 999caed [--runtime both|cpython|micropython]

For a change that must not change behaviour (a reorganisation): every scenario in
tests/scenarios/ (and the long ones in tests/scenarios/compare/) is run through the public CLI,
`python -m simulator run SCENARIO --runtime R --report FILE`, once in this tree and once in a
temporary `git worktree add --detach` of the base revision (its own build_mpy.py compiles its
MicroPython tree; the worktree is removed afterwards). The reports are compared key by key
without the figures that vary from run to run of one tree (VOLATILE: wall time, speed; on
MicroPython, VOLATILE_PATHS: which flash blocks wore) or that a reorganisation may
legitimately move (heap). Prints SAME, or each differing key with
both values, for each scenario x runtime; exit status 0 when all are the same, 1 when any
differs, 2 when a run failed.

The base reports are kept in build/samereports/<commit>/, keyed by the scenario's content,
so a second comparison against the same base runs only this tree. This tree's reports go
to build/samereports/current/ for a closer look.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCENARIO_DIR = ROOT / "tests" / "scenarios"
CACHE = ROOT / "build" / "samereports"
RUNTIMES = ("cpython", "micropython")
# Report keys that differ between two runs of one scenario in one tree (measured: two runs
# of each scenario on each runtime differ in wall_s and sim_s_per_wall_s), and the heap
# figures, which a reorganisation may move (measured apart, see issue 11).
VOLATILE = frozenset({"wall_s", "sim_s_per_wall_s", "heap_peak_bytes",
                      "heap_device_layer_bytes"})
# On MicroPython also which blocks were erased how often (the totals stay compared): its
# VfsLfs2 keeps each file's modification time (mtime=True, the host's wall clock) in
# LittleFS's metadata, whose checksums seed the block allocator, so two runs of one tree
# wear different blocks (measured: two_days_remote and no_power_fail_input, same erases).
VOLATILE_PATHS = {"cpython": frozenset(),
                  "micropython": frozenset({"flash.erases_per_block", "flash.erases_max_block"})}
ABSENT = "(absent)"
SHOWN = 20  # differing keys printed per scenario x runtime


def scenarios() -> list[Path]:
    """tests/scenarios/*.json and tests/scenarios/compare/*.json."""
    return sorted(SCENARIO_DIR.glob("*.json")) + sorted(SCENARIO_DIR.glob("compare/*.json"))


def flatten(value: Any, path: str = "") -> dict[str, Any]:
    """A report's leaves by path: {"flash.erases": 6, "events[0].name": "power_up", ...}.
    An empty list or object is a leaf of its own, so [] and [x] differ at that path."""
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{path}.{key}" if path else str(key)))
        return out
    if isinstance(value, list) and value:
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{path}[{i}]"))
        return out
    return {path: value}


def differences(base: dict, new: dict, volatile: frozenset[str] = VOLATILE,
                paths: frozenset[str] = frozenset()) -> list[tuple[str, Any, Any]]:
    """(path, base value, new value) of every leaf that differs; left out: the keys named in
    volatile (at any depth) and whatever lies at or under a path in paths. ABSENT stands
    for a leaf one report lacks. The type counts too: 1 and 1.0 are not the same report."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    def kept(path: str) -> bool:
        return not any(path == p or path.startswith((p + ".", p + "[")) for p in paths)

    a, b = flatten(strip(base)), flatten(strip(new))
    out = []
    for path in sorted(a.keys() | b.keys()):
        x, y = a.get(path, ABSENT), b.get(path, ABSENT)
        if kept(path) and (x != y or type(x) is not type(y)):
            out.append((path, x, y))
    return out


def describe(name: str, runtime: str, diffs: list[tuple[str, Any, Any]],
             shown: int = SHOWN) -> list[str]:
    """The lines printed for one scenario x runtime."""
    if not diffs:
        return [f"{name:<36} {runtime:<12} SAME"]
    lines = [f"{name:<36} {runtime:<12} DIFFERENT: {len(diffs)} key(s)"]
    for path, x, y in diffs[:shown]:
        lines.append(f"    {path}: base {json.dumps(x)}  now {json.dumps(y)}")
    if len(diffs) > shown:
        lines.append(f"    ... and {len(diffs) - shown} more")
    return lines


def cache_name(scenario: Path, runtime: str) -> str:
    """The cached report's file name: the scenario's name and content, the runtime."""
    digest = hashlib.sha256(scenario.read_bytes()).hexdigest()[:12]
    stem = scenario.relative_to(SCENARIO_DIR).with_suffix("") if scenario.is_relative_to(
        SCENARIO_DIR) else Path(scenario.stem)
    return f"{str(stem).replace('/', '__')}-{digest}.{runtime}.json"


def label(scenario: Path) -> str:
    if scenario.is_relative_to(SCENARIO_DIR):
        return str(scenario.relative_to(SCENARIO_DIR))
    return scenario.name


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # each tree imports its own simulator/ and firmware/
    return env


def build_mpy(tree: Path) -> None:
    """The tree's own build of its MicroPython files (build/mpy, the ROMFS image)."""
    result = subprocess.run([sys.executable, "simulator/build_mpy.py"], cwd=tree, env=_env(),
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"build_mpy.py failed in {tree}:\n{result.stdout}{result.stderr}")


def run_report(tree: Path, scenario: Path, runtime: str, out: Path) -> tuple[dict | None, str]:
    """(report, "") from the tree's CLI, or (None, why not)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    result = subprocess.run(
        [sys.executable, "-m", "simulator", "run", str(scenario), "--runtime", runtime,
         "--report", str(tmp)], cwd=tree, env=_env(), stdin=subprocess.DEVNULL,
        capture_output=True, text=True)
    if result.returncode != 0 or not tmp.exists():
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
        return None, f"exit status {result.returncode}: {tail}"
    report = json.loads(tmp.read_text())
    if report.get("network_late"):
        # a network wait ran out: that run's report is unreliable (README "Scenarios")
        return None, f"network_late {report['network_late']}: the machine was too busy"
    tmp.replace(out)
    return report, ""


class BaseTree:
    """A temporary detached worktree of the base revision, set up as a helper's worktree:
    .venv linked, build/lib (umqtt) copied, its own MicroPython build. Removed on exit."""

    def __init__(self, commit: str, micropython: bool):
        self.commit, self.micropython = commit, micropython

    def __enter__(self) -> Path:
        self.dir = Path(tempfile.mkdtemp(prefix="samereports-"))
        self.tree = self.dir / "tree"
        try:
            _git("worktree", "add", "--detach", str(self.tree), self.commit)
            (self.tree / ".venv").symlink_to((ROOT / ".venv").resolve())
            (self.tree / "build").mkdir(exist_ok=True)
            if (ROOT / "build" / "lib").is_dir():
                shutil.copytree(ROOT / "build" / "lib", self.tree / "build" / "lib")
            if self.micropython:
                build_mpy(self.tree)
        except BaseException:
            self.__exit__()
            raise
        return self.tree

    def __exit__(self, *_exc: object) -> None:
        if self.tree.exists():
            subprocess.run(["git", "worktree", "remove", "--force", str(self.tree)], cwd=ROOT,
                           capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def _cost(item: tuple[str, Path, str]) -> float:
    """Longest first, so that parallel runs finish together: MicroPython is ~10x slower."""
    _, scenario, runtime = item
    try:
        duration = float(json.loads(scenario.read_text()).get("duration_s", 0))
    except (ValueError, AttributeError):
        duration = 0.0
    return duration * (10 if runtime == "micropython" else 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator.samereports",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the revision to compare with")
    parser.add_argument("--runtime", choices=("both", *RUNTIMES), default="both")
    parser.add_argument("--scenario", action="append", type=Path,
                        help="compare only this scenario file (repeatable; default: "
                        "tests/scenarios/*.json and tests/scenarios/compare/*.json)")
    parser.add_argument("--jobs", type=int, default=2, help="runs at once (default 2)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help="where reports are kept (default build/samereports)")
    args = parser.parse_args(argv)
    try:
        commit = _git("rev-parse", "--verify", "--quiet", args.base + "^{commit}")
    except subprocess.CalledProcessError:
        parser.error(f"--base {args.base}: not a revision of this repository")
    runtimes = RUNTIMES if args.runtime == "both" else (args.runtime,)
    files = [p.resolve() for p in args.scenario] if args.scenario else scenarios()
    for path in files:
        if not path.is_file():
            parser.error(f"--scenario {path}: no such file")
    started = time.monotonic()
    base_dir, now_dir = args.cache / commit, args.cache / "current"
    pairs = [(s, r) for s in files for r in runtimes]
    reports: dict[tuple[str, Path, str], dict | None] = {}
    failures: dict[tuple[str, Path, str], str] = {}
    todo = []
    for scenario, runtime in pairs:
        cached = base_dir / cache_name(scenario, runtime)
        if cached.exists():
            reports["base", scenario, runtime] = json.loads(cached.read_text())
        else:
            todo.append(("base", scenario, runtime))
        todo.append(("now", scenario, runtime))
    need_mp = "micropython" in runtimes
    print(f"comparing {len(pairs)} scenario x runtime reports with {args.base} ({commit[:10]}); "
          f"{sum(1 for t in todo if t[0] == 'base')} base run(s) not cached", flush=True)

    def work(item: tuple[str, Path, str], trees: dict[str, Path]) -> None:
        which, scenario, runtime = item
        out = (base_dir if which == "base" else now_dir) / cache_name(scenario, runtime)
        report, why = run_report(trees[which], scenario, runtime, out)
        reports[item] = report
        if report is None:
            failures[item] = why

    if need_mp:
        build_mpy(ROOT)
    needs_base = any(item[0] == "base" for item in todo)
    with BaseTree(commit, need_mp) if needs_base else contextlib.nullcontext(ROOT) as base:
        trees = {"base": base, "now": ROOT}
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            list(pool.map(lambda item: work(item, trees),
                          sorted(todo, key=_cost, reverse=True)))
    same = differ = failed = 0
    for scenario, runtime in pairs:
        name = label(scenario)
        sides = [side for side in ("base", "now") if (side, scenario, runtime) in failures]
        if sides:
            failed += 1
            for side in sides:
                print(f"{name:<36} {runtime:<12} FAILED in "
                      f"{'the base' if side == 'base' else 'this tree'}: "
                      f"{failures[side, scenario, runtime]}")
            continue
        diffs = differences(reports["base", scenario, runtime],  # type: ignore[arg-type]
                            reports["now", scenario, runtime],  # type: ignore[arg-type]
                            paths=VOLATILE_PATHS[runtime])
        same, differ = same + (not diffs), differ + bool(diffs)
        print("\n".join(describe(name, runtime, diffs)))
    ignored = sorted(VOLATILE) + [f"{p} (micropython)" for p in
                                  sorted(VOLATILE_PATHS["micropython"]) if need_mp]
    print(f"{same} same, {differ} different, {failed} failed in "
          f"{time.monotonic() - started:.0f} s (ignored: {', '.join(ignored)})")
    if failed:
        return 2
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
