"""The calibration bench: a meter's IC under a reference source, and the end-of-line steps.

Puts a meter under a reference source (Vref, Ib, PF 1 for the gains; PF 0.5 lagging for the
phase; low current for the offset), lets the firmware's own calibration code
(firmware/meter/metering/calibration_maths.py) compute the register values from what the meter
measured and what the source delivered, and stores the record (with the IC's checksums) in
/calib.json on the meter's data partition, where it survives re-deploying the firmware.

Today the meter is a simulated one: an emulated IC with a per-unit manufacturing error,
driven through the firmware's driver over the emulated SPI bus. The reference source is the
simulator's load model, whose energy is exact. Used by a scenario's `calibrate` (the device
runner, before the first boot) and by the calibration station's CLI (host_tools/calibrate.py).
"""

from __future__ import annotations

import sys

from simulator.paths import ensure_paths

FLASH_BLOCKS = 64  # the data flash image's 4 KiB blocks (simulator/device/runner.py)


# IEC 62053-21 class 1 rows: (fraction of Ib low, high, PF, lead, limit %).
CLASS1_ROWS = [
    (0.05, 0.1, 1.0, False, 1.5),
    (0.1, 6.0, 1.0, False, 1.0),
    (0.1, 0.2, 0.5, False, 1.5),
    (0.1, 0.2, 0.8, True, 1.5),
    (0.2, 6.0, 0.5, False, 1.0),
    (0.2, 6.0, 0.8, True, 1.0),
]


def _paths() -> None:
    ensure_paths()
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)


class Bench:
    """A meter's IC on a calibration bench: its own world (time, reference source), the
    firmware's driver on the emulated SPI bus. Faults of the scenario are not on the bench."""

    def __init__(self, chip, vref: float = 240.0, ib: float = 10.0, hz: float = 50.0):
        _paths()
        from simulator.device import shim
        from simulator.device import shim as machine
        from simulator.device.faults import BusFaults
        from simulator.device.world import World

        sys.modules.setdefault("machine", machine)
        if hasattr(chip, "meter_constant"):
            from meter.metering.atm90e26 import ATM90E26 as Driver

            baud = 200_000
        else:
            from meter.metering.ade7953 import ADE7953 as Driver

            baud = 1_000_000

        self.chip = chip
        self.vref, self.ib, self.hz = vref, ib, hz
        self.world = World(10**12, 1_767_205_800, [[0, vref, 0.0, 1.0, hz]], [])
        self.world.attach_spi(2, 5, chip)
        self.world.meters.append(chip)
        self._saved = (shim.WORLD[0], chip.faults, chip.t_ms)
        chip.faults = BusFaults({})
        shim.WORLD[0] = self.world
        self.driver = Driver(machine.SPI(2, baudrate=baud, polarity=1, phase=1),
                             machine.Pin(5, machine.Pin.OUT, value=1))
        self.inst = [0] * 8

    def close(self) -> None:
        from simulator.device import shim

        shim.WORLD[0], self.chip.faults, self.chip.t_ms = self._saved
        self.chip.power_on()  # leaves the bench unconfigured, as after power-up

    def start(self, cal: dict | None) -> None:
        if not self.driver.start(cal):
            raise RuntimeError("the IC refused the calibration record")

    def source(self, amps: float, pf: float = 1.0, lead: bool = False,
               volts: float | None = None) -> None:
        volts = self.vref if volts is None else volts
        self.world.load = [[0, volts, amps, pf, self.hz, amps, lead]]
        self.world.load_index = 0

    def measure(self, seconds: int, rms: bool = True) -> dict:
        """Energy the source delivered and the meter registered over `seconds`; mean RMS."""
        driver = self.driver
        true0 = self.world.true_import_wh + self.world.true_export_wh
        driver.read_energy()  # start from an empty register
        lsbs = 0
        cv = ma = na = 0
        for _ in range(seconds):
            self.world.advance(1000)
            imp, exp = driver.read_energy()
            lsbs += imp + exp
            if not rms:
                continue
            driver.read_instant(self.inst)
            cv += self.inst[0]
            ma += self.inst[1]
            na += self.inst[5]
        true = self.world.true_import_wh + self.world.true_export_wh - true0
        return {"ref_wh": true, "meas_wh": lsbs * driver.energy_num / driver.energy_den,
                "cv": cv / seconds, "ma": ma / seconds, "na": na / seconds}

    def error_pct(self, amps: float, pf: float, lead: bool, cal: dict | None,
                  min_wh: float = 40.0) -> float:
        """Energy error in % at one load point, over long enough for 0.1 % resolution."""
        self.start(cal)
        self.source(amps, pf, lead)
        seconds = max(60, int(min_wh * 3600 / (self.vref * amps * pf)))
        m = self.measure(seconds, rms=False)
        return (m["meas_wh"] / m["ref_wh"] - 1) * 100


