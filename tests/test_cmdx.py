"""The remote commands beyond switching (firmware/meter/remote/dispatch.py) on CPython, each
through the real verification path (meter/remote/commands.py, signed by the head-end library): the
real disconnect control on recording relay pins, the real clock on a fake time source, the real
event log, profiles and config file on a directory. Success, every rejection reason, the
relay never moved by bad input, what persists across a reboot."""

from __future__ import annotations

import json
import sys
import tempfile
import types
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from meter.metering.energy import Register
from meter.remote import commands
from meter.runtime.clock import METER_EPOCH_UNIX, Clock
from meter.storage import config, events, profile_rings
from meter.storage import profiles as profile
from meter.storage import reader as maint
from meter.storage.checkpoint import Period
from meter.supply import startup as ctlboot
from meter.supply.control import Control

from host_tools.headend import decode_ack, encode_command
from tests.conftest import START, DirFS, FakeTime

KEY = bytes(range(32))
METER = "meter-0042"


class Reset(BaseException):
    """machine.reset(): the boot ends here."""


class Contact:
    """The relay's two coils and its auxiliary contact: counts every pulse."""

    def __init__(self) -> None:
        self.closed = True
        self.pulses = 0

    def pin(self, closes: bool):
        contact = self

        class Coil:
            def value(self, v=None):
                if v:
                    contact.pulses += 1
                    contact.closed = closes

        return Coil()

    def feedback(self):
        contact = self

        class Aux:
            def value(self):
                return 1 if contact.closed else 0

        return Aux()


class Rig:
    """One meter's command path: control, link, meter state, clock, flash directory."""

    def __init__(self, root: Path, unix: int = START, mode: int = 1, state: int = 1) -> None:
        for d in ("ev", "p"):
            (root / d).mkdir(exist_ok=True)
        self.root = root
        self.fs = DirFS(root)
        self.time = FakeTime(unix)
        self.clock = Clock(self.time)
        self.log = events.EventLog(self.fs)
        self.contact = Contact()
        self.contact.closed = state == 1
        rec = ctlboot.load(self.fs)
        if rec:
            state, mode = rec[1], rec[2]
        relay = (self.contact.pin(True), self.contact.pin(False), self.contact.feedback(), 100,
                 False)
        self.ctl = Control(state, mode, relay, self.log, self.clock, self.fs)
        if rec:
            self.ctl.seq = rec[0]
        cfg, err = config.load(self.fs)
        assert err is None
        self.cfg = cfg
        now = self.clock.now()
        mono = self.clock.mono()
        imp, exp = Register(3200), Register(3200)
        imp.kwh, imp.wh = 12, 345
        period = Period()  # the meter's period in progress (meter.storage.checkpoint)
        period.start, period.end = now - now % 900, now - now % 900 + 900
        period.imp_wh, period.sample_at = 12000, mono + 30
        period.demand_w, period.demand_at = 4200, now - 600
        self.meter = SimpleNamespace(
            saved_at=mono, rejected_logged=mono, reverse_at=-1,
            store=SimpleNamespace(period=period, saved_periods=0), period_s=900,
            imp=imp, exp=exp, hw=SimpleNamespace(fs=self.fs), checkpoints=0)
        self.meter.store.save_period = lambda: setattr(
            self.meter.store, "saved_periods", self.meter.store.saved_periods + 1)
        self.meter.checkpoint = lambda force=False: setattr(
            self.meter, "checkpoints", self.meter.checkpoints + 1)

        def durable() -> bool:  # Meter.durable(): the registers on flash as they stand
            for reg in (imp, exp):
                reg.saved(reg.kwh, reg.total_mwh())
            return True

        self.meter.durable = durable
        self.link = SimpleNamespace(_cfg=cfg, _next_s=mono + 60, _sent_s=mono, _retry_s=0,
                                    meter=self.meter, reboot=False, client=None,
                                    _base=f"meters/{METER}/")
        self.state = [None, 0, 0, 0]
        self.n = 0
        self.rtc: list[tuple] = []

    def send(self, cmd: str, args: dict | None = None, issued: int | None = None,
             ttl: int = 300, n: int | None = None) -> dict:
        self.n = self.n + 1 if n is None else n
        issued = self.clock.unix() if issued is None else issued
        payload = encode_command(KEY, METER, self.n, cmd, args, issued=issued, ttl_s=ttl)
        cmds = commands.Commands(self.fs, METER, self.clock, self.log, self.ctl, KEY,
                                 self.state, self.link)
        ack = decode_ack(KEY, cmds.handle(payload))
        # a body outside the grammar (README "Wire format") is malformed: no counter
        assert ack is not None and ack["n"] == (None if ack["code"] == 7 else self.n)
        return ack

    def codes(self) -> list[tuple[int, int, int]]:
        """(meter time, code, value) of the transaction events logged."""
        return [(r[1], r[2], r[8]) for _n, r in maint.read_events(self.fs, 3)]


