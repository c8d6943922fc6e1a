"""The host end of the simulator's wire: serves one World to firmware running in another
process (real MicroPython), restarting that process at every power cut."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable

from simulator.device.world import PowerCut, ScenarioEnd, World

OK = 0
CUT = 1
END = 2
POSTED = (0x57, 0x44, 0x51)  # pin writes, watchdog, IRQ arming: the device does not wait


class DeviceServer:
    def __init__(self, world: World, command: Callable[[int], list[str]], env: dict) -> None:
        self.world = world
        self.command = command
        self.env = env

    def run(self) -> None:
        """Boot the device again and again until the scenario is over."""
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        try:
            while True:
                proc = subprocess.Popen(self.command(port), env=self.env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True)
                try:
                    listener.settimeout(30)
                    conn, _ = listener.accept()
                except OSError:
                    proc.kill()
                    out = proc.communicate()[0]
                    raise RuntimeError(
                        f"the device process did not connect:\n{out[-3000:]}") from None
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    with conn:
                        self.serve(conn)
                finally:
                    proc.kill()  # power is gone: the process dies wherever it is
                    out = proc.communicate()[0]
                world = self.world
                if world.finished or (world.ending and not world.powered):
                    break
                if world.powered and not world.reset_requested:
                    # The firmware stopped on its own (a crash): that is a failed run.
                    raise RuntimeError(f"the firmware exited by itself:\n{out[-3000:]}")
                world.power_restored()
        finally:
            listener.close()

    def serve(self, conn: socket.socket) -> None:
        recv = conn.recv_into
        head = bytearray(3)
        head_view = memoryview(head)
        while True:
            if not _recv_exact(recv, head_view):
                return
            op = head[0]
            size = head[1] | (head[2] << 8)
            payload = bytearray(size)
            if size and not _recv_exact(recv, memoryview(payload)):
                return
            status = OK
            reply = b""
            try:
                reply = self.handle(op, payload)
            except PowerCut:
                status = CUT
            except ScenarioEnd:
                status = END
            if reply is None:
                continue  # posted: no answer expected
            if status != OK:
                # The firmware stops here: what it sent over the network settles first.
                self.world.halted()
            conn.sendall(bytes((status, len(reply) & 0xFF, len(reply) >> 8)) + reply)
            if status != OK:
                # Nothing the firmware does from here on can touch the world; at the end it
                # still reports its link's counts (op Y).
                self.after_end(conn) if status == END else _drain(conn)
                return

    def after_end(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        head = bytearray(3)
        try:
            while _recv_exact(conn.recv_into, memoryview(head)):
                payload = bytearray(head[1] | (head[2] << 8))
                if payload and not _recv_exact(conn.recv_into, memoryview(payload)):
                    return
                if head[0] in POSTED:
                    continue
                status = OK
                if head[0] == 0x59:  # Y: the link's counts
                    self.world.call(b"Y", payload)
                else:
                    status = END
                conn.sendall(bytes((status, 0, 0)))
        except OSError:
            pass

    def handle(self, op: int, payload: bytearray) -> bytes | None:
        """One wire operation; None for posted ones, which get no answer."""
        if op in POSTED:
            try:
                self.world.call(bytes((op,)), payload)
            except PowerCut:
                pass  # reported at the device's next call
            return None
        return self.world.call(bytes((op,)), payload)


def _recv_exact(recv: Callable, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        n = recv(view[got:])
        if not n:
            return False
        got += n
    return True


def _drain(conn: socket.socket) -> None:
    conn.settimeout(2)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
