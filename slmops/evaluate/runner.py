"""Evaluate one registered variant: the deployment checklist, measured in fresh processes of its own.

    from slmops.evaluate.runner import evaluate_variant       (called by the sweep once per succeeded variant)
    .venv/bin/python -m pytest tests/evaluate -q

Like optimum-benchmark, every measurement runs in a fresh process (``python -m slmops.evaluate.worker``), so one
variant's memory never counts against another's, and its peak resident memory is sampled from outside. Three
processes per variant:

1. ``serve`` (Foundry Local): speed, memory after load, CPU, leak check, eval answers. Its sampled peak is
   ``peak_rss_mb``: the serving process, nothing else.
2. ``edge`` (Foundry Local): the edge cases. A case that kills or hangs the process is recorded as failed and the
   remaining cases run in a new process.
3. ``fidelity`` (onnxruntime): teacher-forcing against the fp32 baseline.

A serve or fidelity process that fails, dies or runs past ``worker_timeout_s`` raises ``VariantError`` with the tail
of its stderr. Each process's result and the merged ``evaluation.json`` are written atomically into out_dir.
"""

from __future__ import annotations

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
from slmops.evaluate.worker import EVENT_MARK
from slmops.files import write_json
from slmops.metrics import EVALUATION_METRICS

Progress = Callable[[str, int, int], None]

RESULT_NAME = "evaluation.json"
STDERR_TAIL = 3000
_PACKAGE_ROOT = Path(__file__).resolve().parents[2]


class WorkerRun:
    """What one worker process did: exit status, whether it was stopped, its sampled peak, its result."""

    def __init__(self, mode: str, returncode: int | None, timed_out: bool, seconds: float, peak_rss_mb: float,
                 result: dict[str, Any] | None, stderr_tail: str, limit_s: float | None = None) -> None:
        self.mode = mode
        self.limit_s = limit_s
        self.returncode = returncode
        self.timed_out = timed_out
        self.seconds = seconds
        self.peak_rss_mb = peak_rss_mb
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
               on_event: Callable[[dict[str, Any]], None]) -> WorkerRun:
    """Run ``python -m slmops.evaluate.worker MODE`` on request, sampling its memory, forwarding its events."""
    request_path = write_json(out_dir / f"{mode}.request.json", request)
    result_path = out_dir / f"{mode}.json"
    result_path.unlink(missing_ok=True)
    stderr_path = out_dir / f"{mode}.stderr.log"
    stdout_path = out_dir / f"{mode}.stdout.log"
    command = [sys.executable, "-m", "slmops.evaluate.worker", mode, str(request_path), str(result_path)]
    events: queue.Queue[dict[str, Any]] = queue.Queue()
    started = time.monotonic()
    timed_out = False
    with open(stderr_path, "wb") as stderr, open(stdout_path, "w", encoding="utf-8") as chatter:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, env=_worker_env(), text=True, encoding="utf-8",
            errors="replace", preexec_fn=dies_with_parent(),  # a killed sweep leaves no measurement running
        )

        def read_stdout() -> None:
            for line in process.stdout:
                if line.startswith(EVENT_MARK):
                    events.put(json.loads(line[len(EVENT_MARK):]))
                else:
                    chatter.write(line)

        reader = threading.Thread(target=read_stdout, name=f"slmops-eval-{mode}-stdout", daemon=True)
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
                on_event(event)
        reader.join()
        process.stdout.close()
    # events the worker sent just before it exited
    while not events.empty():
        on_event(events.get_nowait())
    result = None
    if process.returncode == 0 and not timed_out and result_path.is_file():
        result = json.loads(result_path.read_text(encoding="utf-8"))
    tail = stderr_path.read_bytes()[-STDERR_TAIL:].decode("utf-8", errors="replace")
    return WorkerRun(mode, process.returncode, timed_out, time.monotonic() - started, sampler.peak_mb, result, tail,
                     limit_s=timeout_s)


def _progress_forwarder(progress: Progress | None) -> Callable[[dict[str, Any]], None]:
    def forward(event: dict[str, Any]) -> None:
        if progress is not None and event.get("event") == "progress":
            progress(event["phase"], int(event["done"]), int(event["total"]))

    return forward


