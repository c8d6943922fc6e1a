# The meter's duty cycle: read the metering IC, account energy, checkpoint, answer the
# optical port, publish telemetry, sleep until the next poll.
from meter import config, events
from meter.energy import Register
from meter.readout import OpticalPort
from meter.store import EnergyStore, unload


def _profile():
    import gc

    if hasattr(gc, "mem_free"):  # MicroPython: the module's code goes into the holes its
        gc.collect()  # last use left (a full collection on a host is just slow)
    from meter import profile

    return profile


def _unload_profile():
    unload("profile")
    unload("ring")


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
        self.log.snapshot = self.snapshot
        self.store = EnergyStore(fs)
        now = self.clock.now()
        period = self.cfg["profile_period_s"]
        # only whole divisions of a day line periods up with midnight
        self.period_s = period if period >= 60 and 86400 % period == 0 else 900
        self.acc = [0, 0, 0, 0, 0]  # profile: V sum, I sum, samples, next sample, flags
        self.period_end = 0
        from meter import restore

        restore.restore(self, now, cfg_error)
        unload("restore")
        del restore
        bad = _profile().boot(self, now)
        _unload_profile()
        from meter import restore

        restore.report(self, now, cfg_error, bad)
        unload("restore")
        del restore
        unload("ring")
        self.dying = False
        self.saved_at = now
        self.checkpoint(True)  # clears the last-gasp flag
        if hw.power_fail is not None:
            hw.power_fail.irq(handler=self.power_fail, trigger=hw.power_fail.IRQ_FALLING)
        self.optical = OpticalPort(hw.optical, self.cfg["meter_id"]) if hw.optical else None
        self.telemetry = None
        if self.cfg["mqtt_host"]:
            import gc

            gc.collect()  # after the boot-only modules went: one big free stretch
            from meter.telemetry import Telemetry

            self.telemetry = Telemetry(self.cfg, self.clock, hw.wlan)

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

    def power_fail(self, _pin):
        """Last gasp: mains is gone and the supply capacitor holds us up for a few tens of
        ms. Collect what the IC still holds and save it; write nothing after that."""
        if self.dying:
            return
        self.dying = True
        if self.ic.configured():
            self.poll()
        self.store.save(self.imp, self.exp, self.clock.now(), 1)  # store.FLAG_LAST_GASP

    def snapshot(self):
        """(centivolts, milliamps, cumulative import Wh) recorded with every event."""
        return self.inst[0], self.inst[1], self.imp.kwh * 1000 + self.imp.wh

    def refresh_instant(self):
        """Voltage, current, PF and frequency: read when someone is about to look at them."""
        self.ic.read_instant(self.inst)

    def checkpoint(self, force=False):
        if self.dying:
            pin = self.hw.power_fail
            if pin is None or not pin.value():
                return  # the supply is going: nothing more is written
            self.dying = False  # mains came back within the hold-up: carry on
        now = self.clock.now()
        acc = self.acc
        if now >= acc[3]:
            acc[3] = now + 30  # sample V and I for the profile's averages
            self.refresh_instant()
            acc[0] += self.inst[0]
            acc[1] += self.inst[1]
            acc[2] += 1
        if now >= self.period_end:
            self.store.save(self.imp, self.exp, now)  # energy first: a period start is never
            _profile().close(self, now)  # above the registers a reboot restores
            _unload_profile()
            self.saved_at = now
            self.imp.unsaved_wh = 0
            self.exp.unsaved_wh = 0
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
            if self.telemetry is not None:
                self.telemetry.service(self)
            next_poll = clock.ticks_add(next_poll, period)
            wait = clock.ticks_diff(next_poll, clock.ticks_ms())
            if wait > 0:
                clock.sleep_ms(wait)
            else:
                next_poll = clock.ticks_ms()  # overran: don't try to catch up in a burst
