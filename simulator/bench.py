"""`make bench`: measured figures, printed, never asserted.

For the one-day scenario in tests/scenarios on each runtime: simulated seconds per wall
second, and on MicroPython the live-heap peak (sampled after a collection once a simulated
minute) under the 64 KiB cap. Also the flash traffic of that day.

Command latency: the firmware on MicroPython (64 KiB heap), paced to real time, connected to
a real mosquitto; 100 signed commands, each sent at a random phase of the meter's 1 s duty
cycle, timed from the head-end's publish to the meter's signed ack arriving back (an upper
bound of "command reaches the meter" to "handler called": it adds two loopback broker hops).

Flood hold-up (issue 18): 2,000 forged commands at QoS 1, then a genuine one; how long after
its publish its ack comes, on each runtime, the firmware paced to real time (see flood_holdup).
"""

from __future__ import annotations

import contextlib
import io
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from simulator import paths
from simulator import scenario as sc

ROOT = Path(__file__).resolve().parent.parent
ONE_DAY = ROOT / "tests" / "scenarios" / "one_day.json"
CYCLES = 100_000  # rated erase cycles per 4 KiB block of the data partition's NOR flash
WEAR_DAYS = 2


def worst_case_wear(power_fail_input: bool = True, telemetry: bool = False) -> dict:
    """Imax (60 A at 240 V) without a break, a 15-min profile and frequent events (an outage,
    so three events, every hour), for a few days on CPython. With the power-fail input the
    last gasp saves at each outage (a journal record) and checkpoints are periodic; without
    it the registers are checkpointed every 5 Wh. With telemetry: MQTT at the default
    60 s period through the run's own mosquitto, each published value saved first."""
    from simulator.device.shim import Partition

    duration = WEAR_DAYS * 86400
    outages = [{"at_s": at, "for_s": 2} for at in range(1800, duration, 3600)]
    raw = {"duration_s": duration, "power_fail_input": power_fail_input,
           "load": [{"at_s": 0, "volts": 240, "amps": 60, "pf": 1.0}], "outages": outages}
    if telemetry:
        raw["config"] = {"telemetry_period_s": 60}
        raw["commands"] = [{"at_s": 30, "cmd": "status"}]  # the run brings its broker
    scenario = sc.normalise(raw)
    report = sc.run(scenario, "cpython")
    flash = report["flash"]
    per_block = flash["erases_per_block"]
    first, count = Partition.TABLE["meterdata"]
    fs_blocks = per_block[first:first + count]
    first, count = Partition.TABLE["lastgasp"]
    journal = per_block[first:first + count]
    per_day = sum(fs_blocks) / WEAR_DAYS
    # LittleFS levels wear dynamically (block_cycles = 100: a metadata pair moves on after
    # 100 erases, file writes always go to a fresh block), so erases spread over its blocks.
    fs_years = len(fs_blocks) * CYCLES / max(per_day, 1e-9) / 365
    # The journal is not levelled: each sector is erased once per full turn of the ring
    # (2 x 128 records), i.e. once per 256 last gasps, or as measured if that is more.
    gasps_per_day = len(outages) / WEAR_DAYS if power_fail_input else 0
    journal_day = max(max(journal) / WEAR_DAYS, gasps_per_day / (count * 128))
    journal_years = CYCLES / journal_day / 365 if journal_day else float("inf")
    return {"bytes_per_day": flash["bytes_written"] / WEAR_DAYS,
            "erases_per_day": flash["erases"] / WEAR_DAYS,
            "hottest_block_per_day": max(fs_blocks) / WEAR_DAYS,
            "journal_erases_per_day": sum(journal) / WEAR_DAYS,
            "lifetime_years": min(fs_years, journal_years), "fs_years": fs_years,
            "journal_years": journal_years, "events": len(report["events"]),
            "lost_wh_per_outage_max": report["lost_wh_per_outage_max"],
            "holdup_overruns": report["holdup_overruns"]}


