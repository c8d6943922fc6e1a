"""The network of a scenario run: a broker, the meter's path to it, and a simulated head-end.

When a scenario has `commands`, `network_outages` or a `broker`, the run uses real MQTT:
a mosquitto it starts on a free loopback port (stopped by its PID at the end) unless a
broker is given, a proxy between meter and broker that the World switches off during
`network_outages` (simulator/netproxy.py), and a head-end (paho-mqtt, signing with
host_tools/headend.py) that publishes each command on `meters/<id>/cmd` at its `at_s` and
collects and verifies the acks.

Virtual time runs far faster than the wall clock, so the World's time stepping waits, in
wall time, at the points where the network matters:
- before every step, until the proxy has read all the meter wrote and the broker's answers
  to it (CONNACK, SUBACK, PUBACK, PINGRESP) are in the meter's socket;
- at a command's `at_s` until the proxy has written it into the meter's socket (the meter
  then reads it at its next 200 ms look for commands: a fixed virtual time);
- before an outage drops the connection, when the meter's power goes, and at the end,
  until everything the meter had written has reached the head-end.
So the same scenario gives the same report every time.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from host_tools import wire
from simulator.netproxy import NetProxy

WAIT_S = 10.0  # longest wall-clock wait at one of those points
COUNTED = ("telemetry", "profile", "events", "ack")


class NetworkError(RuntimeError):
    """The run's broker could not be started or reached (one line)."""


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)


