# The names of the event codes, the one table: every code the firmware logs (the codes are
# const where they are logged: meter/storage/events.py, meter/supply/control.py,
# meter/remote/commands.py and the command groups of meter/remote/dispatch.py) with its name,
# and the ack codes whose rejections are logged. The meter logs numbers only and never imports
# this module, so the names take none of its heap; the head-end (host_tools/), the simulator's
# reports and the tests read it (tests/test_event_names.py checks that every code the firmware
# can log is here).
#
# Codes: 1-99 core; 100-149 metering/tamper; 150-199 supply control; 200-249 transaction.
NAMES = {
    1: "power_up",
    2: "config_rejected",
    3: "ic_reinitialised",
    4: "store_corrupt",
    5: "ic_fault",
    6: "power_fail",  # value: seconds without power
    7: "factory_reset",
    # metering (meter/app.py), store-and-forward (meter/remote/forward.py), the cover
    120: "read_rejected",
    121: "bus_fault",
    122: "bus_restored",
    123: "tamper_neutral",
    124: "tamper_neutral_end",
    125: "reverse_flow",
    126: "reverse_flow_end",
    127: "calibration_loaded",
    128: "calibration_bad",
    130: "backlog_lost",  # value: records lost
    140: "cover_open",
    # supply control (150-161 below), the relay, the load limiter
    170: "relay_fault",
    171: "relay_reasserted",
    172: "limiter_lockout",
    # accepted configuration commands (meter/remote/dispatch.py's groups)
    220: "control_mode_set",
    221: "load_limit_set",
    222: "telemetry_period_set",
    223: "time_set_old",
    224: "time_set_new",
    225: "billing_snapshot",
    226: "remote_reboot",
}
# Supply control: 150 + cause * 3 + the resulting state (meter/supply/transitions.py).
CONTROL = 150
CAUSES = ("remote", "manual", "limiter", "tamper")
STATES = ("disconnected", "connected", "ready_for_reconnection")  # DLMS class 70's
for _cause in range(len(CAUSES)):
    for _state in range(len(STATES)):
        NAMES[CONTROL + _cause * 3 + _state] = "control_%s_%s" % (CAUSES[_cause],
                                                                   STATES[_state])
# The ack codes (meter/remote/commands.py; the meter sends only the number, and a "reason" of
# its own where one code has several causes). A rejected command logs 200 + its code.
REASONS = {
    0: "ok", 1: "hardware_fault", 2: "temporary_failure", 3: "denied", 4: "bad_mac",
    5: "replay", 6: "expired", 7: "malformed", 8: "wrong_meter", 9: "too_large",
    10: "unknown_command", 250: "other",
}
CMD_REJECTED = 200
for _code in REASONS:
    if 0 < _code < 50:
        NAMES[CMD_REJECTED + _code] = "cmd_rejected_" + REASONS[_code]


def name(code):
    """An event code's name ("unknown" for a code no firmware logs)."""
    n = NAMES.get(code)
    if n is not None:
        return n
    if CMD_REJECTED < code < CMD_REJECTED + 50:
        return "cmd_rejected_other"
    return "unknown"
