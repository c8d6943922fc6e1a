"""`python -m simulator run`: the scenario contract, the report, power cuts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import scenario as sc

ROOT = Path(__file__).resolve().parent.parent
# The meter reads the IC once a second; what flowed since the last read is still in the IC.
READ_LAG_WH = 0.1


def run_cli(tmp_path: Path, text: str, *extra: str) -> subprocess.CompletedProcess:
    path = tmp_path / "s.json"
    path.write_text(text)
    return subprocess.run([sys.executable, "-m", "simulator", "run", str(path), *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("text, words", [
    ("{not json", "not valid JSON"),
    ('{"duration_s": 10, "bogus": 1}', "bogus: unknown key"),
    ('{"duration_s": -5}', "duration_s: must not be negative"),
    ('{"load": []}', "duration_s: missing"),
    ('{"duration_s": 10, "load": [{"at_s": -1, "amps": 1}]}', "load[0].at_s: must not be"),
    ('{"duration_s": 10, "outages": [{"at_s": 1}]}', "outages[0].for_s: missing"),
    ('{"duration_s": 10, "config": {"poll_ms": "fast"}}', "config.poll_ms: must be a whole"),
    ('{"duration_s": 10, "start": "yesterday"}', "ISO-8601"),
    ('[1, 2]', "must be a JSON object"),
])
def test_malformed_scenarios_get_one_line_errors(tmp_path, text, words):
    result = run_cli(tmp_path, text)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert words in lines[0]


def test_cli_writes_report(tmp_path):
    out = tmp_path / "report.json"
    result = run_cli(tmp_path, json.dumps({
        "duration_s": 600, "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1}],
    }), "--report", str(out))
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    for key in ("true_import_wh", "true_export_wh", "meter_import_wh", "meter_export_wh",
                "reboots", "events", "flash", "runtime", "wall_s"):
        assert key in report
    assert report["true_import_wh"] == pytest.approx(400.0)
    assert 400.0 - READ_LAG_WH <= report["meter_import_wh"] <= 400.0


def test_import_and_export_within_resolution():
    scenario = sc.normalise({"duration_s": 3600, "load": [
        {"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0},
        {"at_s": 1000, "volts": 230, "amps": 5, "pf": -0.8},
    ]})
    report = sc.run(scenario, "cpython")
    assert report["true_export_wh"] > 600
    for kind in ("import", "export"):
        true, metered = report[f"true_{kind}_wh"], report[f"meter_{kind}_wh"]
        assert true - READ_LAG_WH <= metered <= true
    assert report["reboots"] == 0
    assert [e["name"] for e in report["events"]] == ["power_up"]


def test_outage_reboots_and_never_invents_energy():
    scenario = sc.normalise({"duration_s": 7200,
                             "load": [{"at_s": 0, "volts": 240, "amps": 20, "pf": 1.0}],
                             "outages": [{"at_s": 1800, "for_s": 300},
                                         {"at_s": 5000, "for_s": 60}]})
    report = sc.run(scenario, "cpython")
    assert report["reboots"] == 2
    # Power-up events, and the power failure the last gasp recorded, logged on return with
    # the time the power went and how long it stayed away.
    names = ["power_up", "power_up", "power_fail", "power_up", "power_fail"]
    assert [e["name"] for e in report["events"]] == names
    assert [e["t_s"] for e in report["events"]] == [0, 2100, 1800, 5060, 5000]
    true = report["true_import_wh"]
    assert true == pytest.approx(4800 * (7200 - 360) / 3600)
    metered = report["meter_import_wh"]
    assert metered <= true
    # The sim board has a power-fail input: each outage loses at most 1 Wh (last gasp).
    assert report["lost_wh_per_outage_max"] <= 1.0
    assert true - metered <= 2 * 1.0 + READ_LAG_WH


def test_same_scenario_same_report():
    scenario = sc.normalise({"duration_s": 1800, "load": [{"at_s": 0, "amps": 3, "pf": 0.9}],
                             "outages": [{"at_s": 900, "for_s": 10}]})
    first = sc.run(scenario, "cpython")
    second = sc.run(scenario, "cpython")
    for report in (first, second):
        report.pop("wall_s")
        report.pop("sim_s_per_wall_s")
    assert first == second
