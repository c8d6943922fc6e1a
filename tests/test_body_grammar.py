"""Issue 18: one strict grammar for a command body, enforced identically by both runtimes.

Every message below carries a correct MAC (the test key over its exact body), so only the
grammar and the range checks stand between it and the relay. The same corpus goes through the
firmware's Commands on CPython in-process and on real MicroPython (tests/mp/grammar_checks.py);
each answer (code, reason, counter, relay operations) must be the expected one on both."""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import sys
from pathlib import Path

import pytest

from host_tools.headend import encode_command
from simulator.micropython_port import micropython_command, micropython_env

ROOT = Path(__file__).resolve().parent.parent
KEY = bytes(range(32))
METER = "meter-0042"
NOW = 1767225600  # 2026-01-01T00:00:00Z
DAY = 86400
END = 1577836800 + 0x3EFFFFFF  # meter/runtime/clock.py: METER_EPOCH_UNIX + MAX_S, 2053-06-29
BAD = "bad args: unknown argument bogus"


def signed(body: bytes | str, upper: bool = False) -> bytes:
    """The body as it is, with a correct MAC over its exact bytes."""
    body = body.encode() if isinstance(body, str) else body
    mac = hmac.new(KEY, body, hashlib.sha256).hexdigest()
    return (mac.upper() if upper else mac).encode() + b" " + body


def body(n: int, cmd: str = "status", args: str = "{}", t: object = NOW - 5,
         exp: object = None, meter: str = METER) -> str:
    """A body written out by hand (canonical unless its parts are not)."""
    exp = NOW + 295 if exp is None else exp
    return f'{{"id":"{meter}","n":{n},"cmd":"{cmd}","args":{args},"t":{t},"exp":{exp}}}'


