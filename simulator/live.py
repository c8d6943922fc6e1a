"""`make sim`: one simulated meter in real time, publishing telemetry over MQTT.

The firmware runs unmodified (by default on the MicroPython unix port) against a world whose
virtual clock is paced to the wall clock and starts at the wall clock's now. Without --broker
an embedded amqtt broker is started on a free loopback port. Readings and events are printed
as the meter publishes them, with the relay's position and the control state; keys at the
terminal press the meter's button and open or close its terminal cover (Console).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import queue
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from simulator import event_names, paths
from simulator import scenario as sc

# A household's day in miniature: the load changes every 20 s so the readings move.
HOUSEHOLD = [
    (240.0, 2.0, 0.95), (238.0, 8.5, 0.98), (236.5, 14.0, 0.92), (241.0, 0.4, 0.60),
    (239.0, 5.0, 0.99), (237.0, 11.0, 0.85), (242.0, 3.0, 1.00), (240.5, 6.5, -0.97),
]
STEP_S = 20
BUTTON_HOLD_S = 3.5  # the firmware acts on a 2 s hold, seen by its 1 s poll (up to 3 s)
KEYS_HELP = ("keys: b = press the meter's button (held 3.5 s), c = open/close the terminal "
             "cover, h or ? = this help; Ctrl-C stops")


class EmbeddedBroker:
    """An in-process amqtt broker on a loopback port, in its own thread."""

    def __init__(self) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.loop = asyncio.new_event_loop()
        self.broker: Any = None
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from amqtt.broker import Broker

        asyncio.set_event_loop(self.loop)
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin":
                        {"allow_anonymous": True}},
        }
        try:
            self.broker = Broker(config, loop=self.loop)
            self.loop.run_until_complete(self.broker.start())
        except BaseException as exc:  # reported to the caller of start()
            self.error = exc
            self.ready.set()
            return
        self.ready.set()
        self.loop.run_forever()

    def start(self) -> None:
        logging.getLogger("amqtt").setLevel(logging.ERROR)
        logging.getLogger("transitions").setLevel(logging.ERROR)
        self.thread.start()
        self.ready.wait(20)
        if self.error is not None or self.broker is None:
            raise RuntimeError(f"embedded broker failed to start: {self.error}")

    def stop(self) -> None:
        if self.broker is not None:
            future = asyncio.run_coroutine_threadsafe(self.broker.shutdown(), self.loop)
            try:
                future.result(10)
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


class Console:
    """The person at the meter: keys from the terminal (single keys in cbreak mode when
    stdin is a tty, else one per line, so a pipe can drive it) act on the World, which lives
    in this process on both runtimes; and the view of the supply: the relay's contact (the
    World's), the control state (from the meter's own control events) and each event."""

    def __init__(self, stdin: Any = None) -> None:
        paths.ensure_paths()
        # names from the firmware's own tables (meter/storage/events.py via event_names),
        # built before the firmware runs: the MQTT thread never imports firmware modules
        self.names = {}
        for code in range(1, 250):
            name = event_names.event_name(code)
            if name != "unknown":
                self.names[code] = name
        self.stdin = stdin if stdin is not None else sys.stdin
        self.actions: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.world: Any = None
        self.pins: Any = None
        self.relay_closed = True  # the emulated relay starts closed (as last shown)
        self.state = 1  # a new meter starts Connected (meter/supply/startup.py)
        self.cover_open = False
        self.events_shown: set = set()  # seqs: the meter sends an event again after a reboot
        self.saved: Any = None  # the terminal's settings while in cbreak mode

    def say(self, text: str) -> None:
        with self.lock:
            print(text, flush=True)

    def supply(self) -> str:
        """The relay's contact as it is now (the World's), the control state as last logged."""
        world = self.world
        closed = world.relays[0].closed if world is not None and world.relays else True
        return f"relay {'closed' if closed else 'open'}, {event_names.STATES[self.state]}"

    # --- keys -------------------------------------------------------------------------
    def __enter__(self) -> Console:
        self.say(KEYS_HELP)
        fd = None
        try:
            if self.stdin.isatty():
                fd = self.stdin.fileno()
        except (AttributeError, ValueError, OSError):
            fd = None
        if fd is not None:
            import termios
            import tty

            self.saved = (fd, termios.tcgetattr(fd))
            tty.setcbreak(fd)  # one key at a time, no echo; Ctrl-C is still SIGINT
        threading.Thread(target=self._read, args=(fd,), daemon=True).start()
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.restore()

    def restore(self) -> None:
        if self.saved is not None:
            import termios

            fd, attrs = self.saved
            self.saved = None
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)

    def _read(self, fd: int | None) -> None:
        while True:
            try:
                if fd is not None:
                    data = os.read(fd, 1).decode(errors="replace")
                else:
                    data = self.stdin.readline()
            except (OSError, ValueError):
                return
            if not data:
                return  # end of input: the meter runs on
            key = data.strip()[:1].lower()
            if key in ("h", "?"):
                self.say(KEYS_HELP)
            elif key in ("b", "c"):
                self.actions.put(key)
            elif key:
                self.say(f"unknown key {key!r}; {KEYS_HELP}")

    # --- the World's side (called in the thread that runs it) --------------------------
    def attach(self, world: Any) -> None:
        from boards import esp32_atm90e26

        self.pins = esp32_atm90e26  # the board's pin map: the button's and the cover's
        self.world = world

    def tick(self) -> None:
        """Between the firmware's sleeps: act on the keys pressed, show a relay movement."""
        world = self.world
        if world is None:
            return
        pins = self.pins
        while not self.actions.empty():
            key = self.actions.get()
            now = world.now_ms
            if key == "b":
                self.say(f"{time.strftime('%H:%M:%S')}  button pressed "
                         f"(held {BUTTON_HOLD_S:g} s)")
                world.schedule(now, lambda: world.set_external_pin(pins.PIN_BUTTON, 0))
                world.schedule(now + int(BUTTON_HOLD_S * 1000),
                               lambda: world.set_external_pin(pins.PIN_BUTTON, 1))
            else:
                self.cover_open = not self.cover_open
                level = 1 if self.cover_open else 0
                self.say(f"{time.strftime('%H:%M:%S')}  terminal cover "
                         f"{'opened' if level else 'closed'}")
                world.schedule(now, lambda level=level: world.set_external_pin(
                    pins.PIN_COVER, level))
        closed = world.relays[0].closed if world.relays else True
        if closed != self.relay_closed:
            self.relay_closed = closed
            self.say(f"{time.strftime('%H:%M:%S')}  relay {'closed' if closed else 'open'}")

    def event(self, e: dict) -> None:
        code = e.get("code")
        if not isinstance(code, int):
            return
        if e.get("seq") in self.events_shown:
            return  # delivered again (its cursor was saved before the reboot): shown once
        self.events_shown.add(e.get("seq"))
        name = self.names.get(code, "unknown")
        offset = code - 150  # supply control: 150 + cause * 3 + the resulting state
        if 0 <= offset < 12:
            self.state = offset % 3
        t = e.get("t")
        when = time.strftime("%H:%M:%S", time.localtime(t)) if isinstance(t, int) else "?"
        value = e.get("value")
        self.say(f"{time.strftime('%H:%M:%S')}  {e.get('id')}  event #{e.get('seq')}  "
                 f"{name} ({code}) at {when}" + (f", value {value}" if value else "")
                 + (f"  -> {self.supply()}" if 0 <= offset < 12 else ""))


