# `network` for the simulated board: a Wi-Fi station that is up unless the scenario says not.
from simulator.device.shim import world

STA_IF = 0
AP_IF = 1
STAT_IDLE = 0
STAT_CONNECTING = 1
STAT_GOT_IP = 1010


class WLAN:
    def __init__(self, interface=STA_IF):
        self.interface = interface
        self.enabled = False

    def active(self, state=None):
        if state is None:
            return self.enabled
        self.enabled = bool(state)
        return None

    def connect(self, ssid=None, key=None, **kwargs):
        world().check_power()

    def disconnect(self):
        pass

    def isconnected(self):
        return self.enabled and world().network_up()

    def status(self, param=None):
        return STAT_GOT_IP if self.isconnected() else STAT_IDLE

    def ifconfig(self, config=None):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, *args, **kwargs):
        if args and args[0] == "mac":
            return world().unique_id
        return None
