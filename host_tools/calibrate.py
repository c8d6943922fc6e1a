"""End-of-line calibration: `.venv/bin/python -m host_tools.calibrate` (from the checkout).

The station's command line: input checks and printing. What it does, the bench and the
steps (a simulated meter under an exact reference source today): simulator/calibration_bench.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _paths() -> None:
    """The checkout's packages (the simulator's bench), from any folder."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))

def _input_problem(args: argparse.Namespace) -> str | None:
    """None, or one line on what is wrong with --chip (the scenario schema's `chip`: the
    same keys and ranges) or --flash (a data flash image, or a new file in a folder that
    exists; never a file of some other size, which calibrating would overwrite)."""
    from simulator.calibration_bench import FLASH_BLOCKS
    from simulator.device.flash import BLOCK_SIZE
    from simulator.schema import CHIP_SCHEMA, Obj, ScenarioError

    try:
        errors = json.loads(args.chip)
    except ValueError as exc:
        where = f" at column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        return f"--chip: not valid JSON{where} (give e.g. '{{\"u_gain_error\": 0.04}}')"
    try:
        Obj(CHIP_SCHEMA).check(errors, "--chip", {})
    except ScenarioError as exc:
        return str(exc)
    if args.flash:
        path, size = Path(args.flash), FLASH_BLOCKS * BLOCK_SIZE
        if not path.parent.is_dir():
            return f"--flash: {path}: the folder {path.parent} does not exist"
        if path.exists() and (not path.is_file() or path.stat().st_size != size):
            return f"--flash: {path}: not a {size}-byte flash image (left as it is)"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=".venv/bin/python -m host_tools.calibrate",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--chip", default="{}",
                        help='the simulated unit\'s errors, JSON, e.g. '
                             '\'{"u_gain_error": 0.04, "i_gain_error": -0.07, '
                             '"phase_error_deg": 1.5, "power_offset_w": 0.4}\'')
    parser.add_argument("--flash", help="data partition image to store /calib.json in")
    parser.add_argument("--ic", choices=("atm90e26", "ade7953"), default="atm90e26")
    parser.add_argument("--verify", action="store_true",
                        help="measure the class 1 table after calibrating")
    args = parser.parse_args(argv)
    _paths()
    from simulator.calibration_bench import Bench, procedure, store_on_image, verify

    problem = _input_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    errors = json.loads(args.chip)
    if args.ic == "ade7953":
        from simulator.device.ade7953_emu import Ade7953

        bench = Bench(Ade7953(chip=errors))
    else:
        from simulator.device.atm90e26_emu import Atm90e26

        bench = Bench(Atm90e26(chip=errors))
    try:
        before = bench.error_pct(bench.ib, 1.0, False, None)
        cal = procedure(bench)
        print(f"error at Ib, PF 1 before calibration: {before:+.3f} %")
        print("registers: " + ", ".join(f"0x{a:02X}=0x{v:04X}" for a, v in sorted(cal.items())))
        sums = bench.driver.checksums(cal)
        if sums:
            print("checksums: " + ", ".join(f"0x{c:04X}" for c in sums))
        if args.verify:
            for frac, pf, lead, err, limit in verify(bench, cal):
                kind = "C" if lead else ("L" if pf < 1 else "")
                print(f"  I={frac:5.2f} Ib PF {pf}{kind}: {err:+.3f} % (limit {limit})")
        if args.flash:
            store_on_image(args.flash, cal, bench)
            print(f"stored /calib.json in {args.flash}")
    finally:
        bench.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
