# The board's romfs partition: the firmware image (build/firmware.romfs) lies in memory
# outside the heap and is mounted at /rom, where MicroPython runs .mpy bytecode in place,
# so the firmware's code does not take heap, as on a board (`mpremote romfs deploy` writes
# the image; ESP32 builds map the partition and mount it at boot). Here the host's launcher
# (simulator/romboot.py) puts the image in memory and passes its address and size.
# This is the one module the device process loads from the file system.
# Usage: micropython -X heapsize=N -m romstart WIRE_FD BOARD_MODULE  (the device process), or
# `import romstart` first thing (a probe).
import os
import sys

import uctypes
import vfs

_where = os.getenv("MICROPY_ROMFS")
if not _where:
    raise OSError("no ROMFS image: start MicroPython through simulator/romboot.py")
_address, _size = _where.split(":")
vfs.mount(vfs.VfsRom(uctypes.bytearray_at(int(_address), int(_size))), "/rom")
if sys.path[0] != "/rom":
    sys.path.insert(0, "/rom")

if __name__ == "__main__":
    from simulator.device import remote

    remote.main(int(sys.argv[1]), sys.argv[2])
