# The meter's duty cycle: read the metering IC, account energy, checkpoint, answer the
# optical port, publish telemetry, sleep until the next poll.

from meter.local.optical import OpticalPort
from meter.metering.energy import Register
from meter.runtime import compat
from meter.runtime.overlays import overlay, unload
from meter.storage import events
from meter.storage.checkpoint import EnergyStore

# The running Meter (set when it is built): lets a technician at the REPL inspect the live
# meter (`from meter import app; app.current.link.published`), and the simulator read its
# link's counts at the end of a run.
current = None


def _load_names():
    """Take the name table's steps while the heap is whole (meter/runtime/overlay_table.py
    prime()). Only with MQTT: without it few overlays load late, and the names would cost
    ~7 KB."""
    overlay("meter.runtime.overlay_table").prime()


class Meter:
    def __init__(self, hw):
        global current
        current = self
        self.hw = hw
        self.clock = hw.clock
        fs = hw.fs
        # (an overlay: the meter keeps the dict it returns, not the module's 2.7 KB)
        self.cfg, cfg_error = overlay("meter.storage.config").load(fs)
        if self.cfg["mqtt_host"]:
            _load_names()  # while the heap is whole
        self.dying = False  # the power-fail handler has run: nothing more is written
        self.log = events.EventLog(fs)
        ic = hw.metering
        self.ic = ic
        self.imp = Register(ic.energy_den)
        self.exp = Register(ic.energy_den)
        self.qimp = Register(ic.energy_den)  # reactive, lagging / leading (since boot)
        self.qexp = Register(ic.energy_den)
        self.q_read_ms = 0
        # cV, mA, W, PF x1000, cHz, neutral mA, var, VA (see the IC driver)
        self.inst = [0, 0, 0, 0, 0, 0, 0, 0]
        cfg = self.cfg
        # The most energy LSBs one second can hold: 1.2 x Vref x Imax, rounded up.
        self.max_lsb_s = (cfg["vref_v"] * 12 * cfg["imax_a"] * ic.energy_den
                          // (ic.energy_num * 36000) + 1)
        self.reinits = 0
        self.rejected = 0  # energy reads refused as impossible (see also ic.rejected)
        self.ic_rejected = 0
        self.rejected_logged = -86400  # clock.mono() (like every deadline: time_sync moves none)
        self.bus_fault = False
        self.polls = 0
        self.tamper_n = 0  # consecutive checks with live and neutral current apart
        self.neutral_alarm = False
        self.reverse_at = -1  # clock.mono() of the last reverse flow while in alarm
        self.read_ms = 0
        self.store = EnergyStore(fs, hw.journal)
        self.log.snapshot = self.snapshot
        now = self.clock.now()
        period = self.cfg["profile_period_s"]
        # only whole divisions of a day line periods up with midnight
        self.period_s = period if period >= 60 and 86400 % period == 0 else 900
        overlay("meter.storage.restore").restore(self, now)
        bad = overlay("meter.storage.profiles").boot(self, now)
        unload("meter.storage.ring")  # the profiles'
        overlay("meter.storage.restore").report(self, now, cfg_error, bad)
        unload("meter.storage.ring")
        self.cal, cal_error = self.load_calibration(fs, ic)
        if cal_error is not None:
            print("calibration refused:", cal_error)
            self.log.log(now, events.CALIB_BAD)
        elif self.cal:
            self.log.log(now, events.CALIB_LOADED)
        self.saved_at = 0  # clock.mono() of the last energy checkpoint
        self.checkpoint(True)  # clears the last-gasp flag
        if hw.power_fail is not None:
            hw.power_fail.irq(handler=self.power_fail, trigger=hw.power_fail.IRQ_FALLING)
        self.optical = OpticalPort(hw.optical, self.cfg["meter_id"]) if hw.optical else None
        self.control = None
        if hw.relay is not None:
            from meter.supply.startup import setup

            self.control = setup(self, hw)  # runs once and unloads itself, before MQTT loads
            setup = None
            compat.collect()
        self.link = None
        if self.cfg["mqtt_host"]:
            self.start_link(hw, self.control)

    def start_link(self, hw, handler=None):
        """MQTT: commands (to `handler`, the disconnect control) and telemetry. Imported only
        when configured, so a meter without MQTT does not carry it in RAM."""
        compat.collect()  # the link's code is loaded now: give it an unfragmented heap
        from meter.remote.link import Link

        self.link = Link(self.cfg, self.clock, hw.wlan, hw.fs, self.log, handler)

    def load_calibration(self, fs, ic):
        """The calibration record, with its module dropped again: it is needed once a boot."""
        return overlay("meter.metering.calibration").load(fs, ic)

    def start_ic(self):
        ok = self.ic.start(self.cal)
        self.read_ms = self.q_read_ms = self.clock.ticks_ms()
        if not ok:
            self.log.log(self.clock.now(), events.IC_FAULT)
        return ok

    def reject(self, count=1):
        """A read that could not be trusted: counted, never added; logged at most daily
        so a noisy bus cannot flood the event ring."""
        self.rejected += count
        t = self.clock.mono()
        if t - self.rejected_logged >= 86400:
            self.rejected_logged = t
            self.log.log(self.clock.now(), events.READ_REJECTED)

    def poll(self):
        ic = self.ic
        clock = self.clock
        if not ic.configured() and not ic.configured():  # a reset persists; a glitch does not
            if ic.stuck:
                # The bus, not the IC: leave the IC counting and read it when the bus is back.
                if not self.bus_fault:
                    self.bus_fault = True
                    self.log.log(clock.now(), events.BUS_FAULT)
                return
            # The IC was reset (brown-out, glitch): what it counted since is unknowable,
            # so start it again and count nothing for the gap.
            self.reinits += 1
            self.log.log(clock.now(), events.IC_REINIT)
            self.start_ic()
            return
        if self.bus_fault:
            self.bus_fault = False
            self.log.log(clock.now(), events.BUS_RESTORED)
        now_ms = clock.ticks_ms()
        elapsed = clock.ticks_diff(now_ms, self.read_ms)
        self.read_ms = now_ms
        got = ic.read_energy()
        if got is None:
            self.reject()
            return
        imp, exp = got
        secs = elapsed // 1000 + 1  # capped so the product stays a small int
        limit = self.max_lsb_s * (secs if secs < 100_000 else 100_000)
        if imp > limit or exp > limit:
            self.reject()
            return
        if imp:
            self.imp.add(imp, ic.energy_num)
        if exp:
            self.exp.add(exp, ic.energy_num)
            if self.cfg["import_only"]:
                if self.reverse_at < 0:
                    self.log.log(clock.now(), events.REVERSE_FLOW)
                self.reverse_at = clock.mono()
        if ic.rejected != self.ic_rejected:
            self.ic_rejected = ic.rejected  # reads the driver had to retry
            self.reject(0)
        if self.reverse_at >= 0 and clock.mono() - self.reverse_at >= 60:
            self.reverse_at = -1
            self.log.log(clock.now(), events.REVERSE_FLOW_END)
        self.inst[2] = ic.read_power()
        self.polls += 1
        if self.polls % 10 == 0:
            self.check_neutral()
            self.poll_reactive(now_ms)

    def poll_reactive(self, now_ms):
        """Reactive energy every 10 s: the register holds minutes even at Imax."""
        ic = self.ic
        secs = self.clock.ticks_diff(now_ms, self.q_read_ms) // 1000 + 2
        self.q_read_ms = now_ms
        got = ic.read_reactive()
        if got is None:
            return self.reject()
        pos, neg = got
        limit = self.max_lsb_s * (secs if secs < 100_000 else 100_000)
        if pos > limit or neg > limit:
            return self.reject()
        if pos:
            self.qimp.add(pos, ic.energy_num)
        if neg:
            self.qexp.add(neg, ic.energy_num)

    def check_neutral(self):
        """Tamper: live and neutral currents apart by more than 0.2 A and 12.5 % for three
        checks in a row (earth load, neutral bypass); restored after three agreeing ones."""
        live, neutral = self.ic.read_currents()
        diff = live - neutral if live > neutral else neutral - live
        big = live if live > neutral else neutral
        apart = diff > 200 and diff * 8 > big
        if apart != self.neutral_alarm:
            self.tamper_n += 1
            if self.tamper_n >= 3:
                self.tamper_n = 0
                self.neutral_alarm = apart
                code = events.TAMPER_NEUTRAL if apart else events.TAMPER_NEUTRAL_END
                self.log.log(self.clock.now(), code)
        else:
            self.tamper_n = 0

    def readout_extra(self):
        """Readout lines beyond the basic block: the other instantaneous values and the
        metering counters since boot (rejected reads, IC re-initialisations)."""
        inst = self.inst
        return ("3.8.0(" + self.qimp.kwh_text() + "*kvarh)\r\n"
                "4.8.0(" + self.qexp.kwh_text() + "*kvarh)\r\n"
                "91.7.0(" + str(inst[5] / 1000) + "*A)\r\n"
                "3.7.0(" + str(inst[6]) + "*var)\r\n"
                "9.7.0(" + str(inst[7]) + "*VA)\r\n"
                "13.7.0(" + str(inst[3] / 1000) + ")\r\n"
                "14.7.0(" + str(inst[4] / 100) + "*Hz)\r\n"
                "C.90.1(" + str(self.rejected + self.ic.rejected) + ")\r\n"
                "C.90.2(" + str(self.reinits) + ")\r\n")

    def power_fail(self, _pin):
        """Last gasp: mains is gone and the supply capacitor holds us up for a few tens of
        ms. Collect what the IC still holds and save it; write nothing after that."""
        if self.dying:
            return
        self.dying = True
        if self.ic.configured():
            self.poll()
        self.store.last_gasp(self.imp, self.exp, self.clock.now())

    def snapshot(self):
        """(centivolts, milliamps, cumulative import Wh) recorded with every event; V and I
        clamped to their 16-bit fields (a faulty bus can read anything)."""
        self.durable()
        volts = self.inst[0]
        amps = self.inst[1]
        return (volts if 0 <= volts <= 0xFFFF else 0xFFFF, amps if 0 <= amps <= 0xFFFF else 0xFFFF,
                self.imp.kwh * 1000 + self.imp.wh)

    def refresh_instant(self):
        """Voltage, current, PF and frequency: read when someone is about to look at them."""
        self.ic.read_instant(self.inst)

    def durable(self):
        """Save the registers if what they show is not on flash yet; called before any
        register value leaves the meter (telemetry, readout, an event record). A value seen
        outside must never come back lower after a reset of any kind (a watchdog gives no
        warning), or the register would be seen to run backwards. False while the supply
        is going (nothing more is written): the value is then not to be shown."""
        if self.imp.on_flash() and self.exp.on_flash():
            return True
        if self.dying:
            return False
        self.save_energy(self.clock.now())
        return True

    def save_energy(self, now):
        self.store.save(self.imp, self.exp, now)
        self.saved_at = self.clock.mono()
        self.imp.unsaved_wh = 0
        self.exp.unsaved_wh = 0

    def checkpoint(self, force=False):
        if self.dying:
            pin = self.hw.power_fail
            if pin is None or not pin.value():
                return  # the supply is going: nothing more is written
            self.dying = False  # mains came back within the hold-up: carry on, and
            force = True  # checkpoint, so the next last gasp's record is newer than this one
        now = self.clock.now()
        mono = self.clock.mono()
        period = self.store.period
        if mono >= period.sample_at:  # sample V and I for the profile's averages
            self.refresh_instant()
            period.sample(self.inst, mono)
        if now >= period.end:  # (wall time: periods end at wall-clock multiples)
            self.save_energy(now)  # energy first: a period start is never above the
            overlay("meter.storage.profiles").close(self, now)  # registers a reboot restores
            unload("meter.storage.ring")  # the profiles'
        since = mono - self.saved_at
        cfg = self.cfg
        unsaved = self.imp.unsaved_wh + self.exp.unsaved_wh
        # A power-fail input and an erase-free last gasp (the journal) save the registers at
        # every outage: then checkpoints only guard against other resets and come at each
        # profile period's close and after checkpoint_s; without, also every checkpoint_wh.
        due = (unsaved >= cfg["checkpoint_wh"] and since >= cfg["checkpoint_min_s"]
               and (self.hw.power_fail is None or self.store.journal is None))
        due = due or (unsaved and since >= cfg["checkpoint_s"])
        if force or due:
            self.save_energy(now)

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
            if self.control is not None:
                self.control.service(self)
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