def print_wear() -> None:
    for pfi, mqtt, name in (
            (True, False, "with the power-fail input (last-gasp journal, checkpoints at "
                          "each 15-min period)"),
            (True, True, "with the power-fail input and MQTT telemetry every 60 s (each "
                         "published value on flash first)"),
            (False, False, "without it (checkpoint every 5 Wh)")):
        wear = worst_case_wear(pfi, mqtt)
        print(f"flash wear, worst case ({WEAR_DAYS} days at Imax 60 A, 15-min profile, an "
              f"outage and its events every hour), {name}:")
        print(f"  {wear['bytes_per_day']:.0f} bytes written per day, "
              f"{wear['erases_per_day']:.0f} erases per day "
              f"(hottest LittleFS block {wear['hottest_block_per_day']:.1f} per day, "
              f"journal {wear['journal_erases_per_day']:.1f} per day); "
              f"lost per outage max {wear['lost_wh_per_outage_max']} Wh, "
              f"{wear['holdup_overruns']} hold-up overruns")
        journal = ("not used" if wear["journal_years"] == float("inf")
                   else f"{wear['journal_years']:.0f} years, a sector erased per 256 "
                   "last gasps")
        print(f"  projected life at {CYCLES} cycles per block: {wear['lifetime_years']:.0f} "
              f"years (LittleFS, levelled: {wear['fs_years']:.0f} years; journal: {journal})")


def poll_cost() -> None:
    """Cost of one metering poll (IC check, energy read and check, power read) per runtime:
    on CPython the driver against the emulated chip in-process; on MicroPython the wall time
    per simulated second of a 10-minute run, where every SPI frame is a round trip."""
    import time

    paths.ensure_paths()
    from simulator.device import shim
    from simulator.device import shim as machine
    from simulator.device.atm90e26_emu import Atm90e26
    from simulator.device.shim import micropython
    from simulator.device.world import World

    sys.modules.setdefault("micropython", micropython)
    from meter.metering.atm90e26 import ATM90E26

    world = World(10**12, 1_767_205_800, [[0, 240.0, 10.0, 1.0, 50.0]], [])
    chip = Atm90e26()
    world.attach_spi(2, 5, chip)
    world.meters.append(chip)
    frames = [0]
    exchange = chip.exchange

    def counting(mode, tx, rx):
        frames[0] += 1
        exchange(mode, tx, rx)

    chip.exchange = counting
    shim.WORLD[0] = world
    driver = ATM90E26(machine.SPI(2, baudrate=200_000, polarity=1, phase=1),
                      machine.Pin(5, machine.Pin.OUT, value=1))
    driver.start()
    n = 5000
    frames[0] = 0
    started = time.perf_counter()
    for _ in range(n):
        world.advance(1000)
        driver.configured()
        driver.read_energy()
        driver.read_power()
    cost = (time.perf_counter() - started) / n
    shim.WORLD[0] = None
    print(f"metering poll: {frames[0] / n:.1f} SPI frames")
    print(f"  cpython      {cost * 1e6:9.1f} us per poll (driver + emulated chip, in-process)")
    scenario = sc.normalise({"duration_s": 600, "load": [{"at_s": 0, "amps": 10}]})
    report = sc.run(scenario, "micropython")
    print(f"  micropython  {report['wall_s'] / 600 * 1e3:9.2f} ms per poll, whole duty cycle "
          f"over the wire; heap peak {report['heap_peak_bytes']} B")


# Issue 16's before figures: the one-day scenario on main at ecbc3eb (before the wire's
# batching and the simulator's hot paths), measured 2026-12-02 on this 2-core machine with
# simulator/bench.py's one_day_speed(), the load average beside each: wall seconds per day.
BEFORE_REVISION = "ecbc3eb"
BEFORE_DAY_WALL_S = {"cpython": (4.7, "load 1.0"), "micropython": (43.6, "load 1.7")}
TARGET_DAY_WALL_S = {"cpython": 3.0, "micropython": 20.0}  # issue 16's goals


