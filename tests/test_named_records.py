"""State kept in one list for the heap's sake is read by named const indices; where two
modules read the same list, each names the indices alike (consts are folded at compile
time, so a shared module of them would cost RAM): the copies must agree."""

from __future__ import annotations

import re
from pathlib import Path

METER = Path(__file__).resolve().parent.parent / "firmware" / "meter"


def consts(path: Path, prefix: str) -> dict[str, int]:
    text = path.read_text()
    return {m[1]: int(m[2]) for m in re.finditer(rf"^({prefix}\w+) = const\((\d+)\)", text,
                                                 re.M)}


def test_the_journal_indices_agree():
    here = consts(METER / "storage" / "checkpoint.py", "_J_")
    there = consts(METER / "storage" / "restore.py", "_J_")
    assert len(here) == 8 and sorted(here.values()) == list(range(8))
    assert here == there


def test_the_link_reads_the_forwarding_state_by_forwards_indices():
    fwd = consts(METER / "remote" / "forward.py", "_")
    link = consts(METER / "remote" / "link.py", "_F_")
    assert link and all(fwd[name[2:]] == value for name, value in link.items()), (link, fwd)
    names = ("_PROFILE", "_EVENT", "_SEQ", "_DUE", "_SAVED", "_WAIT", "_LOST")
    assert [fwd[n] for n in names] == list(range(7))
    # the list the link makes holds one slot per index
    assert "self.fwd = [-1, -1, 0, -1, -60, 0, 0]" in (METER / "remote" / "link.py").read_text()


def test_no_index_reads_left_on_the_named_lists():
    for path, pattern in ((METER / "storage" / "checkpoint.py", r"\bj\[\d"),
                          (METER / "storage" / "restore.py", r"\bj\[\d"),
                          (METER / "remote" / "forward.py", r"\bf\[\d"),
                          (METER / "remote" / "link.py", r"\bf\[\d"),
                          (METER / "supply" / "startup.py", r"relay\[\d")):
        assert not re.search(pattern, path.read_text()), path
