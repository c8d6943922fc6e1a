"""Event names: the firmware's event codes named for the report, the live console and the
head-end's readable lines (host-side, to spare the meter's heap)."""

from __future__ import annotations

# Names of the metering events (codes 120-128), kept host-side to spare the meter's heap.
METERING_EVENT_NAMES = {
    120: "read_rejected", 121: "bus_fault", 122: "bus_restored", 123: "tamper_neutral",
    124: "tamper_neutral_end", 125: "reverse_flow", 126: "reverse_flow_end",
    127: "calibration_loaded", 128: "calibration_bad",
    130: "backlog_lost",  # store-and-forward (meter/remote/forward.py)
}


# Accepted configuration commands (firmware/meter/remote/dispatch.py), named host-side like the
# above.
COMMAND_EVENT_NAMES = {
    220: "control_mode_set", 221: "load_limit_set", 222: "telemetry_period_set",
    223: "time_set_old", 224: "time_set_new", 225: "billing_snapshot", 226: "remote_reboot",
}
CAUSES = ("remote", "manual", "limiter", "tamper")
STATES = ("disconnected", "connected", "ready_for_reconnection")


def event_name(code: int) -> str:
    """Names of the firmware's event codes; supply control's are composed from the code."""
    from meter.storage import events

    if code in events.NAMES:
        return events.NAMES[code]
    if code in METERING_EVENT_NAMES:
        return METERING_EVENT_NAMES[code]
    extra = {events.RELAY_FAULT: "relay_fault", events.RELAY_REASSERTED: "relay_reasserted",
             events.LIMITER_LOCKOUT: "limiter_lockout"}
    if code in extra:
        return extra[code]
    offset = code - events.CONTROL
    if 0 <= offset < len(CAUSES) * 3:
        return f"control_{CAUSES[offset // 3]}_{STATES[offset % 3]}"
    if code in COMMAND_EVENT_NAMES:
        return COMMAND_EVENT_NAMES[code]
    if events.CMD_REJECTED < code < events.CMD_REJECTED + 50:
        from host_tools.wire import REASONS

        return "cmd_rejected_" + REASONS.get(code - events.CMD_REJECTED, "other")
    return "unknown"
