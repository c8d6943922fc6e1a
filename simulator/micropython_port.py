"""Real MicroPython (the unix port) for the device process and unit-check scripts: its
command line, its module path, and the firmware's heap budget on it."""

from __future__ import annotations

import os
import subprocess
import sys

from simulator.paths import MPY_DIR, ROOT

# The firmware's heap budget on MicroPython: a hard cap (an ESP32 without PSRAM has ~110 KB,
# and this port's objects are twice its pointer size). The firmware's code runs in place from
# its ROMFS image, as on a board (simulator/device/romstart.py). The device process also
# carries the simulator's own device layer (the Python stand-ins for `machine`, `esp32`,
# `network`, which are C on a board, and the wire); its measured size is added on top, so
# the firmware gets exactly this much. The whole firmware (MQTT link, commands, supply
# control, store-and-forward) runs in it. See README, "Heap on MicroPython".
HEAPSIZE = "64k"
DEVICE_LAYER = ("simulator.device.shim", "simulator.device.wire", "socket", "struct")
_layer_bytes: list[int] = []


def heap_bytes(size: str) -> int:
    size = size.lower()
    scale = {"k": 1024, "m": 1024 * 1024}.get(size[-1:], 1)
    return int(size.rstrip("km")) * scale


def device_layer_bytes() -> int:
    """What the device process takes of MicroPython's heap before the firmware starts,
    measured once: its start-up (path and arguments, whose length depends on where the
    checkout lies), the ROMFS mount and the simulator's device layer. The firmware's budget
    comes on top, so it gets exactly that much wherever it runs."""
    if not _layer_bytes:
        from simulator.build_mpy import build

        build()
        probe = ("import romstart\n" + "".join(f"import {name}\n" for name in DEVICE_LAYER)
                 + "import gc\ngc.collect()\nprint(gc.mem_alloc())\n")
        out = subprocess.run(micropython_command("-c", probe, heapsize="1m"),
                             env=micropython_env(), capture_output=True, text=True, check=True)
        _layer_bytes.append(int(out.stdout.strip()))
    return _layer_bytes[0]


def micropython_command(*args: str, heapsize: str = HEAPSIZE) -> list[str]:
    """Real MicroPython with the firmware's ROMFS image in memory (simulator/romboot.py). A
    process that imports `romstart` first (the device process, the layer probe) loads the
    firmware from that image at /rom, independent of where the checkout lies; a unit-check
    script that does not loads the same .mpy files from build/mpy."""
    from simulator.build_mpy import ROMFS

    return [sys.executable, str(ROOT / "simulator" / "romboot.py"), str(ROMFS),
            "-X", f"heapsize={heapsize}", *args]


def micropython_env() -> dict:
    from simulator.build_mpy import ROMSTART_DIR

    env = dict(os.environ)
    # .frozen: the modules frozen into MicroPython's own image (ssl...), on the path as on a
    # board; /rom first, as on a board with a romfs partition
    env["MICROPYPATH"] = f"/rom:{ROMSTART_DIR}:{MPY_DIR}:.frozen"
    return env
