"""`make bench`: measured figures, printed, never asserted.

For the one-day scenario in tests/scenarios on each runtime: simulated seconds per wall
second, and on MicroPython the live-heap peak (sampled after a collection once a simulated
minute) under the 64 KiB cap. Also the flash traffic of that day.
"""

from __future__ import annotations

from pathlib import Path

from simulator import scenario as sc

ROOT = Path(__file__).resolve().parent.parent
ONE_DAY = ROOT / "tests" / "scenarios" / "one_day.json"


def main() -> int:
    scenario = sc.load_file(ONE_DAY)
    print(f"one-day scenario: {ONE_DAY.relative_to(ROOT)}")
    for runtime in sc.RUNTIMES:
        report = sc.run(scenario, runtime)
        line = (f"  {runtime:<12} {report['sim_s_per_wall_s']:>9.0f} simulated s per wall s"
                f"  ({report['wall_s']:.1f} s wall)")
        if "heap_peak_bytes" in report:
            line += f"  heap peak {report['heap_peak_bytes']} B of {64 * 1024}"
        print(line)
        print(f"  {'':<12} flash: {report['flash']['bytes_written']} bytes written, "
              f"{report['flash']['erases']} erases in the day")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
