"""Event names for the report, the live console and the head-end's readable lines: the
firmware's one table (firmware/meter/storage/event_names.py, which the meter itself never
loads, so the names cost it no heap)."""

from __future__ import annotations

from simulator.paths import ensure_paths

ensure_paths()
from meter.storage.event_names import CAUSES, STATES  # noqa: E402, F401
from meter.storage.event_names import name as event_name  # noqa: E402, F401
