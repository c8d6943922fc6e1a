# What a board hands the firmware: already-built drivers and buses, one object.


class Hardware:
    def __init__(self, clock, fs, metering, optical=None, wlan=None, relay=None, button=None,
                 commands=None, cover=None, power_fail=None, journal=None):
        self.clock = clock
        self.fs = fs
        self.metering = metering
        self.optical = optical
        self.wlan = wlan
        # The latching relay's wiring: (pin a, pin b, feedback pin or None, pulse ms, hbridge)
        self.relay = relay
        self.button = button  # Pin, active low
        self.commands = commands  # a local command port (UART), if the board has one
        self.cover = cover  # Pin, 1 while the terminal cover is open
        self.power_fail = power_fail  # input, low while mains is gone (None: not fitted)
        self.journal = journal  # raw flash partition for last-gasp records (None: none)
