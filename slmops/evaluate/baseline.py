"""The fp32 baseline's teacher-forced distributions, computed once per (baseline content, eval set, evaluation
settings, tool versions) and kept in the work folder, where every variant of every later sweep compares with them
(llama.cpp's `--kl-divergence-base FILE`, done once).

    baseline = ensure_baseline(export_dir, dataset, settings, key, work / "baselines")
    evaluate_variant(..., baseline=baseline.path)

The store is computed in a fresh process (the fp32 model is the largest thing a sweep loads), under a lock, so
two sweeps of one model compute it once; it is published whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from pydantic import BaseModel

from slmops.errors import VariantError
from slmops.evaluate.settings import EvaluationSpec
from slmops.files import read_json, write_json
from slmops.locks import file_lock

STORE = "baseline.npz"
META = "baseline.json"


class Baseline(BaseModel):
    """A stored baseline: where it is, what it was made from, and whether this sweep made it."""

    key: str
    path: Path
    sequences: int
    positions: int
    seconds: float
    reused: bool


def ensure_baseline(export_dir: Path, dataset: Path, settings: EvaluationSpec, key: str, baselines_dir: Path,
                    progress=None) -> Baseline:
    """The stored baseline of this key: reused, or computed now from the fp32 export."""
    from slmops.evaluate.runner import _progress_forwarder, run_worker

    folder = baselines_dir / key[:16]
    with file_lock(baselines_dir / f"{key[:16]}.lock"):
        meta = read_json(folder / META)
        if meta and meta.get("key") == key and (folder / STORE).is_file():
            return Baseline(**{**meta, "path": folder / STORE, "reused": True})
        staging = baselines_dir / f".staging-{key[:16]}-{os.getpid()}"
        staging.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        request = {"baseline_dir": str(Path(export_dir).resolve()), "dataset": str(Path(dataset).resolve()),
                   "settings": settings.model_dump(mode="json"), "store": str(staging / STORE)}
        run = run_worker("baseline", request, staging, settings.worker_timeout_s, _progress_forwarder(progress))
        if not run.ok:
            raise VariantError(run.failure("the fp32 baseline"))
        meta = {"key": key, "sequences": run.result["sequences"], "positions": run.result["positions"],
                "seconds": round(time.monotonic() - started, 3)}
        write_json(staging / META, meta)
        shutil.rmtree(folder, ignore_errors=True)  # one made with another key (another eval set, say)
        os.replace(staging, folder)
        return Baseline(**{**meta, "path": folder / STORE, "reused": False})
