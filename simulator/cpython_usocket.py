"""MicroPython's `usocket` for CPython: stream sockets with `read`/`write`, as umqtt expects."""

from __future__ import annotations

import socket as _socket
import ssl as _ssl
from typing import Any

AF_INET = _socket.AF_INET
SOCK_STREAM = _socket.SOCK_STREAM
IPPROTO_TCP = _socket.IPPROTO_TCP
SOL_SOCKET = _socket.SOL_SOCKET


def getaddrinfo(host: str, port: int, *args: Any) -> list:
    return _socket.getaddrinfo(host, port, AF_INET, SOCK_STREAM)


class socket:  # noqa: N801 - MicroPython's name
    def __init__(self, family: int = AF_INET, kind: int = SOCK_STREAM, proto: int = 0) -> None:
        self._sock = _socket.socket(family, kind, proto)
        self._blocking = True

    def connect(self, addr: Any) -> None:
        self._sock.connect(addr)

    def settimeout(self, seconds: float | None) -> None:
        self._blocking = seconds != 0  # as on MicroPython: 0 is non-blocking
        self._sock.settimeout(seconds)

    def setblocking(self, flag: bool) -> None:
        self._blocking = flag
        self._sock.setblocking(flag)

    def setsockopt(self, level: int, option: int, value: int) -> None:
        self._sock.setsockopt(level, option, value)

    def write(self, data: bytes, length: int | None = None) -> int:
        if isinstance(data, str):
            data = data.encode()  # MicroPython streams accept str and write its UTF-8
        view = memoryview(data)
        if length is not None:
            view = view[:length]
        self._sock.sendall(view)
        return len(view)

    def read(self, size: int) -> bytes | None:
        """Up to `size` bytes: all of them unless the peer closes; None if non-blocking and
        nothing is waiting, as on MicroPython."""
        chunks = []
        got = 0
        while got < size:
            try:
                chunk = self._sock.recv(size - got)
            except (BlockingIOError, _ssl.SSLWantReadError):
                if got == 0:
                    return None
                self._sock.setblocking(True)
                continue
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if not self._blocking:
            self._sock.setblocking(False)
        return b"".join(chunks)

    def readinto(self, buf: Any, size: int | None = None) -> int | None:
        """As read, into buf (its first `size` bytes): the count read."""
        size = len(buf) if size is None else size
        data = self.read(size)
        if data is None:
            return None
        buf[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self._sock.close()
