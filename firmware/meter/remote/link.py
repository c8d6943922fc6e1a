# The meter's MQTT link (umqtt.simple): one connection for commands, acks, status, telemetry.
# Topics under meters/<id>/: cmd (subscribed, QoS 1), ack (QoS 0), status (retained "online",
# last will "offline"), telemetry (QoS 0, every telemetry_period_s), profile and events
# (QoS 1, store-and-forward from flash: meter/remote/forward.py). Every socket operation
# has a timeout, connect included; a failed broker is retried after a back-off doubling from
# 1 s to 5 min, with jitter; at most 32 incoming messages (100 ms) are handled per look.
# Imported only when MQTT is configured.
import json
import sys
from binascii import crc32

import umqtt.simple as simple
import usocket
from micropython import const

from meter.runtime import compat
from meter.runtime.overlays import overlay

# umqtt raises IndexError reading a closed socket, AssertionError on a bad reply.
ERRORS = (OSError, IndexError, AssertionError, TypeError, MemoryError, simple.MQTTException)
_timeout = [5, None]  # the socket timeout, the last plain socket opened
_PER_LOOK = const(32)  # incoming messages handled at most per look (_poll)
_LOOK_MS = const(100)  # and for at most this long
# link.fwd: meter/remote/forward.py's state, read here by its indices there
_F_PROFILE = const(0)  # block-profile n delivered up to
_F_EVENT = const(1)  # event seq delivered up to
_F_DUE = const(3)  # clock.mono() the cursor is next to be saved (-1: saved)
_F_WAIT = const(5)  # clock.mono() to try again after the heap had no room
_MAX_CMD = const(1024)  # meter/remote/commands.py MAX_SIZE: the largest command read into RAM


class Client(simple.MQTTClient):
    """umqtt.simple's client (unmodified) but for how an incoming PUBLISH is read: the
    remaining length from its header decides, before anything is read into RAM. A topic
    other than meters/<id>/cmd, or a payload over the command limit, is read and discarded
    in small chunks through one buffer, and PUBACKed, so the broker does not redeliver it
    at every reconnect (a kept session): the callback gets topic None (unexpected topic)
    or msg None (too large) instead. The PUBACK goes out even if the callback failed."""

    def wait_msg(self):
        sock = self.sock
        res = sock.read(1)
        sock.setblocking(True)
        if res is None:
            return None
        if res == b"":
            raise OSError(-1)
        if res == b"\xd0":  # PINGRESP
            if sock.read(1)[0]:
                raise OSError(-2)
            return None
        op = res[0]
        if op & 0xF0 != 0x30:
            return op  # umqtt.simple reads the rest (PUBACK, SUBACK)
        sz = 0
        for sh in (0, 7, 14, 21):  # remaining length: at most 4 bytes (MQTT 3.1.1 2.2.3)
            b = sock.read(1)[0]
            sz |= (b & 0x7F) << sh
            if not b & 0x80:
                break
        else:
            raise OSError(-2)
        n = sock.read(2)
        n = n[0] << 8 | n[1]
        sz -= n + 2 + (2 if op & 6 else 0)
        if sz < 0 or op & 6 == 6:
            raise OSError(-2)  # malformed (or QoS 3): the stream cannot be trusted
        topic = None
        if n == len(self.topic):  # else unexpected: never read into RAM
            topic = sock.read(n)
            if topic != self.topic:
                topic = None
        else:
            self._skip(n)
        pid = 0
        if op & 6:
            pid = sock.read(2)
            pid = pid[0] << 8 | pid[1]
        msg = None
        if topic is None or sz > _MAX_CMD:
            self._skip(sz)
        else:
            msg = sock.read(sz)
        try:
            self.cb(topic, msg)
        finally:  # acknowledged whatever happened: never a poison message redelivered
            if op & 6 == 2:
                pkt = bytearray(b"\x40\x02\0\0")
                pkt[2] = pid >> 8
                pkt[3] = pid & 0xFF
                sock.write(pkt)
            elif op & 6 == 4:  # QoS 2: never subscribed so; the session is dropped
                raise OSError(-2)

    def _skip(self, n):
        buf = self.buf
        while n > 0:
            k = n if n < 256 else 256
            k = self.sock.readinto(buf, k)
            if not k:
                raise OSError(-1)  # closed (a timeout raises by itself)
            n -= k