def plain_conf(port: int) -> str:
    """A loopback broker for one run: anonymous, nothing kept on disk."""
    return (f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_packet_size 65536\n")


class Mosquitto:
    """A mosquitto of its own on a free loopback port, stopped by its PID (for scenario runs,
    the tests' fixture, the bench). conf: the configuration text for a given port."""

    def __init__(self, conf: Callable[[int], str] = plain_conf) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise NetworkError("mosquitto is not installed: scenario commands and network "
                               "outages need it (or give a broker)")
        self.tmp = tempfile.TemporaryDirectory(prefix="scenario-mosquitto-")
        for _attempt in range(3):
            with socket.socket() as probe:
                probe.bind(("127.0.0.1", 0))
                self.port = probe.getsockname()[1]
            path = Path(self.tmp.name) / "mosquitto.conf"
            path.write_text(conf(self.port))
            self.proc = subprocess.Popen([binary, "-c", str(path)], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.PIPE)
            if self._wait_listening():
                return
            self._end()
        self.tmp.cleanup()
        raise NetworkError("mosquitto did not start listening")

    def _wait_listening(self) -> bool:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return True
            except OSError:
                if self.proc.poll() is not None:
                    return False  # e.g. the port was taken meanwhile: try another
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        self._end()
        self.tmp.cleanup()

    def _end(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def parse_broker(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("broker must be HOST:PORT")
    return host, int(port)


class HeadEnd:
    """The control room as the scenario sees it: subscribed to everything the meter publishes,
    signs commands with the meter's key (host_tools/wire.py), verifies acks."""

    def __init__(self, broker: tuple[str, int], meter_id: str) -> None:
        import paho.mqtt.client as mqtt

        self.meter_id = meter_id
        self.lock = threading.Condition()
        self.acks: list[bytes] = []
        self.received: dict[str, int] = {}
        self.seqs: dict[str, set[int]] = {"profile": set(), "events": set()}
        # every register value the meter published, in the order it arrived:
        # (stream, seq, register, mWh) (telemetry: both registers; events: import)
        self.registers: list[tuple[str, int, str, int]] = []
        ready = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                             client_id=f"scenario-headend-{secrets.token_hex(4)}")
        client.on_message = self._message
        client.on_subscribe = lambda *_a: ready.set()
        try:
            client.connect(broker[0], broker[1], keepalive=60)
        except OSError as exc:
            raise NetworkError(f"cannot reach the broker {broker[0]}:{broker[1]}: "
                               f"{exc.strerror or exc}") from None
        client.loop_start()
        client.subscribe(f"meters/{meter_id}/#", qos=1)
        if not ready.wait(WAIT_S):
            client.loop_stop()
            raise NetworkError("the broker did not confirm the head-end's subscription")
        self.client = client

    def _message(self, _c: Any, _u: Any, msg: Any) -> None:
        topic = kind(msg.topic)
        if topic in ("cmd", "status"):
            return  # the head-end's own commands; the broker's last will
        with self.lock:
            self.received[topic] = self.received.get(topic, 0) + 1
            if topic == "ack":
                self.acks.append(bytes(msg.payload))
            if topic in ("telemetry", "events"):
                self._registers(topic, msg.payload)
            if topic in self.seqs:
                try:
                    self.seqs[topic].add(int(json.loads(msg.payload)["seq"]))
                except (ValueError, KeyError, TypeError):
                    pass  # counted in `received`, not a record
            self.lock.notify_all()

    def _registers(self, topic: str, payload: bytes) -> None:
        try:
            body = json.loads(payload)
            for key in ("import_kwh", "export_kwh"):
                if key in body:
                    self.registers.append((topic, int(body["seq"]), key,
                                           kwh_text_to_mwh(body[key])))
        except (ValueError, KeyError, TypeError, AttributeError):
            pass  # counted in `received`, not a reading

    def publish(self, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(f"meters/{self.meter_id}/cmd", payload, qos=qos)
        info.wait_for_publish(WAIT_S)

    def wait_received(self, count: int) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: sum(self.received.values()) >= count, WAIT_S)

    def close(self) -> None:
        self.client.disconnect()  # first: wakes the network loop, which then ends at once
        self.client.loop_stop()


def kwh_text_to_mwh(text: str) -> int:
    """'12.345678' (the firmware's kWh text, at most six decimals) -> 12345678 mWh."""
    whole, _, frac = text.partition(".")
    if len(frac) > 6 or not (whole + frac).isdigit():
        raise ValueError(f"not a register value: {text!r}")
    return int(whole) * 1_000_000 + int((frac + "000000")[:6])


def register_decreases(registers: list[tuple[str, int, str, int]]) -> list[dict]:
    """Every published register value below one published before it: telemetry in the
    order it arrived, events in the order of their seq (a redelivered event carries its own
    value again), each register against the highest seen before it on its stream."""
    ordered = [r for r in registers if r[0] == "telemetry"]
    events = sorted({(r[1], r[2]): r for r in registers if r[0] == "events"}.values(),
                    key=lambda r: r[1])
    found = []
    for stream in (ordered, events):
        highest: dict[str, tuple[int, int]] = {}
        for topic, seq, key, mwh in stream:
            top = highest.get(key)
            if top is not None and mwh < top[0]:
                found.append({"stream": topic, "seq": seq, "register": key, "mwh": mwh,
                              "after_mwh": top[0], "after_seq": top[1]})
            elif top is None or mwh > top[0]:
                highest[key] = (mwh, seq)
    return found


def kind(topic: str) -> str:
    """meters/<id>/telemetry -> telemetry (meters/<id>/profile/x -> profile)."""
    parts = topic.split("/")
    return parts[2] if len(parts) > 2 and parts[0] == "meters" else topic


def default_key(meter_id: str) -> str:
    """A scenario without a command_key still gets one, the same every run."""
    return hashlib.sha256(b"scenario command key " + meter_id.encode()).hexdigest()


class ScenarioNetwork:
    """Set up before the world is built, attached to it, finished after the run."""

    def __init__(self, scenario: dict, broker: str | None = None) -> None:
        self.scenario = scenario
        self.mosquitto = None
        self.proxy = None
        self.headend = None
        text = broker or scenario.get("broker") or ""
        try:
            if text:
                self.broker = parse_broker(text)
            else:
                self.mosquitto = Mosquitto()
                self.broker = ("127.0.0.1", self.mosquitto.port)
            config = scenario["config"]
            from meter.storage.config import defaults  # on the path: the scenario was normalised

            self.meter_id = config.get("meter_id", defaults()["meter_id"])
            self.key_hex = scenario.get("command_key") or default_key(self.meter_id)
            self.key = bytes.fromhex(self.key_hex)
            self.headend = HeadEnd(self.broker, self.meter_id)
            self.proxy = NetProxy(self.broker)
        except BaseException:
            self.close()
            raise
        self.sent: list[dict] = []  # per command: its scenario entry, counter, delivered
        self.timeouts = 0  # waits that ran out (never in a healthy run)
        self.world = None

    def run_scenario(self) -> dict:
        """The scenario as the device runs it: MQTT through the proxy, a command key."""
        run = dict(self.scenario)
        run["config"] = dict(self.scenario["config"], mqtt_host="127.0.0.1",
                             mqtt_port=self.proxy.port, meter_id=self.meter_id)
        run["command_key"] = self.key_hex
        return run

    def attach(self, world: Any) -> None:
        self.world = world
        world.on_halt = self.settle
        world.on_power_cut = self.proxy.power_cut
        proxy = self.proxy

        def step() -> None:
            if not proxy.wait_quiet(WAIT_S):
                self.late("the broker's answers to the meter")

        world.on_step = step
        counter = 0
        for at_ms, item in self.scenario["commands"]:
            entry = {"at_ms": at_ms, "item": item, "n": None, "delivered": False}
            if "raw" not in item:
                counter += 1
                entry["n"] = counter
            self.sent.append(entry)
            world.schedule(at_ms, lambda entry=entry: self.send(entry))
        for at_ms, for_ms in self.scenario["network_outages"]:
            world.schedule(at_ms, self.outage_begins)
            world.schedule(at_ms + for_ms, lambda: self.proxy.set_up(True))

    def send(self, entry: dict) -> None:
        item = entry["item"]
        world = self.world
        if "raw" in item:
            payload = item["raw"].encode()
        else:
            issued = world.start_unix + world.now_ms // 1000  # the head-end's (true) clock
            payload = wire.encode_command(self.key, self.meter_id, entry["n"], item["cmd"],
                                             item.get("args", {}), issued,
                                             item.get("ttl_s", 300))
        proxy = self.proxy
        entry["payload"] = payload
        with proxy.lock:
            before = proxy.to_meter.count(payload)
        self.headend.publish(payload, item.get("qos", 1))
        # Hold virtual time here until the command is in the meter's socket (or there is
        # no connected meter to receive it: then it is lost, as with a clean session).
        with proxy.lock:
            entry["delivered"] = proxy.lock.wait_for(
                lambda: proxy.to_meter.count(payload) > before
                or not (proxy.up and proxy.pairs), WAIT_S) and (
                proxy.to_meter.count(payload) > before)
            stuck = not entry["delivered"] and proxy.up and bool(proxy.pairs)
        if stuck:
            self.late("a command to reach the meter")

    def late(self, what: str) -> None:
        self.timeouts += 1
        print(f"scenario network: waited {WAIT_S:g} s for {what} at {self.world.now_ms} ms; "
              "this run's report may differ from another's", file=sys.stderr)

    def settle(self) -> None:
        """Everything the meter has written reaches the head-end before anything more
        happens (the meter is asleep, powerless or done: it writes nothing meanwhile)."""
        self.proxy.flush()
        if not self.headend.wait_received(self.proxy.meter_publishes(skip=("status",))):
            self.late("the meter's messages to reach the head-end")

    def outage_begins(self) -> None:
        self.settle()
        self.proxy.set_up(False)

    def finish(self, settle: bool = True) -> dict:
        """The head-end's view for the report: verified acks, messages received per topic.
        settle=False: take what has arrived, waiting for nothing (an interrupted run)."""
        if settle:
            self.settle()
        # The meter answers the messages it gets one by one, in order: the i-th ack answers
        # the i-th command delivered, unless one went unanswered (a power cut, a message too
        # big for the heap); each ack names the exact message it answers ("for":
        # wire.ack_for of its bytes; null for one dropped unread as too large: the next
        # delivered in order), so one for a message the run never sent is attributed to none.
        # A command published while the meter was offline waits in its session at the
        # broker and reaches the meter when it is back: delivered is what the proxy saw go in.
        with self.proxy.lock:
            seen = set(self.proxy.to_meter)
        for e in self.sent:
            e["delivered"] = e["delivered"] or e.get("payload") in seen
        delivered = [e for e in self.sent if e["delivered"]]
        acks = []
        with self.headend.lock:
            payloads = list(self.headend.acks)
            received = dict(self.headend.received)
            seqs = {t: sorted(v) for t, v in self.headend.seqs.items()}
            registers = list(self.headend.registers)
        for payload in payloads:
            ack = wire.decode_ack(self.key, payload)
            mac_ok = ack is not None
            if ack is None:
                try:
                    ack = json.loads(payload[65:])
                except ValueError:
                    ack = {}
                if not isinstance(ack, dict):
                    ack = {}
            entry = None
            bound = ack.get("for")
            for i, candidate in enumerate(delivered):
                if bound is None or bound == wire.ack_for(candidate["payload"]):
                    entry = candidate
                    del delivered[:i + 1]
                    break
            record = {"at_s": entry["at_ms"] / 1000 if entry else None,
                      "cmd": (entry["item"].get("cmd", "raw") if entry else None),
                      "mac_ok": mac_ok}
            record.update({k: ack[k] for k in sorted(ack) if k != "id"})
            acks.append(record)
        return {"acks": acks,
                "commands_delivered": sum(1 for e in self.sent if e["delivered"]),
                "received": {t: received.get(t, 0) for t in sorted(set(COUNTED) | set(received))},
                # store-and-forward as the control room sees it: distinct records by seq, and
                # seqs missing between the first and the last one received
                "records_received": {t: len(v) for t, v in seqs.items()},
                "seq_gaps": {t: (v[-1] - v[0] + 1 - len(v) if v else 0)
                             for t, v in seqs.items()},
                # a cumulative register seen to run backwards (must stay empty)
                "register_decreases": register_decreases(registers),
                "registers_published_max_mwh": {
                    key: max((r[3] for r in registers if r[2] == key), default=None)
                    for key in ("import_kwh", "export_kwh")},
                "connections": self.proxy.connections, "network_late": self.timeouts}

    def close(self) -> None:
        if self.headend is not None:
            self.headend.close()
        if self.proxy is not None:
            self.proxy.close()
        if self.mosquitto is not None:
            self.mosquitto.stop()
