# The simulated meter board with an ADE7953: the ESP32 + ADE7953 board's wiring, built on
# the simulator's `machine`, `esp32`, `network` and `vfs`, with virtual time.
from boards import esp32_ade7953
from simulator.device import shim


def build():
    return esp32_ade7953.build(shim)
