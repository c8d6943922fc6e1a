# ESP32 meter board with an ADE7953 on VSPI: same pins and data partition as the ATM90E26
# board, but self-contained, since only one board file is deployed (as /board.py). The
# simulator's `sim-ade7953` board is this wiring with virtual time as the clock source.
import time

import esp32
import network
import vfs
from machine import SPI, UART, Pin
from meter.metering.ade7953 import ADE7953
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


def mount_data():
    bdev = esp32.Partition.find(esp32.Partition.TYPE_DATA, label=DATA_PARTITION)[0]
    try:
        return vfs.VfsLfs2(bdev)
    except OSError:
        vfs.VfsLfs2.mkfs(bdev)
        return vfs.VfsLfs2(bdev)


def build(time_source=time):
    spi = SPI(SPI_BUS, baudrate=1_000_000, polarity=1, phase=1,
              sck=Pin(PIN_SCK), mosi=Pin(PIN_MOSI), miso=Pin(PIN_MISO))
    cs = Pin(PIN_METER_CS, Pin.OUT, value=1)
    return Hardware(
        clock=Clock(time_source),
        fs=mount_data(),
        metering=ADE7953(spi, cs),
        optical=UART(OPTICAL_UART, 300, tx=PIN_OPTICAL_TX, rx=PIN_OPTICAL_RX),
        wlan=network.WLAN(network.STA_IF),
    )
