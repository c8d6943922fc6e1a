# Remote commands: verify, then dispatch to the control handler, then sign the ack.
#
# Wire format (both ways): 64 lowercase hex digits of an HMAC-SHA256, one space, then the
# body: a JSON object. Commands are MAC'd over the exact body bytes with the meter's 32-byte
# key; acks over b"ack " + body, so an ack can never pass as a command.
# Command body: {"id": meter id, "n": counter, "cmd": name, "args": {...}, "t": issued (Unix
# s), "exp": expires (Unix s)}. Checks, in order: size, well-formedness, meter id, MAC,
# counter strictly above the last accepted one, expiry. The counter is persisted before the
# command acts. See the README ("Remote commands") for the codes and the clock-unset rule.
import json
import struct
from binascii import crc32, hexlify, unhexlify

from micropython import const

from meter import events
from meter.auth import equal, hmac_sha256

MAX_SIZE = const(1024)
_MAC_HEX = const(64)
_REJECT_LOG_S = const(3600)  # at most one rejection event an hour reaches the flash log

OK = const(0)
HW_FAULT = const(1)
TEMPORARY = const(2)
DENIED = const(3)
BAD_MAC = const(4)
REPLAY = const(5)
EXPIRED = const(6)
MALFORMED = const(7)
WRONG_METER = const(8)
TOO_LARGE = const(9)
UNKNOWN = const(10)
OTHER = const(250)

REASONS = {
    HW_FAULT: "hardware_fault", TEMPORARY: "temporary_failure", DENIED: "denied",
    BAD_MAC: "bad_mac", REPLAY: "replay", EXPIRED: "expired", MALFORMED: "malformed",
    WRONG_METER: "wrong_meter", TOO_LARGE: "too_large", UNKNOWN: "unknown_command",
    OTHER: "other",
}

COMMANDS = (
    "disconnect", "reconnect", "status", "set_control_mode", "set_load_limit", "read_profile",
    "read_events", "billing_snapshot", "time_sync", "set_telemetry_period", "reboot",
)
# What may run while the meter's clock is not valid (expiry cannot be checked then).
_CLOCK_FREE = ("status", "time_sync")
_SLOTS = ("/cmd.a", "/cmd.b")
_KEY_PATH = "/cmd.key"


def load_key(fs):
    """The meter's 32-byte command key from the data partition, or None when unprovisioned."""
    try:
        with fs.open(_KEY_PATH, "rb") as f:
            key = f.read()
    except OSError:
        return None
    return key if len(key) == 32 else None


def sign(key, body, prefix=b""):
    return hexlify(hmac_sha256(key, body, prefix)) + b" " + body


class NoRelay:
    """Interim handler until the disconnect-control object lands: reports, never switches."""

    def status(self, args):
        return OK, {"state": None, "relay": None}

    def disconnect(self, args):
        return HW_FAULT, {"reason": "no_relay"}

    def reconnect(self, args):
        return HW_FAULT, {"reason": "no_relay"}


class Commands:
    def __init__(self, fs, meter_id, key, clock, log, handler):
        self._fs = fs
        self._id = meter_id
        self._key = key
        self._clock = clock
        self._log = log
        self.handler = handler
        self._buf = bytearray(8)
        self._slot = 0
        self.last = self._load()  # None: the counter is unreadable, accept nothing
        self.accepted = 0
        self.rejected = 0
        self._logged_at = None

    def _load(self):
        best = 0
        found = 0
        good = 0
        for i in range(2):
            try:
                with self._fs.open(_SLOTS[i], "rb") as f:
                    data = f.read()
            except OSError:
                continue
            found += 1
            if len(data) == 8 and crc32(data[:4]) == struct.unpack_from("<I", data, 4)[0]:
                good += 1
                n = struct.unpack_from("<I", data, 0)[0]
                if n >= best:
                    best = n
                    self._slot = 1 - i  # next write goes to the other slot
        if found and not good:
            return None
        return best

    def _save(self, n):
        buf = self._buf
        struct.pack_into("<I", buf, 0, n)
        struct.pack_into("<I", buf, 4, crc32(memoryview(buf)[:4]))
        with self._fs.open(_SLOTS[self._slot], "wb") as f:
            f.write(buf)
        self._slot = 1 - self._slot
        self.last = n

    def check(self, payload):
        """(code, counter or None, body object when OK else a reason or None)."""
        size = len(payload)
        if size > MAX_SIZE:
            return TOO_LARGE, None, None
        if size < _MAC_HEX + 3 or payload[_MAC_HEX] != 0x20:
            return MALFORMED, None, None
        body = payload[_MAC_HEX + 1:]
        try:
            obj = json.loads(body)
            mac = unhexlify(payload[:_MAC_HEX])
        except Exception:  # hostile bytes: any parse failure is just "malformed"
            return MALFORMED, None, None
        if type(obj) is not dict:
            return MALFORMED, None, None
        n = obj.get("n")
        if type(n) is not int or not 0 < n < 0x40000000:
            return MALFORMED, None, None
        t = obj.get("t")
        exp = obj.get("exp")
        if (type(obj.get("id")) is not str or type(obj.get("cmd")) is not str
                or type(obj.get("args", {})) is not dict or type(t) is not int
                or type(exp) is not int or exp < t):
            return MALFORMED, n, None
        if obj["id"] != self._id:
            return WRONG_METER, n, None
        key = self._key
        if key is None:
            return DENIED, n, None
        if not equal(hmac_sha256(key, body), mac):
            return BAD_MAC, n, None
        if self.last is None:
            return HW_FAULT, n, "counter_lost"
        if n <= self.last:
            return REPLAY, n, None
        clock = self._clock
        if clock.valid():
            if clock.unix() > exp:
                return EXPIRED, n, None
        elif obj["cmd"] not in _CLOCK_FREE:
            return TEMPORARY, n, "clock_unset"
        if obj["cmd"] not in COMMANDS:
            return UNKNOWN, n, None
        return OK, n, obj

    def handle(self, payload):
        """Verify and run one command; returns the signed ack (bytes). Never raises on input."""
        code, n, obj = self.check(payload)
        extra = None
        if code != OK and obj is not None:
            extra = {"reason": obj}
        if code == OK:
            try:
                self._save(n)  # persisted before acting: a replay can never act twice
            except OSError:
                code = TEMPORARY
                extra = {"reason": "flash"}
        if code == OK:
            self.accepted += 1
            method = getattr(self.handler, obj["cmd"], None)
            if method is None:
                code, extra = OTHER, {"reason": "unsupported"}
            else:
                try:
                    code, extra = method(obj.get("args", {}))
                except Exception as exc:
                    print("command handler failed:", type(exc).__name__)
                    code, extra = OTHER, {"reason": "handler_error"}
        else:
            self._rejected(code)
        return self.ack(n, code, extra)

    def _rejected(self, code):
        self.rejected += 1
        now = self._clock.now()
        last = self._logged_at
        if last is None or now - last >= _REJECT_LOG_S or now < last:
            self._logged_at = now
            try:
                self._log.log(now, events.CMD_REJECTED + code)
            except OSError:
                pass  # a failing flash must not turn a rejection into a crash

    def ack(self, n, code, extra=None):
        ack = {"id": self._id, "n": n, "code": code, "t": self._clock.unix()}
        if code:
            ack["reason"] = REASONS.get(code, "other")
        if extra:
            ack.update(extra)
        body = json.dumps(ack).encode()
        if self._key is None:
            return b"0" * _MAC_HEX + b" " + body
        return sign(self._key, body, b"ack ")
