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
from simulator.device.world import PowerCut, ScenarioEnd, World

DATA_BLOCKS = 64  # 256 KiB data partition
FIRMWARE_MODULES = ("boot", "main", "board", "meter", "umqtt")
BOARDS = {"sim": "boards.sim"}


def wire_board(world, board):
    from boards import esp32_atm90e26 as pins

    chip = Atm90e26()
    world.attach_spi(pins.SPI_BUS, pins.PIN_METER_CS, chip)
    world.meters.append(chip)
    world.uart(pins.OPTICAL_UART).on_end = request_readout
    return BOARDS[board]


def request_readout(uart):
    """At the end, a probe on the optical port asks the meter for its registers."""
    uart.inject(b"/?!\r\n")
    uart.on_tx = readout_done


def readout_done(uart):
    if b"!\r\n\x03" in uart.tx:
        uart.world.finished = True


def install_shims(world):
    from simulator.device.shim import esp32, machine, network

    shim.WORLD[0] = world
    sys.modules["machine"] = machine
    sys.modules["esp32"] = esp32
    sys.modules["network"] = network
    if sys.implementation.name != "micropython":
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
    for name in list(sys.modules):
        for prefix in FIRMWARE_MODULES:
            if name == prefix or name.startswith(prefix + "."):
                del sys.modules[name]
    gc.collect()


def provision(world, config, command_key="", files=None):
    """Write the scenario's configuration overrides, command key and other files (CA
    certificate...), as provisioning does."""
    files = dict(files or {})
    if command_key:
        files["/cmd.key"] = command_key
    if not config and not files:
        return
    try:
        import vfs
    except ImportError:
        from simulator import lfs_vfs as vfs
    try:
        fs = vfs.VfsLfs2(world.flash)
    except OSError:
        vfs.VfsLfs2.mkfs(world.flash)
        fs = vfs.VfsLfs2(world.flash)
    with fs.open("/config.json", "w") as f:
        f.write(json.dumps(config))
    from binascii import unhexlify

    for path, data in files.items():
        with fs.open(path, "wb") as f:
            f.write(unhexlify(data))


def prepare(scenario, flash_path):
    """The world of a normalised scenario, its board wired and its configuration written."""
    world = World(scenario["duration_ms"], scenario["start_unix"], scenario["load"],
                  scenario["outages"])
    world.flash = FlashChip(flash_path, DATA_BLOCKS, world)
    install_shims(world)  # the board module needs `machine` & co. even to read its pin map
    board_module = wire_board(world, scenario["board"])
    provision(world, scenario["config"], scenario.get("command_key", ""),
              scenario.get("files"))
    world.flash.cut_at_op = scenario["faults"].get("power_cut_at_write", 0)
    return world, board_module


def run(scenario, flash_path, progress=None):
    """Run a normalised scenario with the firmware in this process; returns raw results."""
    world, board_module = prepare(scenario, flash_path)
    world.on_tick = progress
    while True:
        forget_firmware()
        sys.modules["board"] = __import__(board_module, None, None, ["build"])
        try:
            __import__("boot")
            __import__("main")
            break  # main returned: the firmware stopped by itself
        except PowerCut:
            world.power_restored()
        except ScenarioEnd:
            break
    forget_firmware()
    world.sample_heap()
    return results(world, world.heap_peak)


def results(world, heap_peak):
    readout = b""
    for uart in world.uarts.values():
        if uart.on_end is not None:
            readout = bytes(uart.tx)
    world.flash.close()
    return {
        "true_import_wh": world.true_import_wh,
        "true_export_wh": world.true_export_wh,
        "readout": readout.decode(),
        "reboots": world.reboots,
        "flash_bytes_written": world.flash.bytes_written,
        "flash_erases": world.flash.total_erases(),
        "flash_erases_max_block": max(world.flash.erases),
        "heap_peak_bytes": heap_peak,
    }
