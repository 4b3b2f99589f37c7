"""Evaluate one registered variant: the deployment checklist, measured in a fresh process of its own.

    from slmops.evaluate.runner import evaluate_variant       (called by the sweep once per succeeded variant)
    .venv/bin/python -m pytest tests/evaluate -q

Like optimum-benchmark, the measurement runs in a fresh process (``python -m slmops.evaluate.worker``), so one
variant's memory never counts against another's, and its peak resident memory is sampled from outside. One process
per variant loads it once in Foundry Local, asks the smoke test's prompt if asked to (phase ``smoke``: a variant that
does not answer is measured no further, ``SmokeTestFailed``), measures speed, memory, CPU, the eval answers and the
leak check (phase ``serve``), then the edge cases (``edge``), then unloads it and teacher-forces it against the
stored baseline (``fidelity``); ``peak_rss_mb`` is the peak while it served, read before fidelity starts.

An edge case that kills or hangs the process is recorded as failed, and the remaining cases and fidelity go on in a
new process. A process that fails, dies or runs past ``worker_timeout_s`` anywhere else raises ``VariantError`` with
the tail of its stderr. Each phase's result and the merged ``evaluation.json`` are written atomically into out_dir.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from slmops.children import dies_with_parent
from slmops.errors import VariantError
from slmops.evalset import load_eval_set
from slmops.evaluate.memory import PeakRssSampler
from slmops.evaluate.settings import EvaluationSpec
from slmops.evaluate.worker import EVENT_MARK, phase_file
from slmops.files import write_json
from slmops.metrics import FIDELITY_METRICS, SERVING_METRICS

Progress = Callable[[str, int, int], None]

RESULT_NAME = "evaluation.json"
STDERR_TAIL = 3000
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class SmokeTestFailed(VariantError):
    """The variant did not answer its smoke test, so nothing else was measured; ``answered`` is what the runtime
    said (FoundryLocal.smoke_test)."""

    def __init__(self, answered: dict[str, Any]) -> None:
        super().__init__(f"smoke test in Foundry Local failed: {answered['error']}")
        self.answered = answered


class WorkerRun:
    """What one worker process did: exit status, whether it was stopped, its sampled peaks, its result."""

    def __init__(self, mode: str, returncode: int | None, timed_out: bool, seconds: float, peak_rss_mb: float,
                 result: dict[str, Any] | None, stderr_tail: str, limit_s: float | None = None,
                 serving_peak_mb: float | None = None) -> None:
        self.mode = mode
        self.limit_s = limit_s
        self.returncode = returncode
        self.timed_out = timed_out
        self.seconds = seconds
        self.peak_rss_mb = peak_rss_mb
        self.serving_peak_mb = serving_peak_mb  # the peak when the worker said it stopped serving, if it did
        self.result = result
        self.stderr_tail = stderr_tail

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.result is not None

    def failure(self, variant: str) -> str:
        """One message saying how the process ended and what it last wrote to stderr."""
        if self.timed_out:
            how = f"ran past its limit of {self.limit_s:g} s (worker_timeout_s) and was stopped"
        elif self.returncode is not None and self.returncode < 0:
            how = f"was killed by signal {-self.returncode}"
        elif self.returncode == 0:
            how = "exited without writing its result"
        else:
            how = f"failed with exit status {self.returncode}"
        tail = self.stderr_tail.strip() or "(nothing on stderr)"
        return f"{variant}: the {self.mode} evaluation process {how}; its stderr ends with:\n{tail}"


def _worker_env() -> dict[str, str]:
    env = dict(os.environ)
    # the worker imports slmops the way this process does, installed or from a checkout
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_PACKAGE_ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def run_worker(mode: str, request: dict[str, Any], out_dir: Path, timeout_s: float,
               on_event: Callable[[dict[str, Any]], None], name: str | None = None) -> WorkerRun:
    """Run ``python -m slmops.evaluate.worker MODE`` on request, sampling its memory, forwarding its events.

    The worker's ``serving_done`` event is answered here: the peak so far is kept as the serving peak, then the
    worker is told to go on (a line on its stdin).
    """
    name = name or mode
    request_path = write_json(out_dir / f"{name}.request.json", request)
    result_path = out_dir / f"{name}.json"
    result_path.unlink(missing_ok=True)
    stderr_path = out_dir / f"{name}.stderr.log"
    stdout_path = out_dir / f"{name}.stdout.log"
    command = [sys.executable, "-m", "slmops.evaluate.worker", mode, str(request_path), str(result_path)]
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    started = time.monotonic()
    timed_out = False
    serving_peak = None
    with open(stderr_path, "wb") as stderr, open(stdout_path, "w", encoding="utf-8") as chatter:
        process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=_worker_env(), text=True,
            encoding="utf-8", errors="replace", preexec_fn=dies_with_parent(),  # a killed sweep leaves no worker
        )

        def read_stdout() -> None:
            for line in process.stdout:
                if line.startswith(EVENT_MARK):
                    events.put(json.loads(line[len(EVENT_MARK):]))
                else:
                    chatter.write(line)

        reader = threading.Thread(target=read_stdout, name=f"slmops-eval-{name}-stdout", daemon=True)
        reader.start()
        with PeakRssSampler(process.pid) as sampler:
            while process.poll() is None:
                if time.monotonic() - started > timeout_s:
                    timed_out = True
                    process.kill()  # our own child, by its handle
                    process.wait()
                    break
                try:
                    event = events.get(timeout=0.05)
                except queue.Empty:
                    continue  # nothing new: look at the process again
                if event.get("event") == "serving_done":
                    serving_peak = sampler.peak_now()
                    process.stdin.write("go\n")
                    process.stdin.flush()
                on_event(event)
        reader.join()
        process.stdout.close()
        with contextlib.suppress(OSError):
            process.stdin.close()
    # events the worker sent just before it exited
    while not events.empty():
        on_event(events.get_nowait())
    result = None
    if process.returncode == 0 and not timed_out and result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    tail = stderr_path.read_bytes()[-STDERR_TAIL:].decode("utf-8", errors="replace")
    return WorkerRun(mode, process.returncode, timed_out, time.monotonic() - started, sampler.peak_mb, result, tail,
                     limit_s=timeout_s, serving_peak_mb=serving_peak)


def _progress_forwarder(progress: Progress | None) -> Callable[[dict[str, Any]], None]:
    def forward(event: dict[str, Any]) -> None:
        if progress is not None and event.get("event") == "progress":
            progress(event["phase"], int(event["done"]), int(event["total"]))

    return forward


class _Measurement:
    """The measuring processes of one variant: as many as it takes when an edge case kills one."""

    def __init__(self, request: dict[str, Any], settings: EvaluationSpec, out_dir: Path, variant: str,
                 progress: Progress | None) -> None:
        self.request, self.settings, self.out_dir, self.variant = request, settings, out_dir, variant
        self.forward = _progress_forwarder(progress)
        self.runs: list[WorkerRun] = []
        self.failed_cases: list[dict[str, Any]] = []

    def run(self, phases: list[str]) -> None:
        cases = list(self.settings.edge_cases)
        for phase in phases:
            phase_file(self.out_dir, phase).unlink(missing_ok=True)
        while phases:
            in_flight: list[str] = []
            finished: list[dict[str, Any]] = []

            def on_event(event: dict[str, Any]) -> None:
                if event.get("event") == "case":
                    in_flight.append(event["case"])
                elif event.get("event") == "case_done":
                    finished.append(event["result"])
                self.forward(event)

            run = run_worker("measure", {**self.request, "phases": phases, "cases": cases}, self.out_dir,
                             self.settings.worker_timeout_s, on_event, name=f"measure-{len(self.runs) + 1}")
            self.runs.append(run)
            if run.ok:
                return
            died_in_edge = "edge" in phases and in_flight and len(finished) < len(in_flight)
            if not died_in_edge or ("serve" in phases and not phase_file(self.out_dir, "serve").is_file()):
                raise VariantError(run.failure(self.variant))
            # a case killed or hung the process: it fails, and the rest goes on in a new process
            culprit = in_flight[-1]
            self.failed_cases += finished + [{
                "case": culprit, "passed": False, "outcome": "timed out" if run.timed_out else "crashed the process",
                "detail": run.stderr_tail.strip()[-500:], "answer": ""}]
            cases = cases[cases.index(culprit) + 1:]
            phases = (["edge"] if cases else []) + (["fidelity"] if "fidelity" in phases else [])

    def result(self, phase: str) -> dict[str, Any] | None:
        path = phase_file(self.out_dir, phase)
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def edge_cases(self) -> list[dict[str, Any]]:
        last = self.result("edge")
        return self.failed_cases + (last["cases"] if last else [])

    @property
    def serving_peak_mb(self) -> float:
        first = self.runs[0]
        return first.serving_peak_mb if first.serving_peak_mb is not None else first.peak_rss_mb


def evaluate_variant(
    variant_dir: Path, foundry_model_id: str, foundry_cache: Path, settings: EvaluationSpec, dataset: Path,
    out_dir: Path, baseline: Path | None = None, identical_to_baseline: bool = False, key: str | None = None,
    progress: Progress | None = None, smoke: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Measure one variant registered in Foundry Local; return what evaluation.json holds: ``metrics`` (every name
    of slmops.metrics.SERVING_METRICS, of FIDELITY_METRICS when fidelity is measured, and extras), ``items``
    (per-item answers and fidelity figures), ``details`` and ``key`` (what the measurements were made from).

    ``baseline`` is the stored baseline (slmops.evaluate.baseline) fidelity compares with; ``identical_to_baseline``
    says the variant is the baseline itself (its fidelity figures follow by definition). ``smoke`` ({prompt,
    max_tokens, timeout_s}) is a smoke test to ask first; what it said is ``smoke`` in the result. Raises
    SmokeTestFailed when the variant did not answer it, VariantError when a measuring process fails, InputError when
    the eval set is unusable.
    """
    variant_dir = Path(variant_dir).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_eval_set(Path(dataset), settings.max_eval_items)  # a bad eval set is the user's to fix: fail before work
    fidelity = settings.fidelity and baseline is not None
    request = {"variant_dir": str(variant_dir), "model_id": foundry_model_id,
               "foundry_cache": str(Path(foundry_cache).resolve()), "dataset": str(Path(dataset).resolve()),
               "settings": settings.model_dump(mode="json"), "out_dir": str(out_dir.resolve()),
               "baseline": str(baseline) if fidelity else None, "identical_to_baseline": identical_to_baseline,
               "smoke": smoke}
    started = time.monotonic()
    measurement = _Measurement(request, settings, out_dir, variant_dir.name, progress)
    measurement.run((["smoke"] if smoke else []) + ["serve", "edge"] + (["fidelity"] if fidelity else []))
    answered = measurement.result("smoke") if smoke else None
    if answered is not None and not answered["passed"]:
        raise SmokeTestFailed(answered)
    serve, fid, cases = measurement.result("serve"), measurement.result("fidelity"), measurement.edge_cases()
    metrics = {**serve["metrics"], **(fid["metrics"] if fid else {}), "peak_rss_mb": measurement.serving_peak_mb,
               "edge_cases_passed": sum(c["passed"] for c in cases) / len(cases),
               "evaluation_s": time.monotonic() - started}
    missing = [m for m in (*SERVING_METRICS, *(FIDELITY_METRICS if fidelity else ())) if m not in metrics]
    if missing:
        raise RuntimeError(f"evaluation produced no {missing}: a bug in slmops.evaluate")
    by_index = {row["index"]: row for row in (fid["items"] if fid else [])}
    items = [{**item, **{f"fidelity_{k}": v for k, v in by_index.get(item["index"], {}).items() if k != "index"}}
             for item in serve["items"]]
    details = {
        "speed_by_length": serve["speed"], "leak": serve["leak"], "edge_cases": cases,
        "context_length": serve["context_length"],
        "processes": [{"mode": run.mode, "seconds": round(run.seconds, 3), "peak_rss_mb": round(run.peak_rss_mb, 3),
                       "returncode": run.returncode} for run in measurement.runs],
        "timings_s": {**serve["timings_s"], **(fid["timings_s"] if fid else {})},
        "not_finite": sorted(k for k, v in metrics.items() if not math.isfinite(v)),
    }
    evaluation = {"key": key, "variant_dir": str(variant_dir), "baseline": request["baseline"],
                  "foundry_model_id": foundry_model_id, "settings": settings.model_dump(mode="json"),
                  "metrics": metrics, "items": items, "details": details, "smoke": answered}
    write_json(out_dir / RESULT_NAME, evaluation)
    return evaluation
