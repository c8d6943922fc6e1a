"""The emulated flash under real LittleFS: counts wear, survives cuts mid-write."""

from __future__ import annotations

import gc

from simulator import lfs_vfs
from simulator.device.flash import FlashChip
from simulator.device.shim import PowerCut
from simulator.device.world import World


def make(tmp_path):
    world = World(1000, 0, [], [])
    chip = FlashChip(str(tmp_path / "flash.img"), 64, world)
    lfs_vfs.VfsLfs2.mkfs(chip)
    return world, chip


def test_counts_programs_and_erases(tmp_path):
    world, chip = make(tmp_path)
    fs = lfs_vfs.VfsLfs2(chip)
    before = (chip.bytes_written, chip.total_erases())
    with fs.open("/a", "wb") as f:
        f.write(b"x" * 5000)  # bigger than a block: programs and erases happen
    assert chip.bytes_written > before[0] + 5000
    assert chip.total_erases() > before[1]
    assert sum(chip.erases) == chip.total_erases()


def test_every_cut_point_leaves_old_or_new_file(tmp_path):
    world, chip = make(tmp_path)
    fs = lfs_vfs.VfsLfs2(chip)
    with fs.open("/energy", "wb") as f:
        f.write(b"old" * 10)
    cuts = 0
    for cut in range(1, 60):
        world.powered = True
        chip.cut_at_op = chip.ops + cut
        fs = lfs_vfs.VfsLfs2(chip)
        try:
            with fs.open("/energy.tmp", "wb") as f:
                f.write(b"new" * 10)
            fs.rename("/energy.tmp", "/energy")
        except PowerCut:
            cuts += 1
        else:
            break
        finally:
            gc.collect()
        world.powered = True
        chip.cut_at_op = 0
        fs = lfs_vfs.VfsLfs2(chip)  # mounts after every cut
        assert fs.open("/energy", "rb").read() in (b"old" * 10, b"new" * 10)
    assert cuts >= 3


def test_mount_of_blank_flash_fails_cleanly(tmp_path):
    world = World(1000, 0, [], [])
    chip = FlashChip(str(tmp_path / "blank.img"), 64, world)
    try:
        lfs_vfs.VfsLfs2(chip)
    except OSError as exc:
        assert exc.errno == 19  # ENODEV, as MicroPython says
    else:
        raise AssertionError("a blank chip has no filesystem")


def test_flash_operations_use_up_the_holdup(tmp_path):
    """After the power-fail edge the board runs on its capacitor: programs (0.7 ms per page)
    fit in a 30 ms hold-up, a sector erase (45 ms) does not and is cut where the supply dies."""
    from simulator.device import flash

    world = World(60_000, 0, [[0, 240.0, 0.0, 1.0, 50.0]], [[1000, 5000]])
    world.power_fail_pin = 39
    world.holdup_ms = 30
    chip = FlashChip(str(tmp_path / "flash.img"), 64, world)
    chip.writeblocks(3, b"\x00" * 16, 0)
    world.advance(1000)  # mains goes: the hold-up starts
    assert world.holdup is not None and world.pins[39] == 0
    for i in range(1, 11):  # ten page programs: 7 ms of the 30
        chip.writeblocks(5, b"\x11" * 32, 256 * i)
    assert world.holdup_used_us == 10 * flash.PAGE_PROGRAM_US
    try:
        chip.erase(3)
    except PowerCut:
        pass
    else:
        raise AssertionError("a 45 ms erase cannot finish on a 30 ms hold-up")
    assert world.holdup_overruns == 1 and not world.powered
    assert world.now_ms == 6000  # the outage passed
    buf = bytearray(16)
    world.powered = True
    chip.readblocks(3, buf)
    assert buf == b"\x00" * 16  # the erase never happened
    assert flash.program_us(250, 10) == 2 * flash.PAGE_PROGRAM_US  # crosses a page boundary
    chip.close()


def test_partitions_of_the_data_flash(tmp_path):
    """esp32.Partition in the simulator: two views of one chip (LittleFS 62 blocks, the
    last-gasp journal 2), each with its own block numbers, refusing blocks outside it; the
    chip counts (and can cut) operations over both."""
    from simulator.device.shim import Partition

    world = World(1000, 0, [], [])
    chip = FlashChip(str(tmp_path / "flash.img"), 64, world)
    data, journal = Partition(chip, "meterdata"), Partition(chip, "lastgasp")
    assert (data.ioctl(4, 0), journal.ioctl(4, 0), journal.ioctl(5, 0)) == (62, 2, 4096)
    lfs_vfs.VfsLfs2.mkfs(data)
    journal.writeblocks(1, b"\x12" * 32, 64)
    journal.ioctl(6, 0)
    assert chip.erases[62] == 1 and chip.erases[63] == 0
    buf = bytearray(32)
    chip.readblocks(63, buf, 64)
    assert buf == b"\x12" * 32
    for bad in (lambda: journal.writeblocks(2, buf, 0), lambda: journal.ioctl(6, 2),
                lambda: data.readblocks(62, buf)):
        try:
            bad()
        except OSError as exc:
            assert exc.args[0] == 22
        else:
            raise AssertionError("outside the partition")
    ops = chip.ops
    chip.cut_at_op = ops + 1
    try:
        journal.writeblocks(0, buf, 0)
    except PowerCut:
        pass
    assert chip.ops == ops + 1 and not world.powered
    chip.close()
