# What differs between the runtimes the firmware runs on, in one place, as capabilities, not
# runtime names: MicroPython (the board, the unix port) and CPython (the simulator). Time and
# hardware differ too, but those come in through the board (meter/runtime/hardware.py,
# meter/runtime/clock.py). (firmware/ussl.py is not here: it is a module name umqtt.simple
# imports.)
import gc

# A heap the firmware manages by hand (MicroPython's gc has mem_free): collect before loading
# code and check there is room; a host's heap is not the constraint, and its full
# collections are slow.
HAND_HEAP = hasattr(gc, "mem_free")


def collect():
    """Before loading code: it goes into the holes garbage leaves, not a fragmented heap."""
    if HAND_HEAP:
        gc.collect()


def mem_free():
    """Free heap in bytes; on a host, as good as unlimited."""
    return gc.mem_free() if HAND_HEAP else 0x3FFFFFFF
