"""A run's flash image read with the firmware's own readers: what the meter would restore
(energy, profile records), its event log, its persisted supply control state."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from simulator.event_names import event_name
from simulator.paths import ensure_paths


@contextmanager
def image_parts(flash_path: str) -> Iterator[tuple]:
    """The meter's data filesystem (None when it holds none) and its last-gasp journal
    partition on a flash image, for reading them with the firmware's own readers."""
    ensure_paths()
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip
    from simulator.device.shim import Partition, micropython

    sys.modules.setdefault("micropython", micropython)
    chip = FlashChip(flash_path, 64)
    try:
        try:
            fs = lfs_vfs.VfsLfs2(Partition(chip, "meterdata"))
        except OSError:
            fs = None
        yield fs, Partition(chip, "lastgasp")
    finally:
        chip.close()


@contextmanager
def image_fs(flash_path: str) -> Iterator[Any]:
    """The meter's data filesystem on a flash image; None when it holds no filesystem."""
    with image_parts(flash_path) as (fs, _journal):
        yield fs


def read_store(flash_path: str) -> dict:
    """What the meter would restore at boot, read from the flash image with the firmware's
    own readers (LittleFS checkpoint or a newer last-gasp journal record): energy registers
    (Wh) and the block-profile record count."""
    with image_parts(flash_path) as (fs, journal):
        if fs is None:
            return {"wh": 0.0, "profile_records": 0}
        from meter.metering.energy import Register
        from meter.storage import checkpoint as store
        from meter.storage import profiles as profile

        imp, exp = Register(1000), Register(1000)
        energy = store.EnergyStore(fs, journal)
        from meter.storage.restore import load_energy

        load_energy(energy, imp, exp)
        ring = profile.block(fs, energy.period.head)
        count = ring.n if ring.n < ring.capacity else ring.capacity
        return {"wh": imp.wh_float() + exp.wh_float(), "profile_records": count,
                "import_wh": imp.wh_float()}


def measure_loss(world: Any) -> None:
    """Before each reboot: how much of what flowed the meter lost over this power cut
    (true energy minus what it restores, less the shortfall it already had)."""
    world.flash.fh.flush()
    restored = read_store(world.flash.path)["wh"]
    deficit = world.true_import_wh + world.true_export_wh - restored
    before = getattr(world, "deficit_wh", 0.0)
    world.losses_wh = getattr(world, "losses_wh", [])
    world.losses_wh.append(deficit - before)
    world.deficit_wh = deficit


def read_events(flash_path: str, start_unix: int) -> list[dict]:
    """The firmware's event log, read from the flash image with the firmware's own reader."""
    with image_fs(flash_path) as fs:
        if fs is None:
            return []
        from meter.runtime.clock import METER_EPOCH_UNIX
        from meter.storage import reader as maint
        from meter.storage.layout import CATEGORIES

        # by sequence: the order logged; flag 1: stamped while the clock was invalid
        records = sorted(rec for cat in range(len(CATEGORIES))
                         for _n, rec in maint.read_events(fs, cat))
    events = []
    for _seq, t, code, _cat, flags, *_rest in records:
        event = {"t_s": t + METER_EPOCH_UNIX - start_unix, "code": code,
                 "name": event_name(code)}
        if flags & 1:
            event["clock_invalid"] = True
        events.append(event)
    return events


def read_control(flash_path: str) -> tuple | None:
    """(state, mode) persisted by the firmware's control, read with its own slot reader."""
    with image_fs(flash_path) as fs:
        if fs is None:
            return None
        from meter.supply.startup import load

        rec = load(fs)
    return rec[1:3] if rec else None
