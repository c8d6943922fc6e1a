"""The command parser on real MicroPython (64 KiB heap) against a hostile corpus."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from host_tools.headend import REASONS, encode_command
from simulator.micropython_port import micropython_command, micropython_env
from tests.test_commands import KEY, METER, NOW, RFC4231

ROOT = Path(__file__).resolve().parent.parent


BAD_ARGS = [  # (case, command, args, reason; "..." ends a prefix)
    ("mode out of range", "set_control_mode", {"mode": 9},
     "bad args: mode must be a whole number 0-6"),
    ("mode as text", "set_control_mode", {"mode": "1"},
     "bad args: mode must be a whole number 0-6"),
    ("mode as bool", "set_control_mode", {"mode": True},
     "bad args: mode must be a whole number 0-6"),
    ("negative limit", "set_load_limit", {"watts": -5},
     "bad args: watts must be a whole number 0-1000000"),
    ("limiter key", "set_load_limit", {"watts": 5, "x": 1},
     "bad args: unknown load_limiter key x"),
    ("limiter value", "set_load_limit", {"watts": 5, "over_s": 2**24 + 1},
     "bad args: load_limiter.over_s must be a whole number 0-16777216"),
    ("limiter list", "set_load_limit", {"watts": 5, "over_s": [1]}, "malformed"),
    ("reversed range", "read_profile", {"since": 10, "until": 1},
     "bad args: since is after until"),
    ("float start", "read_profile", {"start": 1.5}, "malformed"),  # no float in a body
    ("big start", "read_profile", {"start": 2**30},
     "bad args: start must be a whole number 0-1073741823"),
    ("profile name", "read_profile", {"profile": {"a": 1}}, "malformed"),
    ("category", "read_events", {"category": "tamper"}, "bad args: category must be..."),
    ("no category", "read_events", {}, "bad args: category must be..."),
    ("time as text", "time_sync", {"unix": "now"}, "bad args: unix must be..."),
    ("time outside", "time_sync", {"unix": NOW + 10**5}, "time outside the command's validity"),
    ("telemetry too short", "set_telemetry_period", {"seconds": 1},
     "bad args: seconds must be a whole number 5-86400"),
    ("telemetry null", "set_telemetry_period", {"seconds": None},
     "bad args: seconds must be a whole number 5-86400"),
    ("billing arg", "billing_snapshot", {"x": 1}, "bad args: unknown argument x"),
    ("reboot arg", "reboot", {"now": True}, "bad args: unknown argument now"),
]


def hostile_corpus() -> list[dict]:
    def c(n, name="disconnect", **kw):
        return encode_command(kw.pop("key", KEY), kw.pop("meter", METER), n, name,
                              kw.pop("args", None), issued=kw.pop("issued", NOW - 5),
                              ttl_s=kw.pop("ttl", 300))

    good = c(20)
    cases = [
        ("oversized", b"{" * 5000, "too_large"),
        ("empty", b"", "malformed"),
        ("truncated", good[:90], "malformed"),
        ("truncated body", good[:-3], "malformed"),
        ("not json", b"0" * 64 + b" hello", "malformed"),
        ("bad hex mac", b"zz" * 32 + good[64:], "malformed"),
        ("nested", b"0" * 64 + b" " + b"[" * 900, "malformed"),
        ("list body", b"0" * 64 + b" []", "malformed"),
        ("wrong types", b"0" * 64 + b' {"id":1,"n":"2","cmd":3,"t":"x","exp":null}', "malformed"),
        ("bool counter", b"0" * 64 + b' {"id":"' + METER.encode()
         + b'","n":true,"cmd":"status","t":1,"exp":2}', "malformed"),
        ("other meter", c(21, meter="meter-9999"), "wrong_meter"),
        ("bad mac", c(21, key=bytes(32)), "bad_mac"),
        ("flipped byte", good[:-2] + b"9}", "bad_mac"),
        ("expired", c(21, issued=NOW - 1000), "expired"),
        ("unknown command", c(21, "open_sesame"), "unknown_command"),
        ("clock unset disconnect", c(21), "clock_unset"),
        ("accepted", good, "ok"),
        # (an exact copy gets the recorded answer: tests/test_commands.py, test_storage.py)
        ("replayed", c(20, issued=NOW - 6), "replay"),  # counter 20 again, other bytes
        ("older counter", c(19), "replay"),
        ("next accepted", c(22, "reconnect"), "ok"),
    ]
    # arguments of the other commands (meter/remote/dispatch.py): refused with a reason, nothing
    # done
    n = 23
    for name, cmd_name, args, want in BAD_ARGS + [
        # code 0 with a reason: a new meter's profile holds no closed period yet
        ("read_profile empty", "read_profile", {"since": NOW - 86400}, "no period closed yet"),
        ("read_events ok", "read_events", {"category": "other"}, "ok"),
        ("mode without control", "set_control_mode", {"mode": 2}, "no supply control"),
    ]:
        cases.append((name, c(n, cmd_name, args=args), want))
        n += 1
    out = []
    for name, payload, want in cases:
        if len(set(payload)) == 1 and len(payload) > 1024:  # sent as (byte, count)
            case = {"name": name, "fill": [payload[0], len(payload)], "want": want,
                    "acts": False}
        else:
            case = {"name": name, "payload": payload.hex(), "want": want,
                    "acts": want == "ok" and name in ("accepted", "next accepted")}
        if name == "clock unset disconnect":
            case["clock_valid"] = False
            case["want"] = "clock_unset"
        out.append(case)
    return out


def test_hostile_corpus_on_micropython(mpy_build, tmp_path):
    corpus = {
        "rfc4231": [[k.hex(), d.hex(), w] for k, d, w in RFC4231],
        "key": KEY.hex(), "meter": METER, "now": NOW,
        "reasons": {str(k): v for k, v in REASONS.items()},
    }
    cases = hostile_corpus()
    path = tmp_path / "corpus.json"
    # one JSON document a line (the header, then each case): read one at a time in 64 KiB
    path.write_text("\n".join(json.dumps(x) for x in [corpus, *cases]) + "\n")
    work = tmp_path / "fs"
    work.mkdir()
    result = subprocess.run(
        micropython_command(str(ROOT / "tests" / "mp" / "command_checks.py"), str(path),
                               str(work)),
        env=micropython_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    want = 8 + 5 * len(cases)  # HMAC vectors, equal, rate limit; 5 per case
    assert f"commands: {want} passed, 0 failed" in result.stdout, result.stdout