def corpus() -> list[tuple[str, bytes, tuple]]:
    """(case, message, (code, reason, counter echoed, relay operations)). Counters rise
    through the corpus, so an accepted message never makes a later one a replay."""
    cases: list[tuple[str, bytes, tuple]] = []

    def add(name, message, code, reason=None, acts=0, n=None):
        n = len(cases) + 1 if n is None else n
        # a counter in the ack only where the MAC verified (README "Wire format")
        cases.append((name, message(n), (code, reason, None if code in (7, 8, 4) else n, acts)))

    def head(n, *a, **k):  # as the head-end writes it
        return encode_command(KEY, METER, n, *a, issued=NOW - 5, **k)

    add("canonical status", lambda n: head(n, "status"), 0)
    add("canonical disconnect", lambda n: head(n, "disconnect"), 0, acts=1)
    add("canonical reconnect", lambda n: head(n, "reconnect"), 0, acts=1)
    add("by hand = head-end", lambda n: signed(body(n)), 0)
    add("a day to live", lambda n: signed(body(n, exp=NOW - 5 + DAY)), 0)
    add("head-end sorts args", lambda n: head(n, "time_sync", {"zone": 1, "unix": NOW}), 250,
        "bad args: unknown argument zone")
    # the same command, written other ways: each is malformed (7), whatever its MAC
    for name, variant in [
        ("duplicate key", lambda n: body(n).replace('"cmd":"status"',
                                                    '"cmd":"status","cmd":"disconnect"')),
        ("duplicate arg", lambda n: body(n, "disconnect", '{"a":1,"a":2}')),
        ("trailing space", lambda n: body(n) + " "),
        ("trailing newline", lambda n: body(n) + "\n"),
        ("trailing NUL", lambda n: body(n) + "\0"),
        ("trailing bytes", lambda n: body(n) + "x"),
        ("two objects", lambda n: body(n) + body(n)),
        ("UTF-8 BOM", lambda n: "\ufeff" + body(n)),
        ("leading space", lambda n: " " + body(n)),
        ("spaces", lambda n: json.dumps(json.loads(body(n)))),
        ("leading zero", lambda n: body(n).replace(f'"n":{n}', f'"n":0{n}')),
        ("minus zero", lambda n: body(n, "set_control_mode", '{"mode":-0}')),
        ("plus sign", lambda n: body(n, t=f"+{NOW - 5}")),
        ("trailing comma", lambda n: body(n)[:-1] + ",}"),
        ("trailing comma in args", lambda n: body(n, "set_control_mode", '{"mode":1,}')),
        ("keys reordered", lambda n: json.dumps(dict(sorted(json.loads(body(n)).items())),
                                                separators=(",", ":"))),
        ("args unsorted", lambda n: body(n, "time_sync", f'{{"zone":1,"unix":{NOW}}}')),
        ("args missing", lambda n: body(n).replace('"args":{},', "")),
        ("extra field", lambda n: body(n)[:-1] + ',"x":1}'),
        ("escaped cmd", lambda n: body(n, "st\\u0061tus")),
        ("escaped id", lambda n: body(n, meter="meter-004\\u0032")),
        ("escape in arg", lambda n: body(n, "read_events", '{"category":"oth\\u0065r"}')),
        ("UTF-8 in arg", lambda n: body(n, "read_events", '{"category":"\u00f6ther"}')),
        ("control char in arg", lambda n: body(n, "read_events", '{"category":"a\tb"}')),
        ("float counter", lambda n: body(n).replace(f'"n":{n}', f'"n":{n}.0')),
        ("exponent t", lambda n: body(n, t="1.767e9")),
        ("float exp", lambda n: body(n, exp="1e30")),
        ("float arg", lambda n: body(n, "set_control_mode", '{"mode":1.0}')),
        ("bool counter", lambda n: body(n).replace(f'"n":{n}', '"n":true')),
        ("counter 0", lambda n: body(n).replace(f'"n":{n}', '"n":0')),
        ("counter 2^30", lambda n: body(n).replace(f'"n":{n}', f'"n":{2**30}')),
        ("negative t", lambda n: body(n, t=-5)),
        ("t 2^62", lambda n: body(n, t=2**62, exp=2**62 + 10)),
        ("t before 2020", lambda n: body(n, t=1577836799, exp=1577836800)),
        ("exp 10^30", lambda n: body(n, exp=10**30)),
        ("exp after 2053-06-29", lambda n: body(n, t=END - 10, exp=END + 1)),
        ("exp a day and a second after t", lambda n: body(n, exp=NOW - 5 + DAY + 1)),
        ("exp before t", lambda n: body(n, exp=NOW - 6)),
        ("t as text", lambda n: body(n, t=f'"{NOW - 5}"')),
        ("over_s 2^40", lambda n: body(n, "set_load_limit", f'{{"over_s":{2**40},"watts":5}}')),
        ("arg 2^32", lambda n: body(n, "read_profile", f'{{"start":{2**32}}}')),
        ("nested args", lambda n: body(n, "disconnect", '{"a":{"b":{"c":1}}}')),
        ("list arg", lambda n: body(n, "read_profile", '{"start":[1]}')),
        ("deep nesting", lambda n: body(n, "status", "[" * 400 + "]" * 400)),
        ("args a list", lambda n: body(n, "status", "[]")),
        ("body a list", lambda n: "[" + body(n) + "]"),
    ]:
        assert variant(7) != body(7), name
        add(name, lambda n, v=variant: signed(v(n)), 7)
    add("uppercase MAC", lambda n: signed(body(n), upper=True), 7)
    # every command's arguments are checked against its known keys: unknown ones are 250
    add("bogus arg on status", lambda n: head(n, "status", {"bogus": 1}), 250, BAD)
    add("bogus arg on disconnect", lambda n: head(n, "disconnect", {"bogus": 1}), 250, BAD)
    add("bogus arg on reconnect", lambda n: head(n, "reconnect", {"bogus": True}), 250, BAD)
    add("null arg on disconnect", lambda n: head(n, "disconnect", {"bogus": None}), 250, BAD)
    for cmd, args in [("set_control_mode", {"mode": 1}), ("set_telemetry_period", {"seconds": 60}),
                      ("time_sync", {"unix": NOW}), ("read_profile", {}),
                      ("read_events", {"category": "other"}), ("billing_snapshot", {}),
                      ("reboot", {})]:
        add(f"bogus arg on {cmd}", lambda n, c=cmd, a=args: head(n, c, {**a, "bogus": 1}),
            250, BAD)
    add("bogus arg on set_load_limit", lambda n: head(n, "set_load_limit",
                                                      {"watts": 5, "bogus": 1}),
        250, "bad args: unknown load_limiter key bogus")
    add("over_s 2^24 + 1", lambda n: head(n, "set_load_limit", {"watts": 5, "over_s": 2**24 + 1}),
        250, "bad args: load_limiter.over_s must be a whole number 0-16777216")
    add("arg 2^32 - 1", lambda n: head(n, "read_profile", {"start": 2**32 - 1}), 250,
        "bad args: start must be a whole number 0-1073741823")
    # the checks after the grammar, in their order
    add("other meter", lambda n: signed(body(n, meter="meter-0043")), 8)
    add("bad MAC", lambda n: signed(body(n))[:-2] + b"9}", 4)
    add("expired", lambda n: signed(body(n, t=NOW - 400, exp=NOW - 100)), 6)
    add("unknown command", lambda n: head(n, "open_sesame"), 10)
    add("set_control_mode", lambda n: head(n, "set_control_mode", {"mode": 2}), 0)
    add("replay", lambda n: head(n, "status"), 5, n=len(cases))  # the counter just taken
    add("last: still answered", lambda n: head(n, "status"), 0)
    return cases


