"""Where a sweep's time goes, by phase: what the benchmark (benchmarks/sweep_vs_manual.py) splits the wall time
into, and what report.json keeps under ``timings``.

    phases = Phases()
    with phases("convert"):
        ...
    phases.as_dict()   # {"convert": 12.3}
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

# What a sweep spends its time on. Everything else in a sweep's wall time (process start, Prefect's flow and task
# runs, its temporary server) is orchestration; "tracking" (MLflow) and "report" are counted as orchestration too.
WORK_PHASES = ("convert", "foundry", "evaluate")
PHASES = (*WORK_PHASES, "tracking", "report")


class Phases:
    def __init__(self, seconds: dict[str, float] | None = None) -> None:
        self.seconds: dict[str, float] = defaultdict(float, seconds or {})

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if name not in PHASES:
            raise ValueError(f"unknown phase {name!r}; phases are {list(PHASES)}")
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def add(self, seconds: dict[str, float]) -> None:
        for name, value in seconds.items():
            self.seconds[name] += value

    def as_dict(self) -> dict[str, float]:
        return {name: round(self.seconds.get(name, 0.0), 3) for name in PHASES}


class Steps:
    """Seconds per named step of one build (a variant's manifest keeps them: where its conversion time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - started, 3)
