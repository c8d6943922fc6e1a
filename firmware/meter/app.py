# The meter's duty cycle: read the metering IC, account energy, checkpoint, answer the
# optical port, publish telemetry, sleep until the next poll.
from meter import config, events
from meter.energy import Register
from meter.readout import OpticalPort
from meter.store import EnergyStore


class Meter:
    def __init__(self, hw):
        self.hw = hw
        self.clock = hw.clock
        fs = hw.fs
        self.cfg, cfg_error = config.load(fs)
        self.log = events.EventLog(fs)
        ic = hw.metering
        self.ic = ic
        self.imp = Register(ic.energy_den)
        self.exp = Register(ic.energy_den)
        self.inst = [0, 0, 0, 0, 0]  # cV, mA, W, PF x1000, cHz (see the IC driver)
        self.store = EnergyStore(fs)
        self.store.load(self.imp, self.exp)
        now = self.clock.now()
        self.log.log(now, events.POWER_UP)
        if self.store.bad_slots:
            self.log.log(now, events.STORE_CORRUPT)
        if cfg_error is not None:
            print("config rejected:", cfg_error)
            self.log.log(now, events.CONFIG_REJECTED)
        self.saved_at = now
        self.optical = OpticalPort(hw.optical, self.cfg["meter_id"]) if hw.optical else None
        self.link = None
        if self.cfg["mqtt_host"]:
            self.start_link(hw, getattr(self, "control", None))

    def start_link(self, hw, handler=None):
        """MQTT: commands (to `handler`, the disconnect control) and telemetry. Imported only
        when configured, so a meter without MQTT does not carry it in RAM."""
        import gc

        gc.collect()  # the link's code is loaded now: give it an unfragmented heap
        from meter.link import Link

        self.link = Link(self.cfg, self.clock, hw.wlan, hw.fs, self.log, handler)

    def start_ic(self):
        if not self.ic.start():
            self.log.log(self.clock.now(), events.IC_FAULT)
            return False
        return True

    def poll(self):
        ic = self.ic
        if not ic.configured():
            # The IC was reset (brown-out, glitch): what it counted since is unknowable,
            # so start it again and count nothing for the gap.
            self.log.log(self.clock.now(), events.IC_REINIT)
            self.start_ic()
            return
        imp, exp = ic.read_energy()
        if imp:
            self.imp.add(imp, ic.energy_num)
        if exp:
            self.exp.add(exp, ic.energy_num)
        self.inst[2] = ic.read_power()

    def refresh_instant(self):
        """Voltage, current, PF and frequency: read when someone is about to look at them."""
        self.ic.read_instant(self.inst)

    def checkpoint(self, force=False):
        now = self.clock.now()
        since = now - self.saved_at
        cfg = self.cfg
        unsaved = self.imp.unsaved_wh + self.exp.unsaved_wh
        due = unsaved >= cfg["checkpoint_wh"] and since >= cfg["checkpoint_min_s"]
        due = due or (unsaved and since >= cfg["checkpoint_s"])
        if force or due:
            self.store.save(self.imp, self.exp, now)
            self.saved_at = now
            self.imp.unsaved_wh = 0
            self.exp.unsaved_wh = 0

    def run(self):
        clock = self.clock
        period = self.cfg["poll_ms"]
        self.start_ic()
        next_poll = clock.ticks_ms()
        while True:
            self.poll()
            self.checkpoint()
            if self.optical is not None:
                self.optical.service(self)
            if self.link is not None:
                self.link.service(self)
            next_poll = clock.ticks_add(next_poll, period)
            wait = clock.ticks_diff(next_poll, clock.ticks_ms())
            if wait > 0:
                if self.link is not None:
                    self.link.idle(wait)  # sleeps, answering commands meanwhile
                else:
                    clock.sleep_ms(wait)
            else:
                next_poll = clock.ticks_ms()  # overran: don't try to catch up in a burst
