"""The scenario schema (simulator/schema.py SCHEMA): every number finite and within the
range docs/scenarios.md "Ranges" states, events within the run, one-line errors naming the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from simulator import paths, schema
from simulator import scenario as sc

ROOT = Path(__file__).resolve().parent.parent
D = '{"duration_s": 60, '  # a one-minute run, then the key under test


def body(text: str) -> str:
    return D + text + "}"


# (scenario JSON text, the key the one-line error must start with). Each of these ends in a
# traceback, a hang or a silently wrong run without the schema (issues 10 and 18).
BAD = [
    ('{"duration_s": 1e400}', "duration_s"),
    ('{"duration_s": NaN}', "duration_s"),
    ('{"duration_s": Infinity}', "duration_s"),
    ('{"duration_s": 1e12}', "duration_s"),
    ('{"duration_s": 0}', "duration_s"),
    ('{"duration_s": 0.0001}', "duration_s"),  # 0 ms: a division by zero
    (body('"outages": [{"at_s": 10, "for_s": 1e308}]'), "outages[0].for_s"),
    (body('"outages": [{"at_s": 10, "for_s": 0}]'), "outages[0].for_s"),
    (body('"outages": [{"at_s": 10, "for_s": 0.0001}]'), "outages[0].for_s"),
    (body('"load": [{"at_s": 0, "volts": 1e308}]'), "load[0].volts"),
    (body('"load": [{"at_s": 0, "amps": 1e308}]'), "load[0].amps"),
    (body('"load": [{"at_s": 0, "volts": 240000}]'), "load[0].volts"),
    (body('"load": [{"at_s": 0, "amps": 5000}]'), "load[0].amps"),
    (body('"load": [{"at_s": 0, "amps": 130}]'), "load[0].amps"),  # > 2 x imax_a 60
    (body('"config": {"imax_a": 10}, "load": [{"at_s": 0, "amps": 21}]'), "load[0].amps"),
    (body('"load": [{"at_s": 0, "amps": 1, "neutral_amps": 1e308}]'), "load[0].neutral_amps"),
    (body('"load": [{"at_s": 0, "hz": 1e308}]'), "load[0].hz"),
    (body('"load": [{"at_s": 0, "hz": 0}]'), "load[0].hz"),
    (body('"load": [{"at_s": 0, "pf": NaN}]'), "load[0].pf"),
    (body('"load": [{"at_s": NaN}]'), "load[0].at_s"),
    (body('"load": [{"at_s": 1e9}]'), "load[0].at_s"),
    # events past the end (dropped silently before)
    (body('"commands": [{"at_s": 100, "cmd": "status"}]'), "commands[0].at_s"),
    (body('"commands": [{"at_s": 60, "raw": "x"}]'), "commands[0].at_s"),
    (body('"port_commands": [{"at_s": 90, "cmd": "disconnect"}]'), "port_commands[0].at_s"),
    (body('"outages": [{"at_s": 60, "for_s": 5}]'), "outages[0].at_s"),
    (body('"network_outages": [{"at_s": 70, "for_s": 5}]'), "network_outages[0].at_s"),
    (body('"button": [{"at_s": 99, "hold_s": 3}]'), "button[0].at_s"),
    (body('"button": [{"at_s": 9, "hold_s": NaN}]'), "button[0].hold_s"),
    (body('"cover_open": [{"at_s": 61, "for_s": 3}]'), "cover_open[0].at_s"),
    (body('"faults": {"ic_resets_at_s": [1, 100]}'), "faults.ic_resets_at_s[1]"),
    (body('"faults": {"stuck_bus": [{"at_s": 80, "for_s": 1}]}'), "faults.stuck_bus[0].at_s"),
    (body('"faults": {"relay_weld_at_s": Infinity}'), "faults.relay_weld_at_s"),
    (body('"faults": {"relay_coil_open_at_s": 120}'), "faults.relay_coil_open_at_s"),
    (body('"faults": {"spi_bit_error_rate": NaN}'), "faults.spi_bit_error_rate"),
    (body('"faults": {"seed": -1}'), "faults.seed"),
    (body('"faults": {"power_cut_at_write": 1.5}'), "faults.power_cut_at_write"),
    (body('"commands": [{"at_s": 1, "cmd": "status", "ttl_s": 1e400}]'), "commands[0].ttl_s"),
    # overlapping windows
    (body('"outages": [{"at_s": 10, "for_s": 20}, {"at_s": 15, "for_s": 5}]'), "outages[1]"),
    (body('"cover_open": [{"at_s": 30, "for_s": 5}, {"at_s": 10, "for_s": 25}]'),
     "cover_open[0]"),
    (body('"button": [{"at_s": 10, "hold_s": 5}, {"at_s": 12, "hold_s": 1}]'), "button[1]"),
    # configuration (issue 18): silently wrong runs or hangs
    (body('"config": {"vref_v": 0}'), "config.vref_v"),
    (body('"config": {"imax_a": 0}'), "config.imax_a"),
    (body('"config": {"mqtt_timeout_s": 0}'), "config.mqtt_timeout_s"),
    (body('"config": {"meter_id": "a/b"}'), "config.meter_id"),
    (body('"config": {"meter_id": ""}'), "config.meter_id"),
    (body('"config": {"meter_id": "' + "m" * 33 + '"}'), "config.meter_id"),
    (body('"config": {"poll_ms": 0}'), "config.poll_ms"),
    (body('"config": {"poll_ms": 1}'), "config.poll_ms"),
    (body('"config": {"poll_ms": 1000000000}'), "config.poll_ms"),
    (body('"config": {"poll_ms": 1000.0}'), "config.poll_ms"),
    (body('"config": {"mqtt_port": 70000}'), "config.mqtt_port"),
    (body('"config": {"profile_period_s": 700}'), "config.profile_period_s"),
    (body('"config": {"profile_period_s": 30}'), "config.profile_period_s"),
    (body('"config": {"wifi_key": "short"}'), "config.wifi_key"),
    (body('"config": {"load_limiter": {"over_s": 10000000000}}'), "config.load_limiter.over_s"),
    (body('"config": {"nonsense": 1}'), "config.nonsense"),
    # start: what the simulator itself cannot represent
    (body('"start": "1969-12-31T23:59:59Z"'), "start"),
    (body('"start": "2026-02-30T00:00:00Z"'), "start"),
    (body('"start": "2026-01-01T00:00:00"'), "start"),  # no offset
    (body('"start": "9999-12-31T23:59:00Z"'), "duration_s"),  # would end after 9999
    # files: at the root, in a missing folder, too big, not hex
    (body('"files": {"/": "00"}'), 'files["/"]'),
    (body('"files": {"/a/b/c": "00"}'), 'files["/a/b/c"]'),
    (body('"files": {"/x/": "00"}'), 'files["/x/"]'),
    (body('"files": {"/big": "' + "00" * 300 * 1024 + '"}'), "files"),
    (body('"files": {"/ca.der": "zz"}'), 'files["/ca.der"]'),
    (body('"files": {"/p": "00", "/p/block.0": "00"}'), 'files["/p"]'),
    # chip errors
    (body('"chip": {"u_gain_error": NaN}'), "chip.u_gain_error"),
    (body('"chip": {"power_offset_w": 1e308}'), "chip.power_offset_w"),
]


def one_line_naming(message: str, key: str) -> None:
    assert "\n" not in message and "Traceback" not in message, message
    assert message.startswith(key + ": "), message


@pytest.mark.parametrize("text, key", BAD, ids=[f"{i}-{k}" for i, (_t, k) in enumerate(BAD)])
def test_bad_scenarios_get_one_line_naming_the_key(text, key):
    with pytest.raises(sc.ScenarioError) as err:
        sc.normalise(json.loads(text))
    one_line_naming(str(err.value), key)


def run_cli(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "simulator", "run", str(path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("text, key", [
    ('{"duration_s": 1e400}', "duration_s"),
    ('{"duration_s": NaN}', "duration_s"),
    (body('"outages": [{"at_s": 10, "for_s": 1e308}]'), "outages[0].for_s"),
    (body('"load": [{"at_s": 0, "volts": 1e308}]'), "load[0].volts"),
    (body('"commands": [{"at_s": 100, "cmd": "status"}]'), "commands[0].at_s"),
    (body('"config": {"poll_ms": 0}'), "config.poll_ms"),
    (body('"start": "1969-12-31T23:59:59Z"'), "start"),
    ("{not json", "not valid JSON"),
])
def test_cli_exit_status_2_one_line_path_once(tmp_path, text, key):
    path = tmp_path / "bad.json"
    path.write_text(text)
    result = run_cli(path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: {path}: {key}"), lines[0]
    assert lines[0].count(str(path)) == 1


def test_cli_names_a_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('{"duration_s": 10, "config": {"meter_id": "z\xe4hler"}}'.encode("latin-1"))
    result = run_cli(path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {path}: not UTF-8 text (byte 44)"


def test_the_ends_of_each_range_are_accepted():
    good = {  # the ends of the documented ranges
        "duration_s": schema.MAX_DURATION_S, "start": "1970-01-01T00:00:00Z",
        "config": {"imax_a": 200, "vref_v": 100, "poll_ms": 60_000, "mqtt_timeout_s": 60,
                   "meter_id": "A-z_09" * 5 + "ab"},
        "load": [{"at_s": 0, "volts": 480, "amps": 400, "neutral_amps": 0, "pf": -1, "hz": 45},
                 {"at_s": schema.MAX_DURATION_S - 0.001, "volts": 0, "amps": 0, "pf": 1,
                  "hz": 65}],
        "outages": [{"at_s": 10, "for_s": 5}, {"at_s": 15, "for_s": schema.MAX_DURATION_S}],
        "files": {"/p/block.0": "00" * schema.FILES_MAX_BYTES},
        "chip": {"u_gain_error": -0.5, "phase_error_deg": 10, "power_offset_w": -100},
        "faults": {"relay_weld_at_s": 0, "seed": 2**32 - 1},
    }
    scenario = sc.normalise(good)
    assert scenario["duration_ms"] == schema.MAX_DURATION_S * 1000
    assert scenario["load"][0][1:3] == [480.0, 400.0]
    late = dict(good, start="9999-12-31T23:59:58Z", duration_s=1, load=[], outages=[])
    assert sc.normalise(late)["start_unix"] == 253402300798
    for lost_rtc in ("2000-01-01T00:00:00Z", "2106-03-01T00:00:00Z"):  # a meter copes
        sc.normalise(dict(late, start=lost_rtc))


def test_every_firmware_config_key_has_a_range():
    defaults = paths.firmware("meter.storage.config").defaults()
    assert set(schema.CONFIG_SCHEMA) == set(defaults)


def test_docs_state_the_schema_ranges():
    page = (ROOT / "docs" / "scenarios.md").read_text()
    ranges = page.split("\n## Ranges\n", 1)[1].split("\n## ", 1)[0]
    for row in schema.ranges_table():
        assert row in ranges, f"docs/scenarios.md 'Ranges' lacks: {row}"


@pytest.mark.parametrize("args, line", [
    (["--chip", "notjson"], "error: --chip: not valid JSON at column 1"),
    (["--chip", '{"u_gain_error": NaN}'], "error: --chip.u_gain_error: must be a finite number"),
    (["--chip", '{"phase_error_deg": 1e400}'], "error: --chip.phase_error_deg: must be a finite"),
    (["--chip", '{"u_gain_error": 3}'], "error: --chip.u_gain_error: must be from -0.5 to 0.5"),
    (["--chip", "[1]"], "error: --chip: must be a JSON object"),
    (["--flash", "/nonexistent/folder/data.img"], "error: --flash: /nonexistent/folder/data.img: "
     "the folder /nonexistent/folder does not exist"),
])
def test_calibrate_input_gets_one_line_naming_the_option(args, line):
    result = subprocess.run([sys.executable, "-m", "host_tools.calibrate", *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(line), result.stderr


def test_calibrate_leaves_a_file_that_is_no_flash_image_alone(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not a flash image\n")
    result = subprocess.run([sys.executable, "-m", "host_tools.calibrate", "--flash",
                             str(notes)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "not a 262144-byte flash image" in result.stderr
    assert notes.read_text() == "not a flash image\n"
