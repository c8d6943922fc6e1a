# The local button (active low), loaded on its first press: a hold counts once the button
# has stayed down for 2 s from when the poll saw it; any release before (a short press or
# a bounce) does nothing.
from micropython import const

_HOLD_MS = const(2000)
_SAMPLE_MS = const(20)


def held(pin, clock):
    start = clock.ticks_ms()
    while clock.ticks_diff(clock.ticks_ms(), start) < _HOLD_MS:
        clock.sleep_ms(_SAMPLE_MS)
        if pin.value():
            return False
    return True
