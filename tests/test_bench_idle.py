"""`make bench`'s idle cost of live meters (simulator/bench.py idle_cost): what it reads of
/proc, and that it measures every device process of meters that are live."""
import subprocess
import sys
import time

import pytest

from simulator import bench


def test_proc_readings_follow_a_child_process():
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\n"
                              "time.sleep(30)"])
    try:
        time.sleep(0.05)
        assert child.pid in bench._children()
        before = bench._proc_cpu_s(child.pid)
        time.sleep(0.6)
        assert bench._proc_cpu_s(child.pid) - before >= 0.2  # its busy 0.3 s, counted
        assert bench._proc_kib(child.pid, "VmRSS") > 1024
        assert bench._proc_kib(child.pid, "Pss", "smaps_rollup") > 0
    finally:
        child.kill()
        child.wait()
    assert child.pid not in bench._children()


@pytest.mark.micropython
def test_idle_cost_measures_every_live_meter(mpy_build, capsys):
    result = bench.idle_cost(meters=2, seconds=6, warmup_s=8, telemetry_s=2)
    assert result["devices"] == 2 and result["alive"] == 2
    assert result["publishing"] == 2 and result["readings"] >= 4  # both live, publishing
    assert 0 < result["cpu_pct"] < 100 and result["mib"] > result["device_mib"] > 1
    assert "% CPU per meter" in capsys.readouterr().out
