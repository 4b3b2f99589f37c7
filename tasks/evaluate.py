"""Prefect task of the evaluate step: a registered variant measured in fresh processes (slmops.evaluate does the
work), or its measurements reused while nothing they depend on has changed."""

from __future__ import annotations

from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from slmops.convert import Export
from slmops.errors import VariantError
from slmops.evalset import dataset_sha256
from slmops.evaluate.runner import RESULT_NAME, evaluate_variant
from slmops.evaluate.settings import EvaluationSpec
from slmops.files import read_json
from slmops.keys import evaluation_key
from slmops.metrics import finite
from slmops.variant import EvaluationRecord, VariantResult


@task(name="evaluate", task_run_name="evaluate-{result.name}", cache_policy=NONE)
def evaluate(result: VariantResult, baseline: Export, settings: EvaluationSpec, dataset: Path, foundry_cache: Path,
             out_dir: Path, versions: dict[str, str]) -> VariantResult:
    """Speed, memory, CPU, leak check, quality, fidelity and edge cases of one variant."""
    logger = get_run_logger()
    key = evaluation_key(result.content_key, baseline.key, settings.model_dump(mode="json"), dataset_sha256(dataset),
                         versions)
    evaluation = read_json(out_dir / RESULT_NAME)
    reused = bool(settings.reuse and evaluation and evaluation.get("key") == key)
    if not reused:
        seen: set[str] = set()

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in seen or done == total:
                seen.add(phase)
                logger.info("evaluating %s: %s %d/%d", result.name, phase, done, total)

        try:
            evaluation = evaluate_variant(Path(result.onnx_dir), baseline.dir, result.foundry_model_id, foundry_cache,
                                          settings, dataset, out_dir, key=key, progress=progress)
        except VariantError as err:
            raise VariantError(f"variant {result.name}: evaluation failed: {err}") from err
    return result.with_metrics(finite(evaluation["metrics"]), eval_items=evaluation["items"],
                               evaluation=EvaluationRecord(dir=str(out_dir), reused=reused,
                                                           items=len(evaluation["items"])))
