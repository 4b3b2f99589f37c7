"""Resident memory sampled from outside a process, and the leak check's verdict.

    .venv/bin/python -m pytest tests/evaluate/test_memory.py -q
"""

from __future__ import annotations

import subprocess
import sys

from slmops.evaluate.memory import PeakRssSampler, growth_mb, leak_check


def test_peak_rss_sampler_sees_a_short_peak_of_another_process():
    # 300 MB touched for 50 ms, then freed: the kernel's high-water mark keeps it even between polls
    code = "import time; b = bytearray(300 * 1024 * 1024); time.sleep(0.05); del b; time.sleep(0.5)"
    process = subprocess.Popen([sys.executable, "-c", code])
    with PeakRssSampler(process.pid, interval_s=0.2) as sampler:
        process.wait()
    assert sampler.peak_mb >= 300


def test_growth_mb_compares_the_last_tenth_with_the_first():
    assert growth_mb([100.0] * 10 + [101.0] * 80 + [110.0] * 10) == 10.0
    assert growth_mb([100.0, 90.0]) == -10.0


LEAKY = """
import json
from slmops.evaluate.memory import leak_check
kept = []
def leaky(i):
    kept.append(b"x" * (2 * 1024 * 1024))  # 2 MB a generation, written, never freed
print(json.dumps(leak_check(leaky, 20, bound_mb=10.0, progress=lambda done, total: None)))
"""


def test_leak_check_fails_when_memory_grows_past_the_bound():
    # a fresh process: in the long-lived test process freed arenas absorb the growth and RSS hardly moves
    import json
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-c", LEAKY], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["rss_growth_mb"] > 10.0
    assert result["passed"] is False
    assert len(result["rss_mb"]) == 20


def test_leak_check_passes_when_memory_stays_flat():
    result = leak_check(lambda i: None, 20, bound_mb=5.0, progress=lambda done, total: None)
    assert result["passed"] is True
