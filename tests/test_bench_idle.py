"""`make bench`'s idle cost of live meters (simulator/bench.py idle_cost): what it reads of
/proc, and that it measures every device process of meters that are live."""
import subprocess
import sys

import pytest

from simulator import bench


def test_proc_readings_follow_a_child_process():
    child = subprocess.Popen([sys.executable, "-c",
                              "import time\nt = time.process_time()\n"
                              "while time.process_time() - t < 0.3: pass\n"
                              "print('busy', flush=True)\ntime.sleep(30)"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.pid in bench._children()
        assert child.stdout.readline() == "busy\n"  # its 0.3 s of CPU are spent
        assert bench._proc_cpu_s(child.pid) >= 0.25  # utime + stime: counted (at 100 Hz ticks)
        assert bench._proc_kib(child.pid, "VmRSS") > 1024
        assert bench._proc_kib(child.pid, "Pss", "smaps_rollup") > 0
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    assert child.pid not in bench._children()


@pytest.mark.micropython
def test_idle_cost_measures_every_live_meter(mpy_build, capsys):
    # a warm-up long enough on a loaded machine (boot, MQTT connect), then 8 s of readings;
    # another child of this process (as an earlier test's may be) is no meter
    stray = subprocess.Popen(["sleep", "120"])
    try:
        result = bench.idle_cost(meters=2, seconds=8, warmup_s=15, telemetry_s=2)
    finally:
        stray.kill()
        stray.wait()
    assert result["devices"] == 2 and result["alive"] == 2, result
    assert result["publishing"] == 2, result  # both live: each published while measured
    assert 0 < result["cpu_pct"] < 100 and result["mib"] > result["device_mib"] > 1
    assert "% CPU per meter" in capsys.readouterr().out
