# The simulated meter board: exactly the ESP32 + ATM90E26 board's wiring, built on the
# simulator's `machine`, `esp32`, `network` and `vfs`, with virtual time as the clock source.
# One addition: a local command port (UART 2) through which the simulator delivers remote
# commands in-process (the MQTT command layer calls the same Control.remote()). And the
# scenario decides whether the power-fail detector is fitted ("power_fail_input").
from machine import UART

from boards import esp32_atm90e26
from simulator.device import shim

COMMAND_UART = 2


def build(hbridge=False):
    hw = esp32_atm90e26.build(shim, hbridge)  # the shim's ticks/sleep/time are virtual
    hw.commands = UART(COMMAND_UART, 115200)
    if shim.world().power_fail_pin is None:
        hw.power_fail = None  # no detector fitted: no last gasp, the checkpoint policy
    return hw
