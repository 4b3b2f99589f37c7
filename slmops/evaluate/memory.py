"""Memory and CPU: resident memory sampled from outside a process, its CPU use, and the leak check.

    .venv/bin/python -m pytest tests/evaluate -q -k leak

The peak is taken from outside, like optimum-benchmark: a thread of the parent polls the worker's RSS and, on Linux,
its ``VmHWM`` (the kernel's high-water mark of the process's resident memory), so a peak shorter than the polling
interval is still seen. ``ru_maxrss`` would not do: it survives exec, so a child started by a large parent can
report the parent's peak.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

MB = 1024 * 1024


def rss_mb(process: psutil.Process | None = None) -> float:
    """Resident memory of a process (this one by default), in MB."""
    return (process or psutil.Process()).memory_info().rss / MB


def _high_water_mb(pid: int) -> float:
    """The kernel's peak resident memory of pid (Linux ``VmHWM``), or 0 where there is none to read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / MB
    except (OSError, ValueError, IndexError):
        return 0.0
    return 0.0


class PeakRssSampler:
    """Polls a process's resident memory from a thread of this one and keeps the peak."""

    def __init__(self, pid: int, interval_s: float = 0.01) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"slmops-rss-{pid}", daemon=True)

    def _run(self) -> None:
        try:
            process = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop.is_set():
            try:
                current = max(rss_mb(process), _high_water_mb(self.pid))
            except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
                return  # it has exited: the samples so far are all there is
            self.peak_mb = max(self.peak_mb, current)
            self.samples += 1
            self._stop.wait(self.interval_s)

    def peak_now(self) -> float:
        """The peak so far, the kernel's high-water mark read at this moment included."""
        self.peak_mb = max(self.peak_mb, _high_water_mb(self.pid))
        return self.peak_mb

    def __enter__(self) -> PeakRssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuMeter:
    """CPU time of this process (all threads) over a stretch of wall time, as psutil's percent of one core."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.cpu_s = 0.0
        self.wall_s = 0.0

    def __enter__(self) -> CpuMeter:
        times = self._process.cpu_times()
        self._cpu0, self._wall0 = times.user + times.system, time.perf_counter()
        return self

    def __exit__(self, *_: object) -> None:
        times = self._process.cpu_times()
        self.cpu_s += times.user + times.system - self._cpu0
        self.wall_s += time.perf_counter() - self._wall0

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


def growth_mb(series: list[float]) -> float:
    """Resident-memory growth across a series: median of its last tenth minus median of its first tenth."""
    k = max(1, len(series) // 10)
    return statistics.median(series[-k:]) - statistics.median(series[:k])


def leak_check(
    generate: Callable[[int], None], generations: int, bound_mb: float, progress: Callable[[int, int], None],
    followed: list[float] | None = None,
) -> dict[str, Any]:
    """Follow resident memory across generations; growth above bound_mb fails the check.

    ``followed`` is the series of generations made already (the eval answers, each followed by its resident
    memory): only the generations still missing to reach ``generations`` are made here.
    """
    series = list(followed or [])
    extra = max(0, generations - len(series))
    for i in range(extra):
        generate(i)
        series.append(round(rss_mb(), 3))
        progress(i + 1, extra)
    if len(series) < 2:
        raise ValueError(f"the leak check needs at least two generations, got {len(series)}")
    growth = growth_mb(series)
    return {"rss_mb": series, "rss_growth_mb": growth, "bound_mb": bound_mb, "passed": growth <= bound_mb,
            "extra_generations": extra}