@pytest.fixture
def machine(monkeypatch):
    """MicroPython's machine module as far as cmdx uses it: RTC().datetime(), reset()."""
    mod = types.ModuleType("machine")
    mod.set_to = []

    class RTC:
        def datetime(self, dt):
            mod.set_to.append(dt)

    def reset():
        raise Reset()

    mod.RTC = RTC
    mod.reset = reset
    monkeypatch.setitem(sys.modules, "machine", mod)
    return mod


def config_file(rig: Rig) -> dict:
    return json.loads((rig.root / "config.json").read_text())


# --- set_control_mode ------------------------------------------------------------------------
def test_set_control_mode_persists_and_acts_at_once(tmp_path):
    rig = Rig(tmp_path)
    ack = rig.send("set_control_mode", {"mode": 2})
    assert (ack["code"], ack["mode"], ack["state"], ack["output"]) == (0, 2, 1, True)
    assert rig.codes()[-1][1:] == (220, 2)
    assert rig.contact.pulses == 0  # a configuration command never moves the relay
    # mode 2 allows a remote reconnect straight to Connected (a), mode 1 would only arm it
    assert rig.send("disconnect")["state"] == 0 and not rig.contact.closed
    ack = rig.send("reconnect")
    assert (ack["code"], ack["state"], ack["output"]) == (0, 1, True) and rig.contact.closed
    assert rig.send("set_control_mode", {"mode": 3})["mode"] == 3
    # a reboot restores the mode (with the state) from the control's slots
    again = Rig(tmp_path)
    assert (again.ctl.mode, again.ctl.state) == (3, 1)
    assert again.send("status", n=100)["mode"] == 3
    # in mode 3 a remote reconnect arms (d): state 2, the relay stays open
    assert again.send("disconnect")["state"] == 0
    ack = again.send("reconnect")
    assert (ack["state"], ack["output"]) == (2, False) and not again.contact.closed


@pytest.mark.parametrize("args,why", [
    ({"mode": 7}, "mode must be a whole number 0-6"),
    ({"mode": -1}, "mode must be a whole number 0-6"),
    ({"mode": "3"}, "mode must be a whole number 0-6"),
    ({"mode": True}, "mode must be a whole number 0-6"),
    ({"mode": None}, "mode must be a whole number 0-6"),
    ({}, "mode must be a whole number 0-6"),
    ({"mode": 3, "state": 0}, "unknown argument state"),
])
def test_set_control_mode_bad_args(tmp_path, args, why):
    rig = Rig(tmp_path)
    ack = rig.send("set_control_mode", args)
    assert (ack["code"], ack["reason"]) == (250, "bad args: " + why)
    assert rig.ctl.mode == 1 and ctlboot.load(rig.fs) is None and rig.contact.pulses == 0
    assert rig.codes() == []


def test_mode_0_needs_the_supply_connected(tmp_path):
    rig = Rig(tmp_path)
    assert rig.send("disconnect")["state"] == 0
    pulses = rig.contact.pulses
    ack = rig.send("set_control_mode", {"mode": 0})
    assert ack["code"] == 3 and "reconnect first" in ack["reason"]
    assert rig.ctl.mode == 1 and rig.contact.pulses == pulses and not rig.contact.closed
    # connected: mode 0 is accepted, and then nothing disconnects
    (tmp_path / "b").mkdir()
    rig2 = Rig(tmp_path / "b")
    assert rig2.send("set_control_mode", {"mode": 0})["mode"] == 0
    ack = rig2.send("disconnect")
    assert ack["code"] == 3 and rig2.contact.closed