def _run_edge_cases(request: dict[str, Any], settings: EvaluationSpec, out_dir: Path, variant: str,
                    progress: Progress | None) -> tuple[list[dict[str, Any]], list[WorkerRun]]:
    """Every edge case, in as many processes as it takes: a case that kills its process fails and the rest go on."""
    forward = _progress_forwarder(progress)
    remaining = list(settings.edge_cases)
    results: list[dict[str, Any]] = []
    runs = []
    while remaining:
        in_flight: list[str] = []
        finished: list[dict[str, Any]] = []

        def on_event(event: dict[str, Any]) -> None:
            if event.get("event") == "case":
                in_flight.append(event["case"])
            elif event.get("event") == "case_done":
                finished.append(event["result"])
            forward(event)

        run = run_worker("edge", {**request, "cases": remaining}, out_dir, settings.worker_timeout_s, on_event)
        runs.append(run)
        if run.ok:
            results += run.result["cases"]
            break
        if not in_flight:
            # it died before its first case: the model or runtime is broken, not an input
            raise VariantError(run.failure(variant))
        results += finished
        culprit = in_flight[-1]
        results.append({
            "case": culprit, "passed": False, "outcome": "timed out" if run.timed_out else "crashed the process",
            "detail": run.stderr_tail.strip()[-500:], "answer": "",
        })
        remaining = remaining[remaining.index(culprit) + 1:]
    return results, runs


def evaluate_variant(
    variant_dir: Path, baseline_dir: Path, foundry_model_id: str, foundry_cache: Path, settings: EvaluationSpec,
    dataset: Path, out_dir: Path, key: str | None = None, progress: Progress | None = None,
) -> dict[str, Any]:
    """Measure one variant registered in Foundry Local; return what evaluation.json holds: ``metrics`` (every name
    of slmops.metrics.EVALUATION_METRICS, and extras), ``items`` (per-item answers and fidelity figures), ``details``
    and ``key`` (what the measurements were made from, for their reuse).

    Raises VariantError when a measuring process fails; InputError when the eval set is unusable.
    """
    variant_dir, baseline_dir = Path(variant_dir).resolve(), Path(baseline_dir).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    load_eval_set(Path(dataset), settings.max_eval_items)  # a bad eval set is the user's to fix: fail before work
    name = variant_dir.name
    request = {
        "variant_dir": str(variant_dir),
        "baseline_dir": str(baseline_dir),
        "model_id": foundry_model_id,
        "foundry_cache": str(Path(foundry_cache).resolve()),
        "dataset": str(Path(dataset).resolve()),
        "settings": settings.model_dump(mode="json"),
    }
    forward = _progress_forwarder(progress)
    started = time.monotonic()

    serve = run_worker("serve", request, out_dir, settings.worker_timeout_s, forward)
    if not serve.ok:
        raise VariantError(serve.failure(name))
    cases, edge_runs = _run_edge_cases(request, settings, out_dir, name, progress)
    fid = run_worker("fidelity", request, out_dir, settings.worker_timeout_s, forward)
    if not fid.ok:
        raise VariantError(fid.failure(name))

    metrics = {
        **serve.result["metrics"],
        **fid.result["metrics"],
        "peak_rss_mb": serve.peak_rss_mb,
        "edge_cases_passed": sum(c["passed"] for c in cases) / len(cases),
        "evaluation_s": time.monotonic() - started,
    }
    missing = [m for m in EVALUATION_METRICS if m not in metrics]
    if missing:
        raise RuntimeError(f"evaluation produced no {missing}: a bug in slmops.evaluate")
    fidelity_by_index = {row["index"]: row for row in fid.result["items"]}
    items = []
    for item in serve.result["items"]:
        extra = fidelity_by_index.get(item["index"], {})
        items.append({**item, **{f"fidelity_{k}": v for k, v in extra.items() if k != "index"}})
    details = {
        "speed_by_length": serve.result["speed"],
        "leak": serve.result["leak"],
        "edge_cases": cases,
        "context_length": serve.result["context_length"],
        "processes": [
            {"mode": run.mode, "seconds": round(run.seconds, 3), "peak_rss_mb": round(run.peak_rss_mb, 3),
             "returncode": run.returncode}
            for run in (serve, *edge_runs, fid)
        ],
        "timings_s": {**serve.result["timings_s"], **fid.result["timings_s"]},
        "not_finite": sorted(k for k, v in metrics.items() if not math.isfinite(v)),
    }
    evaluation = {
        "key": key,
        "variant_dir": str(variant_dir),
        "baseline_dir": str(baseline_dir),
        "foundry_model_id": foundry_model_id,
        "settings": settings.model_dump(mode="json"),
        "metrics": metrics,
        "items": items,
        "details": details,
    }
    write_json(out_dir / RESULT_NAME, evaluation)
    return evaluation
