"""The command parser on real MicroPython (64 KiB heap) against a hostile corpus."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from host_tools.headend import REASONS, encode_command
from simulator import scenario as sc
from tests.test_commands import KEY, METER, NOW, RFC4231

ROOT = Path(__file__).resolve().parent.parent


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
        ("replayed", good, "replay"),
        ("older counter", c(19), "replay"),
        ("next accepted", c(22, "reconnect"), "ok"),
    ]
    out = []
    for name, payload, want in cases:
        case = {"name": name, "payload": payload.hex(), "want": want,
                "acts": want == "ok"}
        if name == "clock unset disconnect":
            case["clock_valid"] = False
            case["want"] = "clock_unset"
        out.append(case)
    return out


def test_hostile_corpus_on_micropython(mpy_build, tmp_path):
    corpus = {
        "rfc4231": [[k.hex(), d.hex(), w] for k, d, w in RFC4231],
        "key": KEY.hex(), "meter": METER, "now": NOW, "cases": hostile_corpus(),
        "reasons": {str(k): v for k, v in REASONS.items()},
    }
    path = tmp_path / "corpus.json"
    path.write_text(json.dumps(corpus))
    work = tmp_path / "fs"
    work.mkdir()
    result = subprocess.run(
        sc.micropython_command(str(ROOT / "tests" / "mp" / "command_checks.py"), str(path),
                               str(work)),
        env=sc.micropython_env(), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "commands: 68 passed, 0 failed" in result.stdout, result.stdout
