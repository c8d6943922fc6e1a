"""Metering through the whole chain (firmware on the emulated board): a week with bus
faults and IC resets, calibration before the first boot, tamper events, the report."""

from __future__ import annotations

import re

import pytest

from simulator import scenario as sc

CHIP = {"u_gain_error": 0.06, "i_gain_error": -0.09, "phase_error_deg": 1.7,
        "power_offset_w": 0.3}
FAULTS = {"spi_bit_error_rate": 1e-4, "seed": 42,
          "ic_resets_at_s": [3600, 100000, 250000.5, 400000, 550000],
          "stuck_bus": [{"at_s": 300000, "for_s": 120, "level": 255},
                        {"at_s": 500000, "for_s": 30, "level": 0}]}


def daily_load(days):
    load = []
    for d in range(days):
        base = d * 86400
        load += [{"at_s": base, "amps": 0.8, "pf": 0.9},
                 {"at_s": base + 25200, "amps": 12, "pf": 0.95},
                 {"at_s": base + 32400, "amps": 3, "pf": 1.0},
                 {"at_s": base + 64800, "amps": 25, "pf": 0.5},
                 {"at_s": base + 79200, "amps": 2, "pf": 0.8, "lead": True}]
    return load


def test_week_with_bit_errors_resets_and_stuck_bus_stays_class1():
    scenario = sc.normalise({"duration_s": 7 * 86400, "load": daily_load(7), "chip": CHIP,
                             "calibrate": True, "faults": FAULTS})
    report = sc.run(scenario, "cpython")
    true, metered = report["true_import_wh"], report["meter_import_wh"]
    assert true > 150_000
    assert abs(metered / true - 1) <= 0.01
    assert report["rejected_reads"] > 1000  # the bit errors were there, and caught
    for kind in ("import", "export"):  # reactive: class 2 (IEC 62053-23)
        true_q, metered_q = report[f"true_q_{kind}_varh"], report[f"meter_q_{kind}_varh"]
        assert true_q > 1000 and abs(metered_q / true_q - 1) <= 0.02, kind
    assert report["ic_reinits"] == 5  # one per scheduled reset, none from bit errors
    names = [e["name"] for e in report["events"]]
    assert names.count("bus_fault") == 2 and names.count("bus_restored") == 2
    assert "calibration_loaded" in names and "read_rejected" in names
    bus = [e["t_s"] for e in report["events"] if e["name"].startswith("bus_")]
    assert bus == [300000, 300120, 500000, 500030]


def test_ade7953_half_day_with_faults_stays_class1():
    faults = {"spi_bit_error_rate": 1e-4, "seed": 5, "ic_resets_at_s": [5000, 40000],
              "stuck_bus": [{"at_s": 30000, "for_s": 60, "level": 0}]}
    scenario = sc.normalise({"duration_s": 43200, "board": "sim-ade7953",
                             "load": daily_load(1), "chip": CHIP, "calibrate": True,
                             "faults": faults})
    report = sc.run(scenario, "cpython")
    true, metered = report["true_import_wh"], report["meter_import_wh"]
    assert abs(metered / true - 1) <= 0.01
    assert report["ic_reinits"] == 2 and report["rejected_reads"] > 20
    for kind in ("import",):
        true_q, metered_q = report[f"true_q_{kind}_varh"], report[f"meter_q_{kind}_varh"]
        assert abs(metered_q / true_q - 1) <= 0.02, kind
    names = [e["name"] for e in report["events"]]
    assert names.count("bus_fault") == 1 and names.count("bus_restored") == 1


def test_day_without_errors_or_faults_within_0_1_percent():
    scenario = sc.normalise({"duration_s": 86400, "load": daily_load(1)})
    report = sc.run(scenario, "cpython")
    true, metered = report["true_import_wh"], report["meter_import_wh"]
    assert abs(metered / true - 1) <= 0.001
    assert metered <= true
    assert report["rejected_reads"] == 0 and report["ic_reinits"] == 0
    assert report["instant"] == pytest.approx({"volts": 240.0, "amps": 2.0,
                                               "neutral_amps": 2.0, "watts": 384.0,
                                               "var": -288.0, "va": 480.0, "pf": 0.8,
                                               "hz": 50.0})


