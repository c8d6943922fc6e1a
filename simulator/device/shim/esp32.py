# `esp32` for the simulated board: the data partition is the emulated flash chip.
from simulator.device.shim import world


class Partition:
    TYPE_APP = 0
    TYPE_DATA = 1

    @staticmethod
    def find(type=TYPE_APP, subtype=0xFF, label=None):
        w = world()
        if type == Partition.TYPE_DATA and label in (None, w.flash_label):
            return [w.flash]
        return []
