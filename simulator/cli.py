"""Command line: `python -m simulator run SCENARIO.json` and `python -m simulator live`."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from simulator import scenario as sc

INTERRUPTED = 130  # exit status of a run stopped by Ctrl-C (128 + SIGINT, as a shell shows)


def _span(seconds: float) -> str:
    """A time span for the progress line: 42s, 5m07s, 3h04m, 12d03h."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _progress_bar(stream=sys.stderr, duration_s: float | None = None,  # type: ignore[no-untyped-def]
                  clock=time.monotonic):
    """Progress of a run, fed the fraction of its virtual time done: on a terminal a bar
    with the simulated time and an estimate of the wall time left, redrawn on each percent
    and at least twice a second; elsewhere (a log) a `progress N%` line at each quarter and
    at least once a minute, with the same details."""
    state = {"shown": -1, "started": None, "drawn": 0.0, "width": 0}
    tty = stream.isatty()

    def details(fraction: float, elapsed: float) -> str:
        parts = []
        if duration_s:
            parts.append(f"sim {_span(fraction * duration_s)} of {_span(duration_s)}")
        if 0 < fraction < 1 and elapsed >= 1:
            parts.append(f"ETA {_span(elapsed * (1 - fraction) / fraction)}")
        return ", ".join(parts)

    def show(fraction: float) -> None:
        now = clock()
        if state["started"] is None:
            state["started"] = now
        percent = int(fraction * 100)
        since = now - state["drawn"]
        if tty:
            if percent == state["shown"] and since < 0.5:
                return
            bar = "#" * (percent // 5)
            text = f"\r[{bar:<20}] {percent:3d}%  {details(fraction, now - state['started'])}"
            stream.write(text.ljust(state["width"]))
            state["width"] = len(text)
        else:
            quarter = percent != state["shown"] and percent % 25 == 0
            if not (quarter or (since >= 60 and percent != state["shown"])):
                return
            extra = details(fraction, now - state["started"])
            stream.write(f"progress {percent}%" + (f" ({extra})" if extra else "") + "\n")
        state["shown"], state["drawn"] = percent, now
        stream.flush()
    return show


def cmd_run(args: argparse.Namespace) -> int:
    try:
        scenario = sc.load_file(args.scenario)
        # the firmware's own prints (CPython runs it in this process) stay off the report
        with contextlib.redirect_stdout(sys.stderr):
            progress = _progress_bar(duration_s=scenario["duration_ms"] / 1000)
            report = sc.run(scenario, args.runtime, progress, broker=args.broker)
    except sc.ScenarioError as exc:
        print(f"error: {args.scenario}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted before the run began: no report", file=sys.stderr)
        return INTERRUPTED
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    text = json.dumps(report, indent=2)
    if args.report:
        Path(args.report).write_text(text + "\n")
    else:
        print(text)
    if report.get("interrupted"):
        where = args.report or "stdout"
        print(f"interrupted at {report['interrupted_at_s']:g} s of virtual time: partial "
              f"report written to {where}", file=sys.stderr)
        return INTERRUPTED
    if args.report:
        print(f"report written to {args.report}")
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from simulator import live

    try:
        return live.main(args)
    except KeyboardInterrupt:  # Ctrl-C before the meter was running
        print("\nstopped.")
        return 0


def _interrupt_once(_signum: int, _frame: object) -> None:
    """Ctrl-C: stop what runs; a second Ctrl-C while stopping is ignored (no traceback)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sc.interrupt()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulator",
                                     description="Simulated smart meter running the firmware.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a scenario in virtual time and write a report")
    run.add_argument("scenario", help="scenario JSON file")
    run.add_argument("--runtime", choices=sc.RUNTIMES, default="cpython")
    run.add_argument("--report", help="write the JSON report here instead of stdout")
    run.add_argument("--broker", help="HOST:PORT of the MQTT broker for scenario commands "
                     "(default: the run starts its own mosquitto)")
    run.set_defaults(func=cmd_run)
    live = sub.add_parser("live", help="run one meter in real time, publishing over MQTT")
    live.add_argument("--broker", help="HOST:PORT of an MQTT broker (default: embedded)")
    live.add_argument("--runtime", choices=sc.RUNTIMES, default="micropython")
    live.add_argument("--meter-id", default="demo-meter-0001")
    live.add_argument("--period", type=int, default=5, help="telemetry period in seconds")
    live.add_argument("--duration", type=float, default=0,
                      help="stop after this many seconds (default: run until Ctrl-C)")
    live.add_argument("--keys", help="head-end key file holding the meter's command key "
                      "(default: build/demo_keys.json, created with a new key if missing)")
    live.set_defaults(func=cmd_live)
    args = parser.parse_args(argv)
    previous = signal.getsignal(signal.SIGINT)
    # not when started with Ctrl-C ignored, nor from a thread (signals are the main thread's)
    if previous is not signal.default_int_handler or (
            threading.current_thread() is not threading.main_thread()):
        return args.func(args)
    sc.interrupt(clear=True)
    signal.signal(signal.SIGINT, _interrupt_once)
    hook = sys.unraisablehook

    def unraisable(info: Any) -> None:
        # Ctrl-C inside a callback from C (littlefs's): the run stops at its next tick
        if not issubclass(info.exc_type, KeyboardInterrupt):
            hook(info)

    sys.unraisablehook = unraisable
    try:
        return args.func(args)
    finally:
        # Once interrupted, Ctrl-C stays ignored until the process has exited: a second one
        # landing after this (a slow machine) must not end it by the signal instead of its
        # status (130, or 0 for the live meter).
        if signal.getsignal(signal.SIGINT) is _interrupt_once:
            signal.signal(signal.SIGINT, previous)
        sys.unraisablehook = hook
