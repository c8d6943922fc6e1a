"""Command verification on CPython: RFC 4231 HMAC vectors, the check order, replay and
expiry rules, counter persistence, rate-limited rejection events, and a hypothesis fuzz of
the parser. Commands are built by the head-end library (Python's own hmac module), so the
firmware's HMAC is checked against an independent implementation."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from meter.remote import commands
from meter.runtime.clock import METER_EPOCH_UNIX
from meter.storage import events

from host_tools.headend import REASONS, ack_for, decode_ack, encode_command
from tests.conftest import DirFS, FakeClock

KEY = bytes(range(32))
METER = "meter-0042"
NOW = 1767225600  # 2026-01-01T00:00:00Z

# RFC 4231 test cases 1-4, 6, 7 (key, data, HMAC-SHA256); case 5 is a truncated output.
RFC4231 = [
    (b"\x0b" * 20, b"Hi There",
     "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"),
    (b"Jefe", b"what do ya want for nothing?",
     "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
    (b"\xaa" * 20, b"\xdd" * 50,
     "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe"),
    (bytes(range(1, 26)), b"\xcd" * 50,
     "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b"),
    (b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First",
     "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    (b"\xaa" * 131, b"This is a test using a larger than block-size key and a larger than "
     b"block-size data. The key needs to be hashed before being used by the HMAC algorithm.",
     "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2"),
]


class FakeLog:
    def __init__(self) -> None:
        self.entries: list[tuple[int, int]] = []
        self.values: list[int] = []

    def log(self, now: int, code: int, value: int = 0) -> None:
        self.entries.append((now, code))
        self.values.append(value)


class Recorder:
    """A handler that records what reached it (what would have touched the relay)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def disconnect(self, args):
        self.calls.append(("disconnect", args))
        return 0, {"state": 1, "relay": "open"}

    def reconnect(self, args):
        self.calls.append(("reconnect", args))
        return 0, {"state": 2, "relay": "open"}

    def status(self, args):
        self.calls.append(("status", args))
        return 0, {"state": 0, "relay": "closed"}


def make(tmp_path: Path, clock: FakeClock | None = None, key: bytes | None = KEY):
    handler = Recorder()
    log = FakeLog()
    cmds = commands.Commands(DirFS(tmp_path), METER, clock or FakeClock(NOW), log, handler,
                             key or b"")
    return cmds, handler, log


def cmd(n: int, name: str = "disconnect", key: bytes = KEY, meter: str = METER,
        issued: int = NOW - 10, ttl: int = 300, args: dict | None = None) -> bytes:
    return encode_command(key, meter, n, name, args, issued=issued, ttl_s=ttl)


def ack_of(cmds_ack: bytes) -> dict:
    ack = decode_ack(KEY, cmds_ack)
    assert ack is not None, cmds_ack
    return ack


@pytest.mark.parametrize("key,data,want", RFC4231)
def test_hmac_rfc4231(key, data, want):
    assert commands.hmac_sha256(key, data).hex() == want


def test_hmac_prefix_is_concatenation():
    assert commands.hmac_sha256(KEY, b"body", b"ack ") == hmac.new(KEY, b"ack body",
                                                                 hashlib.sha256).digest()


def test_constant_time_equal():
    a = bytes(32)
    assert commands.equal(a, bytes(32))
    assert not commands.equal(a, bytes(31) + b"\x01")
    assert not commands.equal(a, b"\x01" + bytes(31))
    assert not commands.equal(a, bytes(31))


def test_accepts_and_persists_counter_before_acting(tmp_path):
    cmds, handler, _log = make(tmp_path)
    ack = ack_of(cmds.handle(cmd(5)))
    assert ack["code"] == 0 and ack["n"] == 5 and ack["relay"] == "open"
    assert handler.calls == [("disconnect", {})]
    # a new boot reads the counter back: another message with that counter is a replay
    again, handler2, _ = make(tmp_path)
    assert again.last == 5
    assert ack_of(again.handle(cmd(5, issued=NOW - 20)))["reason"] == "replay"
    assert handler2.calls == []
    # and the very same bytes (a redelivery, its ack lost) get its recorded answer, with the
    # supply's state now, and do not act again
    ack = ack_of(again.handle(cmd(5)))
    assert (ack["code"], ack["n"], ack["repeat"], ack["relay"]) == (0, 5, True, "closed")
    assert handler2.calls == [("status", {})]


