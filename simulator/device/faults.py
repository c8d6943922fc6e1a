# Faults on a metering IC's SPI bus and supply, scheduled by the scenario's `faults`:
# bit errors on MISO at a given rate (deterministic: a seeded xorshift generator and a
# geometric skip to the next bad bit), IC resets at given times, and periods when MISO is
# stuck at 0x00 or 0xFF. Runs in the world, host-side.

import math


class BusFaults:
    def __init__(self, faults: dict):
        self.ber = float(faults.get("spi_bit_error_rate", 0.0))
        self.state = (int(faults.get("seed", 1)) * 2654435761 + 12345) & 0xFFFFFFFF or 1
        self.resets = sorted(int(t * 1000) for t in faults.get("ic_resets_at_s", ()))
        self.reset_index = 0
        self.stuck = sorted((int(s["at_s"] * 1000), int((s["at_s"] + s["for_s"]) * 1000),
                             s.get("level", 0xFF)) for s in faults.get("stuck_bus", ()))
        self.bit_errors = 0
        self.skip = self.next_skip() if self.ber > 0 else -1
        self.active = self.ber > 0 or bool(self.stuck)  # anything to do on the bus

    def random(self) -> float:
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return (x + 0.5) / 4294967296.0

    def next_skip(self) -> int:
        """Good bits before the next bad one, geometrically distributed."""
        if self.ber >= 1:
            return 0
        return int(math.log(self.random()) / math.log(1.0 - self.ber))

    def reset_due(self, now_ms: int) -> bool:
        due = False
        while self.reset_index < len(self.resets) and self.resets[self.reset_index] <= now_ms:
            self.reset_index += 1
            due = True
        return due

    def corrupt(self, rx, now_ms: int):
        for start, end, level in self.stuck:
            if start <= now_ms < end:
                for i in range(len(rx)):
                    rx[i] = level
                return
        if self.skip < 0:
            return
        bits = len(rx) * 8
        while self.skip < bits:
            rx[self.skip >> 3] ^= 0x80 >> (self.skip & 7)
            self.bit_errors += 1
            self.skip += 1 + self.next_skip()
        self.skip -= bits