def test_no_supply_control(tmp_path):
    rig = Rig(tmp_path)
    rig.ctl = None  # a board without a relay
    ack = rig.send("set_control_mode", {"mode": 2})
    assert (ack["code"], ack["reason"]) == (3, "no supply control")
    ack = rig.send("disconnect")
    assert (ack["code"], ack["reason"]) == (3, "no supply control")
    assert rig.send("status")["code"] == 0


# --- set_load_limit --------------------------------------------------------------------------
def test_set_load_limit_persists_and_arms_the_limiter(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"meter_id": METER, "control_mode": 5}))
    rig = Rig(tmp_path)
    ack = rig.send("set_load_limit", {"watts": 5000, "over_s": 5})
    assert (ack["code"], ack["watts"], ack["load_limiter"]) == (0, 5000, {"over_s": 5})
    lim = rig.ctl.limiter
    assert (lim.normal_w, lim.over_s, lim.reconnect_s) == (5000, 5, 120)
    # provisioning kept, the new settings added; the next boot reads them
    assert config_file(rig) == {"meter_id": METER, "control_mode": 5, "load_limit_w": 5000,
                                "load_limiter": {"over_s": 5}}
    assert rig.cfg["load_limit_w"] == 5000 and config.load(rig.fs)[0]["load_limit_w"] == 5000
    assert rig.codes()[-1][1:] == (221, 5000)
    # a new threshold keeps the trip state and the other settings
    lim.tripped, lim.attempts = True, 2
    assert rig.send("set_load_limit", {"watts": 6000})["load_limiter"] == {"over_s": 5}
    assert rig.ctl.limiter is lim and (lim.normal_w, lim.over_s, lim.tripped,
                                       lim.attempts) == (6000, 5, True, 2)
    # it acts: 6 kW for over_s disconnects (g)
    for s in range(6):
        rig.ctl.limiter.service(rig.ctl, rig.clock.mono() + s, 7000)
    assert rig.ctl.state == 2 and not rig.contact.closed
    # 0 switches it off
    assert rig.send("set_load_limit", {"watts": 0})["code"] == 0
    assert rig.ctl.limiter is None and config_file(rig)["load_limit_w"] == 0


@pytest.mark.parametrize("args,why", [
    ({"watts": -1}, "watts must be a whole number 0-1000000"),
    ({"watts": "5000"}, "watts must be a whole number 0-1000000"),
    ({"watts": 10**7}, "watts must be a whole number 0-1000000"),
    ({}, "watts must be a whole number 0-1000000"),
    ({"watts": 5000, "over_s": -2}, "load_limiter.over_s must be a whole number 0-16777216"),
    ({"watts": 5000, "over_s": 2**31}, "load_limiter.over_s must be a whole number 0-16777216"),
    ({"watts": 5000, "emergency_at": 2**30},
     "load_limiter.emergency_at must be a whole number 0-1056964607"),
    ({"watts": 5000, "colour": 1}, "unknown load_limiter key colour"),
])
def test_set_load_limit_bad_args(tmp_path, args, why):
    rig = Rig(tmp_path)
    ack = rig.send("set_load_limit", args)
    assert (ack["code"], ack["reason"]) == (250, "bad args: " + why)
    assert rig.ctl.limiter is None and not (tmp_path / "config.json").exists()
    assert rig.contact.pulses == 0