def one_day_speed() -> None:
    """The one-day scenario on each runtime: simulated s per wall s and the wall time of
    the day, beside issue 16's before figure (BEFORE_DAY_WALL_S) and its goal."""
    import os

    scenario = sc.load_file(ONE_DAY)
    print(f"one-day scenario: {ONE_DAY.relative_to(ROOT)}")
    for runtime in sc.RUNTIMES:
        report = sc.run(scenario, runtime)
        before, before_load = BEFORE_DAY_WALL_S[runtime]
        load = os.getloadavg()[0]
        line = (f"  {runtime:<12} {report['sim_s_per_wall_s']:>9.0f} simulated s per wall s"
                f"  ({report['wall_s']:.1f} s wall, load {load:.1f}; before "
                f"{86400 / before:.0f}, {before} s at {BEFORE_REVISION}, {before_load}; "
                f"goal <= {TARGET_DAY_WALL_S[runtime]:.0f} s)")
        if "heap_peak_bytes" in report:
            line += (f"  heap peak {report['heap_peak_bytes']} B of {64 * 1024}, device "
                     f"layer {report['heap_device_layer_bytes']} B")
        print(line)
        print(f"  {'':<12} flash: {report['flash']['bytes_written']} bytes written, "
              f"{report['flash']['erases']} erases in the day")


def main() -> int:
    one_day_speed()
    poll_cost()
    print_wear()
    command_latency()
    for runtime in sc.RUNTIMES:
        flood_holdup(2000, runtime)
    heap_floor()
    print(f"a live meter's idle cost ({IDLE_METERS} meters, {IDLE_SECONDS} s each poll):")
    for poll_ms, telemetry_s in IDLE_TELEMETRY_S.items():
        idle_cost(poll_ms=poll_ms, telemetry_s=telemetry_s)
    return 0


# The whole firmware at work: MQTT telemetry, store-and-forward after a broker outage, a
# power cut, and every kind of command group (control, configuration, read-back, billing).
WHOLE_FIRMWARE = {
    "duration_s": 420,
    "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}],
    "config": {"control_mode": 2, "telemetry_period_s": 10, "profile_period_s": 60},
    "network_outages": [{"at_s": 60, "for_s": 120}],
    "outages": [{"at_s": 300, "for_s": 20}],
    "commands": [
        {"at_s": 20, "cmd": "set_control_mode", "args": {"mode": 2}},
        {"at_s": 30, "cmd": "disconnect"},
        {"at_s": 40, "cmd": "reconnect"},
        {"at_s": 200, "cmd": "read_profile", "args": {"newest_first": True}},
        {"at_s": 210, "cmd": "read_events", "args": {"category": "control"}},
        {"at_s": 220, "cmd": "set_load_limit", "args": {"watts": 5000}},
        {"at_s": 230, "cmd": "billing_snapshot"},
        {"at_s": 240, "cmd": "time_sync", "args": {"unix": None}},
        {"at_s": 350, "cmd": "status"},
    ],
}


def whole_firmware_ok(report: dict) -> bool:
    acks = report["acks"]
    return (len(acks) == len(WHOLE_FIRMWARE["commands"])
            and all(a["mac_ok"] and a["code"] == 0 for a in acks)
            and report["telemetry"]["backlog"] == 0 and report["reboots"] == 1
            and report["relay_closed"] and report["relay_operations"] == 2)


