# The emulated world one meter lives in: virtual time, mains supply and load, and the
# hardware on the board (pins, SPI devices, UARTs, flash). Runs inside the device process
# on both CPython and MicroPython, so it sticks to the language subset both understand.
#
# Time only moves when the firmware sleeps (World.advance); everything the firmware can
# observe is a function of the scenario, so a run gives the same result on both runtimes.

import gc
import math
import struct

from simulator.device.shim import PowerCut, ScenarioEnd

# How often (virtual ms) live-heap figures are sampled on MicroPython.
HEAP_SAMPLE_MS = 60_000
# How long after the end the meter has to answer the final optical-port readout.
READOUT_GRACE_MS = 30_000


class World:
    """Holds the scenario's physics and the devices wired to the board's buses and pins."""

    def __init__(self, duration_ms: int, start_unix: int, load: list, outages: list):
        self.now_ms = 0
        self.duration_ms = duration_ms
        self.start_unix = start_unix
        self.load = load  # (at_ms, volts, amps, pf, hz), sorted, the first at 0
        self.load_index = 0
        self.outages = outages  # (at_ms, for_ms), sorted
        self.outage_index = 0
        self.mains_on = True  # the supply is present at the meter's terminals
        self.supply_on = True  # current can flow to the consumer (relay closed)
        self.powered = True  # the ESP32 is running
        self.ending = False
        self.finished = False
        self.pins = {}  # pin id -> level driven by the firmware or the outside world
        self.external_pins = set()  # pins the outside world drives (buttons, sense lines)
        self.pin_listeners = {}  # pin id -> list of callables(level)
        self.reactive_pins = set()  # pins whose listeners may move other pins (relay coils)
        self.spi_devices = []  # (bus id, cs pin, device)
        self.meters = []  # emulated metering ICs, fed from the load model
        self.uarts = {}  # uart id -> EmulatedUart
        self.flash = None
        self.true_import_wh = 0.0
        self.true_export_wh = 0.0
        self.true_q_import_varh = 0.0  # reactive: lagging (inductive) positive
        self.true_q_export_varh = 0.0
        self.reboots = 0
        self.heap_peak = 0
        self.next_heap_sample = 0
        self.on_tick = None  # optional callable(now_ms): progress display, pacing
        self.on_restore = None  # optional callable(world) before the firmware boots again
        self.rtc_offset_s = 0  # set by RTC.datetime(): wall clock minus virtual clock
        self.boot_ms = 0  # virtual time of the current boot: ticks_ms() counts from here
        self.unique_id = b"\x24\x0a\xc4\x00\x00\x01"
        self.reset_requested = False
        self.reset_kind = 5  # the cause a requested reset reports: machine.SOFT_RESET
        self.reset_cause = 1  # machine.PWRON_RESET
        self.network_outages = []  # (at_ms, for_ms)
        self.watchdog_ms = 0
        self.watchdog_deadline = 0
        self.timed = []  # [at_ms, callable()] scripted actions (button, faults, commands)
        self.relays = []  # emulated latching relays: de-energised when the board dies
        # Power-fail detect: a sense line that goes low (active) when mains goes; the supply
        # capacitor then holds the ESP32 and the metering IC up for holdup_ms.
        self.power_fail_pin = None
        self.holdup_ms = 0
        self.holdup = None  # (end of hold-up ms, remaining outage ms) while holding up
        self.holdup_used_us = 0  # of the hold-up, used by flash operations and SPI frames
        self.holdup_overruns = 0  # hold-ups that ran out in the middle of a flash operation
        self.irq_pins = {}  # pin id -> trigger (1 rising, 2 falling) armed by the firmware
        self.irq_fired = -1  # pin id whose edge interrupted the current sleep
        self.outage_log = []  # (ms mains went, true import + export Wh at that moment)
        # Called when the firmware stops (power cut, the end) before its sockets close: the
        # scenario's network settles what the meter had sent (simulator/mqttpath.py).
        self.on_halt = None
        # Called the instant power goes in the middle of the firmware's code (a cut at a
        # flash operation), before it unwinds: a real board sends nothing more, so whatever
        # the unwinding writes to a socket (a `finally` sending a PUBACK) must not get out.
        self.on_power_cut = None
        # Called before virtual time moves on: lets the network catch up in wall time.
        self.on_step = None
        self.meter_counts = None  # the live meter's link at the end: published, delivered,
        # backlog (see wire.meter_counts)

    # --- time ---------------------------------------------------------------------
    def now_unix(self) -> int:
        return self.start_unix + self.rtc_offset_s + self.now_ms // 1000

    def current_load(self):
        if not self.load:
            return None
        return self.load[self.load_index]

    def advance(self, ms: int) -> int:
        """Let up to `ms` of virtual time pass while the firmware sleeps. An edge on a pin
        with an armed IRQ ends the step early; returns that pin's id (its handler runs and
        the sleep goes on, as MicroPython runs soft IRQs inside sleep_ms) or -1."""
        self.check_power()
        if self.on_step is not None:
            self.on_step()
        self.irq_fired = -1
        self.pass_time(self.now_ms + ms, True)
        if self.on_tick is not None:
            self.on_tick(self.now_ms)
        if self.now_ms >= self.next_heap_sample:
            self.next_heap_sample = self.now_ms + HEAP_SAMPLE_MS
            self.sample_heap()
        return self.irq_fired

    def pass_time(self, end: int, firmware_running: bool):
        """Step to `end`, stopping at every load change, outage and the scenario's end.
        While the firmware runs, a power cut or the end interrupts it right there."""
        while self.now_ms < end:
            step_end = end
            nxt = self.next_change_ms()
            if nxt is not None and nxt < step_end:
                step_end = nxt
            if step_end > self.now_ms:
                self.flow(step_end - self.now_ms)
                self.now_ms = step_end
            self.apply_changes()
            if firmware_running:
                self.check_power()
                if self.irq_fired >= 0:
                    return

    def next_change_ms(self):
        best = None
        if self.load_index + 1 < len(self.load):
            best = self.load[self.load_index + 1][0]
        if self.outage_index < len(self.outages):
            at = self.outages[self.outage_index][0]
            if best is None or at < best:
                best = at
        if self.timed and (best is None or self.timed[0][0] < best):
            best = self.timed[0][0]
        if not self.ending and (best is None or self.duration_ms < best):
            best = self.duration_ms
        if self.holdup is not None and (best is None or self.holdup[0] < best):
            best = self.holdup[0]
        return best

    def apply_changes(self):
        while self.load_index + 1 < len(self.load) and (
            self.load[self.load_index + 1][0] <= self.now_ms
        ):
            self.load_index += 1
        while self.timed and self.timed[0][0] <= self.now_ms:
            self.timed.pop(0)[1]()
        if self.outage_index < len(self.outages):
            at, for_ms = self.outages[self.outage_index]
            if at <= self.now_ms and self.holdup is None:
                self.outage_index += 1
                self.outage_log.append((self.now_ms, self.true_import_wh + self.true_export_wh))
                if self.power_fail_pin is None or not self.holdup_ms:
                    self.mains_off_for(for_ms)
                else:
                    # Mains is gone: the sense line goes active; the ESP32 and the IC run on
                    # the supply capacitor for holdup_ms more, with no current flowing.
                    hold = self.holdup_ms if self.holdup_ms < for_ms else for_ms
                    self.mains_on = False
                    self.holdup = (self.now_ms + hold, for_ms - hold)
                    self.holdup_used_us = 0
                    self.set_external_pin(self.power_fail_pin, 0)
        if self.holdup is not None and self.holdup[0] <= self.now_ms:
            remaining = self.holdup[1]
            self.holdup = None
            self.mains_off_for(remaining)
            self.set_external_pin(self.power_fail_pin, 1)
        if not self.ending and self.now_ms >= self.duration_ms:
            self.begin_ending()
        if self.ending and self.now_ms >= self.duration_ms + READOUT_GRACE_MS:
            self.finished = True  # the meter never answered its readout

    def flow(self, ms: int):
        """Energy flows through the meter for `ms` with the current load."""
        point = self.current_load()
        neutral = None  # the neutral carries the live current unless the load says otherwise
        lead = False
        if point is None or not self.mains_on or self.ending:
            volts = 0.0
            amps = 0.0
            pf = 1.0
            hz = 50.0 if point is None else point[4]
        else:
            volts, amps, pf, hz = point[1], point[2], point[3], point[4]
            if len(point) > 6:
                neutral, lead = point[5], point[6]
            if not self.supply_on:
                amps = 0.0
                neutral = None
        watts = volts * amps * pf
        wh = watts * ms / 3_600_000
        if wh > 0:
            self.true_import_wh += wh
        elif wh < 0:
            self.true_export_wh -= wh
        if amps and pf != 1.0 and pf != -1.0:
            varh = volts * amps * math.sqrt(1.0 - pf * pf) * ms / 3_600_000
            if lead:
                varh = -varh  # a capacitive load: the current leads
            if varh > 0:
                self.true_q_import_varh += varh
            else:
                self.true_q_export_varh -= varh
        for meter in self.meters:
            meter.integrate(ms, volts, amps, pf, hz, neutral, lead)

    def mains_off_for(self, for_ms: int):
        """A power cut: the ESP32 and the metering IC lose power; time passes without us."""
        self.mains_on = False
        self.powered = False
        for relay in self.relays:
            relay.release()
        for meter in self.meters:
            meter.power_lost()
        # The outage itself passes with nobody running; time still moves on.
        self.pass_time(self.now_ms + for_ms, False)
        self.mains_on = True

    def flash_time(self, us: int) -> bool:
        """A flash operation of `us` (typical duration). Outside a hold-up it takes no
        virtual time; during one it uses up the supply capacitor: False if the supply dies
        before the operation ends."""
        if self.holdup is None:
            return True
        self.holdup_used_us += us
        return self.now_ms * 1000 + self.holdup_used_us <= self.holdup[0] * 1000

    def holdup_runs_out(self):
        """The supply capacitor is exhausted mid-operation: the board dies where the hold-up
        ends and the rest of the outage passes."""
        self.holdup_overruns += 1
        end = self.holdup[0]
        if self.now_ms < end:
            self.pass_time(end, False)
        else:
            self.apply_changes()

    def begin_ending(self):
        """Time is up: no more energy flows; ask the meter for its registers."""
        self.ending = True
        for uart in self.uarts.values():
            if uart.on_end is not None:
                uart.on_end(uart)

    def check_power(self):
        if not self.powered:
            raise PowerCut()
        if self.finished:
            raise ScenarioEnd()

    def power_restored(self):
        """Called by the runner before it boots the firmware again."""
        if self.on_restore is not None:
            self.on_restore(self)
        soft = self.reset_requested
        self.reset_requested = False
        # machine.WDT_RESET / SOFT_RESET / PWRON_RESET
        self.reset_cause = self.reset_kind if soft else 1
        self.reset_kind = 5
        self.powered = True
        self.reboots += 1
        self.boot_ms = self.now_ms
        self.watchdog_ms = 0
        for relay in self.relays:
            relay.release()
        for pin in list(self.pins):
            if pin not in self.external_pins:
                del self.pins[pin]
        self.irq_pins = {}
        self.irq_fired = -1
        if not soft:
            for meter in self.meters:
                meter.power_on()

    def halted(self):
        """The firmware has stopped (power cut or end); its sockets are about to close."""
        if self.on_halt is not None:
            self.on_halt()

    def schedule(self, at_ms: int, action):
        """Run action() when virtual time reaches at_ms (in order of time, then of call)."""
        i = len(self.timed)
        while i > 0 and self.timed[i - 1][0] > at_ms:
            i -= 1
        self.timed.insert(i, [at_ms, action])

    def set_unix(self, unix: int):
        self.check_power()
        self.rtc_offset_s += unix - self.now_unix()

    def request_reset(self):
        self.check_power()
        self.reset_requested = True
        self.powered = False
        raise PowerCut()

    def watchdog_reset(self):
        """The watchdog (or a crash) resets the ESP32 at once: mains stays on and the metering
        IC keeps its power, but the firmware gets no warning and its RAM is gone."""
        if self.powered and not self.ending:
            self.reset_requested = True
            self.reset_kind = 3  # machine.WDT_RESET
            self.powered = False

    # --- watchdog, network ------------------------------------------------------------
    def watchdog_start(self, timeout_ms: int):
        self.watchdog_ms = timeout_ms
        self.watchdog_deadline = self.now_ms + timeout_ms

    def watchdog_feed(self):
        self.check_power()
        if self.watchdog_ms:
            self.watchdog_deadline = self.now_ms + self.watchdog_ms

    def network_up(self) -> bool:
        for at, for_ms in self.network_outages:
            if at <= self.now_ms < at + for_ms:
                return False
        return True

    # --- the wire: what the shims say to the board's hardware -------------------------
    # One byte of operation, then its payload. In-process the shims call these directly;
    # simulator.host serves the same operations to a firmware process over a socket.
    @property
    def uart_rx_pending(self) -> int:
        total = 0
        for port in self.uarts.values():
            total += len(port.rx)
        return total

    def post(self, op: bytes, payload):
        self.call(op, payload)

    def call(self, op: bytes, payload) -> bytes:
        code = op[0]
        if code == 0x53:  # S: SPI transfer
            bus, polarity, phase, baud = struct.unpack_from("<BBBI", payload)
            tx = payload[7:]
            rx = bytearray(len(tx))
            self.spi_transfer(bus, (polarity, phase, baud), tx, rx)
            return bytes(rx)
        if code == 0x57:  # W: pin write (posted)
            self.pin_write(payload[0], payload[1])
            return b""
        if code == 0x51:  # Q: arm or disarm a pin IRQ (posted)
            self.pin_irq(payload[0], payload[1])
            return b""
        if code == 0x52:  # R: pin read, with every pin's level
            return bytes((self.pin_read(payload[0]),)) + self.pin_levels()
        if code == 0x55:  # U: UART any / read / write
            port = self.uart(payload[0])
            if payload[1] == 0:
                return struct.pack("<H", min(port.any(), 0xFFFF))
            if payload[1] == 1:
                return port.read() or b""
            port.write(bytes(payload[2:]))
            return b""
        if code == 0x41:  # A: advance(ms), with the device's heap sample
            ms, heap = struct.unpack("<II", payload)
            if heap > self.heap_peak:
                self.heap_peak = heap
            fired = self.advance(ms)
            return struct.pack("<qqHh", self.now_ms, self.start_unix + self.rtc_offset_s,
                               min(self.uart_rx_pending, 0xFFFF), fired) + self.pin_levels()
        if code == 0x46:  # F: flash program
            block, offset = struct.unpack_from("<HH", payload)
            self.flash.writeblocks(block, memoryview(payload)[4:], offset)
            self.flash.fh.flush()
            return b""
        if code == 0x45:  # E: flash erase
            self.flash.erase(struct.unpack("<H", payload)[0])
            self.flash.fh.flush()
            return b""
        if code == 0x48:  # H: hello, at every boot of a firmware process
            self.check_power()
            return (struct.pack("<qqqH", self.now_ms, self.boot_ms,
                                self.start_unix + self.rtc_offset_s, self.flash.block_count)
                    + bytes(self.unique_id)
                    + bytes((self.reset_cause, self.power_fail_pin or 0))
                    + self.reactive_mask() + self.flash.path.encode())
        if code == 0x54:  # T: set the RTC
            self.set_unix(struct.unpack("<q", payload)[0])
            return struct.pack("<q", self.start_unix + self.rtc_offset_s)
        if code == 0x4E:  # N: is the network up
            self.check_power()
            return b"\x01" if self.network_up() else b"\x00"
        if code == 0x44:  # D: watchdog start (ms) or feed (0)
            ms = struct.unpack("<I", payload)[0]
            if ms:
                self.watchdog_start(ms)
            else:
                self.watchdog_feed()
            return b""
        if code == 0x59:  # Y: at the end, the meter's link counts
            self.meter_counts = list(struct.unpack("<iii", payload))
            return b""
        if code == 0x58:  # X: machine.reset()
            self.request_reset()
        raise ValueError("unknown wire op %r" % op)

    def uart(self, uart_id: int):
        port = self.uarts.get(uart_id)
        if port is None:
            port = EmulatedUart(self)
            self.uarts[uart_id] = port
        return port

    def sample_heap(self):
        if hasattr(gc, "mem_alloc"):
            gc.collect()
            used = gc.mem_alloc()
            if used > self.heap_peak:
                self.heap_peak = used

    # --- pins -------------------------------------------------------------------------
    def set_external_pin(self, pin_id: int, level: int):
        """The outside world drives a sense line; an armed IRQ on that edge fires."""
        old = self.pins.get(pin_id, 1)
        self.pins[pin_id] = level
        trigger = self.irq_pins.get(pin_id, 0)
        if self.powered and old != level and trigger & (1 if level else 2):
            self.irq_fired = pin_id

    def pin_irq(self, pin_id: int, trigger: int):
        """The firmware arms (trigger 1 rising, 2 falling, 3 both) or disarms (0) an IRQ."""
        self.check_power()
        if trigger:
            self.irq_pins[pin_id] = trigger
        else:
            self.irq_pins.pop(pin_id, None)

    def pin_write(self, pin_id: int, level: int):
        if not self.powered or self.finished:
            self.check_power()
        self.pins[pin_id] = level
        listeners = self.pin_listeners.get(pin_id)
        if listeners:
            for listener in listeners:
                listener(level)

    def pin_read(self, pin_id: int) -> int:
        self.check_power()
        return self.pins.get(pin_id, 0)

    def listen_pin(self, pin_id: int, callback, moves_pins: bool = True):
        """callback(level) at every write of the pin; moves_pins: it may change the level of
        pins (a relay's coil moves its feedback contact), where a chip select's does not."""
        self.pin_listeners.setdefault(pin_id, []).append(callback)
        if moves_pins:
            self.reactive_pins.add(pin_id)

    def pin_levels(self) -> bytes:
        """The levels of pins 0-63 as a little-endian bit mask (1: high): what a device
        process may read its inputs from until it writes a reactive pin or time moves."""
        mask = 0
        for pin_id, level in self.pins.items():
            if level and 0 <= pin_id < 64:
                mask |= 1 << pin_id
        return mask.to_bytes(8, "little")

    def reactive_mask(self) -> bytes:
        mask = 0
        for pin_id in self.reactive_pins:
            if 0 <= pin_id < 64:
                mask |= 1 << pin_id
        return mask.to_bytes(8, "little")

    # --- SPI --------------------------------------------------------------------------
    def spi(self, bus_id: int, mode: tuple, wbuf, rbuf):
        """The shim's SPI transfer (wire op S): wbuf out, rbuf filled from MISO."""
        if type(rbuf) is bytearray and type(wbuf) is bytearray and rbuf is not wbuf and (
                len(rbuf) == len(wbuf)):
            self.spi_transfer(bus_id, mode, wbuf, rbuf)  # apart: MISO straight into rbuf
            return
        rx = bytearray(len(wbuf))
        self.spi_transfer(bus_id, mode, bytes(wbuf), rx)
        rbuf[:] = rx

    def attach_spi(self, bus_id: int, cs_pin: int, device):
        self.spi_devices.append((bus_id, cs_pin, device))
        # Chip select is active low: a falling edge starts a frame, a rising edge ends it.
        self.listen_pin(cs_pin, device.chip_select, False)

    def spi_transfer(self, bus_id: int, mode: tuple, tx, rx):
        """Clock len(tx) bytes out; whatever device is selected drives MISO."""
        if not self.powered or self.finished:
            self.check_power()
        if self.holdup is not None:  # the frame's time comes out of the hold-up
            self.holdup_used_us += len(tx) * 8_000_000 // (mode[2] or 1)
        selected = None
        pins = self.pins
        for bus, cs, device in self.spi_devices:
            if bus == bus_id and pins.get(cs, 1) == 0:
                if selected is not None:
                    # Two devices driving MISO at once: the bus reads garbage.
                    for i in range(len(rx)):
                        rx[i] = 0xFF
                    return
                selected = device
        if selected is None:
            for i in range(len(rx)):
                rx[i] = 0xFF  # nothing drives MISO: the pull-up reads ones
            return
        selected.exchange(mode, tx, rx)


def phase_angle(pf: float) -> float:
    """The angle between voltage and current for a signed power factor (negative: export)."""
    magnitude = abs(pf)
    if magnitude > 1.0:
        magnitude = 1.0
    return math.acos(magnitude)


class EmulatedUart:
    """A UART whose far end is the simulator (an optical probe, a technician's cable)."""

    def __init__(self, world):
        self.world = world
        self.rx = bytearray()  # bytes waiting for the firmware to read
        self.tx = bytearray()  # bytes the firmware sent
        self.on_end = None  # called when the scenario's time is up
        self.on_tx = None  # called after the firmware writes

    def inject(self, data):
        self.rx.extend(data)

    def any(self) -> int:
        self.world.check_power()
        return len(self.rx)

    def read(self, nbytes: int = -1):
        self.world.check_power()
        if not self.rx:
            return None
        if nbytes < 0 or nbytes >= len(self.rx):
            data = bytes(self.rx)
            self.rx = bytearray()
        else:
            data = bytes(self.rx[:nbytes])
            self.rx = self.rx[nbytes:]
        return data

    def write(self, data) -> int:
        self.world.check_power()
        self.tx.extend(data)
        if self.on_tx is not None:
            self.on_tx(self)
        return len(data)
