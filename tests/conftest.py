from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "firmware", ROOT / "build" / "lib"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from simulator.device.shim import micropython as _mp_shim  # noqa: E402

# Firmware modules import `micropython` (const); on CPython the simulator provides it.
sys.modules.setdefault("micropython", _mp_shim)

# The fake filesystem and clocks, one of each, shared with the MicroPython check scripts.
from tests.mp.fakes import START, DirFS, FakeClock, FakeTime  # noqa: E402, F401


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_pty_until(fd: int, out: bytearray, pattern: bytes, timeout: float = 40) -> None:
    """Read a pseudo-terminal's output into `out` until `pattern` is in it (a regex)."""
    import re
    import select

    deadline = time.monotonic() + timeout
    while not re.search(pattern, out) and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                out.extend(os.read(fd, 4096))
            except OSError:  # the child has gone
                break
    assert re.search(pattern, out), out.decode(errors="replace")


def subscribe(host: str, port: int, topics: list[tuple[str, int]], on_message, name: str):
    """A paho client subscribed to topics, its loop running; on_message(client, userdata,
    msg) gets what arrives."""
    import threading

    import paho.mqtt.client as mqtt

    ready = threading.Event()
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{name}-{time.time_ns()}")
    client.on_message = on_message
    client.on_subscribe = lambda *_a: ready.set()
    client.connect(host, port)
    client.subscribe(topics)
    client.loop_start()
    assert ready.wait(5), "subscription not acknowledged"
    return client


@pytest.fixture(scope="session")
def mosquitto():
    """A real mosquitto on a free loopback port, stopped by its PID at the end."""
    from simulator.mqttpath import Mosquitto, NetworkError, mosquitto_binary

    if mosquitto_binary() is None:
        pytest.fail("mosquitto is not installed (make test installs it when run as root)")
    try:
        broker = Mosquitto(lambda port: (f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                                         "persistence false\n"))
    except NetworkError as exc:
        pytest.fail(str(exc))
    yield ("127.0.0.1", broker.port)
    broker.stop()


@pytest.fixture(scope="session")
def mpy_build() -> Path:
    from simulator.build_mpy import build

    build()
    return ROOT / "build" / "mpy"