def heap_floor(budgets_k: tuple[int, ...] = (64, 60, 56, 52, 48)) -> int | None:
    """The smallest MicroPython heap budget (KiB, in 4 KiB steps down from 64) at which the
    whole firmware still does everything in WHOLE_FIRMWARE right; printed with the peak."""
    raw = json.loads(json.dumps(WHOLE_FIRMWARE))
    start = sc.normalise(dict(raw, commands=[]))["start_unix"]
    for c in raw["commands"]:
        if c["cmd"] == "time_sync":
            c["args"]["unix"] = start + c["at_s"] + 5  # the meter is 5 s behind
    scenario = sc.normalise(raw)
    floor = None
    print("whole firmware on MicroPython (telemetry, a broker outage and its backlog, a power "
          "cut, 9 commands):")
    for k in budgets_k:
        try:
            report = sc.run(scenario, "micropython", heapsize=f"{k}k")
        except RuntimeError as exc:  # the firmware stopped: out of memory at boot
            why = str(exc).strip().splitlines()[-1]
            print(f"  budget {k} KiB: FAILS, the firmware stopped ({why})")
            break
        ok = whole_firmware_ok(report)
        print(f"  budget {k} KiB: {'runs' if ok else 'FAILS'}, heap peak "
              f"{report['heap_peak_bytes']} B (sampled each simulated minute)")
        if not ok:
            break
        floor = k
    print(f"  smallest budget that runs it: {floor} KiB" if floor else
          "  it does not run even at 64 KiB")
    return floor


def paced_meter(scenario: dict, runtime: str, stop: threading.Event) -> threading.Thread:
    """The meter running in real time in a thread (the whole firmware with its command path,
    README: heap), until `stop` is set: the measurement is then complete."""
    started = time.monotonic()

    def pace(now_ms: int) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # ends the run
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
                                       sc.HEAPSIZE, on_tick=pace)
            except KeyboardInterrupt:
                pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def command_latency(count: int = 100, runtime: str = "micropython") -> list[float]:
    """Publish-to-ack latency of `count` commands through a fresh mosquitto, in seconds:
    disconnect and reconnect in turn (control mode 2: a remote reconnect closes the relay),
    so every one pulses the relay. The meter acks after the pulse and its feedback check, so
    this bounds the time from a command reaching the meter to its relay pulse starting."""
    import paho.mqtt.client as mqtt

    from host_tools.wire import decode_ack, encode_command
    from simulator.mqttpath import Mosquitto

    broker = Mosquitto()
    port = broker.port
    key = bytes(random.randrange(256) for _ in range(32))
    meter = "bench-meter"
    acks: dict[int, float] = {}
    online = threading.Event()
    try:
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
            "duration_s": count * 2.5 + 30,
            "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
            "config": {"meter_id": meter, "mqtt_host": "127.0.0.1", "mqtt_port": port,
                       "telemetry_period_s": 60, "control_mode": 2,
                       "relay_ops_per_min": 60},  # the most the rate limit allows
            "command_key": key.hex(),
        })
        stop = threading.Event()
        thread = paced_meter(scenario, runtime, stop)
        if not online.wait(30):
            print("  command latency: the meter did not come online")
            return []
        rng = random.Random(6)
        latencies = []
        for n in range(1, count + 1):
            time.sleep(0.6 + rng.random())  # a random phase; within 60 relay operations/min
            sent = time.monotonic()
            cmd = ("reconnect", "disconnect")[n % 2]
            client.publish(f"meters/{meter}/cmd", encode_command(key, meter, n, cmd), qos=1)
            while n not in acks and time.monotonic() - sent < 5:
                time.sleep(0.001)
            if n in acks:
                latencies.append(acks[n] - sent)
        stop.set()
        thread.join(30)
        client.loop_stop()
        client.disconnect()
    finally:
        broker.stop()
    if len(latencies) < 2:
        print(f"  command latency: only {len(latencies)} of {count} commands acked")
        return latencies
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    print(f"  disconnect/reconnect -> ack (after the relay pulse) on {runtime} through "
          f"mosquitto, {len(latencies)}/{count} acked with success: "
          f"p50 {cuts[49] * 1000:.0f} ms, p99 {cuts[98] * 1000:.0f} ms, "
          f"max {max(latencies) * 1000:.0f} ms")
    return latencies


