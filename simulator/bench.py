"""`make bench`: measured figures, printed, never asserted.

For the one-day scenario in tests/scenarios on each runtime: simulated seconds per wall
second, and on MicroPython the live-heap peak (sampled after a collection once a simulated
minute) under the 64 KiB cap. Also the flash traffic of that day.
"""

from __future__ import annotations

import sys
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


def poll_cost() -> None:
    """Cost of one metering poll (IC check, energy read and check, power read) per runtime:
    on CPython the driver against the emulated chip in-process; on MicroPython the wall time
    per simulated second of a 10-minute run, where every SPI frame is a round trip."""
    import time

    sc.ensure_paths()
    from simulator.device import shim
    from simulator.device import shim as machine
    from simulator.device.atm90e26_emu import Atm90e26
    from simulator.device.shim import micropython
    from simulator.device.world import World

    sys.modules.setdefault("micropython", micropython)
    from meter.atm90e26 import ATM90E26

    world = World(10**12, 1_767_205_800, [[0, 240.0, 10.0, 1.0, 50.0]], [])
    chip = Atm90e26()
    world.attach_spi(2, 5, chip)
    world.meters.append(chip)
    frames = [0]
    exchange = chip.exchange

    def counting(mode, tx, rx):
        frames[0] += 1
        exchange(mode, tx, rx)

    chip.exchange = counting
    shim.WORLD[0] = world
    driver = ATM90E26(machine.SPI(2, baudrate=200_000, polarity=1, phase=1),
                      machine.Pin(5, machine.Pin.OUT, value=1))
    driver.start()
    n = 5000
    frames[0] = 0
    started = time.perf_counter()
    for _ in range(n):
        world.advance(1000)
        driver.configured()
        driver.read_energy()
        driver.read_power()
    cost = (time.perf_counter() - started) / n
    shim.WORLD[0] = None
    print(f"metering poll: {frames[0] / n:.1f} SPI frames")
    print(f"  cpython      {cost * 1e6:9.1f} us per poll (driver + emulated chip, in-process)")
    scenario = sc.normalise({"duration_s": 600, "load": [{"at_s": 0, "amps": 10}]})
    report = sc.run(scenario, "micropython")
    print(f"  micropython  {report['wall_s'] / 600 * 1e3:9.2f} ms per poll, whole duty cycle "
          f"over the wire; heap peak {report['heap_peak_bytes']} B")


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
    poll_cost()
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