def household_load(hours: float) -> list[dict]:
    load = []
    for i in range(max(len(HOUSEHOLD), int(hours * 3600 / STEP_S))):
        volts, amps, pf = HOUSEHOLD[i % len(HOUSEHOLD)]
        load.append({"at_s": i * STEP_S, "volts": volts, "amps": amps, "pf": pf, "hz": 50.0})
    return load


def print_readings(host: str, port: int, meter_id: str, console: Console) -> Any:
    import paho.mqtt.client as mqtt

    def on_message(_client: Any, _userdata: Any, msg: Any) -> None:
        try:
            r = json.loads(msg.payload)
        except ValueError:
            return
        if not isinstance(r, dict):
            return
        if msg.topic.endswith("/events"):
            console.event(r)
            return
        console.say(
            f"{time.strftime('%H:%M:%S')}  {r['id']}  #{r['seq']:<4}  "
            f"{r['v']:6.1f} V  {r['i']:6.2f} A  {r['p']:6d} W  PF {r['pf']:5.2f}  "
            f"{r['hz']:5.2f} Hz  import {r['import_kwh']} kWh  export {r['export_kwh']} kWh  "
            f"{console.supply()}")

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-viewer-{port}")
    client.on_message = on_message
    client.connect(host, port)
    client.subscribe([(f"meters/{meter_id}/telemetry", 0), (f"meters/{meter_id}/events", 1)])
    client.loop_start()
    return client