def flood_holdup(flood: int = 2000, runtime: str = "micropython",
                 queue: int | None = None) -> float | None:
    """How long a genuine command waits behind a flood (issue 18): `flood` forged commands
    (well-formed, the meter's id, a wrong MAC: the dearest rejection, HMAC included) published
    at QoS 1 as fast as the broker takes them, then one genuine `status`; seconds from its
    publish to its ack, the firmware paced to real time through a fresh mosquitto (its queue
    for the meter's session: max_queued_messages `queue`, mosquitto's 1000 when None). Also
    the meter's rate of draining rejections and how many the broker dropped."""
    import paho.mqtt.client as mqtt

    from host_tools.wire import decode_ack, encode_command
    from simulator.mqttpath import Mosquitto, plain_conf

    def conf(port: int) -> str:
        extra = "" if queue is None else f"max_queued_messages {queue}\n"
        return plain_conf(port) + extra

    broker = Mosquitto(conf)
    port = broker.port
    key = bytes(random.randrange(256) for _ in range(32))
    meter = "bench-meter"
    got: dict[str, float] = {}
    rejected = []
    online = threading.Event()
    try:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-flooder")
        client.max_queued_messages_set(0)
        client.max_inflight_messages_set(0)  # paho: no window of its own

        def on_message(_c, _u, msg):
            if msg.topic.endswith("/status"):
                if msg.payload == b"online":
                    online.set()
                return
            ack = decode_ack(key, msg.payload)
            if ack is None:
                return
            if ack.get("code") == 0:
                got.setdefault("genuine", time.monotonic())
            else:
                rejected.append(time.monotonic())

        client.on_message = on_message
        client.connect("127.0.0.1", port)
        client.subscribe([(f"meters/{meter}/ack", 1), (f"meters/{meter}/status", 1)])
        client.loop_start()
        scenario = sc.normalise({
            "duration_s": 600, "load": [{"at_s": 0, "volts": 240, "amps": 5, "pf": 1.0}],
            "config": {"meter_id": meter, "mqtt_host": "127.0.0.1", "mqtt_port": port,
                       "telemetry_period_s": 60},
            "command_key": key.hex(),
        })
        stop = threading.Event()
        thread = paced_meter(scenario, runtime, stop)
        if not online.wait(30):
            print("  flood: the meter did not come online")
            return None
        time.sleep(2)
        forged = bytes(32)
        t0 = time.monotonic()
        infos = [client.publish(f"meters/{meter}/cmd", encode_command(forged, meter, 5 + i,
                                                                     "disconnect"), qos=1)
                 for i in range(flood)]
        for info in infos:
            info.wait_for_publish(60)
        sent = time.monotonic()
        client.publish(f"meters/{meter}/cmd", encode_command(key, meter, 1, "status"), qos=1)
        while "genuine" not in got and time.monotonic() - sent < 300:
            time.sleep(0.01)
        time.sleep(1)
        stop.set()
        thread.join(30)
        client.loop_stop()
        client.disconnect()
    finally:
        broker.stop()
    n = len(rejected)
    rate = (n - 1) / (rejected[-1] - rejected[0]) if n > 1 else 0.0
    where = f"max_queued_messages {queue}" if queue is not None else "mosquitto's defaults"
    held = got.get("genuine")
    print(f"  flood of {flood} forged commands (published in {sent - t0:.1f} s) on {runtime}, "
          f"{where}: {n} rejected ({flood - n} dropped by the broker), drained at "
          f"{rate:.0f}/s; the genuine command after it "
          + (f"answered {held - sent:.1f} s after its publish" if held else
             "NOT answered within 300 s"))
    return None if held is None else held - sent


# A live meter's idle cost (issue 16): CPU % and MiB per meter over IDLE_METERS live meters
# for IDLE_SECONDS, as `make sim` runs one (MicroPython, paced to the wall clock, its
# household load, telemetry through a broker), one host process serving them all as a fleet
# would (see idle_cost). The before figures: measured 2026-12-02 at ecbc3eb (main before
# issue 16's changes), 10 meters for 300 s, with the load average over each run.
IDLE_BEFORE = {
    1000: {"cpu_pct": 0.23, "device_cpu_pct": 0.10, "host_cpu_pct": 0.13, "mib": 15.4,
           "pss_mib": 6.9, "load": "1.56 -> 1.73"},
    10000: {"cpu_pct": 0.14, "device_cpu_pct": 0.05, "host_cpu_pct": 0.09, "mib": 15.9,
            "pss_mib": 7.2, "load": "1.52 -> 3.71"},
}
IDLE_TELEMETRY_S = {1000: 5, 10000: 60}  # make sim's default; a fleet's with its 10 s poll
IDLE_METERS = 10
IDLE_SECONDS = 300