def procedure(bench: Bench, seconds: int = 300) -> dict:
    """The calibration steps; returns the register dict (the firmware computes every value)."""
    from meter.metering import calibration_maths as calibrate

    ade = bench.driver.NAME == "ade7953"
    gains = calibrate.ade_gains if ade else calibrate.gains
    phase = calibrate.ade_phase if ade else calibrate.phase
    offset = calibrate.ade_offset if ade else calibrate.offset
    cal: dict = {}
    ib, vref = bench.ib, bench.vref
    for step in ("gain", "phase", "gain", "offset"):
        bench.start(cal)
        if step == "gain":
            bench.source(ib, 1.0)
            m = bench.measure(seconds)
            gains(cal, m["ref_wh"], m["meas_wh"], vref * 100, m["cv"],
                            ib * 1000, m["ma"], ib * 1000, m["na"])
        elif step == "phase":
            bench.source(ib, 0.5)
            m = bench.measure(seconds * 2, rms=False)
            phase(cal, m["ref_wh"], m["meas_wh"], 0.5)
        else:
            bench.source(0.05 * ib, 1.0)
            m = bench.measure(seconds * 12, rms=False)
            offset(cal, m["ref_wh"], m["meas_wh"], seconds * 12)
    return cal


def save(fs, cal: dict, bench: Bench) -> None:
    from meter.metering import calibration as calib

    calib.save(fs, bench.driver, cal, {"vref_v": bench.vref, "ib_a": bench.ib})


def calibrate_world(world, fs) -> dict:
    """Calibrate the scenario's emulated IC before the first boot and store the record on
    its data partition, fs (what the end-of-line station does before the meter ships)."""
    bench = Bench(world.meters[0])
    try:
        cal = procedure(bench)
        save(fs, cal, bench)
    finally:
        bench.close()
    return cal


def verify(bench: Bench, cal: dict) -> list[tuple[float, float, bool, float, float]]:
    """The class 1 table measured with the record cal: (fraction of Ib, PF, lead, error %,
    limit %) at both ends of each row."""
    return [(frac, pf, lead, bench.error_pct(frac * bench.ib, pf, lead, cal), limit)
            for lo, hi, pf, lead, limit in CLASS1_ROWS for frac in (lo, hi)]


def store_on_image(flash_path: str, cal: dict, bench: Bench) -> None:
    """Store the record in /calib.json on a data flash image (formatted if it holds no
    filesystem yet)."""
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip
    from simulator.device.shim import Partition

    chip = FlashChip(flash_path, FLASH_BLOCKS)
    data = Partition(chip, "meterdata")  # the LittleFS partition of the data flash
    try:
        try:
            fs = lfs_vfs.VfsLfs2(data)
        except OSError:
            lfs_vfs.VfsLfs2.mkfs(data)
            fs = lfs_vfs.VfsLfs2(data)
        save(fs, cal, bench)
    finally:
        chip.close()