def test_check_order_and_reasons(tmp_path):
    cmds, handler, log = make(tmp_path)
    cases = [
        (b"x" * 1025, "too_large"),
        (cmd(1)[:-1], "malformed"),
        (cmd(1, meter="meter-0043"), "wrong_meter"),
        (cmd(1, key=bytes(32)), "bad_mac"),
        (cmd(1, issued=NOW - 400), "expired"),
        (cmd(1, name="self_destruct"), "unknown_command"),
    ]
    for payload, reason in cases:
        ack = ack_of(cmds.handle(payload))
        assert ack["reason"] == reason, (payload, ack)
        assert ack["code"] == {v: k for k, v in REASONS.items()}[reason]
    assert handler.calls == []
    assert cmds.last == 0  # nothing rejected moved the counter
    # once one is accepted, older and equal counters are replays
    assert ack_of(cmds.handle(cmd(10, issued=NOW - 20)))["code"] == 0
    for n in (10, 9, 1):
        assert ack_of(cmds.handle(cmd(n)))["reason"] == "replay"
    assert len(handler.calls) == 1
    # the rejections were logged, but rate-limited: one event for the whole burst
    assert log.entries == [(NOW - METER_EPOCH_UNIX, events.CMD_REJECTED + 9)]


def test_wrong_types_are_malformed(tmp_path):
    cmds, handler, _ = make(tmp_path)
    good = json.loads(cmd(1).split(b" ", 1)[1])
    for field, value in [("n", "1"), ("n", True), ("n", 0), ("n", 2**31), ("n", 1.0),
                         ("id", 42), ("cmd", ["disconnect"]), ("args", []), ("t", None),
                         ("exp", "soon")]:
        body = dict(good, **{field: value})
        raw = json.dumps(body).encode()
        payload = hmac.new(KEY, raw, hashlib.sha256).hexdigest().encode() + b" " + raw
        assert ack_of(cmds.handle(payload))["reason"] == "malformed", (field, value)
    assert handler.calls == []


def test_clock_unset_allows_only_status_but_still_no_replay(tmp_path):
    clock = FakeClock(NOW, valid=False)
    cmds, handler, _ = make(tmp_path, clock)
    ack = ack_of(cmds.handle(cmd(3)))
    assert (ack["code"], ack["reason"]) == (commands.TEMPORARY, "clock_unset")
    assert ack_of(cmds.handle(cmd(4, "status", issued=NOW - 10**6)))["code"] == 0
    assert ack_of(cmds.handle(cmd(4, "status")))["reason"] == "replay"
    assert handler.calls == [("status", {})]
    clock.is_valid = True
    assert ack_of(cmds.handle(cmd(5)))["code"] == 0


def test_unreadable_counter_fails_closed(tmp_path):
    (tmp_path / "cmd.ctr").write_bytes(b"7 00000000")
    cmds, handler, _ = make(tmp_path)
    ack = ack_of(cmds.handle(cmd(100)))
    assert (ack["code"], ack["reason"]) == (1, "counter_lost")
    assert handler.calls == []


def test_counter_file_cut_at_its_creation_is_a_fresh_counter(tmp_path):
    """LittleFS commits a new file when it is opened and its data when it is closed: power
    lost during the very first counter write leaves an empty file (found by the fault sweep).
    Nothing acted on that command, so the meter must not lock itself out of commands."""
    (tmp_path / "cmd.ctr").write_bytes(b"")
    cmds, handler, _ = make(tmp_path)
    assert cmds.last == 0
    assert ack_of(cmds.handle(cmd(1)))["code"] == 0
    assert make(tmp_path)[0].last == 1


def test_counter_file_survives_and_rejects_tampering(tmp_path):
    cmds, _, _ = make(tmp_path)
    for n in (3, 8, 12):
        assert ack_of(cmds.handle(cmd(n)))["code"] == 0
    assert make(tmp_path)[0].last == 12
    path = tmp_path / "cmd.ctr"
    data = bytearray(path.read_bytes())
    assert data[0] == 12
    data[0] = 2  # rolled back, CRC now wrong
    path.write_bytes(bytes(data))
    again, handler, _ = make(tmp_path)
    assert again.last is None
    assert ack_of(again.handle(cmd(13)))["reason"] == "counter_lost"
    assert handler.calls == []