def _proc_cpu_s(pid: int | str) -> float:
    """utime + stime of a process (all its threads), in seconds."""
    import os

    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _proc_kib(pid: int | str, key: str, where: str = "status") -> int:
    """A kB line of /proc/<pid>/status (VmRSS) or smaps_rollup (Pss), in KiB."""
    for line in Path(f"/proc/{pid}/{where}").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _children() -> list[int]:
    """This process's child processes (the device processes, the broker), from every
    thread's children list."""
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):
            pids += [int(p) for p in (task / "children").read_text().split()]
    return pids


def _is_device(pid: int) -> bool:
    """A device process (MicroPython started through romboot with romstart), not another
    child this process has (a test's broker, a process still ending)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"romstart" in cmdline


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def idle_cost(meters: int = IDLE_METERS, seconds: float = IDLE_SECONDS,
              poll_ms: int = 1000, telemetry_s: int = 5, warmup_s: float = 15) -> dict:
    """CPU and resident memory per live meter: `meters` meters as `make sim` runs one (the
    firmware on MicroPython in its 64 KiB, paced to real time, its household load, telemetry
    through a broker, a command key so it listens for commands), all served by this one
    host process (a thread each, as paced_meter), one mosquitto for all. After `warmup_s`
    (boot, connect), utime + stime of this process and of every device process over
    `seconds`, and their VmRSS and Pss at the end. The broker's CPU is said apart."""
    import argparse
    import os

    import paho.mqtt.client as mqtt

    from simulator import live
    from simulator.build_mpy import build
    from simulator.mqttpath import Mosquitto

    paths.ensure_paths()
    build()  # once, before the meters start (each run would check it again)
    broker = Mosquitto()
    readings: dict[str, int] = {}  # telemetry topic -> readings seen: the meters are live
    viewer = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-idle")
    viewer.on_message = lambda _c, _u, msg: readings.__setitem__(
        msg.topic, readings.get(msg.topic, 0) + 1)
    host_pid = os.getpid()
    before_kib = _proc_kib(host_pid, "VmRSS")
    stop = threading.Event()
    threads = []
    try:
        viewer.connect("127.0.0.1", broker.port)
        viewer.subscribe("meters/+/telemetry")
        viewer.loop_start()
        for i in range(meters):
            args = argparse.Namespace(meter_id=f"idle-{i:04d}", period=telemetry_s,
                                      duration=0)
            scenario = live.live_scenario(args, "127.0.0.1", broker.port, int(time.time()))
            scenario["config"]["poll_ms"] = poll_ms
            scenario["command_key"] = bytes(range(i, i + 32)).hex()
            threads.append(paced_meter(scenario, "micropython", stop))
            time.sleep(0.3)
        time.sleep(warmup_s)
        readings.clear()
        devices = [p for p in _children() if p != broker.proc.pid and _is_device(p)]
        pids = [host_pid, *devices, broker.proc.pid]
        t0 = time.monotonic()
        cpu0 = {p: _proc_cpu_s(p) for p in pids}
        load0 = _load()
        time.sleep(seconds)
        wall = time.monotonic() - t0
        cpu = {p: _proc_cpu_s(p) - cpu0[p] for p in pids}
        load1 = _load()
        rss = {p: _proc_kib(p, "VmRSS") for p in pids}
        pss = {p: _proc_kib(p, "Pss", "smaps_rollup") for p in pids}
        alive = [p for p in devices if Path(f"/proc/{p}").exists()]
        got = dict(readings)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
        viewer.loop_stop()
        broker.stop()
    n = len(devices)
    dev_cpu = sum(cpu[p] for p in devices) / max(n, 1) / wall * 100
    host_cpu = cpu[host_pid] / meters / wall * 100
    dev_rss = sum(rss[p] for p in devices) / max(n, 1) / 1024
    dev_pss = sum(pss[p] for p in devices) / max(n, 1) / 1024
    host_rss = rss[host_pid] / meters / 1024
    host_pss = pss[host_pid] / meters / 1024
    result = {"cpu_pct": dev_cpu + host_cpu, "device_cpu_pct": dev_cpu,
              "host_cpu_pct": host_cpu, "mib": dev_rss + host_rss, "device_mib": dev_rss,
              "host_mib": host_rss, "pss_mib": dev_pss + host_pss,
              "host_added_mib": (rss[host_pid] - before_kib) / meters / 1024,
              "broker_cpu_pct": cpu[broker.proc.pid] / wall * 100, "devices": n,
              "alive": len(alive), "wall_s": wall, "load": f"{load0} -> {load1}",
              "publishing": len(got), "readings": sum(got.values())}
    before = IDLE_BEFORE.get(poll_ms) if telemetry_s == IDLE_TELEMETRY_S.get(poll_ms) else None
    was = (f"; before (ecbc3eb): {before['cpu_pct']:.3f} % CPU, {before['mib']:.1f} MiB RSS, "
           f"Pss {before['pss_mib']:.1f} MiB, load {before['load']}" if before else "")
    print(f"  idle cost, {meters} live meters on MicroPython, poll {poll_ms} ms, telemetry "
          f"{telemetry_s} s, {wall:.0f} s, one host process, load {result['load']}{was}:")
    print(f"    {result['cpu_pct']:.3f} % CPU per meter (device {dev_cpu:.3f} + its share of "
          f"the host {host_cpu:.3f}); broker {result['broker_cpu_pct']:.3f} % for all")
    print(f"    {result['mib']:.1f} MiB RSS per meter (device {dev_rss:.1f} + host "
          f"{host_rss:.1f}, of which {result['host_added_mib']:.1f} added per meter); "
          f"Pss {result['pss_mib']:.1f} MiB; {len(alive)}/{n} device processes alive, "
          f"{len(got)} meters published {sum(got.values())} readings meanwhile")
    return result


