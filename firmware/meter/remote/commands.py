# Remote commands: verify, persist the counter, dispatch to the control handler, sign the ack.
# Wire format (both ways): 64 hex digits of HMAC-SHA256, one space, the body (a JSON object).
# Commands are MAC'd over the exact body bytes, acks over b"ack " + body (so an ack never
# passes as a command). Command body: {"id", "n" (counter), "cmd", "args", "t", "exp"} (Unix
# s). Checks in order: size, well-formedness, meter id, MAC, counter > last accepted, expiry.
# Well-formed means canonical (README "Wire format"): lowercase hex MAC, and a body that is
# byte for byte what canonical() writes of what json.loads read (so both runtimes' parsers
# take exactly the same bodies: no duplicate key, whitespace, trailing byte, leading zero,
# escape, float), with every field in its range.
# Ack body (v 2): {"v", "id", "for", "n", "code", "t"} + extras; "for" binds it to the exact
# message it answers (the first 16 bytes of SHA-256 of all its bytes, hex), and "n" is null
# unless the MAC verified: a rejection at or before the MAC check carries no counter.
# The README ("Remote commands", "Wire format") documents the codes and the clock-unset rule.
import json
import struct
from binascii import crc32, hexlify, unhexlify
from hashlib import sha256

from micropython import const

from meter.runtime.overlays import overlay, unload
from meter.storage.events import CMD_REJECTED

MAX_SIZE = const(1024)
_T0 = const(1577836800)  # meter/runtime/clock.py METER_EPOCH_UNIX (2020-01-01) and MAX_S: the
_MAX_S = const(0x3EFFFFFF)  # meter's clock range, 2020-01-01 ... 2053-06-29, for t and exp
_TTL = const(86400)  # exp - t: a command lives a day at most
TEMPORARY = const(2)
TOO_LARGE = const(9)
# Ack codes: 0 success, 1 hardware fault, 2 temporary failure, 3 denied, 4 bad MAC, 5 replay,
# 6 expired, 7 malformed, 8 other meter's id, 9 too large, 10 unknown command, 250 other.
# Their names live host-side (host_tools/wire.py REASONS); some acks add a "reason".
# The last accepted command: counter, digest (its ack's "for"), done (0 while it is handled),
# its ack code, CRC32: 26 bytes, inline in LittleFS's metadata, replaced atomically.
_PATH = "/cmd.ctr"
_REC = "<I16sBB"


def entry(cmd):
    """The command's line in meter/remote/command_table.py (group, flags, ...), or None: the
    table is loaded for the look-up and dropped again."""
    from meter.remote.command_table import COMMANDS

    unload("meter.remote.command_table")
    return COMMANDS.get(cmd)


def hmac_sha256(key, msg, prefix=b""):
    """HMAC-SHA256 (RFC 2104) of prefix || msg: MicroPython has no hmac module."""
    if len(key) > 64:
        key = sha256(key).digest()
    pad = bytearray(64)
    pad[: len(key)] = key
    for i in range(64):
        pad[i] ^= 0x36
    h = sha256(pad)
    h.update(prefix)
    h.update(msg)
    d = h.digest()
    for i in range(64):
        pad[i] ^= 0x6A  # 0x36 ^ 0x5C
    h = sha256(pad)
    h.update(d)
    return h.digest()


def equal(a, b):
    """Constant time: how long it takes does not depend on where a and b differ."""
    d = len(a) ^ len(b)
    for i in range(min(len(a), len(b))):
        d |= a[i] ^ b[i]
    return d == 0


def _text(v):
    """A JSON string as the head-end writes it: printable ASCII, no escape (so no " or \\)."""
    if type(v) is not str:
        raise ValueError
    for c in v.encode():
        if c < 32 or c > 126 or c == 34 or c == 92:
            raise ValueError
    return '"' + v + '"'


def canonical(obj):
    """The one accepted form of a command body (host_tools/headend.py writes it): keys id, n,
    cmd, args, t, exp in this order, args' keys sorted, no whitespace. Raises on a value
    outside the grammar; json.dumps cannot be used: MicroPython's keeps no key order."""
    a = obj["args"]
    if type(a) is not dict:
        raise ValueError
    s = []
    for k in sorted(a):
        v = a[k]
        # a string, a whole number within +/-(2^32 - 1), true, false or null
        ok = type(v) is int and -0xFFFFFFFF <= v <= 0xFFFFFFFF or type(v) is bool or v is None
        s.append(_text(k) + ":" + (json.dumps(v) if ok else _text(v)))
    return ('{"id":%s,"n":%d,"cmd":%s,"args":{%s},"t":%d,"exp":%d}' % (
        _text(obj["id"]), obj["n"], _text(obj["cmd"]), ",".join(s), obj["t"], obj["exp"]
    )).encode()