def write_corpus(path: Path, cases) -> None:
    head = {"key": KEY.hex(), "meter": METER, "now": NOW}
    path.write_text("\n".join([json.dumps(head)] + [json.dumps(m.hex()) for _c, m, _w in cases])
                    + "\n")


def answers_on_cpython(path: Path, work: Path) -> list[tuple]:
    sys.path.insert(0, str(ROOT / "tests" / "mp"))
    try:
        import grammar_checks
    finally:
        sys.path.pop(0)
    out: list[tuple] = []
    grammar_checks.run(str(path), str(work) + "/", lambda a: out.append(tuple(a)))
    return out


def answers_on_micropython(path: Path, work: Path) -> list[tuple]:
    result = subprocess.run(
        micropython_command(str(ROOT / "tests" / "mp" / "grammar_checks.py"), str(path),
                               str(work) + "/"),
        env=micropython_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return [tuple(json.loads(line[7:])) for line in result.stdout.splitlines()
            if line.startswith("answer ")]


def test_corpus_is_correctly_signed():
    """Each deviation is refused for its grammar, not its MAC: the MAC is over its body."""
    for name, message, _want in corpus():
        if name != "bad MAC":
            mac, _, b = message.partition(b" ")
            assert hmac.compare_digest(bytes.fromhex(mac.decode()),
                                       hmac.new(KEY, b, hashlib.sha256).digest()), name


@pytest.fixture(scope="module")
def both(mpy_build, tmp_path_factory):
    cases = corpus()
    tmp = tmp_path_factory.mktemp("grammar")
    path = tmp / "corpus.jsonl"
    write_corpus(path, cases)
    (tmp / "cp").mkdir()
    (tmp / "mp").mkdir()
    return cases, answers_on_cpython(path, tmp / "cp"), answers_on_micropython(path, tmp / "mp")


def test_both_runtimes_give_every_message_the_same_answer(both):
    cases, cp, mp = both
    assert len(cp) == len(mp) == len(cases)
    differ = [(name, a, b) for (name, _m, _w), a, b in zip(cases, cp, mp, strict=True) if a != b]
    assert differ == []


@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_every_answer_is_the_documented_one(both, runtime):
    cases, cp, mp = both
    got = cp if runtime == "cpython" else mp
    wrong = [(name, want, a) for (name, _m, want), a in zip(cases, got, strict=True)
             if a != want]
    assert wrong == []
