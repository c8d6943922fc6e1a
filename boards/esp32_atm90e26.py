# ESP32 meter board with an ATM90E26 on VSPI. Deployed to the board as /board.py.
# The data flash (256 KiB) is separate from the code filesystem, so re-deploying firmware
# never touches readings. Two partitions (partitions.csv):
#   meterdata, data, undefined, , 248K   LittleFS: readings, profiles, logs (62 blocks)
#   lastgasp,  data, undefined, , 8K     raw last-gasp journal, 2 sectors kept erased
# The simulator's `sim` board is this wiring with virtual time as the clock source.
import time

import esp32
import network
import vfs
from machine import SPI, UART, Pin
from meter.metering.atm90e26 import ATM90E26
from meter.runtime.clock import Clock
from meter.runtime.hardware import Hardware

SPI_BUS = 2
PIN_SCK = 18
PIN_MOSI = 23
PIN_MISO = 19
PIN_METER_CS = 5
OPTICAL_UART = 1
PIN_OPTICAL_TX = 17
PIN_OPTICAL_RX = 16
DATA_PARTITION = "meterdata"
JOURNAL_PARTITION = "lastgasp"
# Latching supply relay: two coils (A closes, B opens) through low-side drivers, or, with
# hbridge=True, one coil across an H-bridge whose inputs are A and B. Auxiliary contact on
# an input-only pin (1 = closed). Local button to ground with a pull-up.
PIN_RELAY_A = 25
PIN_RELAY_B = 26
PIN_RELAY_FEEDBACK = 34
RELAY_PULSE_MS = 100
PIN_BUTTON = 35
PIN_COVER = 36  # terminal cover switch, input only: 1 while the cover is open
# Power-fail detect: a comparator on the unregulated supply pulls this input low when mains
# goes; the supply capacitor then keeps the ESP32 and the ATM90E26 running this long.
PIN_POWER_FAIL = 39  # input only
POWER_FAIL_HOLDUP_MS = 30


def mount_data():
    bdev = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=DATA_PARTITION)[0]
    try:
        return vfs.VfsLfs2(bdev)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev)
        return vfs.VfsLfs2(bdev)


def journal():
    """The raw last-gasp journal partition (meter.storage.checkpoint.Journal), or None without
    one."""
    found = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=JOURNAL_PARTITION)
    return found[0] if found else None


def build(time_source=time, hbridge=False):
    spi = SPI(SPI_BUS, baudrate=200_000, polarity=1, phase=1,
              sck=Pin(PIN_SCK), mosi=Pin(PIN_MOSI), miso=Pin(PIN_MISO))
    cs = Pin(PIN_METER_CS, Pin.OUT, value=1)
    return Hardware(
        clock=Clock(time_source),
        fs=mount_data(),
        metering=ATM90E26(spi, cs),
        optical=UART(OPTICAL_UART, 300, tx=PIN_OPTICAL_TX, rx=PIN_OPTICAL_RX),
        wlan=network.WLAN(network.STA_IF),
        relay=(Pin(PIN_RELAY_A, Pin.OUT, value=0), Pin(PIN_RELAY_B, Pin.OUT, value=0),
               Pin(PIN_RELAY_FEEDBACK, Pin.IN), RELAY_PULSE_MS, hbridge),
        button=Pin(PIN_BUTTON, Pin.IN, Pin.PULL_UP),
        cover=Pin(PIN_COVER, Pin.IN),
        power_fail=Pin(PIN_POWER_FAIL, Pin.IN),
        journal=journal(),
    )
