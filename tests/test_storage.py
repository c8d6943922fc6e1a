"""Storage that survives any power cut: last gasp, checkpoint bound, fault injection at every
flash write, profiles, event logs, read-back, corruption and factory reset."""

from __future__ import annotations

import json
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from simulator import faultsweep, images, paths
from simulator import scenario as sc
from simulator.device.timeutil import parse_iso

ROOT = Path(__file__).resolve().parent.parent
HOUSEHOLD_DAY = ROOT / "tests" / "scenarios" / "household_day.json"
# Without a power-fail input: checkpoint_wh (5) + the sub-Wh remainder (1) + one poll of flow
# at Imax (60 A x 240 V for 1 s = 4 Wh).
NO_PF_BOUND_WH = 10.0
PF_BOUND_WH = 1.0
METER_EPOCH_UNIX = 1577836800


@contextmanager
def mounted(flash_path):
    paths.ensure_paths()
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip
    from simulator.device.shim import Partition, micropython

    sys.modules.setdefault("micropython", micropython)
    chip = FlashChip(str(flash_path), 64)
    try:
        yield lfs_vfs.VfsLfs2(Partition(chip, "meterdata"))
    finally:
        chip.close()


def block_profile(fs):
    from meter.metering.energy import Register
    from meter.storage import checkpoint as store
    from meter.storage import profiles as profile
    from meter.storage import reader as maint

    energy = store.EnergyStore(fs)
    from meter.storage.restore import load_energy

    load_energy(energy, Register(1000), Register(1000))
    return list(maint.read(profile.block(fs, energy.period.head)))


# Signed remote commands (at_s, counter, cmd) the household day's meter gets during the sweep,
# through its own receive path (faultsweep.CommandFeed). Control mode 2 (the day's config):
# remote disconnect (b) and reconnect (a) both move the relay. They include a repeated
# disconnect (no change, the counter still advances), a replay (refused), a gap in the
# counters, the relay open across both outages, and a status query.
SWEEP_COMMANDS = [
    (7200, 1, "disconnect"), (7260, 2, "disconnect"), (9000, 3, "reconnect"),
    (9060, 3, "disconnect"), (29000, 5, "disconnect"), (30300, 6, "reconnect"),
    (50000, 7, "disconnect"), (50030, 8, "reconnect"), (63000, 9, "disconnect"),
    (66000, 10, "reconnect"), (80000, 11, "status"), (80100, 12, "disconnect"),
    (82000, 13, "reconnect"),
]
# What the head-end must get back: (counter, code, state); the replay is refused (5).
SWEEP_ACKS = [(1, 0, 0), (2, 0, 0), (3, 0, 1), (3, 5, None), (5, 0, 0), (6, 0, 1), (7, 0, 0),
              (8, 0, 1), (9, 0, 0), (10, 0, 1), (11, 0, 1), (12, 0, 0), (13, 0, 1)]


def command_feed(scenario, schedule):
    return faultsweep.CommandFeed(bytes.fromhex(scenario["command_key"]), schedule,
                                  scenario["config"].get("control_mode", 1))


def test_fault_sweep_every_cut_point_of_a_day(tmp_path, capsys):
    # Without the power-fail input every cut is an outage the checkpoint policy must bound
    # (with it, the last gasp saves at each outage; see the journal tests below).
    scenario = dict(sc.load_file(HOUSEHOLD_DAY), power_fail_input=False)
    feed = command_feed(scenario, SWEEP_COMMANDS)
    started = time.monotonic()
    sweep, raw, final = faultsweep.run(scenario, str(tmp_path / "flash.img"), NO_PF_BOUND_WH,
                                       feed)
    wall = time.monotonic() - started
    control = sweep.control
    with capsys.disabled():
        print(f"\nfault sweep: {sweep.cuts} cut points ({sweep.programs} programs torn, "
              f"{sweep.erases} erases) of a day, checked in {wall:.1f} s; relay, control "
              f"state and command counter checked at {control.cuts} of them "
              f"({control.in_command} while one of {len(feed.windows)} signed commands was "
              f"handled, {control.open} with the relay commanded open)")
    assert sweep.failures == []
    assert sweep.cuts > 5000 and sweep.erases > 50
    assert control.cuts == sweep.cuts  # the checks ran at every cut point
    assert control.in_command > 50 and control.open > 100
    got = [(n, ack["code"], ack.get("state")) for _t, n, ack in feed.acks]
    assert got == SWEEP_ACKS
    assert [b[1:] for b in feed.boots] == [(1, True), (0, False), (0, False)]  # both outages
    assert raw["relay_operations"] == 10 and raw["relay_closed"]  # open while disconnected
    assert len(final) == 96  # one record per 15 min, the outages' periods included
    times = [rec[0] for _n, rec in final]
    assert times == sorted(set(times))
    assert max(raw["losses_wh"]) <= NO_PF_BOUND_WH  # its two real outages


