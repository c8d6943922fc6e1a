# Boots the firmware in its own process (real MicroPython), wired to a world served by the
# host over a loopback socket. One process is one boot: a power cut ends the process and
# the host starts a new one, so nothing in RAM survives, as on the board.
# Started by simulator/device/romstart.py, once the firmware image is mounted at /rom.
import socket
import sys

from simulator.device import shim
from simulator.device.shim import PowerCut, ScenarioEnd
from simulator.device.wire import RemoteWorld


def main(port, board_module):
    sock = socket.socket()
    sock.connect(socket.getaddrinfo("127.0.0.1", port)[0][-1])
    sock.setsockopt(6, 1, 1)  # IPPROTO_TCP, TCP_NODELAY: every call is a round trip
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