class _Timed:
    """The connected (maybe TLS) socket as umqtt.simple sees it: its check_msg ends with
    setblocking(True), which would leave the socket without a timeout; here it means "back
    to the timeout"."""

    def __init__(self, sock, raw):
        self.s = sock
        self.raw = raw  # under TLS, the plain socket: the one with settimeout

    def setblocking(self, flag):
        self.raw.settimeout(_timeout[0] if flag else 0)

    def read(self, n):
        return self.s.read(n)

    def write(self, *a):
        return self.s.write(*a)

    def __getattr__(self, name):
        return getattr(self.s, name)


def socket():
    """umqtt.simple opens its socket through its module's `socket` (see Link): this one has
    the timeout already set, so even connect() cannot hang the duty cycle."""
    s = usocket.socket()
    s.settimeout(_timeout[0])
    s.setsockopt(6, 1, 1)  # TCP_NODELAY: no Nagle wait on small packets
    _timeout[1] = s
    return s


getaddrinfo = usocket.getaddrinfo


class Link:
    def __init__(self, cfg, clock, wlan, fs, log, handler=None):
        self._cfg = cfg
        self._clock = clock
        self._wlan = wlan
        self._fs = fs
        self._log = log
        self.handler = handler  # the disconnect control (see meter/remote/commands.py)
        self.cmd_state = [None, 0, 0, 0]  # kept across loads of meter.remote.commands
        self.meter = None  # the Meter, for meter/remote/dispatch.py's commands (set by service)
        self.reboot = False  # a reboot command was accepted: reset once its ack is out
        self._base = "meters/" + cfg["meter_id"] + "/"
        self.client = None
        # deadlines on the monotonic clock (clock.mono()): a time_sync moves none of them
        self._retry_s = 0
        self._backoff_s = 1
        self._rand = crc32(self._base.encode()) & 0x3FFFFFFF | 1  # jitter differs per meter
        self._sent_s = 0
        self._next_s = 0
        self._got = False
        self.seq = 0
        self.published = 0  # every message published since boot
        self.failures = 0
        self.delivered = 0  # QoS 1 records PUBACKed since boot (store-and-forward)
        self.fwd = [-1, -1, 0, -1, -60, 0, 0]  # meter/remote/forward.py's state
        _timeout[0] = cfg["mqtt_timeout_s"]
        simple.socket = sys.modules[__name__]

    def backlog(self):
        """Records stored but not yet delivered, over both streams."""
        return overlay("meter.remote.forward").backlog(self)

    def failed(self, now, why):
        self.failures += 1
        try:
            self.client.sock.close()
        except (AttributeError, OSError):
            pass
        self.client = None
        x = self._rand  # xorshift on 30 bits: small ints only
        x ^= (x & 0x7FFFFF) << 7
        x ^= x >> 9
        x ^= (x & 0x3FFFFF) << 8
        self._rand = x = x & 0x3FFFFFFF or 1
        b = self._backoff_s
        self._retry_s = now + min(b + x % (b // 2 + 1), 300)
        self._backoff_s = min(b * 2, 300)
        print("mqtt: link down:", why)

    def service(self, meter):
        """Connect when due, commands in, acks out, telemetry, keep-alive: bounded work,
        every wait under a timeout."""
        self.meter = meter
        now = self._clock.mono()
        f = self.fwd
        if self.client is None and now < self._retry_s:
            return
        try:
            if self.client is None:
                overlay("meter.remote.connect").connect(self, Client, _Timed, _timeout)
                self._backoff_s = 1
                self._sent_s = now
            c = self.client
            self._poll(c)
            # stored records not yet delivered: a few go out (meter/remote/forward.py), if the
            # heap has room for its code (~3 KB) and to work in; else they wait on flash
            if (f[_F_PROFILE] != meter.store.period.head or f[_F_EVENT] != meter.log.seq
                    or 0 <= f[_F_DUE] <= now) and now >= f[_F_WAIT]:
                compat.collect()
                if compat.mem_free() < 12288:  # its code, then room for a command too
                    f[_F_WAIT] = now + 60  # try again in a minute
                else:
                    overlay("meter.remote.forward").send(self, meter, now)
                    self._sent_s = now
            if now >= self._next_s and meter.durable():  # on flash before it is shown
                self.seq += 1
                meter.refresh_instant()
                inst = meter.inst
                c.publish(self._base + "telemetry", json.dumps({
                    "id": self._cfg["meter_id"], "seq": self.seq, "t": self._clock.unix(),
                    "import_kwh": meter.imp.kwh_text(), "export_kwh": meter.exp.kwh_text(),
                    "v": inst[0] / 100, "i": inst[1] / 1000, "p": inst[2],
                    "pf": inst[3] / 1000, "hz": inst[4] / 100}))
                self.published += 1
                self._next_s = now + self._cfg["telemetry_period_s"]
                self._sent_s = now
            if now - self._sent_s >= self._cfg["mqtt_keepalive_s"] // 2:
                c.ping()
                self._sent_s = now
        except ERRORS as exc:
            self.failed(now, exc)

    def _poll(self, c):
        # Incoming messages are handled while they come, up to 32 or 100 ms a look (5 looks
        # a second): a flood of rejected ones drains in seconds, not minutes, and a genuine
        # command behind it is answered (README "Wire format", issue 18).
        clock = self._clock
        t0 = clock.ticks_ms()
        for _ in range(_PER_LOOK):
            c.check_msg()
            if self.reboot:  # acked (and PUBACKed) first, then the reset
                overlay("meter.remote.time_commands").restart(self)
            if not self._got or clock.ticks_diff(clock.ticks_ms(), t0) >= _LOOK_MS:
                break
            self._got = False
        self._got = False

    def idle(self, ms):
        """The duty cycle's sleep, looking for commands every 200 ms meanwhile, so that a
        command waits for at most that long, not for the next 1 s poll."""
        clock = self._clock
        while ms > 200 and self.client is not None:
            clock.sleep_ms(200)
            ms -= 200
            try:
                self._poll(self.client)
            except ERRORS as exc:
                self.failed(clock.mono(), exc)
        clock.sleep_ms(ms)

    def _received(self, topic, msg):
        """One message on meters/<id>/cmd (msg None: over the size limit, left unread), or
        on a topic the meter never asked for (topic None: dropped, counted)."""
        self._got = True
        st = self.cmd_state
        if topic is None:
            st[1] += 1  # counted in the next rejection event (meter/remote/commands.py)
            print("mqtt: message on another topic dropped")
            return
        # Command verification is an overlay: loaded for each message and dropped after,
        # so its ~5 KB of code is not held in RAM between (rare) commands. Collecting first
        # lets it load into the holes the garbage leaves, not fail on a fragmented heap.
        try:
            ack = overlay("meter.remote.commands").Commands(
                self._fs, self._cfg["meter_id"], self._clock, self._log, self.handler, None,
                st, self).handle(msg)
        except Exception as exc:  # e.g. no room to load it: PUBACKed anyway (Client), so
            st[1] += 1  # it is not redelivered for ever; counted as a rejection
            print("command failed:", exc)
            return
        # Acks go out at QoS 0 from inside umqtt's receive: no nested wait for a PUBACK.
        self.client.publish(self._base + "ack", ack)
        self._sent_s = self._clock.mono()
