# What a board hands the firmware: already-built drivers and buses, one object.


class Hardware:
    def __init__(self, clock, fs, metering, optical=None, wlan=None, power_fail=None):
        self.clock = clock
        self.fs = fs
        self.metering = metering
        self.optical = optical
        self.wlan = wlan
        self.power_fail = power_fail  # input, low while mains is gone (None: not fitted)
