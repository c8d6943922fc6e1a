# What a board hands the firmware: already-built drivers and buses, one object.


class Hardware:
    def __init__(self, clock, fs, metering, optical=None, wlan=None):
        self.clock = clock
        self.fs = fs
        self.metering = metering
        self.optical = optical
        self.wlan = wlan
