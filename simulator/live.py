"""`make sim`: one simulated meter in real time, publishing telemetry over MQTT.

The firmware runs unmodified (by default on the MicroPython unix port) against a world whose
virtual clock is paced to the wall clock. Without --broker an embedded amqtt broker is
started on a free loopback port. Readings are printed as the meter publishes them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from simulator import scenario as sc

# A household's day in miniature: the load changes every 20 s so the readings move.
HOUSEHOLD = [
    (240.0, 2.0, 0.95), (238.0, 8.5, 0.98), (236.5, 14.0, 0.92), (241.0, 0.4, 0.60),
    (239.0, 5.0, 0.99), (237.0, 11.0, 0.85), (242.0, 3.0, 1.00), (240.5, 6.5, -0.97),
]
STEP_S = 20


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


def household_load(hours: float) -> list[dict]:
    load = []
    for i in range(max(len(HOUSEHOLD), int(hours * 3600 / STEP_S))):
        volts, amps, pf = HOUSEHOLD[i % len(HOUSEHOLD)]
        load.append({"at_s": i * STEP_S, "volts": volts, "amps": amps, "pf": pf, "hz": 50.0})
    return load


def print_readings(host: str, port: int, meter_id: str) -> Any:
    import paho.mqtt.client as mqtt

    def on_message(_client: Any, _userdata: Any, msg: Any) -> None:
        try:
            r = json.loads(msg.payload)
        except ValueError:
            return
        print(f"{time.strftime('%H:%M:%S')}  {r['id']}  #{r['seq']:<4}  "
              f"{r['v']:6.1f} V  {r['i']:6.2f} A  {r['p']:6d} W  PF {r['pf']:5.2f}  "
              f"{r['hz']:5.2f} Hz  import {r['import_kwh']} kWh  export {r['export_kwh']} kWh",
              flush=True)

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sim-viewer-{port}")
    client.on_message = on_message
    client.connect(host, port)
    client.subscribe(f"meters/{meter_id}/telemetry")
    client.loop_start()
    return client


def main(args: argparse.Namespace) -> int:
    broker = None
    if args.broker:
        host, _, port_text = args.broker.rpartition(":")
        host, port = host or "127.0.0.1", int(port_text)
    else:
        broker = EmbeddedBroker()
        broker.start()
        host, port = "127.0.0.1", broker.port
        print(f"embedded MQTT broker on {host}:{port}")
    hours = args.duration / 3600 if args.duration else 24 * 365
    scenario = sc.normalise({
        "duration_s": args.duration or hours * 3600,
        "load": household_load(min(hours, 24)),
        "config": {"meter_id": args.meter_id, "mqtt_host": host, "mqtt_port": port,
                   "telemetry_period_s": args.period},
    })
    if hours > 24:
        # Repeat the day's pattern: shift the first day's steps for the whole run.
        day = scenario["load"]
        scenario["load"] = [[p[0] + d * 86_400_000] + p[1:] for d in range(int(hours // 24) + 1)
                            for p in day]
    from host_tools.headend import KeyFile, KeyFileError

    keys = KeyFile(getattr(args, "keys", None) or sc.ROOT / "build" / "demo_keys.json")
    keys.path.parent.mkdir(parents=True, exist_ok=True)
    try:
        key = keys.key(args.meter_id)
    except KeyFileError:
        key = keys.new_key(args.meter_id)
    scenario["command_key"] = key.hex()
    viewer = print_readings(host, port, args.meter_id)
    print(f"commands, from another terminal: python -m host_tools.headend --broker "
          f"{host}:{port} --keys {keys.path} status {args.meter_id}", flush=True)
    print(f"meter {args.meter_id} running on {args.runtime}; readings every {args.period} s "
          f"on meters/{args.meter_id}/telemetry. Ctrl-C stops.", flush=True)
    started = time.monotonic()

    def pace(now_ms: int) -> None:
        ahead = now_ms / 1000 - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)

    code = 0
    try:
        with tempfile.TemporaryDirectory() as tmp:
            flash = str(Path(tmp) / "flash.img")
            if args.runtime == "cpython":
                sc.run_cpython(scenario, flash, None, on_tick=pace)
            else:
                sc.run_micropython(scenario, flash, None, sc.HEAPSIZE, on_tick=pace)
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
