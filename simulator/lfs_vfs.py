"""MicroPython's `vfs` module for CPython: VfsLfs2 over littlefs-python.

MicroPython ships real LittleFS as `vfs.VfsLfs2`; on CPython the same filesystem code comes
from the `littlefs-python` package. This adapter gives it VfsLfs2's method names and
block-device protocol, so firmware and simulator code use one interface on both runtimes.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator
from typing import Any

import littlefs
from littlefs import LittleFS, UserContext

# The configuration MicroPython's VfsLfs2 uses on the ESP32 port.
READ_SIZE = 32
PROG_SIZE = 32
LOOKAHEAD = 32
BLOCK_CYCLES = 100
LFS_ERR_IO = -5


class _BlockDeviceContext(UserContext):
    """Routes littlefs-python's block callbacks to a MicroPython-style block device.

    littlefs-python swallows exceptions raised in callbacks, so a power cut (or any other
    failure) is turned into an I/O error code here and raised again once littlefs returns.
    """

    def __init__(self, bdev: Any) -> None:
        self.bdev = bdev
        self.failure: BaseException | None = None

    def read(self, cfg: Any, block: int, off: int, size: int) -> bytearray:
        buf = bytearray(b"\xff" * size)
        if self.failure is None:
            try:
                self.bdev.readblocks(block, buf, off)
            except BaseException as exc:  # re-raised by VfsLfs2 after littlefs returns
                self.failure = exc
        return buf

    def prog(self, cfg: Any, block: int, off: int, data: bytes) -> int:
        return self._guard(self.bdev.writeblocks, block, data, off)

    def erase(self, cfg: Any, block: int) -> int:
        return self._guard(self.bdev.ioctl, 6, block)

    def sync(self, cfg: Any) -> int:
        return self._guard(self.bdev.ioctl, 3, 0)

    def _guard(self, fn: Any, *args: Any) -> int:
        if self.failure is not None:
            return LFS_ERR_IO
        try:
            fn(*args)
        except BaseException as exc:  # re-raised by VfsLfs2 after littlefs returns
            self.failure = exc
            return LFS_ERR_IO
        return 0

    def raise_failure(self) -> None:
        failure = self.failure
        if failure is not None:
            self.failure = None
            raise failure


def _make(ctx: _BlockDeviceContext, mount: bool, cache_size: int = 0) -> LittleFS:
    extra = {"cache_size": cache_size} if cache_size else {}
    return LittleFS(
        **extra,
        context=ctx,
        mount=mount,
        block_size=ctx.bdev.ioctl(5, 0),
        block_count=ctx.bdev.ioctl(4, 0),
        read_size=READ_SIZE,
        prog_size=PROG_SIZE,
        lookahead_size=LOOKAHEAD,
        block_cycles=BLOCK_CYCLES,
    )


def _os_error(exc: littlefs.LittleFSError) -> OSError:
    code = {
        littlefs.LittleFSError.Error.LFS_ERR_NOENT: errno.ENOENT,
        littlefs.LittleFSError.Error.LFS_ERR_EXIST: errno.EEXIST,
        littlefs.LittleFSError.Error.LFS_ERR_ISDIR: errno.EISDIR,
        littlefs.LittleFSError.Error.LFS_ERR_NOTDIR: errno.ENOTDIR,
        littlefs.LittleFSError.Error.LFS_ERR_NOTEMPTY: errno.ENOTEMPTY,
        littlefs.LittleFSError.Error.LFS_ERR_NOSPC: errno.ENOSPC,
        littlefs.LittleFSError.Error.LFS_ERR_CORRUPT: errno.EIO,
    }.get(exc.code, errno.EIO)
    return OSError(code, str(exc))


class VfsLfs2:
    """The subset of MicroPython's VfsLfs2 the firmware uses."""

    def __init__(self, bdev: Any, readsize: int = READ_SIZE, progsize: int = PROG_SIZE,
                 lookahead: int = LOOKAHEAD, mtime: bool = True, cache_size: int = 0) -> None:
        # cache_size (simulator only): a bigger read cache for host-side readers that mount
        # an image many times; it changes nothing on flash for reading.
        self._ctx = _BlockDeviceContext(bdev)
        # Mount explicitly: littlefs-python's own mount=True formats a device it cannot mount,
        # which would wipe a meter's data where MicroPython reports ENODEV.
        self._fs = _make(self._ctx, mount=False, cache_size=cache_size)
        try:
            self._fs.mount()
        except littlefs.LittleFSError as exc:
            self._ctx.raise_failure()
            # MicroPython reports an unformatted or corrupt filesystem as ENODEV.
            raise OSError(errno.ENODEV, "no LittleFS on device") from exc

    @staticmethod
    def mkfs(bdev: Any) -> None:
        ctx = _BlockDeviceContext(bdev)
        fs = _make(ctx, mount=False)
        try:
            fs.format()
        finally:
            ctx.raise_failure()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            result = fn(*args)
        except littlefs.LittleFSError as exc:
            self._ctx.raise_failure()
            raise _os_error(exc) from exc
        self._ctx.raise_failure()
        return result

    def open(self, path: str, mode: str = "r") -> _File:
        text = "b" not in mode
        raw_mode = mode if not text else mode + "b"
        return _File(self, self._call(self._fs.open, path, raw_mode, 0), text)

    def remove(self, path: str) -> None:
        self._call(self._fs.remove, path)

    def rename(self, old: str, new: str) -> None:
        # MicroPython's VfsLfs2.rename replaces an existing target, as littlefs does.
        self._call(self._fs.rename, old, new)

    def mkdir(self, path: str) -> None:
        self._call(self._fs.mkdir, path)

    def rmdir(self, path: str) -> None:
        self._call(self._fs.rmdir, path)

    def stat(self, path: str) -> tuple:
        st = self._call(self._fs.stat, path)
        mode = 0x4000 if st.type == 2 else 0x8000
        return (mode, 0, 0, 0, 0, 0, st.size, 0, 0, 0)

    def ilistdir(self, path: str = "/") -> Iterator[tuple]:
        for entry in self._call(lambda p: list(self._fs.scandir(p)), path):
            kind = 0x4000 if entry.type == 2 else 0x8000
            yield (entry.name, kind, 0, entry.size)

    def statvfs(self, path: str = "/") -> tuple:
        block_size = self._fs.cfg.block_size
        total = self._fs.cfg.block_count
        used = self._fs.used_block_count
        free = total - used
        return (block_size, block_size, total, free, free, 0, 0, 0, 0, 255)

    def umount(self) -> None:
        self._fs.unmount()


class _File:
    """A littlefs-python file whose every call surfaces failures like VfsLfs2 does."""

    def __init__(self, vfs: VfsLfs2, fh: Any, text: bool) -> None:
        self._vfs = vfs
        self._fh = fh
        self._text = text

    def read(self, size: int = -1) -> Any:
        data = self._vfs._call(self._fh.read, size)
        return data.decode() if self._text else data

    def readinto(self, buf: Any) -> int:
        return self._vfs._call(self._fh.readinto, buf)

    def write(self, data: Any) -> int:
        if isinstance(data, str):
            data = data.encode()
        return self._vfs._call(self._fh.write, data)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._vfs._call(self._fh.seek, offset, whence)

    def tell(self) -> int:
        return self._vfs._call(self._fh.tell)

    def flush(self) -> None:
        self._vfs._call(self._fh.flush)

    def close(self) -> None:
        try:
            self._vfs._call(self._fh.close)
        except BaseException:
            # littlefs drops the handle even when its close fails; closing it again from
            # the finaliser would trip an assertion in littlefs and abort the process.
            setattr(self._fh, "__IOBase_closed", True)
            raise

    def __enter__(self) -> _File:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