def live_scenario(args: argparse.Namespace, host: str, port: int, start_unix: int) -> dict:
    """The live run as a scenario, checked like any other (meter id, period, duration)."""
    hours = args.duration / 3600 if args.duration else 24 * 365
    return sc.normalise({
        "start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start_unix)),
        "duration_s": args.duration or hours * 3600,
        "load": household_load(min(hours, 24)),
        "config": {"meter_id": args.meter_id, "mqtt_host": host, "mqtt_port": port,
                   "telemetry_period_s": args.period},
    })


@contextmanager
def own_terminal() -> Iterator[None]:
    """On a terminal, the live meter takes the foreground process group for itself while it
    runs, so that a terminal's Ctrl-C reaches it alone: `make sim` then ends with the
    simulator's own status 0 (GNU make, when it gets the SIGINT too, kills itself by it once
    its child is done: 130, however cleanly the child stopped). Ctrl-Z is ignored meanwhile:
    a meter in real time does not pause, and a group the shell does not know of could not be
    resumed by `fg`. Given back on every way out."""
    try:
        fd = sys.stdin.fileno()
        mine = os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp()
    except (OSError, ValueError):
        mine = False
    if not mine or os.getpgrp() == os.getpid() or os.getsid(0) == os.getpid():
        yield  # not in the terminal's foreground, or already a job of its own (a shell's)
        return
    group = os.getpgrp()
    ttou = signal.signal(signal.SIGTTOU, signal.SIG_IGN)  # tcsetpgrp from the background
    tstp = signal.signal(signal.SIGTSTP, signal.SIG_IGN)
    try:
        os.setpgid(0, 0)
        os.tcsetpgrp(fd, os.getpgrp())
        yield
    finally:
        with suppress(OSError):
            os.tcsetpgrp(fd, group)
            os.setpgid(0, group)
        signal.signal(signal.SIGTSTP, tstp)
        signal.signal(signal.SIGTTOU, ttou)


def main(args: argparse.Namespace) -> int:
    with own_terminal():
        return _main(args)


def _main(args: argparse.Namespace) -> int:
    from simulator.mqttpath import parse_broker

    # the live meter lives in the present: its clock starts at the wall clock's now
    start_unix = int(time.time())
    from host_tools.headend import KeyFile, KeyFileError, command_line

    keys = KeyFile(getattr(args, "keys", None) or paths.ROOT / "build" / "demo_keys.json")
    try:
        host, port = parse_broker(args.broker) if args.broker else ("127.0.0.1", 1883)
        live_scenario(args, host, port, start_unix)  # bad options: said before anything starts
        keys.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            key = keys.key(args.meter_id)
        except KeyFileError:
            key = keys.new_key(args.meter_id)  # refused, as it should, if the file is damaged
    except (ValueError, OSError, sc.ScenarioError, KeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    broker = None
    if not args.broker:
        broker = EmbeddedBroker()
        broker.start()
        host, port = "127.0.0.1", broker.port
        print(f"embedded MQTT broker on {host}:{port}")
    hours = args.duration / 3600 if args.duration else 24 * 365
    scenario = live_scenario(args, host, port, start_unix)
    if hours > 24:
        # Repeat the day's pattern: shift the first day's steps for the whole run.
        day = scenario["load"]
        scenario["load"] = [[p[0] + d * 86_400_000] + p[1:] for d in range(int(hours // 24) + 1)
                            for p in day]
    scenario["command_key"] = key.hex()
    console = Console()
    viewer = print_readings(host, port, args.meter_id, console)
    print("commands, from another terminal: " + command_line(["--broker", f"{host}:{port}",
          "--keys", str(keys.path.resolve()), "status", args.meter_id]), flush=True)
    print(f"meter {args.meter_id} running on {args.runtime}; readings every {args.period} s "
          f"on meters/{args.meter_id}/telemetry. Ctrl-C stops.", flush=True)
    # virtual time 0 is start_unix on the wall clock (a slow start-up is caught up at once)
    started = time.monotonic() - (time.time() - start_unix)

    def pace(now_ms: int) -> None:
        console.tick()
        ahead = now_ms / 1000 - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)

    code = 0
    try:
        with tempfile.TemporaryDirectory() as tmp, console:  # console: the terminal restored
            flash = str(Path(tmp) / "flash.img")
            if args.runtime == "cpython":
                sc.run_cpython(scenario, flash, None, on_tick=pace, on_world=console.attach)
            else:
                sc.run_micropython(scenario, flash, None, sc.HEAPSIZE, on_tick=pace,
                                   on_world=console.attach)
    except KeyboardInterrupt:
        print("\nstopped.")
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = 1
    finally:
        viewer.loop_stop()
        if broker is not None:
            broker.stop()
    return code
