"""Store-and-forward over real mosquitto: block-profile records and events go out at QoS 1
with their own sequence numbers; while the broker is unreachable the meter keeps storing,
and when it comes back the backlog goes out oldest first, nothing in the retention window
lost, duplicates only with the same sequence number.

The broker is made unreachable by the scenario's `network_outages` (the run's proxy between
the meter and mosquitto refuses connections and drops the open one); the subscriber talks to
mosquitto directly and never misses anything."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import pytest

from simulator import images
from simulator import scenario as sc
from simulator.micropython_port import heap_bytes
from simulator.report import build_report
from tests.conftest import subscribe


class Collector:
    """Everything published on a meter's profile and events topics, in arrival order."""

    def __init__(self, host: str, port: int, meter_id: str) -> None:
        self.got: dict[str, list[dict]] = {"profile": [], "events": []}

        def on_message(_c, _u, msg):
            self.got[msg.topic.rsplit("/", 1)[1]].append(json.loads(msg.payload))

        self.client = subscribe(host, port, [(f"meters/{meter_id}/profile", 1),
                                             (f"meters/{meter_id}/events", 1)], on_message, "f")

    def settle(self, want: dict[str, set[int]], timeout: float = 10) -> None:
        """Wait until every wanted seq has arrived (or the time is up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(want[k] <= {m["seq"] for m in self.got[k]} for k in want):
                break
            time.sleep(0.05)
        time.sleep(0.2)  # stragglers (duplicates) too

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def stored(flash: str) -> dict[str, dict[int, tuple]]:
    """What the meter holds on flash, read with its own readers: block-profile records by n,
    events by seq."""
    with images.image_fs(flash) as fs:
        from meter.storage import checkpoint as store
        from meter.storage import profiles as profile
        from meter.storage import reader as maint
        from meter.storage.layout import CATEGORIES

        energy = store.EnergyStore(fs)
        from meter.metering.energy import Register
        from meter.storage.restore import load_energy

        load_energy(energy, Register(1000), Register(1000))
        profile_recs = dict(maint.read(profile.block(fs, energy.period.head)))
        event_recs = {}
        for cat in range(len(CATEGORIES)):
            for _n, rec in maint.read_events(fs, cat):
                event_recs[rec[0]] = rec
    return {"profile": profile_recs, "events": event_recs}


def run_scenario(scenario: dict, runtime: str, heapsize: str = sc.HEAPSIZE, on_tick=None):
    with tempfile.TemporaryDirectory() as tmp:
        flash = str(Path(tmp) / "flash.img")
        started = time.monotonic()
        if runtime == "cpython":
            raw = sc.run_cpython(scenario, flash, None, on_tick=on_tick)
        else:
            raw = sc.run_micropython(scenario, flash, None, heapsize, on_tick=on_tick)
        raw["runtime"] = runtime
        report = build_report(scenario, raw, flash, time.monotonic() - started)
        return report, stored(flash)


def check_streams(col: Collector, held: dict, epoch: int) -> dict[str, int]:
    """Every stored record arrived, oldest first per stream, each seq always with the same
    content; returns how many duplicates each stream had."""
    dups = {}
    for stream in ("profile", "events"):
        msgs = col.got[stream]
        first: dict[int, dict] = {}
        order = []
        for m in msgs:
            if m["seq"] in first:
                assert m == first[m["seq"]], f"{stream} seq {m['seq']} sent with other content"
            else:
                first[m["seq"]] = m
                order.append(m["seq"])
        assert order == sorted(order), f"{stream} not oldest first"
        assert set(held[stream]) <= set(first), (
            f"{stream} never delivered: {sorted(set(held[stream]) - set(first))}")
        dups[stream] = len(msgs) - len(first)
        for seq, rec in held[stream].items():
            m = first[seq]
            if stream == "profile":
                assert (m["t"] - epoch, m["import_wh"], m["export_wh"], m["flags"]) == (
                    rec[0], rec[1], rec[2], rec[5])
                assert m["v"] == rec[3] / 100 and m["i"] == rec[4] / 1000
            else:
                assert (m["t"] - epoch, m["code"], m["value"]) == (rec[1], rec[2], rec[8])
    # block-profile records: numbered 1, 2, 3... with no gap
    assert sorted(first_seqs(col, "profile")) == list(range(1, len(held["profile"]) + 1))
    return dups


def first_seqs(col: Collector, stream: str) -> set[int]:
    return {m["seq"] for m in col.got[stream]}


EPOCH = 1577836800  # meter time 0 (meter/runtime/clock.py)


@pytest.mark.mosquitto
@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_backlog_drains_after_broker_outage(mosquitto, mpy_build, runtime):
    """An hour without a broker (5-minute profile): afterwards every record is delivered,
    oldest first; on MicroPython within the whole firmware's heap."""
    host, port = mosquitto
    meter_id = f"fwd-{runtime}"  # fixed: the boot heap layout depends on the config (README)
    col = Collector(host, port, meter_id)
    scenario = sc.normalise({
        "duration_s": 7230,
        # export on an import-only meter during the outage: two events
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0},
                 {"at_s": 1200, "volts": 240, "amps": 5, "pf": -1.0},
                 {"at_s": 1500, "volts": 240, "amps": 5, "pf": 1.0}],
        "config": {"meter_id": meter_id, "telemetry_period_s": 30, "profile_period_s": 300,
                   "import_only": True},
        "broker": f"{host}:{port}", "network_outages": [{"at_s": 600, "for_s": 3600}],
        "outages": [{"at_s": 1800, "for_s": 30}],  # a power cut in the outage
    })
    try:
        report, held = run_scenario(scenario, runtime, sc.HEAPSIZE)
        col.settle({k: set(v) for k, v in held.items()})
    finally:
        col.close()
    assert report["reboots"] == 1 and report["network_late"] == 0
    tele = report["telemetry"]  # the run's own head-end saw the same: all, no gap, none due
    assert tele["backlog"] == 0 and tele["seq_gaps"] == {"profile": 0, "events": 0}
    assert tele["records_received"]["profile"] == len(held["profile"])
    assert len(held["profile"]) >= 24 and len(held["events"]) >= 3
    check_streams(col, held, EPOCH)
    # records made during the outage arrived after it, in one drain
    late = [m["seq"] for m in col.got["profile"] if 600 < m["t"] - scenario["start_unix"] < 4200]
    assert len(late) >= 11
    codes = [m["code"] for m in col.got["events"]]
    assert codes.count(125) >= 1 and codes.count(126) >= 1  # reverse flow, and its end
    if runtime == "micropython":
        print("heap_peak_bytes", report["heap_peak_bytes"])
        assert report["heap_peak_bytes"] < heap_bytes(sc.HEAPSIZE)


