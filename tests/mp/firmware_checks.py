# Firmware logic on the real MicroPython unix port, under -X heapsize=64k.
# Run by tests/test_micropython.py; prints one line per check and a closing tally.
import sys

from fakes import FakeTime
from meter.metering.atm90e26 import checksum
from meter.metering.energy import Register
from meter.runtime.clock import Clock

passed = 0
failed = 0


def check(name, ok):
    global passed, failed
    if ok:
        passed += 1
        print("ok", name)
    else:
        failed += 1
        print("FAIL", name)


def energy_carries_exactly():
    reg = Register(3200)
    for _ in range(3200):
        reg.add(1, 100)
    return (reg.kwh, reg.wh, reg.rem) == (0, 100, 0)


def energy_uneven_polls():
    a = Register(3200)
    b = Register(3200)
    total = 0
    for i in range(5000):
        count = (i * 7919) % 613
        a.add(count, 100)
        total += count
    b.add(total, 100)
    return (a.kwh, a.wh, a.rem) == (b.kwh, b.wh, b.rem)


def energy_text():
    reg = Register(3200)
    reg.add(32 * 1234 + 16, 100)
    return reg.kwh_text() == "1.234500"


def checksum_rule():
    want = ((0x12 ^ 0x34 ^ 0x00 ^ 0xFF) << 8) | ((0x12 + 0x34 + 0xFF) & 0xFF)
    return checksum([0x1234, 0x00FF]) == want


def clock_counts_meter_seconds():
    src = FakeTime()
    clock = Clock(src)
    start = clock.now()
    ok = start == 1767225600 - 1577836800 and clock.valid()
    # across a ticks wrap (2**30 ms is ~12.4 days): still exact, still a small int
    for _ in range(40):
        src.sleep_ms(86_400_000)
        clock.now()
    return ok and clock.now() == start + 40 * 86400 and clock.now() < (1 << 30)


check("energy carries exactly", energy_carries_exactly())
check("energy uneven polls equal one add", energy_uneven_polls())
check("energy kWh text", energy_text())
check("ATM90E26 checksum rule", checksum_rule())
check("clock counts meter seconds across ticks wrap", clock_counts_meter_seconds())
print("firmware: %d passed, %d failed" % (passed, failed))
sys.exit(1 if failed else 0)
