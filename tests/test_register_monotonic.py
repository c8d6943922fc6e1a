"""A cumulative energy register never runs backwards: over reboots of every kind (remote
`reboot`, power cuts with and without the power-fail input, watchdog-style abrupt resets),
on both runtimes, every import/export value the meter publishes (telemetry, events) or
reads out is >= every earlier one, and the register stays within the README's loss bound
of the truth."""

from __future__ import annotations

import pytest

from simulator import mqttpath
from simulator import scenario as sc

PERIOD_S = 10  # telemetry period: many published values between the resets
# A load that changes, with export too, so both registers move and the sub-Wh remainder
# sits anywhere when a reset comes.
LOAD = [{"at_s": t, "volts": 240, "amps": a, "pf": pf}
        for t, a, pf in ((0, 3.3, 0.97), (700, 9.1, 1.0), (1500, 5.7, -0.93),
                         (2300, 12.4, 0.88), (3000, 1.9, -1.0))]
PEAK_W = 240 * 12.4
REBOOTS_AT = (333, 1201, 2777)  # signed remote reboots
OUTAGES_AT = (917, 2111, 3301)
WATCHDOG_AT = (555.5, 1777.3, 2999.9, 3456.7)


def scenario(power_fail_input: bool) -> dict:
    return sc.normalise({
        "duration_s": 3600, "load": LOAD, "power_fail_input": power_fail_input,
        "config": {"telemetry_period_s": PERIOD_S},
        "commands": [{"at_s": t, "cmd": "reboot"} for t in REBOOTS_AT]
        + [{"at_s": 3500, "cmd": "status"}],
        "outages": [{"at_s": t, "for_s": 40} for t in OUTAGES_AT],
        "faults": {"watchdog_resets_at_s": list(WATCHDOG_AT)},
    })


def loss_bound_wh(power_fail_input: bool) -> float:
    """The README's bounds: an outage < 1 Wh with the input, < 10 Wh without; an abrupt reset
    loses what flowed since the last save, which comes at least with every published value
    (one telemetry period and a poll at most; < 10 Wh without the input); a remote reboot
    saves first (< 1 Wh, the sub-mWh remainder)."""
    outage = 1.0 if power_fail_input else 10.0
    abrupt = PEAK_W * (PERIOD_S + 1) / 3600
    if not power_fail_input:
        abrupt = min(abrupt, 10.0)
    return len(OUTAGES_AT) * outage + len(WATCHDOG_AT) * abrupt + len(REBOOTS_AT) * 1.0


@pytest.mark.mosquitto
@pytest.mark.parametrize("power_fail_input", [True, False], ids=["input", "no-input"])
@pytest.mark.parametrize("runtime", [
    "cpython", pytest.param("micropython", marks=pytest.mark.micropython)])
def test_registers_never_run_backwards(runtime: str, power_fail_input: bool) -> None:
    report = sc.run(scenario(power_fail_input), runtime)
    tele = report["telemetry"]
    assert report["network_late"] == 0
    assert report["reboots"] == len(REBOOTS_AT) + len(OUTAGES_AT) + len(WATCHDOG_AT)
    assert [a["code"] for a in report["acks"]] == [0] * (len(REBOOTS_AT) + 1)
    # enough published values on each side of every reset to see a step backwards
    assert tele["received"]["telemetry"] >= 3600 // PERIOD_S - 60
    assert tele["received"]["events"] >= len(OUTAGES_AT) + len(REBOOTS_AT)
    assert tele["register_decreases"] == []
    # the final readout is not below anything published before it
    top = tele["registers_published_max_mwh"]
    assert report["meter_import_wh"] * 1000 >= top["import_kwh"]
    assert report["meter_export_wh"] * 1000 >= top["export_kwh"]
    # and the register is within the documented loss bound of the truth, never above it
    for kind in ("import", "export"):
        meter, true = report[f"meter_{kind}_wh"], report[f"true_{kind}_wh"]
        assert meter <= true + 0.001
        assert true - meter <= loss_bound_wh(power_fail_input), kind


def test_decreases_are_found() -> None:
    """The check itself: a value below an earlier one is reported, equal ones are not, and a
    redelivered event is judged by its own seq."""
    regs = [("telemetry", 1, "import_kwh", 49281), ("telemetry", 2, "import_kwh", 49281),
            ("telemetry", 1, "import_kwh", 49280), ("telemetry", 2, "import_kwh", 49290),
            ("events", 7, "import_kwh", 49000), ("events", 8, "import_kwh", 48000),
            ("events", 7, "import_kwh", 49000)]
    found = mqttpath.register_decreases(regs)
    assert [(d["stream"], d["seq"], d["mwh"], d["after_mwh"]) for d in found] == [
        ("telemetry", 1, 49280, 49281), ("events", 8, 48000, 49000)]
    assert mqttpath.kwh_text_to_mwh("0.049281") == 49281
    assert mqttpath.kwh_text_to_mwh("12.5") == 12_500_000
    with pytest.raises(ValueError):
        mqttpath.kwh_text_to_mwh("1.2345678")