# docs/measurements.md keeps the figures of the last `make bench` between these markers.
MEASUREMENTS = paths.ROOT / "docs" / "measurements.md"
BEGIN = "<!-- make bench: begin -->"
END = "<!-- make bench: end -->"


def machine() -> str:
    """The machine the figures were measured on, in one line."""
    import os
    import platform

    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores"
            + (f" ({model})" if model else "") + f", Python {platform.python_version()}")


def revision() -> str:
    import subprocess

    out = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=paths.ROOT,
                         capture_output=True, text=True)
    return out.stdout.strip() or "unknown"


def refresh_measurements(output: str, page: Path = MEASUREMENTS) -> bool:
    """Put the bench's output, dated, with the machine and revision, between the page's
    markers; False (page unchanged) when the page has no markers."""
    text = page.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        return False
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    block = (f"{BEGIN}\nMeasured {stamp} on {machine()}, revision {revision()}:\n\n"
             f"```text\n{output.rstrip()}\n```\n")
    page.write_text(text[:start] + block + text[end:])
    return True


class _Tee(io.TextIOBase):
    def __init__(self, out: Any) -> None:
        self.out = out
        self.kept = io.StringIO()

    def write(self, s: str) -> int:
        self.out.write(s)
        self.out.flush()
        return self.kept.write(s)


if __name__ == "__main__":
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        status = main()
    if status == 0 and refresh_measurements(tee.kept.getvalue()):
        print(f"figures written to {MEASUREMENTS.relative_to(paths.ROOT)}")
    raise SystemExit(status)