DAY = 86400


BACK = 3600 + 3 * DAY  # the broker is reachable again
# 25 power cuts in the outage (more power-fail events than their log holds), then one as the
# broker comes back and one in the middle of the drain
CUTS = [{"at_s": 7200 + i * 10000, "for_s": 60} for i in range(25)] + [
    {"at_s": BACK, "for_s": 10}, {"at_s": BACK + 40, "for_s": 10}]


def three_days(host: str, port: int, meter_id: str, poll_ms: int = 1000) -> dict:
    return sc.normalise({
        "duration_s": BACK + 3630,
        "load": [{"at_s": 0, "volts": 240, "amps": 3, "pf": 1.0}],
        "config": {"meter_id": meter_id, "telemetry_period_s": 60, "poll_ms": poll_ms},
        "broker": f"{host}:{port}", "network_outages": [{"at_s": 3600, "for_s": 3 * DAY}],
        "outages": CUTS,
    })


def check_three_days(report: dict, held: dict, col: Collector) -> list[int]:
    """Every block-profile record arrives, numbered 1..N without a gap, oldest first; every
    event still on flash arrives; the overwritten ones are announced (backlog_lost);
    duplicates carry the same seq and content. Returns the announced counts."""
    assert report["reboots"] == 27
    assert len(held["profile"]) == (BACK + 3630) // 900  # 4 a hour, none missing on flash
    dups = check_streams(col, held, EPOCH)
    tele = report["telemetry"]  # and the run's own head-end, in the report
    assert tele["backlog"] == 0 and tele["seq_gaps"]["profile"] == 0
    assert tele["records_received"]["profile"] == len(held["profile"])
    assert dups["profile"] > 0  # the drain's power cut: the cursor lagged, records went again
    # events: the power-fail log holds 20; 26 power cuts before the drain: 6 overwritten
    got = {m["seq"]: m for m in col.got["events"]}
    missing = set(range(1, max(got) + 1)) - set(got)
    assert len(missing) == 6 and not missing & set(held["events"])
    announced = [m["value"] for m in got.values() if m["code"] == 130]  # backlog_lost
    assert sum(announced) == len(missing)
    print("duplicates", dups, "lost announced", announced)
    return announced


