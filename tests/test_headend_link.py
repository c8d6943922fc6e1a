"""The head-end command line (keys, exit codes) and the firmware link's back-off."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools import headend
from tests.conftest import FakeClock, free_port

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "host_tools.headend", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_newkey_file_is_private_and_key_never_printed(tmp_path):
    keys, out = tmp_path / "keys.json", tmp_path / "m1.key"
    result = cli("--keys", str(keys), "newkey", "m1", "--out", str(out))
    assert result.returncode == 0, result.stderr
    key = headend.KeyFile(keys).key("m1")
    assert out.read_bytes() == key and len(key) == 32
    for path in (keys, out):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert key.hex() not in result.stdout + result.stderr
    # rotation: a new key, the counter keeps counting upwards
    kf = headend.KeyFile(keys)
    assert [kf.next_counter("m1") for _ in range(3)] == [1, 2, 3]
    assert cli("--keys", str(keys), "newkey", "m1").returncode == 0
    assert kf.key("m1") != key and kf.next_counter("m1") == 4


def test_unknown_meter_and_bad_usage(tmp_path):
    keys = tmp_path / "keys.json"
    result = cli("--keys", str(keys), "--broker", "127.0.0.1:1", "status", "nobody")
    assert result.returncode == 2 and "no such file (newkey creates it)" in result.stderr
    headend.KeyFile(keys).new_key("somebody")
    result = cli("--keys", str(keys), "--broker", "127.0.0.1:1", "status", "nobody")
    assert result.returncode == 2 and "no key for meter 'nobody'" in result.stderr
    assert cli("--keys", str(keys), "status", "nobody").returncode == 2  # no --broker


def test_unreachable_broker_and_silent_meter_time_out(tmp_path, mosquitto):
    keys = tmp_path / "keys.json"
    headend.KeyFile(keys).new_key("ghost")
    result = cli("--keys", str(keys), "--broker", f"127.0.0.1:{free_port()}", "status", "ghost")
    assert result.returncode == 3, result.stderr
    host, port = mosquitto
    result = cli("--keys", str(keys), "--broker", f"{host}:{port}", "--timeout", "1",
                 "disconnect", "ghost")
    assert result.returncode == 3 and "no valid ack" in result.stderr
    assert result.stdout == ""


def test_forged_ack_is_ignored():
    key = bytes(range(32))
    body = json.dumps({"id": "m", "n": 1, "code": 0}).encode()
    good = headend.mac(key, body, b"ack ").hex().encode() + b" " + body
    assert headend.decode_ack(key, good)["code"] == 0
    assert headend.decode_ack(bytes(32), good) is None
    # a command MAC (no "ack " prefix) is not an ack MAC
    assert headend.decode_ack(key, headend.mac(key, body).hex().encode() + b" " + body) is None


def signed_ack(key: bytes, body: dict) -> bytes:
    raw = json.dumps(body).encode()
    return headend.mac(key, raw, b"ack ").hex().encode() + b" " + raw


def test_match_ack_takes_only_the_ack_to_this_very_command():
    """Issue 17: the head-end acts only on a signed v 2 ack whose "for" is the digest of the
    command it sent; a signed ack for any other message is "foreign" (shown, never taken),
    one that does not verify is "unsigned"."""
    k1, k2 = bytes(range(32)), bytes(range(1, 33))
    first = headend.encode_command(k1, "m", 5, "reconnect", issued=1767225600)
    captured = signed_ack(k1, {"v": 2, "id": "m", "n": 5, "code": 0, "t": 1,
                               "for": headend.ack_for(first)})
    assert headend.match_ack(k1, "m", first, captured)[0] == "ours"
    # a later command that reuses counter 5: under the same key (a key file restored from a
    # backup, two head-ends with one file) the captured ack is foreign; after a key rotation
    # (the meter re-provisioned, its counter started over) it does not even verify
    later = headend.encode_command(k1, "m", 5, "disconnect", issued=1767229200)
    assert headend.match_ack(k1, "m", later, captured) == ("foreign",
                                                            headend.decode_ack(k1, captured))
    rotated = headend.encode_command(k2, "m", 5, "disconnect", issued=1767229200)
    assert headend.match_ack(k2, "m", rotated, captured) == ("unsigned", None)
    # the meter's answer to a forged command carrying our counter: its own digest, no n
    forged = headend.encode_command(bytes(32), "m", 5, "disconnect", issued=1767229200)
    bad_mac = {"v": 2, "id": "m", "n": None, "code": 4, "t": 1, "for": headend.ack_for(forged)}
    assert headend.match_ack(k1, "m", later, signed_ack(k1, bad_mac))[0] == "foreign"
    # ... and the same to our own command (the meter holds another key, say): ours
    mine = dict(bad_mac, **{"for": headend.ack_for(later)})
    assert headend.match_ack(k1, "m", later, signed_ack(k1, mine))[0] == "ours"
    ok = {"v": 2, "id": "m", "n": 5, "code": 0, "t": 1, "for": headend.ack_for(later)}
    for wrong in ({"v": 1}, {"v": None}, {"v": "2"}, {"id": "other"}, {"n": 4}, {"for": None}):
        assert headend.match_ack(k1, "m", later, signed_ack(k1, dict(ok, **wrong)))[0] == (
            "foreign"), wrong
    old_firmware = {"id": "m", "n": 5, "code": 0, "t": 1}  # ack v 1: no binding
    assert headend.match_ack(k1, "m", later, signed_ack(k1, old_firmware))[0] == "foreign"
    assert "before ack v2" in headend.ignored_line("m", "foreign", old_firmware)
    assert "attack" in headend.ignored_line("m", "foreign", bad_mac)
    # a signed body whose code is not a number is no ack (it would break REASONS)
    assert headend.decode_ack(k1, signed_ack(k1, dict(ok, code=[1]))) is None


@pytest.fixture
def link_module():
    from simulator import cpython_usocket

    sys.modules.setdefault("usocket", cpython_usocket)
    sys.modules.setdefault("ustruct", __import__("struct"))
    sys.modules.setdefault("ubinascii", __import__("binascii"))
    from meter.remote import link

    return link


def retry_delays(link_module, meter_id: str, attempts: int) -> list[int]:
    from meter.runtime.clock import METER_EPOCH_UNIX
    from meter.storage.config import defaults

    cfg = dict(defaults(), meter_id=meter_id, mqtt_host="127.0.0.1", mqtt_port=free_port(),
               mqtt_timeout_s=1)
    clock = FakeClock(METER_EPOCH_UNIX + 1000)
    ln = link_module.Link(cfg, clock, None, None, None)
    delays = []
    for _ in range(attempts):
        ln.service(None)  # refused at once: the link fails and schedules a retry
        assert ln.client is None
        delays.append(ln._retry_s - clock.mono())  # the link's timers: the monotonic clock
        clock.t += ln._retry_s - 1 - clock.mono()
        ln.service(None)  # not yet: no attempt before the back-off has passed
        clock.t += 1
    assert ln.failures == attempts
    return delays


def test_backoff_doubles_with_jitter_between_1s_and_5min(link_module):
    delays = retry_delays(link_module, "meter-a", 12)
    base = [min(2 ** k, 300) for k in range(12)]
    for d, b in zip(delays, base, strict=True):
        assert b <= d <= min(b + b // 2, 300)
    assert delays[0] == 1 and delays[-1] == 300
    other = retry_delays(link_module, "meter-b", 12)
    assert other != delays  # meters do not retry in lockstep
