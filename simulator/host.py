"""The host end of the simulator's wire: serves one World to firmware running in another
process (real MicroPython), restarting that process at every power cut."""

from __future__ import annotations

import socket
import struct
import subprocess
from collections.abc import Callable

from simulator.device.world import PowerCut, ScenarioEnd, World

OK = 0
CUT = 1
END = 2


class DeviceServer:
    def __init__(self, world: World, command: Callable[[int], list[str]], env: dict) -> None:
        self.world = world
        self.command = command
        self.env = env
        self.heap_peak = 0

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
            conn.sendall(bytes((status, len(reply) & 0xFF, len(reply) >> 8)) + reply)
            if status != OK:
                # Nothing the firmware does from here on can touch the world.
                _drain(conn)
                return

    def handle(self, op: int, payload: bytearray) -> bytes | None:
        world = self.world
        if op == 0x41:  # A: advance(ms), with an optional heap sample
            ms, heap = struct.unpack("<II", payload)
            if heap > self.heap_peak:
                self.heap_peak = heap
            fired = world.advance(ms)
            pending = sum(len(port.rx) for port in world.uarts.values())
            return struct.pack("<qqHh", world.now_ms, world.start_unix + world.rtc_offset_s,
                               min(pending, 0xFFFF), fired)
        if op == 0x53:  # S: SPI transfer
            bus, polarity, phase, baud = struct.unpack_from("<BBBI", payload)
            tx = payload[7:]
            rx = bytearray(len(tx))
            world.spi_transfer(bus, (polarity, phase, baud), tx, rx)
            return bytes(rx)
        if op == 0x57:  # W: pin write (posted)
            try:
                world.pin_write(payload[0], payload[1])
            except PowerCut:
                pass  # reported at the device's next call
            return None
        if op == 0x51:  # Q: arm or disarm a pin IRQ (posted)
            try:
                world.pin_irq(payload[0], payload[1])
            except PowerCut:
                pass
            return None
        if op == 0x52:  # R: pin read
            return bytes((world.pin_read(payload[0]),))
        if op == 0x55:  # U: UART any / read / write
            port = world.uart(payload[0])
            if payload[1] == 0:
                return struct.pack("<H", min(port.any(), 0xFFFF))
            if payload[1] == 1:
                return port.read() or b""
            port.write(bytes(payload[2:]))
            return b""
        if op == 0x46:  # F: flash program
            block, offset = struct.unpack_from("<HH", payload)
            world.flash.writeblocks(block, memoryview(payload)[4:], offset)
            world.flash.fh.flush()
            return b""
        if op == 0x45:  # E: flash erase
            world.flash.erase(struct.unpack("<H", payload)[0])
            world.flash.fh.flush()
            return b""
        if op == 0x48:  # H: hello
            world.check_power()
            return (struct.pack("<qqqH", world.now_ms, world.boot_ms,
                                world.start_unix + world.rtc_offset_s, world.flash.block_count)
                    + bytes(world.unique_id) + bytes((world.reset_cause,))
                    + world.flash.path.encode())
        if op == 0x54:  # T: set the RTC
            world.set_unix(struct.unpack("<q", payload)[0])
            return struct.pack("<q", world.start_unix + world.rtc_offset_s)
        if op == 0x4E:  # N: is the network up
            world.check_power()
            return b"\x01" if world.network_up() else b"\x00"
        if op == 0x44:  # D: watchdog start (ms) or feed (0)
            ms = struct.unpack("<I", payload)[0]
            try:
                world.watchdog_start(ms) if ms else world.watchdog_feed()
            except PowerCut:
                pass
            return None
        if op == 0x58:  # X: machine.reset()
            world.request_reset()
        raise RuntimeError(f"unknown wire op {op:#x}")


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
