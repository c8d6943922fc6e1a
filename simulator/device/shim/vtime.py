# Virtual time: the `time` functions a board hands the firmware's clock. Only sleeping moves
# it, so a day of metering runs as fast as the host can compute it.
from simulator.device.shim import world

_TICKS_PERIOD = 1 << 30
_TICKS_HALF = _TICKS_PERIOD // 2


def ticks_ms():
    w = world()
    return (w.now_ms - w.boot_ms) & (_TICKS_PERIOD - 1)


def ticks_add(ticks, delta):
    return (ticks + delta) & (_TICKS_PERIOD - 1)


def ticks_diff(end, start):
    diff = (end - start) & (_TICKS_PERIOD - 1)
    return diff - _TICKS_PERIOD if diff >= _TICKS_HALF else diff


def sleep_ms(ms):
    w = world()
    end = w.now_ms + ms
    while ms > 0:
        fired = w.advance(ms)
        if fired < 0:
            return
        # An armed pin IRQ interrupted the sleep: its handler runs, then the sleep goes on.
        from simulator.device.shim import machine

        machine.run_irq(fired)
        ms = end - w.now_ms


def sleep(seconds):
    sleep_ms(int(seconds * 1000))


def time():
    # Seconds since 1970 from the board's battery-backed RTC.
    return world().now_unix()


def gmtime(secs=None):
    import time as host_time

    return host_time.gmtime(world().now_unix() if secs is None else secs)