@pytest.mark.mosquitto
def test_three_day_broker_outage_loses_no_profile_record(mosquitto, monkeypatch):
    """Three days without a broker, with power cuts in it, as the broker comes back and in
    the drain (CUTS): nothing in the retention window is lost (check_three_days), and the
    cursor is written at most once a minute."""
    from simulator import lfs_vfs

    host, port = mosquitto
    now = [0]
    saves: list[int] = []

    def on_tick(now_ms: int) -> None:
        now[0] = now_ms

    real_open = lfs_vfs.VfsLfs2.open

    def counting_open(self, path, mode="r"):
        if path.startswith("/fwd") and "w" in mode:
            saves.append(now[0])
        return real_open(self, path, mode)

    monkeypatch.setattr(lfs_vfs.VfsLfs2, "open", counting_open)
    col = Collector(host, port, "fwd-3days")
    try:
        report, held = run_scenario(three_days(host, port, "fwd-3days"), "cpython",
                                    on_tick=on_tick)
        col.settle({k: set(v) for k, v in held.items()}, 20)
    finally:
        col.close()
    announced = check_three_days(report, held, col)
    # the cursor: written at most once a minute within a boot, except right after a loss
    # was announced (so that it is announced once)
    boots = [c["at_s"] * 1000 for c in CUTS]
    close = [(a, b) for a, b in zip(saves, saves[1:], strict=False)
             if b - a < 60_000 and not any(a <= t <= b for t in boots)]
    assert len(close) <= len(announced), close
    assert 0 < len(saves) < 60, saves
    print("cursor saves", len(saves))


@pytest.mark.mosquitto
@pytest.mark.micropython
def test_three_day_broker_outage_loses_no_profile_record_micropython(mosquitto, mpy_build):
    """The same three days on MicroPython, in the 64 KiB heap budget. Polls every
    5 s instead of 1 s keep it to about a minute: the IC counts energy between polls, so
    the profile and the events are the same."""
    host, port = mosquitto
    col = Collector(host, port, "fwd-3days-mp")
    try:
        report, held = run_scenario(three_days(host, port, "fwd-3days-mp", 5000), "micropython")
        col.settle({k: set(v) for k, v in held.items()}, 20)
    finally:
        col.close()
    check_three_days(report, held, col)
    assert report["heap_peak_bytes"] < heap_bytes(sc.HEAPSIZE)


def test_backlog_counts_what_waits_and_follows_the_saved_cursor(tmp_path):
    """backlog() over both streams, from the cursor saved on flash; a cursor ahead of the
    logs (after a factory reset) counts everything there is."""
    from types import SimpleNamespace

    from meter.remote import forward
    from meter.storage import events
    from meter.storage import profiles as profile
    from meter.storage.checkpoint import Slots

    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip

    chip = FlashChip(str(tmp_path / "f.img"), 64)
    lfs_vfs.VfsLfs2.mkfs(chip)
    fs = lfs_vfs.VfsLfs2(chip)
    fs.mkdir("/p")
    fs.mkdir("/ev")
    ring = profile.block(fs)
    for i in range(7):
        ring.append(900 * (i + 1), 10, 0, 24000, 1000, 0)
    log = events.EventLog(fs)
    for code in (events.POWER_UP, events.POWER_FAIL, events.CALIB_LOADED):
        assert log.log(100, code)
    meter = SimpleNamespace(store=SimpleNamespace(period=SimpleNamespace(head=ring.n)), log=log,
                            hw=SimpleNamespace(fs=fs))

    def backlog() -> int:
        link = SimpleNamespace(fwd=[-1, -1, 0, -1, -60, 0, 0], meter=meter)  # as Link makes it
        return forward.backlog(link)

    assert backlog() == 7 + 3
    Slots(fs, "/fwd", "<II").save(5, 2)  # delivered up to profile 5, event 2
    assert backlog() == 2 + 1
    newer = Slots(fs, "/fwd", "<II")
    newer.seq = 1
    newer.save(7, 3)  # the newer slot wins
    assert backlog() == 0
    newest = Slots(fs, "/fwd", "<II")
    newest.seq = 2
    newest.save(70, 30)  # ahead of the logs: they were numbered afresh
    assert backlog() == 7 + 3
    chip.close()
