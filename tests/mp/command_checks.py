# Command verification on the real MicroPython unix port (-X heapsize=64k): the RFC 4231
# HMAC vectors and a corpus of hostile messages built host-side by tests/test_mp_commands.py
# (a JSON header line, then one case a line).
# Usage: micropython command_checks.py CORPUS.json WORKDIR
import json
import sys
from binascii import hexlify, unhexlify
from hashlib import sha256

from fakes import DirFS, FakeClock
from meter.remote import commands

passed = 0
failed = 0


def check(name, ok):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL", name)


class Log:
    def __init__(self):
        self.n = 0

    def log(self, now, code, value=0):
        self.n += 1


class Recorder:
    def __init__(self):
        self.calls = []

    def disconnect(self, args):
        self.calls.append("disconnect")
        return 0, {"state": 1, "relay": "open"}

    def reconnect(self, args):
        self.calls.append("reconnect")
        return 0, {"state": 2, "relay": "open"}

    def status(self, args):
        self.calls.append("status")
        return 0, {"state": 0, "relay": "closed"}


corpus_file = open(sys.argv[1])
corpus = json.loads(corpus_file.readline())  # the header; then one case a line
for key_hex, data_hex, want in corpus["rfc4231"]:
    got = commands.hmac_sha256(unhexlify(key_hex), unhexlify(data_hex))
    check("rfc4231 " + want[:8], got == unhexlify(want))
check("equal", commands.equal(b"abc", b"abc") and not commands.equal(b"abc", b"abd"))

key = unhexlify(corpus["key"])
clock = FakeClock(corpus["now"], True)
log = Log()
handler = Recorder()
cmds = commands.Commands(DirFS(sys.argv[2]), corpus["meter"], clock, log, handler, key)
for line in corpus_file:
    case = json.loads(line)
    fill = case.get("fill")
    payload = bytes((fill[0],)) * fill[1] if fill else unhexlify(case["payload"])
    clock.is_valid = case.get("clock_valid", True)
    before = len(handler.calls)
    try:
        raw = cmds.handle(payload)
    except Exception as exc:  # noqa: BLE001 - the point: nothing may escape
        check(case["name"] + " raised " + repr(exc), False)
        continue
    mac = unhexlify(raw[:64])
    body = raw[65:]
    ack = json.loads(body)
    signed = commands.equal(mac, commands.hmac_sha256(key, body, b"ack "))
    check(case["name"] + " ack signed", signed)
    reason = ack.get("reason") or corpus["reasons"][str(ack["code"])]
    want = case["want"]
    ok = reason == want or (want[-3:] == "..." and reason.startswith(want[:-3]))
    check(case["name"] + " reason " + reason + " want " + want, ok)
    # bound to this very message; a counter only where the MAC verified
    bound = hexlify(sha256(payload).digest()[:16]).decode()
    check(case["name"] + " for", ack.get("v") == 2 and ack.get("for") == bound)
    unverified = reason in ("too_large", "malformed", "wrong_meter", "bad_mac")
    check(case["name"] + " n", (ack.get("n") is None) == unverified)
    acted = len(handler.calls) - before
    check(case["name"] + " acted", acted == (1 if case.get("acts") else 0))
check("rejections rate-limited", 0 < log.n <= 2)
print("commands: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