def _command_hour(duration_s=3600):
    """The household day's first hour (or less) with a signed command every 5 minutes."""
    raw = json.loads(HOUSEHOLD_DAY.read_text())
    # without the input: each cut is an unwarned outage (as in the whole-day sweep)
    raw.update({"duration_s": duration_s, "outages": [], "power_fail_input": False})
    schedule = [(300 * i, i, ("disconnect", "reconnect")[i % 2])
                for i in range(1, duration_s // 300)]
    return sc.normalise(raw), schedule


# Deliberately broken firmware the sweep must catch (file, text, replacement).
MUTANTS = {
    "none": [],  # the firmware as it is: the same run finds nothing
    "acts before its counter is on flash": [(
        "meter/remote/commands.py",
        "                self._save(n, dig, 0, 0)  # persisted before acting, with what it is\n",
        '                getattr(self.handler, obj["cmd"], print)(obj.get("args", {}))\n'
        "                self._save(n, dig, 0, 0)\n")],
    "moves the relay before its intent is on flash": [
        ("meter/supply/transitions.py",
         "        save(ctl, events.CONTROL + cause * 3 + target)\n        ctl.old = old\n",
         "        ctl.old = old\n"),
        ("meter/supply/transitions.py", "    ctl.log.log(ctl.clock.now(), events.CONTROL + cause",
         "    save(ctl)\n    ctl.log.log(ctl.clock.now(), events.CONTROL + cause")],
    "takes a counter file cut at its creation for a lost one": [(
        "meter/remote/commands.py", "            if not d:\n", "            if False:\n")],
    # issue 18: the intent without its event, so boot cannot complete a transition cut short
    "keeps the intent without its transition event": [(
        "meter/supply/transitions.py",
        "        save(ctl, events.CONTROL + cause * 3 + target)\n        ctl.old = old\n",
        "        save(ctl)\n        ctl.old = old\n")],
    "keeps the counter without the command's digest": [(
        "meter/remote/commands.py", "self._save(n, dig, 0, 0)  # persisted",
        "self._save(n, bytes(16), 0, 0)  #")],
    "records a command done before it acts": [(
        "meter/remote/commands.py", "self._save(n, dig, 0, 0)  # persisted",
        "self._save(n, dig, 1, 0)  #")],
}
MUTANT_FINDINGS = {
    "none": None,
    "acts before its counter is on flash": "already acted on",
    "moves the relay before its intent is on flash": "relay already moved",
    "takes a counter file cut at its creation for a lost one": "counter unreadable",
    "keeps the intent without its transition event": "transition events (with boot's)",
    "keeps the counter without the command's digest": "without the digest",
    "records a command done before it acts": "recorded done before",
}


@pytest.mark.parametrize("mutant", list(MUTANTS))
def test_fault_sweep_catches_a_broken_persist_order(tmp_path, monkeypatch, mutant):
    """The relay / control / counter checks can fail: the same sweep over firmware with the
    order of its writes broken reports it."""
    import shutil

    firmware = tmp_path / "firmware"
    shutil.copytree(ROOT / "firmware", firmware)
    for path, text, replacement in MUTANTS[mutant]:
        source = (firmware / path).read_text()
        assert source.count(text) == 1, (path, text)  # the mutant still applies
        (firmware / path).write_text(source.replace(text, replacement))
    scenario, schedule = _command_hour()
    faultsweep._forget_meter()
    monkeypatch.syspath_prepend(str(firmware))
    try:
        sweep, _raw, _final = faultsweep.run(scenario, str(tmp_path / "flash.img"),
                                             NO_PF_BOUND_WH, command_feed(scenario, schedule))
    finally:
        faultsweep._forget_meter()
    assert sweep.control.cuts == sweep.cuts > 100
    finding = MUTANT_FINDINGS[mutant]
    if finding is None:
        assert sweep.failures == []
    else:
        assert any(finding in f for f in sweep.failures), sweep.failures[:5]


def _cut_scenario(cut):
    return sc.normalise({
        "duration_s": 2400, "config": {"meter_id": "m"}, "power_fail_input": False,
        "load": [{"at_s": 0, "volts": 240, "amps": 60, "pf": 1.0}],
        "faults": {"power_cut_at_write": cut},
    })


@pytest.mark.parametrize("runtime, cuts", [
    ("cpython", (12, 40, 123, 400, 1500, 2222)),
    pytest.param("micropython", (15, 60, 333), marks=pytest.mark.micropython),
])
def test_sampled_cuts_reboot_and_run_on(tmp_path, runtime, cuts, request):
    if runtime == "micropython":
        request.getfixturevalue("mpy_build")
    for cut in cuts:
        work = tmp_path / str(cut)
        work.mkdir()
        report = sc.run(_cut_scenario(cut), runtime, workdir=str(work))
        assert report["reboots"] == 1, cut  # the cut happened and the meter came back
        true, metered = report["true_import_wh"], report["meter_import_wh"]
        assert metered <= true, cut
        assert true - metered <= NO_PF_BOUND_WH + 0.1, cut
        with mounted(work / "flash.img") as fs:
            times = [rec[0] for _n, rec in block_profile(fs)]
        assert times == sorted(set(times)) and len(times) >= 2, cut


def test_cuts_while_signed_commands_are_handled_reboot_as_last_commanded(tmp_path):
    """Real power cuts (CPython) at every flash write of the first two signed commands'
    handling: after the reboot the relay's contact matches the persisted state (checked at
    the first poll, after boot's re-assertion), the very bytes cut short are redelivered and
    the meter completes them (issue 18): acked 0, with "repeat" if their counter had reached
    flash, and the control log ends with exactly the uncut run's transitions."""
    scenario, schedule = _command_hour(1500)
    total = len(schedule)
    feed = command_feed(scenario, schedule)
    faultsweep.run_with_commands(scenario, str(tmp_path / "uncut.img"), feed)
    assert feed.failures == [] and [a[2]["code"] for a in feed.acks] == [0] * total == [0] * 4
    with mounted(tmp_path / "uncut.img") as fs:
        uncut = faultsweep.transitions(fs)
    assert uncut == [150, 151, 150]  # (the first, a reconnect, changes nothing)
    windows = {n: (first, last) for n, first, last in feed.windows}
    cases = set()
    for n in (2, 3):  # a disconnect, then a reconnect
        first, last = windows[n]
        assert last - first >= 4, windows  # counter, control record, event log, done
        for cut in range(first, last + 1):
            cut_scenario = dict(scenario, faults={"power_cut_at_write": cut})
            feed = command_feed(scenario, schedule)
            flash = tmp_path / f"cut{cut}.img"
            raw = faultsweep.run_with_commands(cut_scenario, str(flash), feed)
            assert raw["reboots"] == 1, cut
            assert feed.failures == [], (cut, feed.failures)
            assert len(feed.boots) == 2, cut
            before, after = 1 - n % 2, n % 2  # Connected before the disconnect, and back
            after_boot = feed.boots[1][1]
            assert after_boot in (before, after), (cut, feed.boots)
            acks = [ack for _t, _n, ack in feed.acks]
            assert [a["code"] for a in acks] == [0] * total, (cut, acks)
            again = acks[n - 1]  # the redelivered command, completed
            assert again["state"] == after, (cut, again)
            assert [a.get("repeat", False) for a in acks] == [i == n - 1 and again.get(
                "repeat", False) for i in range(total)], (cut, acks)
            cases.add((after_boot == after, again.get("repeat", False)))
            state, _mode = images.read_control(str(flash))
            with mounted(flash) as fs:
                got = faultsweep.read_control_state(fs)
            assert (state, got["counter"]) == (acks[-1]["state"], total), cut
            # the last command: done, code 0
            assert got["outcome"] and got["outcome"][1:] == (1, 0), (cut, got["outcome"])
            assert got["transitions"] == uncut, (cut, got["transitions"])
            assert raw["relay_closed"] == (state == 1), cut
    # cut before the counter reached flash, after it but before the state, and after both
    assert cases == {(False, False), (False, True), (True, True)}, cases


def _cut_short(**more):
    """A disconnect at 10 s and a reconnect at 20 s (control mode 2: the remote reconnect
    closes the relay), then a status query, over the run's own mosquitto."""
    return sc.normalise(dict({
        "duration_s": 40, "config": {"meter_id": "m", "control_mode": 2},
        "power_fail_input": False, "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}],
        "commands": [{"at_s": 10, "cmd": "disconnect"}, {"at_s": 20, "cmd": "reconnect"},
                     {"at_s": 30, "cmd": "status"}]}, **more))


def _transitions(report):
    return [e["name"] for e in report["events"] if 150 <= e["code"] < 170]


def _check_cut_short(report, what):
    """Relay, control state, event log and the head-end's acks agree: each command acted
    exactly once and its last ack says so; no ack is a replay."""
    acks = report["acks"]
    assert all(a["mac_ok"] for a in acks), (what, acks)
    assert [a["code"] for a in acks] == [0] * len(acks), (what, acks)  # never "replay"
    last = {a["cmd"]: (a["n"], a["state"], a["output"]) for a in acks}
    assert last == {"disconnect": (1, 0, False), "reconnect": (2, 1, True),
                    "status": (3, 1, True)}, (what, acks)
    assert _transitions(report) == ["control_remote_disconnected", "control_remote_connected"
                                    ], (what, report["events"])
    assert report["relay_operations"] == 2, what  # nothing acted twice
    assert (report["control_state"], report["relay_closed"]) == (1, True), what
    assert report.get("network_late", 0) == 0, what
    return tuple(a["cmd"] for a in acks if a.get("repeat"))


@pytest.mark.parametrize("runtime", ["cpython",
                                     pytest.param("micropython", marks=pytest.mark.micropython)])
def test_a_command_cut_short_at_every_flash_operation_is_completed_on_redelivery(
        tmp_path, runtime, request):
    """Issue 18: a power cut at every flash program or erase of a signed disconnect's and a
    reconnect's handling (every operation while the meter handles the command, the relay
    pulse and the event log included), and a mains cut at a command's arrival. The command
    cut short is not acknowledged, so the broker (kept session, QoS 1) delivers the very same
    bytes again when the meter is back, and the meter completes it or answers its recorded
    result ("repeat"): the relay, the control state, the event log and the head-end's last
    ack agree, and no ack is a replay."""
    if runtime == "micropython":
        request.getfixturevalue("mpy_build")
    from simulator.device import runner

    ops = []
    provision = runner.provision

    def provision_and_count(world, config, *more):
        provision(world, config, *more)
        world.flash.on_op = lambda *_: ops.append((world.flash.ops + 1, world.now_ms))

    runner.provision = provision_and_count
    try:
        report = sc.run(_cut_short(), runtime, workdir=str(tmp_path))
    finally:
        runner.provision = provision
    assert _check_cut_short(report, "uncut") == ()
    # the handling: every flash operation from the command's arrival to the next second
    cuts = [n for n, t in ops if 10000 <= t < 11000 or 20000 <= t < 21000]
    assert len(cuts) >= 10, ops  # counter, intent, event, done, for each of the two
    repeats = set()
    started = time.monotonic()
    for cut in cuts:
        work = tmp_path / str(cut)
        work.mkdir()
        report = sc.run(_cut_short(faults={"power_cut_at_write": cut}), runtime,
                        workdir=str(work))
        assert report["reboots"] == 1, cut
        repeats.add(_check_cut_short(report, cut))
    wall = time.monotonic() - started
    # redelivered before its counter reached flash (acted as new), and after (a repeat)
    assert {(), ("disconnect",), ("reconnect",)} <= repeats, repeats
    for at_s in (10, 20):  # mains cut exactly at a command's arrival
        work = tmp_path / f"outage{at_s}"
        work.mkdir()
        report = sc.run(_cut_short(outages=[{"at_s": at_s, "for_s": 2}]), runtime,
                        workdir=str(work))
        assert report["reboots"] == 1, at_s
        _check_cut_short(report, f"outage at {at_s} s")
    print(f"\n{runtime}: {len(cuts)} cut points of a disconnect's and a reconnect's handling "
          f"in {wall:.1f} s")


def _button_minutes():
    return sc.normalise({"duration_s": 150, "config": {"meter_id": "m"},
                         "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}],
                         "button": [{"at_s": 30, "hold_s": 3}]})


@pytest.mark.parametrize("runtime", ["cpython",
                                     pytest.param("micropython", marks=pytest.mark.micropython)])
def test_cut_while_the_button_disconnects_reboots_with_the_relay_as_persisted(
        tmp_path, runtime, request):
    """Real power cuts at the flash writes of a local disconnect (the button: Connected to
    Ready_for_reconnection, relay opened) and just after it: after the reboot and boot's
    re-assertion the relay's contact matches the persisted state."""
    if runtime == "micropython":
        request.getfixturevalue("mpy_build")
    from simulator.device import runner

    ops = []
    provision = runner.provision

    def provision_and_count(world, config, *more):
        provision(world, config, *more)
        world.flash.on_op = lambda *_: ops.append(
            (world.flash.ops + 1, world.now_ms, world.relays[0].closed))

    runner.provision = provision_and_count
    try:
        report = sc.run(_button_minutes(), runtime, workdir=str(tmp_path))
    finally:
        runner.provision = provision
    assert (report["control_state"], report["relay_closed"]) == (2, False)
    opened = next(i for i, op in enumerate(ops) if not op[2])  # the first write after the pulse
    pulse_at = ops[opened - 1][1]
    cuts = [n for n, t, _closed in ops[:opened] if t == pulse_at]  # the intent, before it
    cuts += [n for n, _t, _closed in ops[opened:opened + 2]]  # the event log after it
    assert len(cuts) >= 3, ops
    outcomes = set()
    for cut in cuts:
        work = tmp_path / str(cut)
        work.mkdir()
        cut_scenario = dict(_button_minutes(), faults={"power_cut_at_write": cut})
        report = sc.run(cut_scenario, runtime, workdir=str(work))
        assert report["reboots"] == 1, cut
        assert report["relay_closed"] == report["output_state"], (cut, report)
        outcomes.add(report["control_state"])
    assert outcomes == {1, 2}  # cut before the intent reached flash, and after


def test_thirty_days_hundred_outages_last_gasp_bound(tmp_path):
    rng = random.Random(4)
    duration = 30 * 86400
    ats = sorted(rng.sample(range(600, duration - 3600, 60), 100))
    outages = [{"at_s": at, "for_s": rng.choice([1, 5, 60, 600, 1800])} for at in ats]
    load = [{"at_s": i * 7200, "volts": 240, "amps": rng.choice([0.5, 3, 12, 40, 60]),
             "pf": rng.choice([1.0, 0.9, -0.95])} for i in range(duration // 7200)]
    # 30 s polls, a 30-min profile and rare checkpoints keep 30 days quick; the last gasp is
    # what is tested (it reads the IC, so even a long poll loses nothing).
    config = {"poll_ms": 30000, "checkpoint_wh": 500, "checkpoint_s": 3600,
              "profile_period_s": 1800}
    scenario = sc.normalise({"duration_s": duration, "config": config,
                             "load": load, "outages": outages})
    report = sc.run(scenario, "cpython", workdir=str(tmp_path))
    assert report["reboots"] == 100
    # Flash timing is modelled on the hold-up (45 ms erases, 0.7 ms page programs): before
    # the journal, 2 of these 100 last gasps hit a LittleFS compaction and lost 319 Wh.
    assert report["holdup_overruns"] == 0
    assert report["lost_wh_per_outage_max"] <= PF_BOUND_WH
    for kind in ("import", "export"):
        true, metered = report[f"true_{kind}_wh"], report[f"meter_{kind}_wh"]
        assert metered <= true
    total_true = report["true_import_wh"] + report["true_export_wh"]
    total_meter = report["meter_import_wh"] + report["meter_export_wh"]
    assert total_true - total_meter <= 100 * PF_BOUND_WH + 60 * 240 * 30 / 3600
    assert 1300 <= report["profile_records"] <= 30 * 48
    fails = [e for e in report["events"] if e["name"] == "power_fail"]
    assert len(fails) == 20  # the power-failure log keeps the last 20
    assert [e["t_s"] for e in fails] == [o["at_s"] for o in outages[-20:]]


def test_without_power_fail_input_the_checkpoint_bound_holds():
    outages = [{"at_s": at, "for_s": 30} for at in (613, 1229, 2011, 2990, 3333)]
    scenario = sc.normalise({"duration_s": 3600, "power_fail_input": False,
                             "load": [{"at_s": 0, "volts": 240, "amps": 60, "pf": 1.0}],
                             "outages": outages})
    report = sc.run(scenario, "cpython")
    assert report["reboots"] == 5
    assert PF_BOUND_WH < report["lost_wh_per_outage_max"] <= NO_PF_BOUND_WH
    assert not [e for e in report["events"] if e["name"] == "power_fail"]


def test_with_the_input_checkpoints_are_periodic_not_every_5_wh():
    """An erase-free last gasp saves at every outage, so the board with the power-fail input
    checkpoints at each profile period's close (and checkpoint_s), not every 5 Wh."""
    base = {"duration_s": 3600, "load": [{"at_s": 0, "volts": 240, "amps": 60, "pf": 1.0}],
            "outages": [{"at_s": 1000, "for_s": 10}]}
    with_input = sc.run(sc.normalise(base), "cpython")
    without = sc.run(sc.normalise(dict(base, power_fail_input=False)), "cpython")
    assert with_input["lost_wh_per_outage_max"] <= PF_BOUND_WH
    assert without["lost_wh_per_outage_max"] <= NO_PF_BOUND_WH
    # 14.4 kWh in the hour: ~2,900 checkpoints without the input, a handful with it
    assert with_input["flash"]["bytes_written"] * 10 < without["flash"]["bytes_written"]
    assert with_input["flash"]["erases"] * 4 < without["flash"]["erases"]
    assert with_input["holdup_overruns"] == 0


def test_profiles_daily_billing_and_read_back(tmp_path):
    scenario = sc.normalise({
        "duration_s": 3 * 3600, "start": "2026-01-31T22:30:00Z",
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0},
                 {"at_s": 3600, "volts": 240, "amps": 20, "pf": 1.0},
                 {"at_s": 4500, "volts": 240, "amps": 2, "pf": 1.0}],
        "outages": [{"at_s": 5000, "for_s": 100}],
    })
    sc.run(scenario, "cpython", workdir=str(tmp_path))
    from meter.storage import events, profile_rings
    from meter.storage import profiles as profile
    from meter.storage import reader as maint

    with mounted(tmp_path / "flash.img") as fs:
        blocks = block_profile(fs)
        assert len(blocks) == 12
        start = parse_iso("2026-01-31T22:30:00Z") - METER_EPOCH_UNIX
        assert [rec[0] - start for _n, rec in blocks] == [900 * (i + 1) for i in range(12)]
        by_end = {rec[0] - start: rec for _n, rec in blocks}
        assert by_end[4500][1] == 1200  # 20 A x 240 V for 15 min
        assert 23900 <= by_end[4500][3] <= 24100 and 19900 <= by_end[4500][4] <= 20100
        assert by_end[5400][5] & profile.POWER_FAILED
        # read back by time range, newest first, in pages of 4
        page, got, cursor = 4, [], 0
        while True:
            chunk = []
            for n, rec in maint.read(profile.block(fs), start + 1800, start + 9000, True,
                                     cursor):
                chunk.append((n, rec))
                if len(chunk) == page:
                    break
            got += chunk
            if len(chunk) < page:
                break
            cursor = chunk[-1][0] - 1
        assert [rec[0] - start for _n, rec in got] == list(range(9000, 1799, -900))
        daily = list(maint.read(profile.daily(fs)))
        assert [rec[0] - start for _n, rec in daily] == [5400]  # 2026-02-01T00:00Z
        bills = list(maint.read(profile_rings.billing(fs)))
        assert len(bills) == 1
        _t, imp_wh, _exp, demand_w, demand_t, trigger = bills[0][1]
        assert trigger == profile_rings.BILL_MONTHLY and demand_w == 4800
        assert demand_t - start == 4500 and 2490 <= imp_wh <= 2510
        power = [rec for _n, rec in maint.read_events(fs, events.CAT_POWER)]
        assert [(r[2], r[1] - start, r[8]) for r in power] == [(events.POWER_FAIL, 5000, 100)]


def test_corrupt_records_are_skipped_logged_and_the_meter_boots(tmp_path):
    base = {"duration_s": 3600, "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}]}
    sc.run(sc.normalise(base), "cpython", workdir=str(tmp_path))
    from meter.storage import reader as maint

    with mounted(tmp_path / "flash.img") as fs:
        assert len(block_profile(fs)) == 4
        with fs.open("/p/block.0", "r+b") as f:  # a flipped bit in the second record
            f.seek(22 + 9)
            byte = f.read(1)[0]
            f.seek(22 + 9)
            f.write(bytes((byte ^ 0x10,)))
        with fs.open("/energy.a", "wb") as f:
            f.write(b"garbage")
        assert len(block_profile(fs)) == 3
        with fs.open("/ev/4.0", "r+b") as f:
            f.write(b"\xff" * 7)  # the first event record smashed
        assert len(list(maint.read_events(fs, 4))) == 0
    again = dict(base, start="2026-01-01T01:00:00+05:30")
    report = sc.run(sc.normalise(again), "cpython", workdir=str(tmp_path), keep_flash=True)
    names = [e["name"] for e in report["events"]]
    assert "store_corrupt" in names and names.count("power_up") == 1  # the smashed one is gone
    # the intact slot still carried the registers
    assert report["meter_import_wh"] >= 2400 - NO_PF_BOUND_WH


def test_factory_reset_keeps_calibration(tmp_path):
    sc.run(sc.normalise({"duration_s": 1800, "config": {"meter_id": "m-7"},
                         "load": [{"at_s": 0, "amps": 10}]}), "cpython", workdir=str(tmp_path))
    from meter.storage.factory_reset import factory_reset

    with mounted(tmp_path / "flash.img") as fs:
        with fs.open("/calib.json", "w") as f:
            f.write(json.dumps({"ugain": 12345}))
        factory_reset(fs)
        names = sorted(entry[0] for entry in fs.ilistdir("/"))
        assert names == ["calib.json", "config.json", "reset.flag"]
    report = sc.run(sc.normalise({"duration_s": 600, "start": "2026-01-01T01:00:00+05:30",
                                  "load": [{"at_s": 0, "amps": 1}]}), "cpython",
                    workdir=str(tmp_path), keep_flash=True)
    # (the stand-in calibration record is refused as bad: that event is the metering's)
    names = [e["name"] for e in report["events"] if not e["name"].startswith("calibration")]
    assert names == ["power_up", "factory_reset"]
    assert report["meter_import_wh"] < 100  # the registers started again from zero
    with mounted(tmp_path / "flash.img") as fs:
        assert json.loads(fs.open("/calib.json").read()) == {"ugain": 12345}


def test_event_categories_capacities_and_the_cover_log_never_rolls_over(tmp_path):
    paths.ensure_paths()
    sys.modules.setdefault("micropython", __import__("simulator.device.shim.micropython",
                                                     None, None, ["x"]))
    from meter.storage import events
    from meter.storage import reader as maint

    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip

    chip = FlashChip(str(tmp_path / "f.img"), 64)
    lfs_vfs.VfsLfs2.mkfs(chip)
    fs = lfs_vfs.VfsLfs2(chip)
    fs.mkdir("/ev")
    log = events.EventLog(fs)
    assert [events.category(c) for c in (events.POWER_FAIL, 101, 111, 120, 160, 210, 3)] == [
        events.CAT_POWER, events.CAT_VOLTAGE, events.CAT_CURRENT, events.CAT_OTHER,
        events.CAT_CONTROL, events.CAT_TRANSACTION, events.CAT_OTHER]
    for t in range(1, 31):
        log.log(t, events.COVER_OPEN)
        log.log(t, 160, t)  # a control event
    cover = [rec for _n, rec in maint.read_events(fs, events.CAT_COVER)]
    assert [r[1] for r in cover] == list(range(1, 21))  # the first 20 kept, later ones refused
    assert log.log(99, events.COVER_OPEN) is False
    control = [rec for _n, rec in maint.read_events(fs, events.CAT_CONTROL, 10, 25, True)]
    assert [r[1] for r in control] == list(range(25, 9, -1))
    assert all(r[8] == r[1] for r in control)  # the value travels with the event
    chip.close()


def journal_records(flash_path):
    """(written slots, valid records) of the last-gasp journal partition of an image."""
    import struct
    import zlib

    from simulator.device.shim import Partition

    first, count = Partition.TABLE["lastgasp"]
    data = Path(flash_path).read_bytes()[first * 4096:(first + count) * 4096]
    written, valid = 0, []
    for at in range(0, len(data), 32):
        slot = data[at:at + 32]
        if slot == b"\xff" * 32:
            continue
        written += 1
        if zlib.crc32(slot[:28]) == struct.unpack_from("<I", slot, 28)[0]:
            valid.append(struct.unpack_from("<IIIIIIB", slot))
    return written, valid


def _journal_scenario(outages, amps=1.0):
    return {"duration_s": outages * 40 + 60, "config": {"meter_id": "j"},
            "load": [{"at_s": 0, "volts": 240, "amps": amps, "pf": 1.0}],
            "outages": [{"at_s": 30 + 40 * i, "for_s": 1} for i in range(outages)]}


def test_last_gasp_is_one_journal_program_and_a_torn_record_is_skipped(tmp_path):
    report = sc.run(sc.normalise(_journal_scenario(3, amps=60)), "cpython",
                    workdir=str(tmp_path))
    assert report["reboots"] == 3 and report["holdup_overruns"] == 0
    assert report["lost_wh_per_outage_max"] <= PF_BOUND_WH
    written, valid = journal_records(tmp_path / "flash.img")
    assert written == 3 and len(valid) == 3  # one record per last gasp, no erase needed
    assert [r[6] for r in valid] == [1, 1, 1]  # the last-gasp flag
    seqs = [r[0] for r in valid]
    assert seqs == sorted(set(seqs))  # each follows a newer LittleFS checkpoint
    assert len([e for e in report["events"] if e["name"] == "power_fail"]) == 3
    # Tear the newest record: the boot skips it (CRC), logs the damage, erases that sector
    # (the records in it are folded into LittleFS already) and carries on.
    image = bytearray((tmp_path / "flash.img").read_bytes())
    from simulator.device.shim import Partition

    at = Partition.TABLE["lastgasp"][0] * 4096 + 2 * 32
    image[at + 16:at + 32] = b"\xff" * 16  # its second half never landed
    (tmp_path / "flash.img").write_bytes(bytes(image))
    assert journal_records(tmp_path / "flash.img") == (3, valid[:2])
    again = sc.normalise(dict(_journal_scenario(1), start="2026-01-01T01:00:00+05:30"))
    report = sc.run(again, "cpython", workdir=str(tmp_path), keep_flash=True)
    assert "store_corrupt" in [e["name"] for e in report["events"]]
    written, valid = journal_records(tmp_path / "flash.img")
    assert written == 1 and len(valid) == 1  # the damaged sector erased, the writer moved on
    # what flowed until the last outage (108 s at 14.4 kW) was saved by its last gasp
    assert report["meter_import_wh"] >= 108 * 60 * 240 / 3600 - PF_BOUND_WH


def test_journal_fills_wraps_and_erases_only_on_mains(tmp_path, capsys):
    """More last gasps than a journal sector holds: the writer moves on to the erased
    sector, the boot erases the full one (on mains), no erase ever runs on the hold-up.
    Every cut point of the last 20 outages (the wrap and the erase among them) is checked."""
    scenario = sc.normalise(_journal_scenario(140))
    sweep, raw, final = faultsweep.run(scenario, str(tmp_path / "flash.img"), NO_PF_BOUND_WH,
                                       from_ms=(30 + 40 * 120) * 1000 - 5000)
    with capsys.disabled():
        print(f"\njournal sweep: {sweep.cuts} cut points of the last 20 of 140 outages "
              f"({sweep.journal_programs} journal programs, {sweep.journal_erases} journal "
              f"erases)")
    assert sweep.failures == []
    assert raw["reboots"] == 140 and raw["holdup_overruns"] == 0
    assert max(raw["losses_wh"]) <= PF_BOUND_WH
    written, valid = journal_records(tmp_path / "flash.img")
    assert written == 140 - 128 and len(valid) == written  # the first sector was erased
    assert sweep.journal_programs >= 20 and sweep.journal_erases >= 1
    assert sweep.cuts > 500


@pytest.mark.micropython
def test_last_gasp_journal_on_micropython(tmp_path, mpy_build):
    scenario = sc.normalise(_journal_scenario(2, amps=60))
    report = sc.run(scenario, "micropython", workdir=str(tmp_path))
    assert report["reboots"] == 2 and report["holdup_overruns"] == 0
    assert report["lost_wh_per_outage_max"] <= PF_BOUND_WH
    assert report["meter_import_wh"] <= report["true_import_wh"]
    assert len(journal_records(tmp_path / "flash.img")[1]) == 2
    assert 0 < report["heap_peak_bytes"] < 64 * 1024
    # A torn newest record: the MicroPython boot skips it, logs it, erases that sector.
    from simulator.device.shim import Partition

    image = bytearray((tmp_path / "flash.img").read_bytes())
    at = Partition.TABLE["lastgasp"][0] * 4096 + 32
    image[at + 16:at + 32] = b"\xff" * 16
    (tmp_path / "flash.img").write_bytes(bytes(image))
    again = sc.normalise(dict(_journal_scenario(1), start="2026-01-01T01:00:00+05:30"))
    report = sc.run(again, "micropython", workdir=str(tmp_path), keep_flash=True)
    assert "store_corrupt" in [e["name"] for e in report["events"]]
    written, valid = journal_records(tmp_path / "flash.img")
    assert written == 1 and len(valid) == 1  # the damaged sector erased, the writer moved on
    assert report["lost_wh_per_outage_max"] <= PF_BOUND_WH


def test_journal_scan_picks_newest_and_keeps_room_ahead(tmp_path):
    """The boot's journal reader (meter.storage.restore.scan_journal) on crafted partitions."""
    import struct
    import zlib

    paths.ensure_paths()
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)
    from meter.storage import checkpoint as store
    from meter.storage import restore

    from simulator.device.flash import FlashChip
    from simulator.device.shim import Partition

    def record(seq, wh):
        body = struct.pack("<IIIIIIB", seq, 0, wh * 1000, 0, 0, 100 + seq, 1) + b"\0\0\0"
        return body + struct.pack("<I", zlib.crc32(body))

    def scan(slots):
        """slots: {(block, index): bytes}; returns (newest seq, bad, next, erase, room)."""
        path = tmp_path / "j.img"
        if path.exists():
            path.unlink()
        chip = FlashChip(str(path), 64)
        part = Partition(chip, "lastgasp")
        for (block, index), data in slots.items():
            part.writeblocks(block, data, index * 32)
        energy = store.EnergyStore(None, part)
        best, bad = restore.scan_journal(energy)
        j = energy.journal
        chip.close()
        return (best[0] if best else None, bad, j[1], list(j[6]), j[7])

    assert scan({}) == (None, 0, 0, [], 256)
    three = {(0, i): record(5 + i, i) for i in range(3)}
    assert scan(three) == (7, 0, 3, [], 253)  # go on after the newest, nothing to erase
    full = {(0, i): record(i + 1, i) for i in range(128)}
    assert scan(full) == (128, 0, 128, [0], 256)  # next sector; the full one erased
    torn = dict(three)
    torn[(0, 3)] = record(8, 3)[:16] + b"\xff" * 16
    assert scan(torn) == (7, 1, 128, [0], 256)  # skipped; the damaged sector erased
    moved = dict(three)
    moved.update({(1, i): record(20 + i, 10 + i) for i in range(2)})
    assert scan(moved) == (21, 0, 130, [0], 254)  # older sector left over: erased
    garbage = {(1, 5): b"\x00" * 32}
    assert scan(garbage) == (None, 1, 0, [1], 256)