class Commands:
    def __init__(self, fs, meter_id, clock, log, handler=None, key=None, state=None,
                 link=None):
        self._fs = fs
        self._id = meter_id
        self._clock = clock
        self._log = log
        self.handler = handler  # the disconnect control: method(args) -> (code, extra)
        self.link = link  # the MQTT link (its meter, config, timers) for meter/remote/dispatch.py
        # [time of the last rejection event, rejections since, the interval before the next
        # event, time of the last rejection]: kept by the caller when this module is loaded
        # per message (see meter/remote/link.py)
        self.state = state or [None, 0, 0, 0]
        try:
            if key is None:
                with fs.open("/cmd.key", "rb") as f:
                    key = f.read()
        except OSError:
            pass  # not provisioned: every command is denied
        self._key = key if key and len(key) == 32 else None
        self.last = 0  # no counter file: a fresh meter
        self.rec = None  # the last accepted command's (digest, done, code), if known
        try:
            with fs.open(_PATH, "rb") as f:
                d = f.read()
            self.last = None  # unreadable: accept nothing rather than risk a replay
            if not d:
                # LittleFS commits a new file at open, its data only at close (a rewrite
                # replaces it whole): empty means power went during the very first write,
                # before anything acted on it.
                self.last = 0
            elif len(d) == 26 and struct.unpack("<I", d[22:])[0] == crc32(d[:22]):
                self.last, dig, done, code = struct.unpack(_REC, d[:22])
                self.rec = (dig, done, code)
            elif d[-8:] == b"%08x" % crc32(d[:-9]):  # earlier firmware's: "n crc"
                self.last = int(d[:-9])
        except (OSError, ValueError):
            pass

    def _save(self, n, dig, done, code):
        r = struct.pack(_REC, n, dig, done, code)
        with self._fs.open(_PATH, "wb") as f:
            f.write(r + struct.pack("<I", crc32(r)))
        self.last = n
        self.rec = (dig, done, code)

    def check(self, p):
        """(code, counter (None unless the MAC verified), the body if code is 0, else a
        reason or None)."""
        if len(p) > MAX_SIZE:
            return TOO_LARGE, None, None
        try:
            if p[64] != 0x20:
                raise ValueError
            body = p[65:]
            obj = json.loads(body)
            mac = unhexlify(p[:64])
            n = obj["n"]
            cmd = obj["cmd"]
            t = obj["t"]
            e = obj["exp"]
            # n 1 ... 2^30 - 1; t and exp within the meter's clock (2020-01-01 ... 2053-06-29,
            # meter/runtime/clock.py), t <= exp <= t + 1 day; all whole numbers (type(True) is
            # bool)
            if (type(n) is not int or type(t) is not int or type(e) is not int
                    or not 0 < n < 0x40000000 or not 0 <= t - _T0 <= _MAX_S
                    or not t <= e <= t + _TTL or e - _T0 > _MAX_S
                    or hexlify(mac) != p[:64] or canonical(obj) != body):
                raise ValueError
        except Exception:  # hostile bytes: whatever fails to parse is "malformed"
            return 7, None, None
        # Up to here the counter is only what the sender wrote: no ack may carry it.
        if obj["id"] != self._id:
            return 8, None, None
        if self._key is None:
            return 3, None, "no_key"
        if not equal(hmac_sha256(self._key, body), mac):
            return 4, None, None
        if self.last is None:
            return 1, n, "counter_lost"
        if n <= self.last:
            return 5, n, None
        if self._clock.valid():
            if self._clock.unix() > e:
                return 6, n, None
        elif cmd != "status" and cmd != "time_sync":
            return TEMPORARY, n, "clock_unset"  # expiry cannot be checked: switch nothing
        if entry(cmd) is None:
            return 10, n, None
        return 0, n, obj

    def _supply(self, cmd, args):
        """A command of the group SUPPLY: to the disconnect control's method of its name."""
        ctl = self.handler
        if ctl is None:  # a meter without a relay
            return (0, None) if cmd == "status" else (3, {"reason": "no supply control"})
        if cmd == "disconnect":
            return ctl.disconnect(args)
        if cmd == "reconnect":
            return ctl.reconnect(args)
        return ctl.status(args)

    def _again(self, p, rec):
        """The very same bytes as the last accepted command (its ack lost, or redelivered
        after a power cut): (code, extra, body to run again or None). Done: its recorded
        code, with the supply's state now for a supply command. Cut short: run it again
        (what it had done already stays done: a second run of a state-setting command
        changes nothing), unless it would act twice or is out of its time now."""
        obj = json.loads(p[65:])  # the MAC verified: well-formed
        cmd = obj["cmd"]
        line = entry(cmd)
        if not rec[1]:
            clock = self._clock
            if line[1] & 1:  # ONCE (meter/remote/command_table.py)
                return TEMPORARY, {"reason": "cut_short"}, None
            if not clock.valid() and cmd != "status":
                return TEMPORARY, {"reason": "clock_unset"}, None
            if clock.valid() and clock.unix() > obj["exp"]:
                return 6, None, None
            return 0, None, obj
        extra = None
        if line[0] == 0 and self.handler is not None:  # SUPPLY: the state now
            try:
                extra = self.handler.status({})[1]
            except Exception:  # noqa: S110 - the recorded code is the answer
                pass
        return rec[2], extra, None

    def handle(self, p):
        """Verify and run one command (p None: oversized, dropped unread); returns the signed
        ack. Never raises on bad input; a rejected command never reaches the handler."""
        code, n, obj = (TOO_LARGE, None, None) if p is None else self.check(p)
        extra = {"reason": obj} if code and obj else None
        dig = None if p is None else sha256(p).digest()[:16]
        rec = self.rec
        repeat = code == 5 and n == self.last and rec is not None and rec[0] == dig
        if repeat:
            code, extra, obj = self._again(p, rec)
        elif code == 0:
            try:
                self._save(n, dig, 0, 0)  # persisted before acting, with what it is
            except OSError:
                code, extra = TEMPORARY, {"reason": "flash"}
        if code == 0 and obj is not None:
            try:
                cmd = obj["cmd"]
                args = obj["args"]
                if entry(cmd)[0]:  # CONFIG, TIME, READ: loaded for it and dropped after
                    code, extra = overlay("meter.remote.dispatch").run(self, cmd, obj)
                elif args:
                    # none takes an argument (checked here, not in the resident control: RAM)
                    code, extra = 250, {"reason": "bad args: unknown argument " + list(args)[0]}
                else:
                    code, extra = self._supply(cmd, args)
                    if type(code) is not int or not (extra is None or type(extra) is dict):
                        raise TypeError
            except Exception as exc:
                print("handler:", exc)
                code, extra = 250, {"reason": "handler_error"}
                try:  # what the supply is now, whatever the handler got done before it failed
                    extra = self.handler.status({})[1]
                    extra["reason"] = "handler_error"
                except Exception:  # noqa: S110 - no supply control, or no room even for that
                    pass
            try:
                self._save(n, dig, 1, code)  # done, and how: a redelivery gets this answer
            except OSError:
                pass  # the command took effect: its ack says so all the same
        elif not repeat:
            # Rate limit, so a flood neither wears the flash nor evicts real events from the
            # transaction log: the first rejection is logged; while they go on, the next event
            # comes after 1 h, then 2, 4 ... 24 h (about 5 events the first day, then one a
            # day); a day without any starts over. Each event's value: the rejections it covers.
            st = self.state
            st[1] += 1
            t = self._clock.mono()  # (st's times: the monotonic clock, never stepped)
            if st[0] is None or not 0 <= t - st[3] < 86400:
                st[2] = 0  # quiet for a day: log at once
            st[3] = t
            if st[0] is None or not 0 <= t - st[0] < st[2]:
                st[2] = 3600 if st[2] < 3600 else min(st[2] * 2, 86400)
                st[0] = t
                now = self._clock.now()
                try:
                    # (a clock that lost its time reads before 2020: logged at 0)
                    self._log.log(now if now > 0 else 0, CMD_REJECTED + code, st[1])
                    st[1] = 0
                except OSError:
                    pass
        ack = dict(extra) if extra else {}
        if repeat:
            ack["repeat"] = True
        # set last: no handler's extra can stand in for the fields that bind the ack
        ack.update({"v": 2, "id": self._id, "n": n, "code": code, "t": self._clock.unix(),
                    "for": None if dig is None else hexlify(dig).decode()})
        body = json.dumps(ack).encode()
        key = self._key
        return (hexlify(hmac_sha256(key, body, b"ack ")) if key else b"0" * 64) + b" " + body