def test_broken_config_file_is_not_overwritten(tmp_path):
    rig = Rig(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    ack = rig.send("set_telemetry_period", {"seconds": 30})
    assert (ack["code"], ack["reason"]) == (250, "config.json unreadable")
    assert (tmp_path / "config.json").read_text() == "{not json"


# --- set_telemetry_period --------------------------------------------------------------------
def test_set_telemetry_period(tmp_path):
    rig = Rig(tmp_path)
    now = rig.clock.mono()  # the link's timers run on the monotonic clock
    ack = rig.send("set_telemetry_period", {"seconds": 15})
    assert (ack["code"], ack["seconds"]) == (0, 15)
    assert rig.link._cfg["telemetry_period_s"] == 15 and rig.link._next_s == now + 15
    assert config.load(rig.fs)[0]["telemetry_period_s"] == 15  # what the next boot uses
    assert rig.codes()[-1][1:] == (222, 15)
    rig.send("set_telemetry_period", {"seconds": 3600})
    assert rig.link._next_s == now + 15  # longer: the message already due still goes


@pytest.mark.parametrize("value", [4, 86401, 0, -60, "60", None])
def test_set_telemetry_period_bad_args(tmp_path, value):
    rig = Rig(tmp_path)
    ack = rig.send("set_telemetry_period", {"seconds": value})
    assert (ack["code"], ack["reason"]) == (250, "bad args: seconds must be a whole number"
                                            " 5-86400")
    assert rig.link._cfg["telemetry_period_s"] == 60 and not (tmp_path / "config.json").exists()


# --- time_sync -------------------------------------------------------------------------------
def test_time_sync_small_step(tmp_path, machine):
    rig = Rig(tmp_path)
    old = rig.clock.now()
    mono = rig.clock.mono()
    target = START + 100
    ack = rig.send("time_sync", {"unix": target}, issued=target)
    assert (ack["code"], ack["step"]) == (0, 100)
    assert rig.clock.unix() == target and ack["t"] == target
    assert machine.set_to == [(2026, 1, 1, 3, 0, 1, 40, 0)]  # a Thursday, 00:01:40
    # the deadlines (monotonic) stay as they were: a step neither fires nor holds them back;
    # the profile period is marked and takes a V/I sample at the next poll
    assert rig.clock.mono() == mono
    assert rig.link._next_s == mono + 60 and rig.meter.saved_at == mono
    assert rig.meter.store.period.flags & 8 and rig.meter.store.period.sample_at == 0
    assert rig.meter.store.period.end == old - old % 900 + 900  # the period keeps its end
    assert rig.meter.store.saved_periods == 0
    assert rig.codes()[-2:] == [(old, 223, 100), (old + 100, 224, 100)]
    # backwards too
    ack = rig.send("time_sync", {"unix": START - 3000}, issued=START - 3000, ttl=3600)
    assert (ack["code"], ack["step"]) == (0, -3100)
    assert rig.codes()[-1] == (START - 3000 - METER_EPOCH_UNIX, 224, 3100)


def test_clock_wall_time_is_monotonic_time_plus_one_offset(machine):
    """mono() counts seconds since boot from ticks, across tick wraps, and set() never steps
    it; now() is mono() plus the offset set() moves; past MAX_S meter time starts over at 0."""
    from meter.runtime.clock import MAX_S

    src = FakeTime(START)
    src.ms = FakeTime.PERIOD - 2500  # the tick counter wraps 2.5 s after boot
    src.base = START - src.ms // 1000  # the RTC reads START now
    clock = Clock(src)
    t0 = clock.now()
    assert (clock.mono(), t0) == (0, START - METER_EPOCH_UNIX)
    for _ in range(3):
        src.sleep_ms(1700)
        clock.now()  # read each poll (as the duty cycle does): ticks_diff stays short
    assert (clock.mono(), clock.now()) == (5, t0 + 5)  # 5.1 s, the wrap included
    assert clock.set(START + 1000) == 995 and clock.unix() == START + 1000
    assert clock.mono() == 5  # never stepped
    assert clock.set(START - 3000) == -4000 and clock.now() == t0 - 3000
    assert clock.mono() == 5
    assert machine.set_to[-1][:3] == (2025, 12, 31)
    clock.set(METER_EPOCH_UNIX + MAX_S)  # 2053-06-29: one second more starts over at 0
    src.sleep_ms(1000)
    assert (clock.now(), clock.valid(), clock.mono()) == (0, False, 6)
    src.sleep_ms(1000)
    assert (clock.now(), clock.mono()) == (1, 7)


def test_time_sync_refusals(tmp_path, machine):
    rig = Rig(tmp_path)
    far = START + 3601
    ack = rig.send("time_sync", {"unix": far}, issued=far)
    assert ack["code"] == 3 and ack["reason"] == "step 3601 s: at most 3600 while the clock is set"
    # the time must lie in the command's own validity (signed t .. exp)
    ack = rig.send("time_sync", {"unix": START + 400}, issued=START)
    assert (ack["code"], ack["reason"]) == (3, "time outside the command's validity")
    for bad in ("now", None, 10, 2**32 - 1, True):
        ack = rig.send("time_sync", {"unix": bad})
        assert ack["code"] == 250 and ack["reason"].startswith("bad args: unix"), bad
    ack = rig.send("time_sync", {"unix": START, "zone": 1})
    assert ack["reason"] == "bad args: unknown argument zone"
    assert rig.clock.unix() == START and machine.set_to == [] and rig.codes() == []


def test_time_sync_after_rtc_loss_keeps_replay_and_expiry_rules(tmp_path, machine):
    rig = Rig(tmp_path, unix=946684800)  # the RTC fell back to 2000: the clock is not valid
    assert rig.send("disconnect", issued=START)["reason"] == "clock_unset"
    assert rig.contact.pulses == 0
    ack = rig.send("time_sync", {"unix": START}, issued=START)
    assert ack["code"] == 0 and rig.clock.valid() and rig.clock.unix() == START
    assert rig.codes()[-1][1] == 224  # 223 is logged at time 0 (the old time was before it)
    # the profile period begun at the meaningless time is replaced by one beginning now
    now = rig.clock.now()
    period = rig.meter.store.period
    assert period.start == now - now % 900 and period.end == (
        now - now % 900 + 900) and rig.meter.store.saved_periods == 1
    # a captured command is still a replay, an old one is now expired
    assert rig.send("disconnect", issued=START, n=rig.n)["reason"] == "replay"
    assert rig.send("disconnect", issued=START - 1000)["reason"] == "expired"
    assert rig.contact.pulses == 0
    assert rig.send("disconnect")["code"] == 0 and rig.contact.pulses == 1


# --- billing_snapshot ------------------------------------------------------------------------
def test_billing_snapshot(tmp_path):
    rig = Rig(tmp_path)
    rig.meter.imp.add(1, 100)  # not on flash yet: the snapshot saves it before recording
    assert not rig.meter.imp.on_flash()
    ack = rig.send("billing_snapshot")
    assert rig.meter.imp.on_flash()
    now = rig.clock.now()
    assert ack["code"] == 0
    assert ack["record"] == [1, START, 12345, 0, 4200, START - 600, profile_rings.BILL_COMMAND]
    ring = profile_rings.billing(rig.fs)
    assert ring.n == 1 and ring.get(1) == (now, 12345, 0, 4200, now - 600, 1)
    period = rig.meter.store.period  # a command snapshot keeps the month's demand
    assert (period.demand_w, period.demand_at) == (4200, now - 600)
    assert rig.codes()[-1][1:] == (225, 1)
    assert rig.send("billing_snapshot")["record"][0] == 2
    ack = rig.send("billing_snapshot", {"reset": True})
    assert (ack["code"], ack["reason"]) == (250, "bad args: unknown argument reset")
    assert profile_rings.billing(rig.fs).n == 2


# --- read_profile / read_events ----------------------------------------------------------------
def fill_block(rig: Rig, count: int, first_end: int, period: int = 900):
    ring = profile.block(rig.fs)
    for i in range(count):
        ring.append(first_end + i * period, i, 0, 24000, 1000 + i, 0)
    rig.meter.store.period.head = ring.n
    return first_end


def test_read_profile_pages_both_ways(tmp_path):
    rig = Rig(tmp_path)
    first = fill_block(rig, 20, rig.clock.now() - 20 * 900)
    ack = rig.send("read_profile")
    assert [r[0] for r in ack["records"]] == list(range(1, 9)) and ack["next"] == 9
    assert ack["records"][0] == [1, first + METER_EPOCH_UNIX, 0, 0, 24000, 1000, 0]
    ack = rig.send("read_profile", {"start": 9})
    assert [r[0] for r in ack["records"]] == list(range(9, 17)) and ack["next"] == 17
    ack = rig.send("read_profile", {"start": 17})
    assert [r[0] for r in ack["records"]] == [17, 18, 19, 20] and ack["next"] == 0
    ack = rig.send("read_profile", {"newest_first": True})
    assert [r[0] for r in ack["records"]] == list(range(20, 12, -1)) and ack["next"] == 12
    # a time range (Unix seconds, inclusive)
    since = first + 5 * 900 + METER_EPOCH_UNIX
    ack = rig.send("read_profile", {"since": since, "until": since + 2 * 900})
    assert [r[0] for r in ack["records"]] == [6, 7, 8] and ack["next"] == 0
    ack = rig.send("read_profile", {"since": since - 1, "until": since + 2 * 900 + 899,
                                    "newest_first": True})
    assert [r[0] for r in ack["records"]] == [8, 7, 6] and ack["next"] == 0
    ack = rig.send("read_profile", {"until": START - 10**8})
    assert ack["records"] == [] and ack["next"] == 0
    assert "reason" not in ack  # periods exist, none in the range
    for which in ("daily", "billing"):
        ack = rig.send("read_profile", {"profile": which})
        assert (ack["code"], ack["records"], ack["reason"]) == (0, [], "no period closed yet")


def test_read_profile_says_when_no_period_has_closed_yet(tmp_path):
    """A new meter's block profile is empty until its first period ends: the ack says so
    (code 0, no records, a reason), for any range; once one has closed the reason goes."""
    rig = Rig(tmp_path)
    for args in ({}, {"since": START, "until": START + 3600}, {"newest_first": True}):
        ack = rig.send("read_profile", args)
        assert (ack["code"], ack["records"], ack["next"]) == (0, [], 0)
        assert ack["reason"] == "no period closed yet"
    fill_block(rig, 1, rig.clock.now() - 900)
    ack = rig.send("read_profile")
    assert len(ack["records"]) == 1 and "reason" not in ack


def test_read_profile_reads_few_records_of_a_full_ring(tmp_path):
    rig = Rig(tmp_path)
    first = fill_block(rig, 700, rig.clock.now() - 700 * 900)
    rig.fs.opens = 0
    since = first + 400 * 900 + METER_EPOCH_UNIX
    ack = rig.send("read_profile", {"since": since, "until": since + 100 * 900})
    assert [r[0] for r in ack["records"]] == list(range(401, 409)) and ack["next"] == 409
    assert rig.fs.opens < 60  # bisection: not a scan of 700 records


def test_read_profile_ack_stays_small(tmp_path):
    rig = Rig(tmp_path)
    ring = profile.block(rig.fs)
    for i in range(10):
        ring.append(2**31 - 10 + i, 65535, 65535, 65535, 65535, 65535)
    events_ring = events.ring(rig.fs, 4)
    for i in range(10):
        events_ring.append(2**32 - 1, 2**31 - 10 + i, 65535, 4, 0, 65535, 65535, 2**32 - 1,
                           2**32 - 1)
    payload_sizes = []
    for cmd, args in (("read_profile", {}), ("read_events", {"category": "other"})):
        rig.n += 1
        raw = commands.Commands(rig.fs, METER, rig.clock, rig.log, rig.ctl, KEY, rig.state,
                                rig.link).handle(encode_command(
                                    KEY, METER, rig.n, cmd, args, issued=START))
        assert len(decode_ack(KEY, raw)["records"]) == 8
        payload_sizes.append(len(raw))
    assert max(payload_sizes) < 900, payload_sizes


@pytest.mark.parametrize("args,why", [
    ({"since": 10, "until": 5}, "since is after until"),
    ({"since": "yesterday"}, "since must be a whole number 0-4294967295"),
    ({"until": -1}, "until must be a whole number 0-4294967295"),
    ({"newest_first": 1}, "newest_first must be true or false"),
    ({"start": -1}, "start must be a whole number 0-1073741823"),
    ({"profile": "hourly"}, "profile must be block, daily or billing"),
    ({"page": 2}, "unknown argument page"),
])
def test_read_profile_bad_args(tmp_path, args, why):
    rig = Rig(tmp_path)
    ack = rig.send("read_profile", args)
    assert (ack["code"], ack["reason"]) == (250, "bad args: " + why)


def test_read_events_by_category_and_time(tmp_path):
    rig = Rig(tmp_path)
    now = rig.clock.now()
    for i in range(12):
        rig.log.log(now - 100 + i, events.CONTROL + 1, i)  # control category
    rig.log.log(now, events.POWER_UP)
    ack = rig.send("read_events", {"category": "control", "newest_first": True})
    rows = ack["records"]
    assert len(rows) == 8 and ack["next"] == 4
    assert rows[0] == [12, 12, now - 89 + METER_EPOCH_UNIX, 151, 0, 0, 0, 11]
    ack = rig.send("read_events", {"category": 5, "newest_first": True, "start": 4})
    assert [r[0] for r in ack["records"]] == [4, 3, 2, 1] and ack["next"] == 0
    since = now - 95 + METER_EPOCH_UNIX
    ack = rig.send("read_events", {"category": "control", "since": since, "until": since + 2})
    assert [r[7] for r in ack["records"]] == [5, 6, 7]
    assert [r[3] for r in rig.send("read_events", {"category": "other"})["records"]] == [1]
    for bad in ("tamper", 7, -1, None, True):
        ack = rig.send("read_events", {"category": bad})
        assert ack["code"] == 250 and ack["reason"].startswith("bad args: category must be")


# --- reboot ----------------------------------------------------------------------------------
def test_reboot_acks_then_resets(tmp_path, machine):
    rig = Rig(tmp_path)
    ack = rig.send("reboot")
    assert ack["code"] == 0 and rig.link.reboot  # the link resets once the ack is out
    assert rig.codes()[-1][1] == 226
    from meter.remote import time_commands as cmdtime

    published = []
    rig.link.client = SimpleNamespace(publish=lambda *a: published.append(a),
                                      disconnect=lambda: published.append("bye"))
    with pytest.raises(Reset):
        cmdtime.restart(rig.link)
    assert rig.meter.checkpoints == 1  # the registers were saved first
    assert published == [(f"meters/{METER}/status", b"offline", True), "bye"]
    ack = rig.send("reboot", {"delay": 5})
    assert (ack["code"], ack["reason"]) == (250, "bad args: unknown argument delay")


# --- nothing bad ever reaches the relay ---------------------------------------------
BAD = [
    ("set_control_mode", {"mode": 9}), ("set_control_mode", {"mode": [1]}),
    ("set_load_limit", {"watts": {}}), ("set_load_limit", {"watts": 1, "attempts": "x"}),
    ("set_telemetry_period", {"seconds": 1e9}), ("time_sync", {"unix": "x"}),
    ("time_sync", {"unix": START + 10**6}), ("read_profile", {"since": [1]}),
    ("read_events", {"category": {}}), ("billing_snapshot", {"x": 1}), ("reboot", {"x": 1}),
    ("status", {}), ("disconnect", {}),  # the last two are good: the control answers them
]


def test_bad_arguments_never_touch_relay_or_config(tmp_path, machine):
    rig = Rig(tmp_path)
    for cmd, args in BAD[:-2]:
        ack = rig.send(cmd, args)
        assert ack["code"] in (3, 7, 250) and (ack["code"] == 7 or ack["reason"]), (cmd, ack)
    assert rig.contact.pulses == 0 and rig.ctl.state == 1 and rig.ctl.mode == 1
    # (the malformed ones log a rejection event, 207; nothing else is logged)
    assert not (tmp_path / "config.json").exists() and {c for _t, c, _v in rig.codes()} == {207}
    assert not rig.link.reboot and machine.set_to == []
    assert rig.send("disconnect")["code"] == 0 and rig.contact.pulses == 1


# --- fuzz: any arguments, never an exception, never the relay ------------------------------
_scalar = (st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False)
           | st.text(max_size=8)
           | st.sampled_from(["block", "daily", "billing", "control", "other"]))
