# Runs one scenario inside the device process, on CPython or MicroPython alike: builds the
# world, wires the emulated chips to the board's pins, boots the unmodified firmware
# (boot.py, then main.py) and boots it again after every power cut, until time is up.
#
# It reads a scenario already checked and normalised by simulator.scenario and returns raw
# results, which that module turns into the report. On MicroPython the firmware runs in its
# own process instead (simulator.host), against the same world built by prepare().

import gc
import json
import sys

from simulator.device import shim
from simulator.device.atm90e26_emu import Atm90e26
from simulator.device.flash import FlashChip
from simulator.device.relay_emu import LatchingRelay
from simulator.device.world import PowerCut, ScenarioEnd, World

DATA_BLOCKS = 64  # 256 KiB of data flash: its partitions in shim.Partition.TABLE
FIRMWARE_MODULES = ("boot", "main", "board", "meter", "umqtt")
# the scenario's board -> the simulated board's module (the device process imports it as
# `board`); the deployable boards, which they wire as on the real thing, are in boards/
BOARDS = {"sim": "simulator.device.board_sim", "sim_hbridge": "simulator.device.board_sim_hbridge",
          "sim-ade7953": "simulator.device.board_sim_ade7953"}
COMMAND_UART = 2  # simulator/device/board_sim.py's command port


def wire_board(world, board, chip_errors=None, faults=None):
    from boards import esp32_atm90e26 as pins

    if board == "sim-ade7953":
        from simulator.device.ade7953_emu import Ade7953

        chip = Ade7953(chip=chip_errors, faults=faults)
    else:
        chip = Atm90e26(chip=chip_errors, faults=faults)
    world.attach_spi(pins.SPI_BUS, pins.PIN_METER_CS, chip)
    world.meters.append(chip)
    world.uart(pins.OPTICAL_UART).on_end = request_readout
    world.relays.append(LatchingRelay(world, pins.PIN_RELAY_A, pins.PIN_RELAY_B,
                                      pins.PIN_RELAY_FEEDBACK, board == "sim_hbridge"))
    world.external_pins.add(pins.PIN_COVER)
    world.pins[pins.PIN_COVER] = 0  # the terminal cover is closed
    world.external_pins.add(pins.PIN_BUTTON)
    world.pins[pins.PIN_BUTTON] = 1  # pulled up: released
    world.uart(COMMAND_UART)
    world.power_fail_pin = pins.PIN_POWER_FAIL
    world.holdup_ms = pins.POWER_FAIL_HOLDUP_MS
    world.external_pins.add(pins.PIN_POWER_FAIL)
    world.pins[pins.PIN_POWER_FAIL] = 1  # mains present
    return BOARDS[board]


def script_control(world, scenario):
    """Schedule the scenario's remote commands, button presses and relay faults."""
    from boards import esp32_atm90e26 as pins

    port = world.uart(COMMAND_UART)
    for at_ms, line in scenario.get("port_commands", ()):
        world.schedule(at_ms, lambda line=line: port.inject(line))
    for at_ms, hold_ms in scenario.get("button", ()):
        world.schedule(at_ms, lambda: world.pins.__setitem__(pins.PIN_BUTTON, 0))
        world.schedule(at_ms + hold_ms, lambda: world.pins.__setitem__(pins.PIN_BUTTON, 1))
    for at_ms, for_ms in scenario.get("cover_open", ()):
        world.schedule(at_ms, lambda: world.pins.__setitem__(pins.PIN_COVER, 1))
        world.schedule(at_ms + for_ms, lambda: world.pins.__setitem__(pins.PIN_COVER, 0))
    relay = world.relays[0]
    faults = scenario["faults"]
    for t in faults.get("watchdog_resets_at_s", ()):
        world.schedule(int(t * 1000), world.watchdog_reset)
    for key, action in (("relay_weld_at_s", relay.weld),
                        ("relay_coil_open_at_s", relay.open_coil),
                        ("relay_shock_at_s", relay.shock)):
        if key in faults:
            world.schedule(int(faults[key] * 1000), action)


def request_readout(uart):
    """At the end, a probe on the optical port asks the meter for its registers."""
    uart.inject(b"/?!\r\n")
    uart.on_tx = readout_done


def readout_done(uart):
    if b"!\r\n\x03" in uart.tx:
        uart.world.finished = True


def install_shims(world):
    shim.WORLD[0] = world
    for name in ("machine", "esp32", "network"):
        sys.modules[name] = shim
    if sys.implementation.name != "micropython":
        from simulator.codecache import FirmwareFinder

        if FirmwareFinder not in sys.meta_path:
            # every boot imports the firmware afresh (forget_firmware): compile it once
            sys.meta_path.insert(0, FirmwareFinder)
        # CPython lacks these MicroPython modules; the simulator brings its own.
        from simulator import cpython_usocket, lfs_vfs
        from simulator.device.shim import micropython

        sys.modules["micropython"] = micropython
        sys.modules["vfs"] = lfs_vfs
        sys.modules["usocket"] = cpython_usocket
        from simulator import cpython_ussl

        sys.modules["ussl"] = cpython_ussl
        sys.modules["ustruct"] = __import__("struct")
        sys.modules["ubinascii"] = __import__("binascii")


