"""The storage layout is written down once (firmware/meter/storage/layout.py): its record sizes
agree with their formats, the rings opened with it are the ones the writers use, no firmware
module keeps a copy of it, and no firmware module reads another module's private names."""

from __future__ import annotations

import ast
import importlib
import struct
from pathlib import Path

# (by full name: the modules that read layout and profile_rings let them go from the package
# as soon as they have their names, so `from meter.storage import layout` may not find it)
events, layout, profile_rings, profiles = (
    importlib.import_module("meter.storage." + name)
    for name in ("events", "layout", "profile_rings", "profiles"))

ROOT = Path(__file__).resolve().parent.parent
METER = ROOT / "firmware" / "meter"


def test_record_sizes_follow_their_formats_and_fit_a_block():
    # n(4) + payload + CRC32(4) (meter/storage/ring.py)
    assert events.EVENT_SIZE == struct.calcsize(events.EVENT_FMT) + 8
    assert layout.BLOCK_SIZE == struct.calcsize(layout.BLOCK_FMT) + 8
    assert layout.BLOCK_PER_FILE * layout.BLOCK_SIZE <= 4096
    assert max(events.EVENT_CAPACITY) * events.EVENT_SIZE <= 4096
    assert layout.DAILY_CAPACITY * (struct.calcsize(layout.DAILY_FMT) + 8) <= 4096
    assert layout.BILLING_CAPACITY * (struct.calcsize(layout.BILLING_FMT) + 8) <= 4096
    cats = [v for k, v in vars(events).items() if k.startswith("CAT_")]
    assert sorted(cats) == list(range(len(layout.CATEGORIES))) == list(
        range(len(events.EVENT_CAPACITY)))


def test_rings_open_in_the_layout(tmp_path):
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip

    chip = FlashChip(str(tmp_path / "f.img"), 64)
    lfs_vfs.VfsLfs2.mkfs(chip)
    fs = lfs_vfs.VfsLfs2(chip)
    ring = events.ring(fs, events.CAT_COVER)
    assert (ring.file(0), ring.size, ring.capacity) == ("/ev/6.0", events.EVENT_SIZE, 20)
    assert not ring._rolls and events.ring(fs, events.CAT_CONTROL)._rolls
    block = profiles.block(fs)
    assert (block.file(30), block.size, block.capacity) == (
        "/p/block.30", layout.BLOCK_SIZE, layout.BLOCK_CAPACITY)
    assert profiles.block.__module__ == profiles.daily.__module__ == profile_rings.__name__
    assert profile_rings.billing(fs).file(0) == layout.BILLING_PATH + ".0"


# What the layout holds (and the epoch, meter/runtime/clock.py's): written nowhere else.
LITERALS = ("1577836800",  # (billing's format is also the energy slot's, checkpoint.py)
            '"/ev"', '"/p"', '"/p/', "<IIHBBHHII", "<IHHHHH", '"<III"',
            "5766", '"transaction"')
OWNERS = {"storage/layout.py", "storage/events.py", "runtime/clock.py", "storage/event_names.py"}


def test_no_firmware_module_copies_the_layout():
    copies = []
    for path in sorted(METER.rglob("*.py")):
        rel = str(path.relative_to(METER))
        if rel in OWNERS or rel == "remote/commands.py":  # (commands: see below)
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            copies += [f"{rel}:{i}: {lit}" for lit in LITERALS if lit in code]
    assert not copies, copies


def module_names(tree: ast.Module) -> set[str]:
    """Names a module binds to firmware modules (import a.b as c; from a import b)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                dotted = node.module.replace(".", "/") + "/" + a.name
                if (ROOT / "firmware" / (dotted + ".py")).exists():
                    names.add(a.asname or a.name)
    return names


def test_no_firmware_module_reads_another_modules_private_names():
    reads = []
    for path in sorted((ROOT / "firmware").rglob("*.py")):
        tree = ast.parse(path.read_text())
        mods = module_names(tree)
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and node.attr.startswith("_")
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name)
                    and node.value.id in mods):
                reads.append(f"{path.name}:{node.lineno}: {node.value.id}.{node.attr}")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("meter"):
                reads += [f"{path.name}:{node.lineno}: {a.name}" for a in node.names
                          if a.name.startswith("_")]
    assert not reads, reads
