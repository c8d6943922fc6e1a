# The simulated board with the single-coil relay variant: one coil across an H-bridge.
from simulator.device import board_sim


def build():
    return board_sim.build(True)