def test_uncalibrated_unit_is_out_of_class():
    scenario = sc.normalise({"duration_s": 6 * 3600, "load": daily_load(1), "chip": CHIP})
    report = sc.run(scenario, "cpython")
    assert abs(report["meter_import_wh"] / report["true_import_wh"] - 1) > 0.01


def test_tamper_events_occur_and_restore():
    scenario = sc.normalise({"duration_s": 3600, "config": {"import_only": True}, "load": [
        {"at_s": 0, "amps": 10, "pf": 1.0},
        {"at_s": 600, "amps": 10, "neutral_amps": 4, "pf": 1.0},  # earth load
        {"at_s": 1200, "amps": 10, "pf": 1.0},
        {"at_s": 1800, "amps": 5, "pf": -1.0},  # reverse flow on an import-only meter
        {"at_s": 2400, "amps": 5, "pf": 1.0},
    ]})
    report = sc.run(scenario, "cpython")
    events = [(e["name"], e["t_s"]) for e in report["events"] if e["name"] != "power_up"]
    names = [n for n, _t in events]
    assert names == ["tamper_neutral", "tamper_neutral_end", "reverse_flow", "reverse_flow_end"]
    times = [t for _n, t in events]
    assert 600 < times[0] <= 640 and 1200 < times[1] <= 1240
    assert 1800 <= times[2] <= 1802 and 2400 <= times[3] <= 2462


@pytest.mark.parametrize("bad, words", [
    ({"chip": {"u_gain_error": 2}}, "chip.u_gain_error: must be from -0.5 to 0.5"),
    ({"chip": {"bogus": 1}}, "chip.bogus: unknown key"),
    ({"faults": {"spi_bit_error_rate": 0.5}}, "faults.spi_bit_error_rate: must be from 0 to 0.01"),
    ({"faults": {"stuck_bus": [{"at_s": 1}]}}, "faults.stuck_bus[0].for_s: missing"),
    ({"faults": {"stuck_bus": [{"at_s": 1, "for_s": 1, "level": 3}]}}, "level: must be one of 0"),
    ({"faults": {"ic_resets_at_s": 5}}, "must be a list"),
    ({"calibrate": "yes"}, "calibrate: must be true or false"),
    ({"board": "sim-ade7954"}, "board: must be one of sim, sim-ade7953"),
    ({"load": [{"at_s": 0, "lead": 1}]}, "load[0].lead: must be true or false"),
])
def test_bad_metering_keys_get_clear_errors(bad, words):
    raw = {"duration_s": 10}
    raw.update(bad)
    with pytest.raises(sc.ScenarioError, match=re.escape(words)):
        sc.normalise(raw)


def test_calibration_survives_reboot_and_lives_on_the_data_partition():
    """A re-deploy replaces the code filesystem only; like a reboot, the firmware then
    finds /calib.json on the data partition and loads it again."""
    scenario = sc.normalise({"duration_s": 7200, "chip": CHIP, "calibrate": True,
                             "load": [{"at_s": 0, "amps": 8, "pf": 0.5}],
                             "outages": [{"at_s": 3600, "for_s": 10}]})
    report = sc.run(scenario, "cpython")
    names = [e["name"] for e in report["events"]]
    # the outage is also recorded by the power-fail input's last gasp
    assert names == ["power_up", "calibration_loaded", "power_up", "power_fail",
                     "calibration_loaded"]
    true, metered = report["true_import_wh"], report["meter_import_wh"]
    assert metered <= true and abs(metered / true - 1) <= 0.01


def test_calibrate_command(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    image = tmp_path / "data.img"
    result = subprocess.run(
        [sys.executable, "-m", "host_tools.calibrate", "--chip",
         '{"u_gain_error": 0.05, "phase_error_deg": -1.2}', "--flash", str(image)],
        cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "checksums: 0x" in result.stdout and image.exists()
    from simulator import lfs_vfs
    from simulator.device.flash import FlashChip
    from simulator.device.shim import Partition

    chip = FlashChip(str(image), 64)
    try:
        with lfs_vfs.VfsLfs2(Partition(chip, "meterdata")).open("/calib.json", "r") as f:
            assert '"ic": "atm90e26"' in f.read()
    finally:
        chip.close()
    bad = subprocess.run([sys.executable, "-m", "host_tools.calibrate", "--chip", '{"x": 1}'],
                         cwd=root, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
