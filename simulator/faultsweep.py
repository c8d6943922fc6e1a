"""Power cut at every flash program and erase of one run, checked from a single run.

Running a day again for each of its ~20,000 flash operations would take hours. Instead the
run goes once, and just before each program or erase the flash image is looked at as a cut
right there would leave it: a program torn after its first half (as FlashChip does for
`power_cut_at_write`), an erase not done. The image is the whole data flash: LittleFS's
partition and the last-gasp journal's (a torn record there must be skipped). It is mounted
read-only-in-effect (writes land in a RAM overlay) with the firmware's own boot-time
readers, and checked:

- LittleFS mounts;
- the energy registers the meter would restore are never above the true energy and never
  below it by more than the checkpoint bound (plus what earlier real outages lost);
- every block-profile record present is exactly the record the uncut run wrote with that
  number (none half-written or altered), and their times strictly increase (none duplicated
  or reordered);
- the event logs read back without error.

A sample of cut points is also booted for real (`reboot_from`) to show the firmware runs on.
"""

from __future__ import annotations

import sys
from typing import Any

from simulator import scenario as sc
from simulator.device.shim import Partition

BLOCK = 4096
JOURNAL_FIRST = Partition.TABLE["lastgasp"][0]  # the last-gasp journal's first chip block


class OverlayFlash:
    """The image as a cut would leave it: reads from the live image file, the torn program
    patched in, and any writes (mkdir at mount) kept in RAM."""

    def __init__(self, fh: Any, blocks: int, torn: tuple | None) -> None:
        self.fh = fh
        self.blocks = blocks
        self.torn = torn
        self.dirty: dict[int, bytearray] = {}

    def _block(self, block: int) -> bytearray:
        data = self.dirty.get(block)
        if data is None:
            self.fh.seek(block * BLOCK)
            data = bytearray(self.fh.read(BLOCK))
            if self.torn is not None and self.torn[0] == block:
                _b, off, part = self.torn
                data[off:off + len(part)] = part
            self.dirty[block] = data
        return data

    def readblocks(self, block: int, buf: Any, offset: int = 0) -> None:
        data = self._block(block)
        buf[:] = data[offset:offset + len(buf)]

    def writeblocks(self, block: int, buf: Any, offset: int = 0) -> None:
        data = self._block(block)
        data[offset:offset + len(buf)] = buf

    def ioctl(self, op: int, arg: Any) -> int:
        if op == 4:
            return self.blocks
        if op == 5:
            return BLOCK
        if op == 6:
            self._block(arg)[:] = b"\xff" * BLOCK
        return 0


def read_state(bdev: Any) -> dict:
    """What the firmware finds at boot on this image of the whole data flash (its own
    readers): LittleFS on the data partition, a newer last-gasp record in the journal."""
    from meter import events, maint, profile, store
    from meter.energy import Register

    from simulator import lfs_vfs

    # OSError if it does not mount
    fs = lfs_vfs.VfsLfs2(Partition(bdev, "meterdata"), cache_size=BLOCK)
    imp, exp = Register(1000), Register(1000)
    energy = store.EnergyStore(fs, Partition(bdev, "lastgasp"))
    energy.load(imp, exp)
    block = profile.block(fs, energy.profile_head)
    records = []
    for n, rec in maint.read(block):
        records.append((n, rec))
    events.EventLog(fs)  # what boot does: find each log's head
    seqs = [r[0] for r in maint.all_events(fs)]
    return {"wh": imp.wh_float() + exp.wh_float(), "profile": records, "event_seqs": seqs}


class Sweep:
    def __init__(self, bound_wh: float, from_ms: int = 0) -> None:
        self.bound_wh = bound_wh
        self.from_ms = from_ms  # cut points before this virtual time are not checked
        self.world: Any = None
        self.cuts = 0
        self.programs = 0
        self.erases = 0
        self.journal_programs = 0  # of which on the last-gasp journal partition
        self.journal_erases = 0
        self.failures: list[str] = []
        self.snapshots: list[tuple] = []  # (op index, truth Wh, state)

    def on_op(self, kind: str, block: int, offset: int, data: Any) -> None:
        world = self.world
        if world.now_ms < self.from_ms:
            return
        chip = world.flash
        chip.fh.flush()
        torn = None
        journal = block >= JOURNAL_FIRST
        if kind == "P":
            self.programs += 1
            self.journal_programs += journal
            torn = (block, offset, bytes(data[:len(data) // 2]))
        else:
            self.erases += 1
            self.journal_erases += journal
        self.cuts += 1
        truth = world.true_import_wh + world.true_export_wh
        try:
            state = read_state(OverlayFlash(chip.fh, chip.block_count, torn))
        except Exception as exc:  # noqa: BLE001 - any failure to boot is the finding
            self.failures.append(f"cut {self.cuts} ({kind} block {block}): {exc!r}")
            return
        deficit = truth - state["wh"]
        before = getattr(world, "deficit_wh", 0.0)
        if deficit < -0.001:
            self.failures.append(f"cut {self.cuts}: restores {-deficit:.3f} Wh above the truth")
        if deficit - before > self.bound_wh:
            self.failures.append(f"cut {self.cuts}: loses {deficit - before:.3f} Wh")
        times = [rec[0] for _n, rec in state["profile"]]
        if any(b <= a for a, b in zip(times, times[1:], strict=False)):
            self.failures.append(f"cut {self.cuts}: profile times not increasing {times}")
        if len(set(state["event_seqs"])) != len(state["event_seqs"]):
            self.failures.append(f"cut {self.cuts}: duplicated event sequence numbers")
        self.snapshots.append((self.cuts, truth, state["profile"]))


def run(scenario: dict, flash_path: str, bound_wh: float,
        from_ms: int = 0) -> tuple[Sweep, dict, list]:
    """Run the scenario once on CPython with a sweep hooked to every flash operation (from
    virtual time from_ms on)."""
    sc.ensure_paths()
    from simulator.device import runner

    sweep = Sweep(bound_wh, from_ms)
    provision = runner.provision

    def provision_then_sweep(world: Any, config: dict, *more: Any) -> None:
        provision(world, config, *more)  # formatting and provisioning are not the meter's
        sweep.world = world
        world.flash.on_op = sweep.on_op

    runner.provision = provision_then_sweep
    try:
        raw = runner.run(scenario, flash_path, None, sc.measure_loss)
    finally:
        runner.provision = provision
    # The uncut run's profile: every record any cut left behind must be one of these.
    from simulator.device.flash import FlashChip

    chip = FlashChip(flash_path, 64)
    try:
        final = read_state(OverlayFlash(chip.fh, 64, None))["profile"]
    finally:
        chip.close()
    reference = dict(final)
    for cut, _truth, records in sweep.snapshots:
        for n, rec in records:
            if reference.get(n) != rec:
                sweep.failures.append(f"cut {cut}: profile record {n} is {rec}, "
                                      f"the run wrote {reference.get(n)}")
    sweep.snapshots = [s for s in sweep.snapshots[:: max(1, len(sweep.snapshots) // 64)]]
    _forget_meter()
    return sweep, raw, final


def _forget_meter() -> None:
    for name in list(sys.modules):
        if name == "meter" or name.startswith("meter."):
            del sys.modules[name]