def forget_firmware():
    """Power loss: the firmware's RAM is gone, and with it every module it had imported."""
    shim.IRQ_HANDLERS.clear()  # the handlers are the old firmware's objects: gone with it
    for name in list(sys.modules):
        for prefix in FIRMWARE_MODULES:
            if name == prefix or name.startswith(prefix + "."):
                del sys.modules[name]
    gc.collect()


def mount(world):
    """The data partition's filesystem, formatted if it has none yet."""
    try:
        import vfs
    except ImportError:
        from simulator import lfs_vfs as vfs
    data = shim.Partition(world.flash, "meterdata")
    try:
        return vfs.VfsLfs2(data)
    except OSError:
        vfs.VfsLfs2.mkfs(data)
        return vfs.VfsLfs2(data)


def provision(world, config, command_key="", files=None):
    """Write the scenario's configuration overrides, command key and other files (CA
    certificate...), as provisioning does."""
    files = dict(files or {})
    if command_key:
        files["/cmd.key"] = command_key
    if not config and not files:
        return
    fs = mount(world)
    if config:
        with fs.open("/config.json", "w") as f:
            f.write(json.dumps(config))
    from binascii import unhexlify

    for path, data in files.items():
        folder = path.rpartition("/")[0]
        if folder:  # e.g. /p/block.0: a profile prepared host-side
            try:
                fs.mkdir(folder)
            except OSError:
                pass  # already there
        with fs.open(path, "wb") as f:
            f.write(unhexlify(data))


def prepare(scenario, flash_path):
    """The world of a normalised scenario, its board wired and its configuration written."""
    world = World(scenario["duration_ms"], scenario["start_unix"], scenario["load"],
                  scenario["outages"])
    world.flash = FlashChip(flash_path, DATA_BLOCKS, world)
    install_shims(world)  # the board module needs `machine` & co. even to read its pin map
    board_module = wire_board(world, scenario["board"], scenario.get("chip"),
                              scenario.get("faults"))
    provision(world, scenario["config"], scenario.get("command_key", ""),
              scenario.get("files"))
    if scenario.get("calibrate"):
        from simulator.calibration_bench import calibrate_world  # host side only

        calibrate_world(world, mount(world))
    world.flash.cut_at_op = scenario["faults"].get("power_cut_at_write", 0)
    script_control(world, scenario)
    if not scenario.get("power_fail_input", True):
        world.power_fail_pin = None  # no detector fitted: the sense line just stays high
    return world, board_module


def run(scenario, flash_path, progress=None, on_restore=None, on_world=None):
    """Run a normalised scenario with the firmware in this process; returns raw results.
    on_world(world): called once the world is built (the scenario's network attaches)."""
    world, board_module = prepare(scenario, flash_path)
    world.on_tick = progress
    world.on_restore = on_restore
    if on_world is not None:
        on_world(world)
    while True:
        forget_firmware()
        sys.modules["board"] = __import__(board_module, None, None, ["build"])
        try:
            __import__("boot")
            __import__("main")
            break  # main returned: the firmware stopped by itself
        except PowerCut:
            world.halted()
            world.power_restored()
        except ScenarioEnd:
            world.halted()
            world.meter_counts = end_counts(world)
            break
    forget_firmware()
    world.sample_heap()
    return results(world, world.heap_peak)


def end_counts(world):
    """The live meter's link counts at the end (the firmware is stopped where it was; the
    world is live again just for reading them, which may read the flash)."""
    from simulator.device.wire import meter_counts

    finished = world.finished
    world.finished = False
    try:
        return meter_counts()
    except BaseException:  # noqa: B036 - a meter without power at the end has none
        return None
    finally:
        world.finished = finished


def results(world, heap_peak):
    readout = b""
    for uart in world.uarts.values():
        if uart.on_end is not None:
            readout = bytes(uart.tx)
    world.flash.close()
    relay = world.relays[0]
    replies = bytes(world.uart(COMMAND_UART).tx).decode()
    return {
        "relay_closed": relay.closed,
        "relay_operations": relay.operations,
        "relay_pulses": relay.pulses,
        "coil_conflicts": relay.coil_conflicts,
        "relay_max_pulse_ms": relay.max_pulse_ms,
        "relay_pulse_log": relay.pulse_log,
        "command_replies": replies.splitlines(),
        "true_import_wh": world.true_import_wh,
        "true_export_wh": world.true_export_wh,
        "true_q_import_varh": world.true_q_import_varh,
        "true_q_export_varh": world.true_q_export_varh,
        "readout": readout.decode(),
        "reboots": world.reboots,
        "flash_bytes_written": world.flash.bytes_written,
        "flash_erases": world.flash.total_erases(),
        "flash_erases_max_block": max(world.flash.erases),
        "flash_erases_per_block": list(world.flash.erases),
        "heap_peak_bytes": heap_peak,
        "losses_wh": list(getattr(world, "losses_wh", [])),
        "meter_counts": world.meter_counts,
        "holdup_overruns": world.holdup_overruns,
    }