_value = _scalar | st.lists(_scalar, max_size=3) | st.dictionaries(st.text(max_size=5), _scalar,
                                                                   max_size=3)
_keys = st.sampled_from(["mode", "watts", "seconds", "unix", "since", "until", "start",
                         "newest_first", "profile", "category", "over_s", "attempts", "x"])


@settings(max_examples=50, deadline=None)
@given(cmd=st.sampled_from(["set_control_mode", "set_load_limit", "set_telemetry_period",
                            "time_sync", "billing_snapshot", "read_profile", "read_events",
                            "reboot"]),
       args=st.dictionaries(_keys, _value, max_size=4))
def test_fuzz_arguments(cmd, args):
    machine = types.ModuleType("machine")
    machine.RTC = lambda: SimpleNamespace(datetime=lambda dt: None)
    saved = sys.modules.get("machine")
    sys.modules["machine"] = machine
    try:
        with tempfile.TemporaryDirectory() as tmp:
            rig = Rig(Path(tmp))
            ack = rig.send(cmd, args)
    finally:
        if saved is None:
            sys.modules.pop("machine")
        else:
            sys.modules["machine"] = saved
    # outside the body's grammar (a float, a list, an object, a number past 2^32 - 1, a
    # string that is not plain printable ASCII): malformed before the MAC; else the handler
    assert (ack["code"] == 7) == (not in_grammar(args)), ack
    assert ack["code"] in (0, 3, 7, 250), ack
    assert ack.get("reason") != "handler_error", ack
    if ack["code"] not in (0, 7):
        assert ack["reason"]
    assert rig.contact.pulses == 0


