# Boots the firmware in its own process (real MicroPython), wired to a world served by the
# host over an inherited socket. One process is one boot: a power cut ends the process and
# the host starts a new one, so nothing in RAM survives, as on the board.
# Started by simulator/device/romstart.py, once the firmware image is mounted at /rom.
import socket  # noqa: F401 - part of the measured device layer (simulator/micropython_port.py DEVICE_LAYER)
import sys

from simulator.device import shim
from simulator.device.shim import PowerCut, ScenarioEnd
from simulator.device.wire import RemoteWorld


def main(fd, board_module):
    # the host's socket pair, inherited: a stream on its file descriptor (no port to find)
    sock = open(fd, "r+b")
    shim.WORLD[0] = RemoteWorld(sock)
    for name in ("machine", "esp32", "network"):
        sys.modules[name] = shim
    sys.modules["board"] = __import__(board_module, None, None, ["build"])
    try:
        __import__("boot")
        __import__("main")
    except ScenarioEnd:
        shim.WORLD[0].send_counts()
    except PowerCut:
        pass
    sock.close()


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
