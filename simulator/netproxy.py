"""A TCP proxy between a simulated meter and its MQTT broker, for scenario runs.

The meter connects to the proxy's loopback port; each connection is forwarded to the broker.
The World switches it at virtual times (`network_outages`): while it is down it has no
listening socket, so a connect is refused at once (as a host that answers with a reset; a
black hole would make every attempt wait for the firmware's socket time-out), and the
connections it carried were dropped when it went down.

It also reads the MQTT framing as it forwards (plain MQTT only, no TLS), so the scenario's
head-end can tell when a command has reached the meter's socket, and how many messages the
meter has sent, which is what keeps scenario runs deterministic (see simulator/mqttpath.py).
"""

from __future__ import annotations

import os
import queue
import select
import selectors
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path


class _Framer:
    """Splits a byte stream into MQTT control packets; calls on_packet(bytes) for each."""

    def __init__(self, on_packet: Callable[[bytes], None]) -> None:
        self.buf = bytearray()
        self.on_packet = on_packet

    def feed(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while len(buf) >= 2:
            size = 0
            shift = 0
            i = 1
            while True:
                if i >= len(buf) or i > 4:
                    if i > 4:  # not MQTT: stop looking
                        buf.clear()
                    return
                b = buf[i]
                size |= (b & 0x7F) << shift
                shift += 7
                i += 1
                if not b & 0x80:
                    break
            if len(buf) < i + size:
                return
            packet = bytes(buf[:i + size])
            del buf[:i + size]
            self.on_packet(packet)


def publish_topic_payload(packet: bytes) -> tuple[str, bytes] | None:
    """(topic, payload) of an MQTT PUBLISH packet, None for any other packet."""
    if packet[0] >> 4 != 3:
        return None
    i = 1
    while packet[i] & 0x80:
        i += 1
    i += 1
    n = (packet[i] << 8) | packet[i + 1]
    topic = packet[i + 2:i + 2 + n].decode("utf-8", "replace")
    i += 2 + n
    if (packet[0] >> 1) & 3:
        i += 2  # packet id
    return topic, packet[i:]


# Packets the meter sends that the broker answers (CONNECT, PUBLISH at QoS 1 or 2, PUBREL,
# SUBSCRIBE, UNSUBSCRIBE, PINGREQ) and the answers (CONNACK, PUBACK, PUBREC, PUBCOMP, SUBACK,
# UNSUBACK, PINGRESP), by packet type.
_ASKS = {1, 6, 8, 10, 12}
_ANSWERS = {2, 4, 5, 7, 9, 11, 13}


def _pending(sock: socket.socket) -> bool:
    """Whether the meter's side has something the proxy has not handled yet: bytes, its
    close, an error."""
    poller = select.poll()
    poller.register(sock, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def socket_inodes(pid: int | str) -> set[str]:
    """The inodes of the sockets pid (or "self") holds open (from /proc), empty if it is gone."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def from_this_run(peer: tuple) -> bool:
    """Whether a loopback connection comes from the meter: a socket of this process (the
    firmware on CPython) or of one of its children (the MicroPython device process), found
    through /proc. Where there is no /proc (not Linux), every connection is taken."""
    if not os.path.exists("/proc/net/tcp"):
        return True
    host, port = peer[0], peer[1]
    try:
        ip = struct.unpack("=I", socket.inet_aton(host))[0]
        address = f"{ip:08X}:{port:04X}"
        rows = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    inode = next((r.split()[9] for r in rows if r.split()[1] == address), None)
    if inode is None:
        return False
    if inode in socket_inodes("self"):
        return True
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if stat.rpartition(")")[2].split()[1] == me and inode in socket_inodes(entry):
                return True
    return False


class _Pair:
    def __init__(self, proxy: NetProxy, down: socket.socket, up: socket.socket) -> None:
        self.down = down  # the meter's side
        self.up = up  # the broker's side
        self.outstanding = 0  # the meter's requests the broker has not answered yet
        self.to_meter = _Framer(lambda packet: proxy._to_meter(self, packet))
        self.from_meter = _Framer(lambda packet: proxy._from_meter(self, packet))


class NetProxy:
    def __init__(self, broker: tuple[str, int]) -> None:
        self.broker = broker
        self.port = 0
        self.up = True
        self.listener: socket.socket | None = None
        self.sel = selectors.DefaultSelector()
        self.pairs: list[_Pair] = []
        self.dead: list[socket.socket] = []  # see power_cut()
        self.lock = threading.Condition()
        self.to_meter: list[bytes] = []  # PUBLISH payloads forwarded to the meter
        self.from_meter: dict[str, int] = {}  # topic -> PUBLISH packets forwarded
        self.connections = 0
        self.refused = 0
        self.strangers = 0  # connections from outside this run, closed at once
        self.jobs: queue.Queue = queue.Queue()
        self.wake_r, self.wake_w = socket.socketpair()
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        self._listen()
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, name="netproxy", daemon=True)
        self.thread.start()

    # --- called from the World's thread -------------------------------------------------
    def set_up(self, up: bool) -> None:
        """Bring the path up (listen again) or down (drop every connection, refuse new ones);
        returns once done."""
        self._do(self._set_up, up)

    def flush(self) -> None:
        """Forward whatever the meter has already written (it is asleep: nothing more comes)."""
        self._do(self._drain_meters)

    def power_cut(self) -> None:
        """The meter lost power this instant: what it wrote before goes on to the broker,
        then its connections die with it (the broker sees them drop). Anything its code
        writes while unwinding from the cut stays unread, as it would on the board: a
        command it was handling is not acknowledged, so the broker delivers it again."""
        self._do(self._cut)

    def quiet(self) -> bool:
        """Nothing in flight: the proxy has read all the meter wrote, and every request of
        the meter's that the broker answers (PINGREQ, QoS 1 PUBLISH...) has its answer in the
        meter's socket. Call with the lock held."""
        for pair in self.pairs:
            if pair.outstanding > 0 or _pending(pair.down):
                return False
        return True

    def wait_quiet(self, timeout_s: float) -> bool:
        with self.lock:
            return self.quiet() or self.lock.wait_for(self.quiet, timeout_s)

    def live(self) -> bool:
        with self.lock:
            return self.up and bool(self.pairs)

    def wait_delivered(self, payload: bytes, timeout_s: float) -> bool:
        """Wait until a PUBLISH with this payload has been written to the meter's socket;
        False at once when no meter is connected, or after timeout_s."""
        with self.lock:
            return self.lock.wait_for(
                lambda: payload in self.to_meter or not (self.up and self.pairs), timeout_s
            ) and payload in self.to_meter

    def meter_publishes(self, skip: tuple[str, ...] = ()) -> int:
        with self.lock:
            return sum(n for t, n in self.from_meter.items()
                       if (t.split("/") + ["", "", ""])[2] not in skip)

    def close(self) -> None:
        self.stopping = True
        self._wake()
        self.thread.join(5)
        for pair in self.pairs:
            pair.down.close()
            pair.up.close()
        if self.listener is not None:
            self.listener.close()
        self.wake_r.close()
        self.wake_w.close()
        self.sel.close()

    # --- the proxy's own thread ---------------------------------------------------------
    def _do(self, fn: Callable, *args) -> None:
        done = threading.Event()
        self.jobs.put((fn, args, done))
        self._wake()
        if not done.wait(10):
            raise RuntimeError("network proxy did not answer")

    def _wake(self) -> None:
        try:
            self.wake_w.send(b"x")
        except OSError:
            pass

    def _listen(self) -> None:
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(8)
        s.setblocking(False)
        self.port = s.getsockname()[1]
        self.listener = s
        self.sel.register(s, selectors.EVENT_READ, "listen")

    def _set_up(self, up: bool) -> None:
        if up == self.up:
            return
        if up:
            self._listen()
        else:
            self._drain_meters()
            for pair in list(self.pairs):
                self._drop(pair)
            self.sel.unregister(self.listener)
            self.listener.close()
            self.listener = None
        with self.lock:
            self.up = up
            self.lock.notify_all()

    def _drain_meters(self) -> None:
        with self.lock:
            self._drain_locked()
        for s in self.dead:  # the powerless meter's side of connections cut earlier
            s.close()
        self.dead = []

    def _cut(self) -> None:
        self._drain_meters()
        for pair in list(self.pairs):
            self.sel.unregister(pair.down)  # left unread until the meter's process is gone
            self.dead.append(pair.down)
            pair.down = pair.up  # _drop closes the broker's side only
            self._drop(pair)

    def _drain_locked(self) -> None:
        for pair in list(self.pairs):
            pair.down.setblocking(False)
            try:
                while True:
                    data = pair.down.recv(65536)
                    if not data:
                        self._drop(pair)
                        break
                    self._forward(pair, data, True)
            except BlockingIOError:
                pair.down.settimeout(5)
            except OSError:
                self._drop(pair)

    def _loop(self) -> None:
        while not self.stopping:
            for key, _mask in self.sel.select(1.0):
                what = key.data
                if what == "wake":
                    self.wake_r.recv(4096)
                elif what == "listen":
                    self._accept()
                else:
                    pair, from_meter = what
                    sock = pair.down if from_meter else pair.up
                    with self.lock:  # read, forward and count as one step (see quiet())
                        if pair not in self.pairs:
                            continue
                        try:
                            data = sock.recv(65536)
                        except OSError:
                            data = b""
                        if not data:
                            self._drop(pair)
                        else:
                            self._forward(pair, data, from_meter)
                        self.lock.notify_all()
            while not self.jobs.empty():
                fn, args, done = self.jobs.get()
                try:
                    fn(*args)
                finally:
                    done.set()

    def _accept(self) -> None:
        try:
            down, peer = self.listener.accept()
        except OSError:
            return
        if not from_this_run(peer):
            down.close()  # not the meter: refused, nothing counted, nothing forwarded
            self.strangers += 1
            return
        try:
            up = socket.create_connection(self.broker, timeout=5)
        except OSError:
            down.close()  # the broker itself is not there
            self.refused += 1
            return
        for s in (down, up):
            s.setblocking(True)
            s.settimeout(5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = _Pair(self, down, up)
        with self.lock:
            self.pairs.append(pair)
            self.connections += 1
        self.sel.register(down, selectors.EVENT_READ, (pair, True))
        self.sel.register(up, selectors.EVENT_READ, (pair, False))

    def _forward(self, pair: _Pair, data: bytes, from_meter: bool) -> None:
        try:
            if from_meter:
                pair.up.sendall(data)
                pair.from_meter.feed(data)
            else:
                pair.down.sendall(data)
                pair.to_meter.feed(data)
        except OSError:
            self._drop(pair)

    def _drop(self, pair: _Pair) -> None:
        with self.lock:
            if pair not in self.pairs:
                return
            self.pairs.remove(pair)
            self.lock.notify_all()
        for s in (pair.down, pair.up):
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _to_meter(self, pair: _Pair, packet: bytes) -> None:
        kind = packet[0] >> 4
        if kind in _ANSWERS:
            pair.outstanding -= 1
        got = publish_topic_payload(packet)
        if got is not None:
            with self.lock:
                self.to_meter.append(got[1])
                self.lock.notify_all()

    def _from_meter(self, pair: _Pair, packet: bytes) -> None:
        kind = packet[0] >> 4
        if kind in _ASKS or (kind == 3 and packet[0] & 6):
            pair.outstanding += 1
        got = publish_topic_payload(packet)
        if got is not None:
            with self.lock:
                self.from_meter[got[0]] = self.from_meter.get(got[0], 0) + 1
                self.lock.notify_all()
