"""Command line: `python -m simulator run SCENARIO.json` and `python -m simulator live`."""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from simulator import scenario as sc


def _progress_bar(stream=sys.stderr):  # type: ignore[no-untyped-def]
    state = {"shown": -1}

    def show(fraction: float) -> None:
        percent = int(fraction * 100)
        if percent != state["shown"] and stream.isatty():
            state["shown"] = percent
            bar = "#" * (percent // 5)
            stream.write(f"\r[{bar:<20}] {percent:3d}%")
            stream.flush()
        elif percent != state["shown"] and percent % 25 == 0:
            state["shown"] = percent
            stream.write(f"progress {percent}%\n")
    return show


def cmd_run(args: argparse.Namespace) -> int:
    try:
        scenario = sc.load_file(args.scenario)
        # the firmware's own prints (CPython runs it in this process) stay off the report
        with contextlib.redirect_stdout(sys.stderr):
            report = sc.run(scenario, args.runtime, _progress_bar(), broker=args.broker)
    except sc.ScenarioError as exc:
        print(f"error: {args.scenario}: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 1
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    text = json.dumps(report, indent=2)
    if args.report:
        Path(args.report).write_text(text + "\n")
        print(f"report written to {args.report}")
    else:
        print(text)
    return 0


def cmd_live(args: argparse.Namespace) -> int:
    from simulator import live

    return live.main(args)


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
    return args.func(args)
