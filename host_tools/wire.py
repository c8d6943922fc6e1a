"""The command protocol's wire format, host side: a command signed with the meter's key, an
ack verified and bound to the command it answers, the meter's ack codes (README "Wire
format"). The head-end (host_tools/headend.py) and the simulator's head-end
(simulator/mqttpath.py) both speak it; nothing here imports either of them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

MAC_HEX = 64
# The meter's ack codes (firmware/meter/remote/commands.py); the meter sends only the number, and
# a "reason" of its own where one code has several causes (e.g. clock_unset, no_key).
REASONS = {
    0: "ok", 1: "hardware_fault", 2: "temporary_failure", 3: "denied", 4: "bad_mac",
    5: "replay", 6: "expired", 7: "malformed", 8: "wrong_meter", 9: "too_large",
    10: "unknown_command", 250: "other",
}



def mac(key: bytes, body: bytes, prefix: bytes = b"") -> bytes:
    return hmac.new(key, prefix + body, hashlib.sha256).digest()


def encode_command(key: bytes, meter_id: str, counter: int, cmd: str, args: dict | None = None,
                   issued: int | None = None, ttl_s: int = 300) -> bytes:
    """The wire form of one command: hex HMAC, a space, the JSON body it covers, in the one
    form the meter takes (README "Wire format": this key order, args' keys sorted, no
    whitespace)."""
    issued = int(time.time()) if issued is None else issued
    args = dict(sorted((args or {}).items()))
    body = json.dumps({"id": meter_id, "n": counter, "cmd": cmd, "args": args,
                       "t": issued, "exp": issued + ttl_s}, separators=(",", ":")).encode()
    return mac(key, body).hex().encode() + b" " + body


ACK_VERSION = 2  # acks bound to their command by "for" (README "Wire format")
ACK_FOR_HEX = 32


def ack_for(message: bytes) -> str:
    """An ack's "for" (ack v 2): the first 16 bytes of SHA-256 of all the bytes of the message
    it answers (MAC, space and body), hex. The meter hashes what it received, MAC included,
    so a forged message never gets an ack that names a genuine one."""
    return hashlib.sha256(message).hexdigest()[:ACK_FOR_HEX]


def decode_ack(key: bytes, payload: bytes) -> dict | None:
    """The ack's body if its MAC (over b"ack " + body) is right, else None. Says nothing about
    which command it answers: see match_ack."""
    if len(payload) < MAC_HEX + 3 or payload[MAC_HEX:MAC_HEX + 1] != b" ":
        return None
    body = payload[MAC_HEX + 1:]
    try:
        given = bytes.fromhex(payload[:MAC_HEX].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not hmac.compare_digest(given, mac(key, body, b"ack ")):
        return None
    try:
        ack = json.loads(body)
    except ValueError:
        return None
    if not isinstance(ack, dict) or type(ack.get("code")) is not int:
        return None
    if "reason" not in ack and ack["code"]:
        ack["reason"] = REASONS.get(ack["code"], "other")
    return ack


def match_ack(key: bytes, meter_id: str, command: bytes, payload: bytes
              ) -> tuple[str, dict | None]:
    """What one message on the meter's ack topic is to the head-end that sent `command`:
    ("ours", ack): signed with the meter's key, v >= 2, from this meter, and its "for" is the
    digest of exactly `command` (and its "n", when not null, the command's counter): the
    meter's answer to it, the only kind to act on;
    ("foreign", ack): signed with the meter's key but answering some other message (another
    head-end's command, a forged or replayed one: an attack symptom, or an old ack replayed),
    or an ack without that binding (firmware before ack v2);
    ("unsigned", None): its MAC does not verify with the meter's key (forged, made under an
    older key, or the meter holds another key or none)."""
    ack = decode_ack(key, payload)
    if ack is None:
        return "unsigned", None
    v, n = ack.get("v"), ack.get("n")
    try:
        counter = json.loads(command.split(b" ", 1)[1])["n"]
    except (IndexError, ValueError, KeyError, TypeError):
        counter = None
    if (type(v) is int and v >= ACK_VERSION and ack.get("id") == meter_id
            and ack.get("for") == ack_for(command) and (n is None or n == counter)):
        return "ours", ack
    return "foreign", ack