def test_every_ack_names_the_exact_message_and_only_a_verified_counter(tmp_path):
    """Issue 17: an ack carries "v": 2 and "for", the digest of all the bytes it answers; a
    message refused at or before the MAC check gets "n": null, whatever counter it wrote,
    so a forged command with the head-end's next counter cannot make an ack that passes for
    the answer to the genuine one."""
    cmds, handler, _ = make(tmp_path)
    genuine = cmd(7)
    forged_cases = [
        (cmd(7, key=bytes(32)), 4),  # bad MAC, the genuine counter
        (genuine[:64] + genuine[64:].replace(b'"disconnect"', b'"reconnect"'), 4),  # its MAC
        (cmd(7, meter="meter-0043"), 8),
        (cmd(7)[:-1], 7),
        (b"{" * 1100, 9),
    ]
    for payload, code in forged_cases:
        ack = ack_of(cmds.handle(payload))
        assert (ack["v"], ack["code"], ack["n"]) == (2, code, None), payload[:80]
        assert ack["for"] == ack_for(payload) != ack_for(genuine)
    ack = ack_of(cmds.handle(genuine))
    assert (ack["v"], ack["code"], ack["n"], ack["for"]) == (2, 0, 7, ack_for(genuine))
    # refused after the MAC check: the counter is the sender's, verified
    # an exact copy (its ack lost, a redelivery): the recorded answer, marked a repeat
    again = ack_of(cmds.handle(genuine))
    assert (again["code"], again["n"], again["for"], again["repeat"]) == (
        0, 7, ack_for(genuine), True)
    # any other message with that counter is refused after the MAC check: the counter is
    # the sender's, verified
    other = cmd(7, issued=NOW - 20)
    again = ack_of(cmds.handle(other))
    assert (again["code"], again["n"], again["for"]) == (5, 7, ack_for(other))
    assert "repeat" not in again
    assert handler.calls == [("disconnect", {}), ("status", {})]
    # dropped unread by the link (too large for the heap): bound to nothing
    ack = ack_of(cmds.handle(None))
    assert (ack["code"], ack["n"], ack["for"]) == (9, None, None)
    # unprovisioned: no key, so no counter can be trusted either
    (tmp_path / "bare").mkdir()
    bare, _, _ = make(tmp_path / "bare", key=None)
    ack = json.loads(bare.handle(cmd(8)).split(b" ", 1)[1])
    assert (ack["code"], ack["n"], ack["for"]) == (3, None, ack_for(cmd(8)))


def test_a_handler_cannot_overwrite_the_fields_that_bind_the_ack(tmp_path):
    cmds, handler, _ = make(tmp_path)
    handler.status = lambda args: (0, {"state": 1, "n": 99, "for": "0" * 32, "v": 1,
                                       "id": "x", "code": 3})
    payload = cmd(1, "status")
    ack = ack_of(cmds.handle(payload))
    assert (ack["v"], ack["id"], ack["n"], ack["code"], ack["for"], ack["state"]) == (
        2, METER, 1, 0, ack_for(payload), 1)


def test_unprovisioned_meter_denies(tmp_path):
    cmds, handler, _ = make(tmp_path, key=None)
    ack = json.loads(cmds.handle(cmd(1)).split(b" ", 1)[1])
    assert (ack["code"], ack["reason"]) == (3, "no_key") and handler.calls == []


def test_ack_mac_is_not_a_command_mac(tmp_path):
    cmds, handler, _ = make(tmp_path)
    ack = cmds.handle(cmd(1, "status"))
    assert decode_ack(KEY, ack) is not None
    assert ack_of(cmds.handle(ack))["code"] != 0  # an ack fed back is refused
    assert handler.calls == [("status", {})]


def test_handler_error_is_acked_not_raised(tmp_path):
    cmds, handler, _ = make(tmp_path)
    handler.reconnect = lambda args: 1 / 0
    assert ack_of(cmds.handle(cmd(1, "reconnect")))["reason"] == "handler_error"
    # the other commands go to meter/remote/dispatch.py: without a link there is nothing to reboot
    assert ack_of(cmds.handle(cmd(2, "reboot")))["reason"] == "no link"


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                               max_size=4),
    max_leaves=12,
)


@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(
    st.binary(max_size=1100),
    _json.map(lambda v: b"0" * 64 + b" " + json.dumps(v).encode()),
    st.dictionaries(st.sampled_from(["id", "n", "cmd", "args", "t", "exp", "x"]), _json)
      .map(lambda d: hmac.new(KEY, json.dumps(d).encode(), hashlib.sha256).hexdigest().encode()
           + b" " + json.dumps(d).encode()),
    st.tuples(st.integers(0, 200), st.binary(max_size=8)).map(
        lambda p: cmd(7)[:p[0]] + p[1] + cmd(7)[p[0]:]),
))
def test_fuzz_never_raises_never_acts_unsigned(tmp_path, data):
    cmds, handler, _ = make(tmp_path)
    cmds.last = 7
    ack = ack_of(cmds.handle(data))
    assert isinstance(ack["code"], int)
    assert (ack["v"], ack["for"]) == (2, ack_for(data))
    if ack["code"] in (4, 7, 8, 9):
        assert ack["n"] is None  # never a counter the MAC did not cover
    if ack["code"] == 0:
        # only a correctly signed, fresh, known command can have been accepted
        body = json.loads(data[65:])
        assert hmac.compare_digest(data[:64], hmac.new(KEY, data[65:], hashlib.sha256)
                                   .hexdigest().encode())
        assert body["n"] > 7 and body["id"] == METER
    else:
        assert handler.calls == []


