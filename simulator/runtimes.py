"""The two runtimes a scenario runs on: the firmware in this process (CPython) or in real
MicroPython's process against a world served from here; the run's network; Ctrl-C."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from simulator.images import measure_loss
from simulator.micropython_port import (
    HEAPSIZE,
    device_layer_bytes,
    heap_bytes,
    micropython_command,
    micropython_env,
)
from simulator.paths import ensure_paths
from simulator.schema import ScenarioError

RUNTIMES = ("cpython", "micropython")


def uses_broker(scenario: dict) -> bool:
    """Whether a normalised scenario's run needs the MQTT path (simulator/mqttpath.py)."""
    return bool(scenario.get("commands") or scenario.get("network_outages")
                or scenario.get("broker"))


@contextmanager
def network(scenario: dict, broker: str | None = None) -> Iterator[tuple[dict, Any]]:
    """The scenario as the device runs it, and its network (None when it needs none): a
    broker, the meter's path to it and a head-end, torn down at the end."""
    if not (uses_broker(scenario) or broker):
        yield scenario, None
        return
    from simulator.mqttpath import NetworkError, ScenarioNetwork

    try:
        net = ScenarioNetwork(scenario, broker)
    except NetworkError as exc:
        raise ScenarioError(str(exc)) from None
    try:
        yield net.run_scenario(), net
    finally:
        net.close()


def _network_results(raw: dict, net: Any) -> dict:
    counts = raw.pop("meter_counts", None)
    keys = ("published", "delivered", "backlog")
    raw["telemetry"] = dict(zip(keys, counts, strict=True)) if counts else dict.fromkeys(keys)
    if net is not None:
        # an interrupted run waits for nothing more (its broker may have had the Ctrl-C too)
        raw.update(net.finish(settle="interrupted_at_s" not in raw))
    return raw


_STOP = threading.Event()  # Ctrl-C seen: a run stops at its next tick (see interrupt())


def interrupt(clear: bool = False) -> None:
    """Ctrl-C (simulator.cli's SIGINT handler): raises KeyboardInterrupt where the program
    is, and marks the run stopped, so that it also stops at the firmware's next sleep when
    that KeyboardInterrupt is lost (raised inside a callback from C, e.g. littlefs's, which
    only prints it). clear: a new command starts, nothing is stopped."""
    if clear:
        _STOP.clear()
        return
    _STOP.set()
    raise KeyboardInterrupt


def _stoppable(tick: Callable | None) -> Callable:
    """The world's on_tick, raising KeyboardInterrupt once Ctrl-C was seen."""
    def checked(now_ms: int) -> None:
        if _STOP.is_set():
            raise KeyboardInterrupt
        if tick is not None:
            tick(now_ms)
    return checked


class Interrupted(KeyboardInterrupt):
    """Ctrl-C mid-run, carrying the raw results so far (run() makes the partial report)."""

    def __init__(self, raw: dict) -> None:
        super().__init__()
        self.raw = raw


def _interrupted(world: Any, raw: dict, net: Any) -> Interrupted:
    """Ctrl-C mid-run: the results so far, marked with the virtual time the run reached."""
    raw["interrupted_at_s"] = world.now_ms / 1000
    return Interrupted(_network_results(raw, net))


def run_cpython(scenario: dict, flash_path: str, progress: Callable | None,
                on_tick: Callable | None = None, broker: str | None = None,
                on_world: Callable | None = None) -> dict:
    """Run the firmware in this process, against the world directly. on_world(world): called
    once the world is built (the live simulator acts on it: the button, the cover)."""
    ensure_paths()
    from simulator.device import runner

    duration = scenario["duration_ms"]
    tick = on_tick
    if progress is not None:
        def tick(now_ms: int) -> None:
            progress(min(now_ms, duration) / duration)
    with network(scenario, broker) as (device_scenario, net):
        built = []

        def attach(world: Any) -> None:
            built.append(world)
            if net is not None:
                net.attach(world)
            if on_world is not None:
                on_world(world)

        try:
            raw = runner.run(device_scenario, flash_path, _stoppable(tick), measure_loss,
                             attach)
        except KeyboardInterrupt:
            if not built:
                raise
            runner.forget_firmware()  # stopped wherever it was, as by a power cut
            world = built[0]
            raise _interrupted(world, runner.results(world, world.heap_peak), net) from None
        return _network_results(raw, net)


def run_micropython(scenario: dict, flash_path: str, progress: Callable | None,
                    heapsize: str = HEAPSIZE, on_tick: Callable | None = None,
                    broker: str | None = None, on_world: Callable | None = None) -> dict:
    """Run the firmware on the MicroPython unix port against a world served from here.
    heapsize is the firmware's budget; the device layer's measured size comes on top;
    on_world as for run_cpython (the world lives here, in the host process)."""
    ensure_paths()
    from simulator.build_mpy import build
    from simulator.device import runner
    from simulator.host import DeviceServer

    build()
    with network(scenario, broker) as (device_scenario, net):
        world, board_module = runner.prepare(device_scenario, flash_path)
        if net is not None:
            net.attach(world)
        if on_world is not None:
            on_world(world)
        duration = scenario["duration_ms"]
        world.on_tick = on_tick
        world.on_restore = measure_loss
        if progress is not None:
            world.on_tick = lambda now_ms: progress(min(now_ms, duration) / duration)
        world.on_tick = _stoppable(world.on_tick)

        layer = device_layer_bytes()
        total = str(heap_bytes(heapsize) + layer)

        def command(wire_fd: int) -> list[str]:
            return micropython_command("-m", "romstart", str(wire_fd),
                                       board_module, heapsize=total)

        server = DeviceServer(world, command, micropython_env())
        interrupted = False
        try:
            server.run()  # on Ctrl-C, it has ended the device process
        except KeyboardInterrupt:
            interrupted = True
        raw = runner.results(world, max(world.heap_peak - layer, 0))
        raw["heap_device_layer_bytes"] = layer
        if interrupted:
            raise _interrupted(world, raw, net)
        return _network_results(raw, net)
