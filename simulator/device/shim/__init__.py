# MicroPython's hardware modules (machine, esp32, network, ...) backed by the emulated world.
# The runner installs them in sys.modules under their MicroPython names before the firmware
# starts, on both runtimes.

WORLD = [None]  # the world the shims talk to; one meter per process


def world():
    w = WORLD[0]
    if w is None:
        raise RuntimeError("no simulated world attached")
    return w