def test_a_flood_of_rejections_cannot_evict_the_transaction_log(tmp_path):
    """A forged command a minute for 20 days: rejection events back off (1 h, 2, 4 ... 24 h),
    so the flood takes one event a day of the 50-record transaction log, and their values
    add up to every rejection; after a quiet day the next rejection is logged at once."""
    clock = FakeClock(NOW)
    cmds, handler, log = make(tmp_path, clock)
    minutes = 20 * 24 * 60
    for i in range(minutes):
        clock.t = NOW + 60 * i
        forged = cmd(i + 1, key=bytes(32), issued=clock.t - 10)
        assert ack_of(cmds.handle(forged))["reason"] == "bad_mac"
    assert handler.calls == []
    times = [t for t, _code in log.entries]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[:5] == [3600, 7200, 14400, 28800, 57600] and set(gaps[5:]) == {86400}
    assert len(log.entries) == 24  # of the 50: the rest of the log keeps its real events
    # every rejection up to the last event is counted once (one a minute since the first)
    assert log.values[0] == 1 and sum(log.values) == (times[-1] - times[0]) // 60 + 1
    # quiet for a day, then one more: logged at once, with the flood's unlogged rest, so
    # every rejection is counted exactly once
    clock.t = NOW + 60 * minutes + 86400
    cmds.handle(cmd(1, key=bytes(32), issued=clock.t - 10))
    assert log.entries[-1][0] == clock.t - METER_EPOCH_UNIX and sum(log.values) == minutes + 1
    clock.t += 600  # and the back-off starts over: the next one waits an hour
    cmds.handle(cmd(1, key=bytes(32), issued=clock.t - 10))
    assert len(log.entries) == 25


class Cut(BaseException):
    """Power gone in the middle of the handler (not an Exception: nothing catches it)."""


def test_a_command_cut_short_is_completed_by_its_redelivery_and_only_by_it(tmp_path):
    """Issue 18: the counter reaches flash before the command acts, with the command's
    digest and "not done"; a cut then leaves that record. The redelivery of the very same
    bytes runs it (once: its record is then done), any other message with that counter is
    a replay, and the recorded outcome answers every later copy."""
    cmds, handler, _ = make(tmp_path)
    genuine = cmd(9)

    def cut(args):
        handler.calls.append(("disconnect", args))
        raise Cut

    handler.disconnect = cut
    with pytest.raises(Cut):
        cmds.handle(genuine)
    again, handler2, _ = make(tmp_path)  # the reboot
    assert again.last == 9 and again.rec == (bytes.fromhex(ack_for(genuine)), 0, 0)
    other = cmd(9, issued=NOW - 20)
    assert ack_of(again.handle(other))["reason"] == "replay"
    ack = ack_of(again.handle(genuine))
    assert (ack["code"], ack["n"], ack["repeat"], ack["relay"]) == (0, 9, True, "open")
    assert handler2.calls == [("disconnect", {})]
    third, handler3, _ = make(tmp_path)
    assert third.rec[1:] == (1, 0)  # done, code 0
    ack = ack_of(third.handle(genuine))
    assert (ack["code"], ack["repeat"]) == (0, True) and handler3.calls == [("status", {})]
    assert ack_of(third.handle(other))["reason"] == "replay"


def test_a_cut_short_command_out_of_its_time_or_one_that_must_not_run_twice(tmp_path):
    clock = FakeClock(NOW)
    cmds, handler, _ = make(tmp_path, clock)
    msgs = {}
    for n, name, args in ((1, "disconnect", None), (2, "billing_snapshot", None)):
        msgs[n] = cmd(n, name, args=args)
        # the record a cut leaves: counter and digest on flash, not done
        cmds._save(n, bytes.fromhex(ack_for(msgs[n])), 0, 0)
        if n == 1:
            clock.t = NOW + 400  # past its expiry when it comes again
            ack = ack_of(make(tmp_path, clock)[0].handle(msgs[1]))
            assert (ack["code"], ack["reason"], ack["repeat"]) == (6, "expired", True)
            clock.t = NOW
    ack = ack_of(make(tmp_path, clock)[0].handle(msgs[2]))
    assert (ack["code"], ack["reason"], ack["repeat"]) == (2, "cut_short", True)
    assert handler.calls == []


def test_counter_file_of_earlier_firmware_is_read(tmp_path):
    (tmp_path / "cmd.ctr").write_bytes(b"%d %08x" % (41, __import__("binascii").crc32(b"41")))
    cmds, handler, _ = make(tmp_path)
    assert (cmds.last, cmds.rec) == (41, None)
    assert ack_of(cmds.handle(cmd(41)))["reason"] == "replay"
    assert ack_of(cmds.handle(cmd(42)))["code"] == 0
    assert len((tmp_path / "cmd.ctr").read_bytes()) == 26  # the new record, inline-sized
