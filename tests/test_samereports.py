"""simulator/samereports.py: the comparison of two scenario reports, and one short run of
the whole script against HEAD (the full comparison is a script the lead runs, not a test)."""

import json
import subprocess

import pytest

from simulator import samereports as sr
from tests.conftest import ROOT

REPORT = {
    "true_import_wh": 698.4, "reboots": 0, "runtime": "micropython",
    "wall_s": 5.121, "sim_s_per_wall_s": 703.0, "heap_peak_bytes": 50432,
    "heap_device_layer_bytes": 13728,
    "events": [{"t_s": 0, "code": 1, "name": "power_up"}],
    "flash": {"bytes_written": 7904, "erases": 6, "erases_max_block": 2,
              "erases_per_block": [2, 1, 1, 0]},
    "telemetry": {"published": 58, "received": {"ack": 4}, "register_decreases": []},
}


def _changed(**changes):
    report = json.loads(json.dumps(REPORT))
    for path, value in changes.items():
        *parents, last = path.split("__")
        node = report
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return report


def test_the_same_report_is_the_same_whatever_its_volatile_figures():
    new = _changed(wall_s=99.0, sim_s_per_wall_s=1.5, heap_peak_bytes=40000,
                   heap_device_layer_bytes=1)
    assert sr.differences(REPORT, new) == []
    assert sr.describe("one_day.json", "cpython", []) == [
        f"{'one_day.json':<36} {'cpython':<12} SAME"]


@pytest.mark.parametrize("changes, expected", [
    ({"reboots": 1}, [("reboots", 0, 1)]),
    ({"telemetry__received__ack": 5}, [("telemetry.received.ack", 4, 5)]),
    ({"events__0__name": "power_fail"}, [("events[0].name", "power_up", "power_fail")]),
    ({"reboots": 0.0}, [("reboots", 0, 0.0)]),  # 0 and 0.0 are different report text
    ({"telemetry__register_decreases": [{"at": 1}]},
     [("telemetry.register_decreases", [], sr.ABSENT),
      ("telemetry.register_decreases[0].at", sr.ABSENT, 1)]),
])
def test_a_changed_value_is_reported_with_both_values(changes, expected):
    assert sr.differences(REPORT, _changed(**changes)) == expected
    lines = sr.describe("x.json", "cpython", expected)
    assert lines[0].endswith(f"DIFFERENT: {len(expected)} key(s)")
    assert f"    {expected[0][0]}: base {json.dumps(expected[0][1])}" in lines[1]


def test_an_extra_or_missing_entry_is_reported():
    new = _changed()
    new["events"].append({"t_s": 5, "code": 6, "name": "power_fail"})
    del new["reboots"]
    assert sr.differences(REPORT, new) == [
        ("events[1].code", sr.ABSENT, 6), ("events[1].name", sr.ABSENT, "power_fail"),
        ("events[1].t_s", sr.ABSENT, 5), ("reboots", 0, sr.ABSENT)]


def test_micropythons_erase_distribution_is_ignored_but_not_its_totals():
    paths = sr.VOLATILE_PATHS["micropython"]
    worn = _changed(flash__erases_per_block=[1, 1, 1, 1], flash__erases_max_block=1)
    assert sr.differences(REPORT, worn, paths=paths) == []
    assert [d[0] for d in sr.differences(REPORT, worn, paths=sr.VOLATILE_PATHS["cpython"])] \
        == ["flash.erases_max_block", "flash.erases_per_block[0]",
            "flash.erases_per_block[3]"]
    more = _changed(flash__erases=7, flash__bytes_written=8000)
    assert sr.differences(REPORT, more, paths=paths) == [
        ("flash.bytes_written", 7904, 8000), ("flash.erases", 6, 7)]


def test_the_cache_is_keyed_by_the_scenarios_content(tmp_path):
    one = sr.SCENARIO_DIR / "one_day.json"
    assert sr.cache_name(one, "cpython").startswith("one_day-")
    assert sr.cache_name(one, "cpython") != sr.cache_name(one, "micropython")
    copy = tmp_path / "one_day.json"
    copy.write_bytes(one.read_bytes())
    assert sr.cache_name(copy, "cpython") == sr.cache_name(one, "cpython")
    copy.write_bytes(one.read_bytes().replace(b"86400", b"86399", 1))
    assert sr.cache_name(copy, "cpython") != sr.cache_name(one, "cpython")


def _dirty() -> bool:
    return bool(subprocess.run(["git", "status", "--porcelain", "-uno", "--", "firmware", "boards",
                                "simulator"], cwd=ROOT, capture_output=True,
                               text=True).stdout.strip())


def test_the_script_compares_with_a_temporary_worktree_of_the_base(tmp_path, capsys):
    """Against HEAD itself (a short CPython run): SAME, the temporary worktree gone, and the
    second comparison takes the base's report from the cache."""
    if _dirty():
        pytest.skip("firmware/, boards/ or simulator/ differ from HEAD: reports may differ")
    scenario = tmp_path / "short.json"
    scenario.write_text(json.dumps({
        "duration_s": 600, "outages": [{"at_s": 200, "for_s": 30}],
        "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 0.9}]}))
    args = ["--base", "HEAD", "--runtime", "cpython", "--scenario", str(scenario),
            "--cache", str(tmp_path / "cache")]
    before = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True,
                            text=True).stdout
    assert sr.main(args) == 0
    out = capsys.readouterr().out
    assert "1 base run(s) not cached" in out
    assert f"{'short.json':<36} {'cpython':<12} SAME" in out
    assert subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True,
                          text=True).stdout == before
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                          text=True).stdout.strip()
    cached = tmp_path / "cache" / head / sr.cache_name(scenario, "cpython")
    report = json.loads(cached.read_text())
    assert report["reboots"] == 1 and report["runtime"] == "cpython"
    # a base report that differs (as an older revision's would) is reported, exit status 1
    cached.write_text(json.dumps(dict(report, reboots=2)))
    assert sr.main(args) == 1
    out = capsys.readouterr().out
    assert "0 base run(s) not cached" in out
    assert "    reboots: base 2  now 1" in out
