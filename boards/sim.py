# The simulated meter board: exactly the ESP32 + ATM90E26 board's wiring, built on the
# simulator's `machine`, `esp32`, `network` and `vfs`, with virtual time as the clock source.
# One addition: a local command port (UART 2) through which the simulator delivers remote
# commands in-process (the MQTT command layer calls the same Control.remote()).
from machine import UART

from boards import esp32_atm90e26
from simulator.device import shim

COMMAND_UART = 2


def build(hbridge=False):
    hw = esp32_atm90e26.build(shim, hbridge)  # the shim's ticks/sleep/time are virtual
    hw.commands = UART(COMMAND_UART, 115200)
    return hw
