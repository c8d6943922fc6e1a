# The simulated meter board: exactly the ESP32 + ATM90E26 board's wiring, built on the
# simulator's `machine`, `esp32`, `network` and `vfs`, with virtual time as the clock source.
from boards import esp32_atm90e26
from simulator.device import shim


def build():
    return esp32_atm90e26.build(shim)  # the shim's ticks/sleep/time run on virtual time
