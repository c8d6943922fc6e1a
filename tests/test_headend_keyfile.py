"""The head-end on damaged key files and odd arguments (issue 18, part 3): exit status 2, one
line on stderr naming the file, the meter and what is wrong, no traceback, and the key file
never rewritten while it is damaged. Also: two head-ends at once never reuse a counter."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from host_tools import headend

ROOT = Path(__file__).resolve().parent.parent
PY = str(ROOT / ".venv" / "bin" / "python")
KEY = "ab" * 32
GOOD = {"meters": {"m1": {"key": KEY, "counter": 7}}}
NOWHERE = "127.0.0.1:1"  # no broker: a key-file check that let a command through exits 3


def headend_cli(*args: str | bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    result = subprocess.run([PY, "-m", "host_tools.headend", *args], cwd=ROOT,
                            capture_output=True, timeout=timeout)
    result.stderr = result.stderr.decode("utf-8", "replace")
    result.stdout = result.stdout.decode("utf-8", "replace")
    return result


def entry(**kw) -> dict:
    return {"meters": {"m1": {"key": KEY, "counter": 7, **kw}}}


def without(name: str) -> dict:
    data = entry()
    del data["meters"]["m1"][name]
    return data


# (key file bytes, what stderr must say of it)
DAMAGED = {
    "entry is a list": ({"meters": {"m1": [KEY, 7]}}, "the entry is an array"),
    "entry is null": ({"meters": {"m1": None}}, "the entry is null"),
    "key not hex": (entry(key="zz" * 32), "key is not hex digits"),
    "key with spaces": (entry(key="ab " * 21 + "a"), "key is not hex digits"),
    "key odd-length hex": (entry(key="abc"), "key has 3 hex digits, not 64"),
    "key too short": (entry(key="ab" * 16), "key has 32 hex digits, not 64"),
    "key too long": (entry(key="ab" * 33), "key has 66 hex digits, not 64"),
    "key integer": (entry(key=5), "key is a number"),
    "key null": (entry(key=None), "key is null"),
    "counter string": (entry(counter="7"), "counter is a string"),
    "counter null": (entry(counter=None), "counter is null"),
    "counter list": (entry(counter=[7]), "counter is an array"),
    "counter float": (entry(counter=7.0), "counter is a number, not a whole number"),
    "counter bool": (entry(counter=True), "counter is true/false"),
    "counter negative": (entry(counter=-1), "counter -1 is outside 0 to 1073741823"),
    "counter 2^30": (entry(counter=1 << 30), "counter 1073741824 is outside 0 to 1073741823"),
    "counter missing": (without("counter"), "no counter"),
    "counter NaN": (b'{"meters": {"m1": {"key": "' + KEY.encode() + b'", "counter": NaN}}}',
                    "not valid JSON"),
    "damaged JSON": (b'{"meters": {"m1": {"key": "', "not valid JSON"),
    "empty file": (b"", "not valid JSON"),
    "not UTF-8": (b'{"meters": {"\xff": 1}}', "not valid JSON"),
    "nested too deep": (b"[" * 100_000, "not valid JSON"),
    "not an object": ([GOOD], "not a head-end key file"),
    "meters not an object": ({"meters": [1]}, "not a head-end key file"),
    "no meters": ({"m1": {"key": KEY, "counter": 7}}, "not a head-end key file"),
    "id with a slash": ({"meters": {"m1": GOOD["meters"]["m1"], "a/b": {"counter": 0}}},
                        "meter 'a/b': not a meter id"),
    "id with a wildcard": ({"meters": {"m1": GOOD["meters"]["m1"], "m#": {"counter": 0}}},
                           "meter 'm#': not a meter id"),
    "id too long": ({"meters": {"m1": GOOD["meters"]["m1"], "x" * 70_000: {"counter": 0}}},
                    "(70000 characters): not a meter id"),
    "id a lone surrogate": (b'{"meters": {"\\ud800": {"counter": 0}}}',
                            "meter '\\ud800': not a meter id"),
    "another meter damaged": ({"meters": {"m1": GOOD["meters"]["m1"], "m2": {"key": 1,
                                                                           "counter": 0}}},
                              "meter 'm2': key is a number"),
}


def as_bytes(content: dict | list | bytes) -> bytes:
    return content if isinstance(content, bytes) else json.dumps(content).encode()


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == headend.EXIT_USAGE, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("command", [["set_control_mode", "m1", "2"], ["newkey", "m1"],
                                     ["newkey", "m9"]])
@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_key_file_is_an_error_and_stays_as_it_is(tmp_path, case, command):
    content, problem = DAMAGED[case]
    keys = tmp_path / "keys.json"
    keys.write_bytes(as_bytes(content))
    before = keys.read_bytes()
    line = one_error_line(headend_cli("--keys", str(keys), "--broker", NOWHERE, *command))
    assert f"key file {keys}" in line and problem in line, line
    assert "meter '" in line, line  # the meter: the one commanded, or the damaged entry's
    assert len(line) < 400  # a 70,000-character id is cut short
    assert keys.read_bytes() == before
    assert not (tmp_path / "keys.json.tmp").exists()


@pytest.mark.parametrize("command", [["status", "m1"], ["newkey", "m1"]])
def test_a_directory_in_place_of_the_key_file(tmp_path, command):
    """What an unreadable file gets (as root chmod does not stop reads: a directory)."""
    keys = tmp_path / "keys.json"
    keys.mkdir()
    line = one_error_line(headend_cli("--keys", str(keys), "--broker", NOWHERE, *command))
    assert line == f"error: key file {keys} (meter 'm1'): cannot read it: Is a directory"


def test_a_missing_key_file_for_a_command(tmp_path):
    keys = tmp_path / "keys.json"
    line = one_error_line(headend_cli("--keys", str(keys), "--broker", NOWHERE, "status", "m1"))
    assert line == f"error: key file {keys} (meter 'm1'): no such file (newkey creates it)"
    assert not keys.exists()
    keys.write_text(json.dumps(GOOD))
    line = one_error_line(headend_cli("--keys", str(keys), "--broker", NOWHERE, "status", "m2"))
    assert line == f"error: no key for meter 'm2' in {keys}"


def test_the_last_counter_is_not_passed(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(entry(counter=(1 << 30) - 1)))
    before = keys.read_bytes()
    line = one_error_line(headend_cli("--keys", str(keys), "--broker", NOWHERE, "status", "m1"))
    assert f"key file {keys} (meter 'm1'): every counter up to 1073741823 is used" in line
    assert keys.read_bytes() == before


LONE = "\udcff"  # what Python makes of a byte that is not UTF-8 in argv


@pytest.mark.parametrize("args,problem", [
    (["--broker", "host:0", "status", "m1"], "argument --broker: port must be 1 to 65535"),
    (["--broker", "host:65536", "status", "m1"], "argument --broker: port must be 1 to 65535"),
    (["--broker", "host:http", "status", "m1"], "argument --broker: expected HOST:PORT"),
    (["--broker", "host:\u00b2", "status", "m1"], "argument --broker: expected HOST:PORT"),
    (["--broker", ":1883", "status", "m1"], "argument --broker: expected HOST:PORT"),
    (["--broker", "a..b:1883", "status", "m1"], "argument --broker: not a host name"),
    (["--broker", "a\x01b:1883", "status", "m1"], "argument --broker: not a host name"),
    (["--broker", NOWHERE, "--timeout", "inf", "status", "m1"], "argument --timeout: must be"),
    (["--broker", NOWHERE, "--timeout", "nan", "status", "m1"], "argument --timeout: must be"),
    (["--broker", NOWHERE, "--timeout", "1e300", "status", "m1"], "argument --timeout: must"),
    (["--broker", NOWHERE, "--timeout", "86401", "status", "m1"], "argument --timeout: must"),
    (["--broker", NOWHERE, "--timeout", "0", "status", "m1"], "argument --timeout: must be"),
    (["--broker", NOWHERE, "--timeout", "-1", "status", "m1"], "argument --timeout: must be"),
    (["--broker", NOWHERE, "--ttl", "0", "status", "m1"], "argument --ttl: must be whole"),
    (["--broker", NOWHERE, "--ttl", "9" * 30, "status", "m1"], "argument --ttl: must be whole"),
    (["--broker", NOWHERE, "status", "a/b"], "argument meter_id: meter id 'a/b': an id must be"),
    (["--broker", NOWHERE, "status", "m+"], "argument meter_id: meter id 'm+': an id must be"),
    (["--broker", NOWHERE, "status", "m#"], "argument meter_id: meter id 'm#': an id must be"),
    (["--broker", NOWHERE, "status", ""], "argument meter_id: meter id '': an id must be"),
    (["--broker", NOWHERE, "status", "m 1"], "argument meter_id: meter id 'm 1'"),
    (["--broker", NOWHERE, "status", "x" * 33], f"meter id '{'x' * 33}': an id must be"),
    (["--broker", NOWHERE, "status", "x" * 70_000], "(70000 characters): an id must be"),
    (["--broker", NOWHERE, "status", "m\u00e9"], "meter id 'm\\xe9': an id must be"),
    (["--broker", NOWHERE, "status", b"m\xff"], "meter id 'm\\udcff': an id must be"),
    (["newkey", "a/b"], "argument meter_id: meter id 'a/b': an id must be"),
    (["newkey", "m" + LONE], "meter id 'm\\udcff'"),
    (["--broker", NOWHERE, "read_profile", "m1", "--args", "[" * 100_000],
     "--args must be a JSON object"),
    (["--broker", NOWHERE, "read_profile", "m1", "--since", "99999-01-01"], "not a time"),
    (["--broker", NOWHERE, "--user", "u", "--password-file", "/nonexistent/pw", "status",
      "m1"], "--password-file /nonexistent/pw: cannot read it: No such file or directory"),
    (["--broker", NOWHERE, "--cafile", "/nonexistent/ca.pem", "status", "m1"],
     "--cafile /nonexistent/ca.pem: cannot read it: No such file or directory"),
    (["newkey", "m1", "--out", "/nonexistent/m1.key"],
     "--out /nonexistent/m1.key (meter 'm1'): cannot write it: No such file or directory"),
    (["newkey", "m1", "--out", "/tmp"], "--out /tmp (meter 'm1'): cannot write it: Is a dir"),
])
def test_odd_arguments_are_one_line_errors(tmp_path, args, problem):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(GOOD))
    before = keys.read_bytes()
    line = one_error_line(headend_cli("--keys", str(keys), *args))
    assert problem in line, line
    assert len(line) < 400
    assert keys.read_bytes() == before  # no counter spent, no key replaced


@pytest.mark.parametrize("keys", ["", ".", "/tmp/.."])
def test_a_key_file_name_that_is_no_file(keys):
    line = one_error_line(headend_cli("--keys", keys, "newkey", "m1"))
    assert f"--keys {keys!r} is not a file name" in line


def test_valid_ids_and_files_still_work(tmp_path):
    keys = tmp_path / "keys.json"
    for meter_id in ("m1", "Meter_0042-b", "x" * 32):
        result = headend_cli("--keys", str(keys), "newkey", meter_id)
        assert result.returncode == 0, result.stderr
    kf = headend.KeyFile(keys)
    assert len(kf.key("x" * 32)) == 32 and kf.next_counter("m1") == 1
    data = json.loads(keys.read_text())
    data["meters"]["gone"] = {"counter": 40}  # a withdrawn key: its counter is kept
    keys.write_text(json.dumps(data))
    assert kf.next_counter("m1") == 2
    assert headend_cli("--keys", str(keys), "newkey", "gone").returncode == 0
    assert kf.next_counter("gone") == 41
    # a command that passes every check reaches for the broker (none there: exit 3)
    result = headend_cli("--keys", str(keys), "--broker", "[::1]:1", "--timeout", "86400",
                         "--ttl", "86400", "status", "m1")
    assert result.returncode == headend.EXIT_TIMEOUT, result.stderr
    assert "Traceback" not in result.stderr and kf.next_counter("m1") == 4


COUNT = """
import sys
from host_tools.headend import KeyFile
keys = KeyFile(sys.argv[1])
print(" ".join(str(keys.next_counter("m1")) for _ in range(int(sys.argv[2]))))
"""


def test_two_head_ends_at_once_never_reuse_a_counter(tmp_path):
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(entry(counter=0)))
    procs = [subprocess.Popen([PY, "-c", COUNT, str(keys), "60"], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    got = []
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0
        got += [int(n) for n in out.split()]
    assert sorted(got) == list(range(1, 121))
    assert json.loads(keys.read_text())["meters"]["m1"]["counter"] == 120
    assert os.stat(keys).st_mode & 0o777 == 0o600


def test_read_events_category_numbers():
    assert headend._category("5") == 5
    assert headend._category("\u00b2") == "\u00b2"  # a digit to isdigit(), not to int()
    assert headend._category("control") == "control"
