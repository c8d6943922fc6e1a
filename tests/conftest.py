from __future__ import annotations

import shutil
import socket
import subprocess
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


@pytest.fixture(scope="session")
def mosquitto(tmp_path_factory: pytest.TempPathFactory):
    """A real mosquitto on a free loopback port, stopped by its PID at the end."""
    binary = mosquitto_binary()
    if binary is None:
        pytest.fail("mosquitto is not installed (make test installs it when run as root)")
    port = free_port()
    conf = tmp_path_factory.mktemp("mosquitto") / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mosquitto exited: {proc.stderr.read().decode()}")
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail("mosquitto did not start listening")
    yield ("127.0.0.1", port)
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def mpy_build() -> Path:
    from simulator.build_mpy import build

    build()
    return ROOT / "build" / "mpy"
