"""The thin path end to end: emulated IC -> firmware -> umqtt.simple -> real mosquitto."""

from __future__ import annotations

import json
import time

import pytest

from simulator import scenario as sc
from tests.conftest import subscribe


def collect(host: str, port: int, topic: str):
    got: list[dict] = []
    client = subscribe(host, port, [(topic, 0)],
                       lambda _c, _u, msg: got.append(json.loads(msg.payload)), "t")
    return client, got


@pytest.mark.mosquitto
@pytest.mark.parametrize("runtime", ["cpython", "micropython"])
def test_readings_reach_mosquitto(mosquitto, mpy_build, runtime):
    host, port = mosquitto
    meter_id = f"thin-{runtime}"
    client, got = collect(host, port, f"meters/{meter_id}/telemetry")
    scenario = sc.normalise({
        "duration_s": 600,
        "load": [{"at_s": 0, "volts": 240, "amps": 10, "pf": 1.0}],
        "config": {"meter_id": meter_id, "mqtt_host": host, "mqtt_port": port,
                   "telemetry_period_s": 60},
    })
    report = sc.run(scenario, runtime)
    deadline = time.monotonic() + 5
    while len(got) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    client.loop_stop()
    client.disconnect()
    assert len(got) == 10, got
    assert [m["seq"] for m in got] == list(range(1, 11))
    assert all(m["id"] == meter_id for m in got)
    imports = [float(m["import_kwh"]) * 1000 for m in got]
    assert imports == sorted(imports)
    # a reading a minute at 2.4 kW: 40 Wh apart, never ahead of the meter's own register
    assert imports[-1] == pytest.approx(360, abs=0.2)
    assert imports[-1] <= report["meter_import_wh"]
    assert got[-1]["v"] == 240.0 and got[-1]["p"] == 2400
