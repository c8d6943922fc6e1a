# The simulated board with the single-coil relay variant: one coil across an H-bridge.
from boards import sim


def build():
    return sim.build(True)
