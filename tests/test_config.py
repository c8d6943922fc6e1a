"""The meter's config loader (firmware/meter/storage/config.py, with its boot-time overlay
meter/storage/config_rules.py) refuses a provisioned meter id outside the one id rule (valid_id)
and a value outside its range (RANGES), on CPython and on real MicroPython alike; the meter then
runs on its defaults and logs CONFIG_REJECTED."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from meter.storage import config
from meter.storage import config_rules as cfgcheck

from simulator.micropython_port import micropython_command, micropython_env
from tests.conftest import DirFS

ID_RULE = "must be 1 to 32 letters (a-z, A-Z), digits, - or _"  # the words, pinned
# (/config.json's text, what load() says of it: None when it takes it)
CASES = [
    ('{"meter_id": "a/b"}', "config key meter_id " + ID_RULE),
    ('{"meter_id": "m+"}', "config key meter_id " + ID_RULE),
    ('{"meter_id": "m#"}', "config key meter_id " + ID_RULE),
    ('{"meter_id": "m 1"}', "config key meter_id " + ID_RULE),
    ('{"meter_id": ""}', "config key meter_id " + ID_RULE),
    ('{"meter_id": "m\\u00e9"}', "config key meter_id " + ID_RULE),
    ('{"meter_id": "m\\ud800"}', "config key meter_id " + ID_RULE),
    (json.dumps({"meter_id": "x" * 33}), "config key meter_id " + ID_RULE),
    (json.dumps({"meter_id": "x" * 70_000}), "config.json is over 4096 bytes"),
    (json.dumps({"meter_id": "x" * 32}), None),
    ('{"meter_id": "Meter_0042-b"}', None),
    ('{"poll_ms": 99}', "config key poll_ms must be 100 to 60000"),
    ('{"poll_ms": 60001}', "config key poll_ms must be 100 to 60000"),
    ('{"poll_ms": 100, "checkpoint_min_s": 0, "relay_retries": 0}', None),
    ('{"telemetry_period_s": 0}', "config key telemetry_period_s must be 1 to 86400"),
    ('{"mqtt_port": 0}', "config key mqtt_port must be 1 to 65535"),
    ('{"mqtt_port": 65536}', "config key mqtt_port must be 1 to 65535"),
    ('{"profile_period_s": 30}', "config key profile_period_s must be 60 to 86400"),
    ('{"profile_period_s": 1000}', "config key profile_period_s must divide a day"),
    ('{"profile_period_s": 86400, "load_limit_w": 1000000}', None),
    ('{"control_mode": 7}', "config key control_mode must be 0 to 6"),
    ('{"load_limit_w": -1}', "config key load_limit_w must be 0 to 1000000"),
    ('{"load_limit_w": 1000001}', "config key load_limit_w must be 0 to 1000000"),
    (json.dumps({"mqtt_host": "h" * 254}), "config key mqtt_host must have 0 to 253 characters"),
    (json.dumps({"mqtt_host": "h" * 253}), None),
    ('{"mqtt_ca": ""}', "config key mqtt_ca must have 1 to 64 characters"),
    ('{"imax_a": 0}', "config key imax_a must be 1 to 200"),
    ('{"poll_ms": "fast"}', "config key poll_ms has the wrong type"),
    ('[1]', "config.json is not an object"),
    ('{"poll', "config.json is not valid JSON"),
]


@pytest.mark.parametrize("text,problem", CASES)
def test_the_loader_refuses_what_is_out_of_range(tmp_path, text, problem):
    (tmp_path / "config.json").write_text(text)
    cfg, err = config.load(DirFS(tmp_path))
    assert err == problem
    if problem is None:
        assert cfg == {**config.defaults(), **json.loads(text)}
    else:
        assert cfg == config.defaults()  # all defaults: nothing of a refused file is taken


def test_every_number_and_string_has_a_range_and_the_defaults_are_in_it():
    table = cfgcheck.RANGES.split()
    ranged = table[::3]
    assert len(ranged) == len(set(ranged)) and len(table) == 3 * len(ranged)
    for key, value in config.defaults().items():
        if type(value) in (int, str) and key != "meter_id":
            assert key in ranged, key
        assert cfgcheck.check({key: value}) is None, key
    assert set(ranged) <= set(config.defaults())
    assert cfgcheck.check(config.defaults()) is None


@pytest.mark.parametrize("meter_id,ok", [
    ("m", True), ("A-z_09", True), ("x" * 32, True), ("x" * 33, False), ("", False),
    ("a/b", False), ("+", False), ("#", False), ("a b", False), ("\ud800", False),
    ("\u0661", False), ("m\n", False), (None, False), (5, False), (b"m1", False),
])
def test_valid_id(meter_id, ok):
    assert cfgcheck.valid_id(meter_id) is ok


PROBE = """
import json
import sys
from meter.storage import config

class FS:
    def open(self, path, mode="r"):
        return open(DIR + "/" + str(self.case) + path, mode)

out = []
fs = FS()
for case in range(N):
    fs.case = case
    cfg, err = config.load(fs)
    out.append([err, cfg == config.defaults()])
out.append("meter.storage.config_rules" in sys.modules)  # the overlay: unloaded after use
print(json.dumps(out))
"""


def test_the_same_on_micropython(mpy_build, tmp_path):
    """Under the 64 KiB heap: a 70,000-byte file is refused unread (read whole, it ended in a
    MemoryError at boot)."""
    for case, (text, _) in enumerate(CASES):
        (tmp_path / str(case)).mkdir()
        (tmp_path / str(case) / "config.json").write_text(text)
    head = f"DIR = {str(tmp_path)!r}\nN = {len(CASES)}\n"
    result = subprocess.run(micropython_command("-c", head + PROBE),
                            env=micropython_env(), capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    got = json.loads(result.stdout)
    expect = [[problem, problem is not None or text == "{}"] for text, problem in CASES]
    assert got == expect + [False]


def test_the_rules_cost_little_heap(mpy_build):
    """config.py is an overlay (the app keeps the dict it returns): imported from the ROMFS
    image it takes 2,688 B of heap while loaded, its
    package apart (2,624 B before the id rule and the ranges; with them in it: 3,008 B).
    meter/storage/config_rules.py is loaded at boot only, and unloaded."""
    probe = ("import romstart\nimport gc\nimport meter.storage\ngc.collect()\n"
             "base = gc.mem_alloc()\n"
             "import meter.storage.config\ngc.collect()\nprint(meter.storage.config.__file__,"
             " gc.mem_alloc() - base)\n")
    result = subprocess.run(micropython_command("-c", probe, heapsize="1m"),
                            env=micropython_env(), capture_output=True, text=True,
                            timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    where, size = result.stdout.split()
    assert where == "/rom/meter/storage/config.mpy" and int(size) <= 2750, size


def test_the_unloaded_overlay_is_loaded_again_on_cpython(tmp_path):
    (tmp_path / "config.json").write_text('{"poll_ms": 5}')
    for _ in range(2):
        assert config.load(DirFS(tmp_path))[1] == "config key poll_ms must be 100 to 60000"
    assert "meter.storage.config_rules" not in sys.modules
