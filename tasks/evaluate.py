"""Prefect task that measures a registered variant (slmops.evaluate does the work, in fresh processes)."""

from __future__ import annotations

import math
from pathlib import Path

from prefect import get_run_logger, task

from slmops.build import content_key


def _cache_key(_context, parameters: dict) -> str:
    return f"{parameters['key']}-{content_key(parameters['out_dir'])[:12]}"


def finite_metrics(metrics: dict) -> dict[str, float]:
    """Numbers only: NaN and infinity (a length with no decode sample, say) are left out, not logged as values."""
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


@task(name="evaluate-variant", task_run_name="evaluate-{name}", cache_key_fn=_cache_key, persist_result=True,
      result_serializer="json")
def evaluate_variant(name: str, key: str, variant_dir: str, baseline_dir: str, foundry_model_id: str,
                     foundry_cache: str, settings: dict, dataset: str, out_dir: str) -> dict:
    """Speed, memory, CPU, leak check, quality, fidelity and edge cases of one variant; reused by content."""
    from slmops.evaluate.runner import evaluate_variant as run
    from slmops.evaluate.settings import EvaluationSpec

    logger = get_run_logger()
    seen: set[str] = set()

    def progress(phase: str, done: int, total: int) -> None:
        if phase not in seen or done == total:
            seen.add(phase)
            logger.info("evaluating %s: %s %d/%d", name, phase, done, total)

    result = run(Path(variant_dir), Path(baseline_dir), foundry_model_id, Path(foundry_cache),
                 EvaluationSpec.model_validate(settings), Path(dataset), Path(out_dir), progress=progress)
    return {"key": key, "metrics": finite_metrics(result["metrics"]), "items": result["items"]}
