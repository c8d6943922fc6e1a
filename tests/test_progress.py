"""`python -m simulator run`'s progress display: simulated time and the time left."""

from __future__ import annotations

import io

from simulator.cli import _progress_bar


class Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def feed(tty: bool, duration_s: float, steps: list[tuple[float, float]]) -> str:
    """Call the display at (wall seconds, fraction done) points; what it wrote."""
    stream, wall = Stream(tty), [0.0]
    show = _progress_bar(stream, duration_s, clock=lambda: wall[0])
    for t, fraction in steps:
        wall[0] = t
        show(fraction)
    return stream.getvalue()


def test_log_lines_carry_simulated_time_and_time_left():
    out = feed(False, 86400, [(0, 0.0), (10, 0.25), (20, 0.5), (30, 0.75), (40, 1.0)])
    assert out.splitlines() == [
        "progress 0% (sim 0s of 1d00h)",
        "progress 25% (sim 6h00m of 1d00h, ETA 30s)",
        "progress 50% (sim 12h00m of 1d00h, ETA 20s)",
        "progress 75% (sim 18h00m of 1d00h, ETA 10s)",
        "progress 100% (sim 1d00h of 1d00h)",
    ]


def test_a_long_run_logs_at_least_once_a_minute():
    # a year of virtual time at 1 % per 5 minutes: no quarter in sight, still a line a minute
    steps = [(0, 0.0)] + [(300 * i, i / 100) for i in range(1, 4)]
    lines = feed(False, 366 * 86400, steps).splitlines()
    assert lines[1] == "progress 1% (sim 3d15h of 366d00h, ETA 8h15m)"
    assert len(lines) == 4


def test_terminal_bar_shows_simulated_time_and_eta():
    out = feed(True, 3600, [(0, 0.0), (2, 0.1), (2.1, 0.1), (4, 0.2)])
    frames = out.split("\r")[1:]
    assert len(frames) == 3  # the same percent within half a second is not redrawn
    assert frames[1].rstrip() == "[##                  ]  10%  sim 6m00s of 1h00m, ETA 18s"
    assert frames[2].rstrip() == "[####                ]  20%  sim 12m00s of 1h00m, ETA 16s"
