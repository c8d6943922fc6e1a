"""The host end of the simulator's wire: serves one World to firmware running in another
process (real MicroPython), restarting that process at every power cut."""

from __future__ import annotations

import contextlib
import signal
import socket
import struct
import subprocess
from collections.abc import Callable

from simulator.device.world import PowerCut, ScenarioEnd, World

OK = 0
CUT = 1
END = 2
POSTED = (0x57, 0x44, 0x51)  # pin writes, watchdog, IRQ arming: the device does not wait
RECV_SIZE = 3 + 0xFFFF + 4096  # the largest frame, and room for those queued before it
_SPI_HEAD = struct.Struct("<BBBI")
# Calls whose answers have a fixed size, read by the device in one go with their head: the
# host pads them when the power is cut or the scenario ends (op S: the frame's length).
FIXED = {0x52: 9, 0x41: 28}  # R: a pin level; A: advance; both with every pin's level


class DeviceServer:
    def __init__(self, world: World, command: Callable[[int], list[str]], env: dict) -> None:
        self.world = world
        self.command = command
        self.env = env

    def run(self) -> None:
        """Boot the device again and again until the scenario is over.

        Each boot gets one end of a fresh socket pair, inherited as a file descriptor: the
        wire has no port, so nothing else on the machine can reach it. The device process
        runs in a session of its own, so a terminal's Ctrl-C (sent to the whole foreground
        process group) reaches only the host, which then ends it; the device also ends by
        itself at its next wire call once the host's end is closed (the host is gone)."""
        while True:
            conn, device_end = socket.socketpair()
            try:
                with conn:
                    try:
                        proc = subprocess.Popen(
                            self.command(device_end.fileno()), env=self.env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            pass_fds=(device_end.fileno(),), start_new_session=True)
                    finally:
                        device_end.close()
                    served = False
                    try:
                        self.serve(conn)
                        served = True
                    finally:
                        conn.close()  # the device's next wire call sees the power gone
                        if served and self._crashed():
                            # it closed its end of the wire: let it finish saying why
                            with contextlib.suppress(subprocess.TimeoutExpired):
                                proc.wait(5)
                        proc.kill()  # power is gone: the process dies wherever it is
                        out = proc.communicate()[0]
            finally:
                device_end.close()
            world = self.world
            if world.finished or (world.ending and not world.powered):
                break
            if self._crashed():
                # The firmware stopped on its own (a crash): that is a failed run.
                raise RuntimeError(device_failure(out, proc.returncode))
            world.power_restored()

    def _crashed(self) -> bool:
        world = self.world
        return not (world.finished or (world.ending and not world.powered)) and (
            world.powered and not world.reset_requested)

    def serve(self, conn: socket.socket) -> None:
        """Answer the device's operations until the boot ends. The device queues its posted
        operations and sends them with its next call, so one read usually brings several
        frames: they are taken from one buffer in order, and only calls are answered."""
        recv = conn.recv_into
        buf = bytearray(RECV_SIZE)
        view = memoryview(buf)
        start = end = 0
        world = self.world
        spi = world.spi_transfer
        pin_write = world.pin_write
        while True:
            have = end - start
            if have < 3 or have < 3 + (buf[start + 1] | (buf[start + 2] << 8)):
                if start:  # keep the partial frame, at the front
                    buf[:have] = view[start:end]
                    start, end = 0, have
                try:
                    n = recv(view[end:])
                except ConnectionError:
                    return  # the device process is gone
                if not n:
                    return
                end += n
                continue
            op = buf[start]
            size = buf[start + 1] | (buf[start + 2] << 8)
            at = start + 3
            start = at + size
            status = OK
            reply = b""
            fixed = 0  # the size of an answer the device reads in one go, pad or not
            try:
                if op == 0x57:  # W: pin write, posted
                    try:
                        pin_write(buf[at], buf[at + 1])
                    except PowerCut:
                        pass  # reported at the device's next call
                    continue
                if op == 0x53:  # S: one SPI transfer (as World.call)
                    bus, polarity, phase, baud = _SPI_HEAD.unpack_from(buf, at)
                    fixed = size - 7
                    rx = bytearray(fixed)
                    spi(bus, (polarity, phase, baud), bytes(view[at + 7:start]), rx)
                    reply = rx
                else:
                    fixed = FIXED.get(op, 0)
                    reply = self.handle(op, bytes(view[at:start]))
            except PowerCut:
                status = CUT
            except ScenarioEnd:
                status = END
            if reply is None:
                continue  # posted: no answer expected
            if status != OK:
                reply = bytes(fixed)  # what the firmware asked for is lost with it
                # The firmware stops here: what it sent over the network settles first.
                self.world.halted()
            try:
                conn.sendall(bytes((status, len(reply) & 0xFF, len(reply) >> 8)) + reply)
            except ConnectionError:
                return  # the device process is gone
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


def device_failure(out: str, returncode: int | None) -> str:
    """One line saying why the device process stopped on its own: its last words (the
    exception MicroPython printed) or how it exited."""
    lines = [line.strip() for line in out.splitlines() if line.strip()]
    if returncode is not None and returncode < 0:
        try:
            how = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            how = f"killed by signal {-returncode}"
    else:
        how = f"exit status {returncode}"
    said = f": {lines[-1][:200]}" if lines else " without a word"
    return f"the firmware's process stopped by itself ({how}){said}"


def _recv_exact(recv: Callable, view: memoryview) -> bool:
    got = 0
    while got < len(view):
        try:
            n = recv(view[got:])
        except ConnectionError:
            return False  # the device process is gone
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
