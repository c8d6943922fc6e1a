"""`make bench`: measured figures, printed, never asserted.

For the one-day scenario in tests/scenarios on each runtime: simulated seconds per wall
second, and on MicroPython the live-heap peak (sampled after a collection once a simulated
minute) under the 64 KiB cap. Also the flash traffic of that day.

Command latency: the firmware on MicroPython (64 KiB heap), paced to real time, connected to
a real mosquitto; 100 signed commands, each sent at a random phase of the meter's 1 s duty
cycle, timed from the head-end's publish to the meter's signed ack arriving back (an upper
bound of "command reaches the meter" to "handler called": it adds two loopback broker hops).
"""

from __future__ import annotations

import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from simulator import scenario as sc

ROOT = Path(__file__).resolve().parent.parent
ONE_DAY = ROOT / "tests" / "scenarios" / "one_day.json"


def main() -> int:
    scenario = sc.load_file(ONE_DAY)
    print(f"one-day scenario: {ONE_DAY.relative_to(ROOT)}")
    for runtime in sc.RUNTIMES:
        report = sc.run(scenario, runtime)
        line = (f"  {runtime:<12} {report['sim_s_per_wall_s']:>9.0f} simulated s per wall s"
                f"  ({report['wall_s']:.1f} s wall)")
        if "heap_peak_bytes" in report:
            line += f"  heap peak {report['heap_peak_bytes']} B of {64 * 1024}"
        print(line)
        print(f"  {'':<12} flash: {report['flash']['bytes_written']} bytes written, "
              f"{report['flash']['erases']} erases in the day")
    command_latency()
    return 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def command_latency(count: int = 100, runtime: str = "micropython") -> list[float]:
    """Publish-to-ack latency of `count` commands through a fresh mosquitto, in seconds."""
    import paho.mqtt.client as mqtt

    from host_tools.headend import decode_ack, encode_command

    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = _free_port()
    broker = subprocess.Popen([binary, "-p", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    key = bytes(random.randrange(256) for _ in range(32))
    meter = "bench-meter"
    acks: dict[int, float] = {}
    online = threading.Event()
    try:
        time.sleep(0.3)
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-headend")

        def on_message(_c, _u, msg):
            if msg.topic.endswith("/status"):
                if msg.payload == b"online":
                    online.set()
                return
            ack = decode_ack(key, msg.payload)
            if ack is not None and ack.get("code") == 0:
                acks.setdefault(ack["n"], time.monotonic())

        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.subscribe([(f"meters/{meter}/ack", 1), (f"meters/{meter}/status", 1)])
        client.loop_start()
        scenario = sc.normalise({
            "duration_s": count * 1.5 + 30,
            "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
            "config": {"meter_id": meter, "mqtt_host": "127.0.0.1", "mqtt_port": port,
                       "telemetry_period_s": 60},
            "command_key": key.hex(),
        })
        started = time.monotonic()
        stop = threading.Event()

        def pace(now_ms: int) -> None:
            if stop.is_set():
                raise KeyboardInterrupt  # ends the run: the measurement is complete
            ahead = now_ms / 1000 - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)

        def run() -> None:
            with tempfile.TemporaryDirectory() as tmp:
                try:
                    if runtime == "cpython":
                        sc.run_cpython(scenario, str(Path(tmp) / "f.img"), None, on_tick=pace)
                    else:
                        sc.run_micropython(scenario, str(Path(tmp) / "f.img"), None,
                                           on_tick=pace)
                except KeyboardInterrupt:
                    pass

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        if not online.wait(30):
            print("  command latency: the meter did not come online")
            return []
        rng = random.Random(6)
        latencies = []
        for n in range(1, count + 1):
            time.sleep(rng.random())  # a random phase of the duty cycle
            sent = time.monotonic()
            client.publish(f"meters/{meter}/cmd",
                           encode_command(key, meter, n, "status"), qos=1)
            while n not in acks and time.monotonic() - sent < 5:
                time.sleep(0.001)
            if n in acks:
                latencies.append(acks[n] - sent)
        stop.set()
        thread.join(30)
        client.loop_stop()
        client.disconnect()
    finally:
        broker.terminate()
        broker.wait(5)
    if len(latencies) < 2:
        print(f"  command latency: only {len(latencies)} of {count} commands acked")
        return latencies
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"  command -> ack on {runtime} through mosquitto, {len(latencies)}/{count} acked: "
          f"p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    return latencies


if __name__ == "__main__":
    raise SystemExit(main())
