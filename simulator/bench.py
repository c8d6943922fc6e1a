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
CYCLES = 100_000  # rated erase cycles per 4 KiB block of the data partition's NOR flash
BLOCKS = 64  # 256 KiB
WEAR_DAYS = 2


def worst_case_wear() -> dict:
    """Imax (60 A at 240 V) without a break, a 15-min profile and frequent events (an outage,
    so three events, every hour), for a few days on CPython."""
    duration = WEAR_DAYS * 86400
    outages = [{"at_s": at, "for_s": 2} for at in range(1800, duration, 3600)]
    scenario = sc.normalise({"duration_s": duration,
                             "load": [{"at_s": 0, "volts": 240, "amps": 60, "pf": 1.0}],
                             "outages": outages})
    report = sc.run(scenario, "cpython")
    flash = report["flash"]
    per_day = flash["erases"] / WEAR_DAYS
    # LittleFS levels wear dynamically (block_cycles = 100: a metadata pair moves on after
    # 100 erases, file writes always go to a fresh block), so erases spread over the blocks.
    years = BLOCKS * CYCLES / per_day / 365
    return {"bytes_per_day": flash["bytes_written"] / WEAR_DAYS, "erases_per_day": per_day,
            "hottest_block_per_day": flash["erases_max_block"] / WEAR_DAYS,
            "lifetime_years": years, "events": len(report["events"])}


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
    wear = worst_case_wear()
    print(f"flash wear, worst case ({WEAR_DAYS} days at Imax 60 A, 15-min profile, an outage "
          "and its events every hour):")
    print(f"  {wear['bytes_per_day']:.0f} bytes written per day, "
          f"{wear['erases_per_day']:.0f} erases per day "
          f"(hottest block {wear['hottest_block_per_day']:.1f} per day)")
    print(f"  projected life of the {BLOCKS}-block data partition at {CYCLES} cycles per "
          f"block: {wear['lifetime_years']:.0f} years")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
