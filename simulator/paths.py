"""Where the checkout lies, and the firmware imported on CPython (the simulator's host side
reads the firmware's own tables and readers instead of copies)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MPY_DIR = ROOT / "build" / "mpy"


def ensure_paths() -> None:
    """Make the firmware package and the fetched umqtt importable on CPython."""
    for path in (ROOT, ROOT / "firmware", ROOT / "build" / "lib"):
        if str(path) not in sys.path:
            sys.path.insert(0, str(path))


def firmware(module: str) -> Any:
    """A firmware module (dotted name, e.g. "meter.storage.config"), imported on CPython."""
    ensure_paths()
    from simulator.device.shim import micropython

    sys.modules.setdefault("micropython", micropython)
    return importlib.import_module(module)