def in_grammar(args: dict) -> bool:
    """What the meter's canonical() takes in args (README "Wire format"), written here apart."""
    def text(s):
        return isinstance(s, str) and all(" " <= c <= "~" and c not in '"\\' for c in s)
    return all(text(k) and (v is None or isinstance(v, bool) or text(v)
                            or type(v) is int and abs(v) <= 2**32 - 1)
               for k, v in args.items())


@pytest.mark.parametrize("cmd,args", [
    ("set_control_mode", {"mode": 3.0}), ("set_load_limit", {"watts": 5, "over_s": 1.5}),
    ("set_load_limit", {"watts": 5, "over_s": 2**40}), ("set_telemetry_period", {"seconds": [60]}),
    ("time_sync", {"unix": 1.5e9}), ("read_events", {"category": {"a": 1}}),
    ("read_profile", {"profile": "bl\u00f6ck"}), ("reboot", {"x\ty": 1}),
])
def test_values_outside_the_grammar_are_malformed(tmp_path, machine, cmd, args):
    """No float, list or object in args, no number past 2^32 - 1, no escape: such a body is
    not canonical, so it is refused as malformed (7, no counter) whatever its MAC."""
    rig = Rig(tmp_path)
    ack = rig.send(cmd, args)
    assert (ack["code"], ack["n"]) == (7, None)
    assert rig.ctl.mode == 1 and rig.ctl.limiter is None and rig.contact.pulses == 0
    assert not (tmp_path / "config.json").exists() and rig.codes()[-1][1:] == (207, 1)
    assert rig.send("status", n=rig.n)["code"] == 0  # its counter was not used up


def test_a_handler_that_fails_after_acting_acks_the_supply_as_it_is(tmp_path, monkeypatch):
    """A disconnect whose relay pulse went out but whose bookkeeping then failed (here: the
    event log runs out of memory) is answered 250 handler_error with the control state and
    relay position as they now are, not as they were: the head-end sees the truth."""
    rig = Rig(tmp_path, mode=2)

    def no_memory(*_args, **_kwargs):
        raise MemoryError("memory allocation failed")

    monkeypatch.setattr(rig.log, "log", no_memory)
    ack = rig.send("disconnect")
    assert (ack["code"], ack["reason"]) == (250, "handler_error")
    assert rig.contact.pulses == 1 and not rig.contact.closed  # it did act
    assert (ack["state"], ack["output"], ack["mode"]) == (0, False, 2)
