"""simulator/build_mpy.py: a deleted or renamed module leaves nothing behind in the compiled
tree or the ROMFS image (no `make clean` needed)."""

import os
from pathlib import Path

from simulator.build_mpy import build, romfs_files


def _source(root: Path, rel: str, text: str = "X = 1\n") -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _compiled(out: Path) -> list[str]:
    return sorted(str(p.relative_to(out)) for p in out.glob("**/*.mpy"))


def test_a_removed_or_renamed_module_leaves_the_build_and_the_image(tmp_path):
    root, out, image = tmp_path / "src", tmp_path / "out", tmp_path / "fw.romfs"
    _source(root, "firmware/meter/__init__.py", "")
    _source(root, "firmware/meter/keep.py")
    old = _source(root, "firmware/meter/old.py", "OLD = 2\n")
    gone = _source(root, "firmware/meter/sub/gone.py")
    _source(root, "boards/board.py")
    build(out, root=root, image=image)
    assert _compiled(out) == ["boards/board.mpy", "meter/__init__.mpy", "meter/keep.mpy",
                              "meter/old.mpy", "meter/sub/gone.mpy"]
    assert "meter/old.mpy" in romfs_files(image.read_bytes())
    # a rename into a new subpackage, and a removal that empties its folder; the image is
    # made newer than every file, so only the changed set of files can make it again
    new = root / "firmware/meter/layer/new.py"
    new.parent.mkdir()
    old.rename(new)
    gone.unlink()
    future = image.stat().st_mtime + 100
    os.utime(image, (future, future))
    build(out, root=root, image=image)
    expected = ["boards/board.mpy", "meter/__init__.mpy", "meter/keep.mpy",
                "meter/layer/new.mpy"]
    assert _compiled(out) == expected
    assert not (out / "meter" / "sub").exists()  # the emptied folder went too
    assert (out / "simulator" / "__init__.py").exists()  # not a compiled module: kept
    assert romfs_files(image.read_bytes()) == sorted(expected + ["simulator/__init__.py"])
    assert b"old.mpy" not in image.read_bytes() and b"gone.mpy" not in image.read_bytes()


def test_an_unchanged_tree_keeps_its_image(tmp_path):
    root, out, image = tmp_path / "src", tmp_path / "out", tmp_path / "fw.romfs"
    _source(root, "firmware/meter/keep.py")
    build(out, root=root, image=image)
    made = image.stat().st_mtime_ns
    build(out, root=root, image=image)
    assert image.stat().st_mtime_ns == made
    # a stray compiled file the sources do not make is removed and the image made again
    (out / "meter" / "stray.mpy").write_bytes(b"M")
    build(out, root=root, image=image)
    assert not (out / "meter" / "stray.mpy").exists()
    assert romfs_files(image.read_bytes()) == ["meter/keep.mpy", "simulator/__init__.py"]


def test_romfs_files_reads_mpremotes_image(tmp_path):
    from mpremote.romfs import make_romfs

    _source(tmp_path, "a/b/c.mpy")
    _source(tmp_path, "top.txt")
    _source(tmp_path, "a/d.mpy")
    assert romfs_files(make_romfs(str(tmp_path), mpy_cross=False)) == [
        "a/b/c.mpy", "a/d.mpy", "top.txt"]
    assert romfs_files(b"not an image") is None
