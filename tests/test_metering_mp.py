"""Metering on real MicroPython: the firmware's calibration arithmetic gives the registers
CPython gives, and a calibrated, faulted meter reads the same on both runtimes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from simulator import scenario as sc
from simulator.micropython_port import micropython_command, micropython_env

ROOT = Path(__file__).resolve().parent.parent


def test_calibration_arithmetic_same_on_micropython(mpy_build):
    script = ROOT / "tests" / "mp" / "metering_checks.py"
    mp = subprocess.run(micropython_command(str(script)), env=micropython_env(),
                        capture_output=True, text=True, timeout=120)
    assert mp.returncode == 0, mp.stdout + mp.stderr
    runner = ("import sys, runpy; sys.path[:0] = [sys.argv[1], sys.argv[2]]; "
              "from simulator.device.shim import micropython; "
              "sys.modules['micropython'] = micropython; "
              "runpy.run_path(sys.argv[3], run_name='__main__')")
    cp = subprocess.run([sys.executable, "-c", runner, str(ROOT / "firmware"), str(ROOT),
                         str(script)], capture_output=True, text=True, timeout=120)
    assert cp.returncode == 0, cp.stderr
    assert mp.stdout == cp.stdout
    assert "bounds True" in mp.stdout


@pytest.mark.micropython
@pytest.mark.parametrize("board", ["sim", "sim-ade7953"])
def test_calibrated_meter_with_faults_same_on_both_runtimes(mpy_build, board):
    scenario = sc.normalise({
        "duration_s": 2400, "board": board, "config": {"import_only": True},
        "chip": {"u_gain_error": -0.07, "i_gain_error": 0.05, "phase_error_deg": -1.6,
                 "power_offset_w": -0.2},
        "calibrate": True,
        "faults": {"spi_bit_error_rate": 2e-4, "seed": 3, "ic_resets_at_s": [700]},
        "load": [{"at_s": 0, "amps": 10, "pf": 1.0},
                 {"at_s": 600, "amps": 30, "pf": 0.5},
                 {"at_s": 1200, "amps": 2, "pf": 0.8, "lead": True, "neutral_amps": 0.5},
                 {"at_s": 1800, "amps": 4, "pf": -1.0}],
    })
    cpy = sc.run(scenario, "cpython")
    mpy = sc.run(scenario, "micropython")
    for key in ("true_import_wh", "meter_import_wh", "meter_export_wh", "events",
                "rejected_reads", "ic_reinits", "instant"):
        assert mpy[key] == cpy[key], key
    for kind in ("import", "export"):
        true, metered = cpy[f"true_{kind}_wh"], cpy[f"meter_{kind}_wh"]
        assert abs(metered / true - 1) <= 0.01, kind
    names = [e["name"] for e in cpy["events"]]
    assert names.count("ic_reinitialised") == 1
    assert "tamper_neutral" in names and "reverse_flow" in names
    assert 0 < mpy["heap_peak_bytes"] < 64 * 1024
