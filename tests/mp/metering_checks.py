# Metering logic on the real MicroPython unix port (-X heapsize=64k): the calibration
# arithmetic and the energy bounds, where a 31-bit ESP32 int would differ from CPython's.
# Prints what it computed, so the CPython side can compare; run by tests/test_metering_mp.py.
import sys

from meter.metering import calibration_maths as calibrate
from meter.metering.atm90e26 import ATM90E26
from meter.metering.energy import Register


class _Pin:
    def value(self, v=None):
        return 0


cal = {}
calibrate.gains(cal, 200.0, 189.3, 24000, 25440.2, 10000, 9100.7, 10000, 9300.0)
calibrate.phase(cal, 100.0, 97.1)
calibrate.offset(cal, 6.0, 6.0123, 3600)
cs = ATM90E26(None, _Pin()).checksums(cal)
print("cal", sorted(cal.items()), cs)

# 25 years at Imax and 1.2 x Vref, a day at a time: every field stays a small int.
reg = Register(3200)
per_day = 153 * 86400 + 52
small = True
for _ in range(25 * 366):
    reg.add(per_day, 100)
    reg.unsaved_wh = 0
    small = small and reg.kwh < (1 << 30) and reg.wh < 1000 and reg.rem < 3200
print("bounds", small, reg.kwh, reg.wh, reg.rem)
sys.exit(0)
