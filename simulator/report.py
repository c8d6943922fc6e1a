"""The scenario report: what a run's raw results, its readout and its flash image say."""

from __future__ import annotations

from simulator.images import read_control, read_events, read_store
from simulator.readout import kwh_text_to_wh, parse_readout


def build_report(scenario: dict, raw: dict, flash_path: str, wall_s: float) -> dict:
    readout = parse_readout(raw["readout"])
    report = {
        "true_import_wh": round(raw["true_import_wh"], 3),
        "true_export_wh": round(raw["true_export_wh"], 3),
        "meter_import_wh": kwh_text_to_wh(readout.get("1.8.0")),
        "meter_export_wh": kwh_text_to_wh(readout.get("2.8.0")),
        "reboots": raw["reboots"],
        "events": read_events(flash_path, scenario["start_unix"]),
        "flash": {"bytes_written": raw["flash_bytes_written"], "erases": raw["flash_erases"],
                  "erases_max_block": raw["flash_erases_max_block"],
                  "erases_per_block": raw.get("flash_erases_per_block", [])},
        "lost_wh_per_outage_max": round(max(raw["losses_wh"], default=0.0), 3),
        # last gasps the hold-up did not cover: a flash operation outlasted the supply
        "holdup_overruns": raw.get("holdup_overruns", 0),
        "profile_records": read_store(flash_path)["profile_records"],
        "runtime": raw["runtime"],
        "wall_s": round(wall_s, 3),
        "sim_s_per_wall_s": round(scenario["duration_ms"] / 1000 / max(wall_s, 1e-9), 1),
    }
    control = read_control(flash_path)
    state, mode = control if control else (1, scenario["config"].get("control_mode", 1))
    report.update({
        "control_state": state,
        "control_mode": mode,
        "output_state": state == 1,
        "relay_closed": raw["relay_closed"],
        "relay_operations": raw["relay_operations"],
        "relay_pulses": raw["relay_pulses"],
        "relay_max_pulse_ms": raw["relay_max_pulse_ms"],
        "coil_conflicts": raw["coil_conflicts"],
        "command_replies": raw["command_replies"],
        "control_events": [e for e in report["events"] if 150 <= e["code"] <= 199],
    })
    instant = {}
    for code, key in (("32.7.0", "volts"), ("31.7.0", "amps"), ("91.7.0", "neutral_amps"),
                      ("1.7.0", "watts"), ("3.7.0", "var"), ("9.7.0", "va"),
                      ("13.7.0", "pf"), ("14.7.0", "hz")):
        if code in readout:
            instant[key] = float(readout[code])
    report["instant"] = instant
    # Reactive energy (registers since the meter's last boot) and its truth.
    report["true_q_import_varh"] = round(raw.get("true_q_import_varh", 0.0), 3)
    report["true_q_export_varh"] = round(raw.get("true_q_export_varh", 0.0), 3)
    report["meter_q_import_varh"] = kwh_text_to_wh(readout.get("3.8.0"))
    report["meter_q_export_varh"] = kwh_text_to_wh(readout.get("4.8.0"))
    for code, key in (("C.90.1", "rejected_reads"), ("C.90.2", "ic_reinits")):
        if code in readout:
            report[key] = int(readout[code])
    report["telemetry"] = raw.get("telemetry", {})
    report["acks"] = raw.get("acks", [])
    if "received" in raw:
        # What the run's head-end received per topic (the broker's own last will aside).
        report["telemetry"]["received"] = raw["received"]
        report["telemetry"]["records_received"] = raw.get("records_received", {})
        report["telemetry"]["seq_gaps"] = raw.get("seq_gaps", {})
        report["telemetry"]["register_decreases"] = raw.get("register_decreases", [])
        report["telemetry"]["registers_published_max_mwh"] = raw.get(
            "registers_published_max_mwh", {})
        report["commands_delivered"] = raw["commands_delivered"]
        # waits for the network that ran out (0 unless the machine is badly overloaded or the
        # broker misbehaves): the report is then not guaranteed to be reproducible
        report["network_late"] = raw["network_late"]
        report["connections"] = raw["connections"]  # the meter's to the broker (proxy)
    if raw["runtime"] == "micropython":
        report["heap_peak_bytes"] = raw["heap_peak_bytes"]  # the firmware's, layer excluded
        report["heap_device_layer_bytes"] = raw["heap_device_layer_bytes"]
    return report
