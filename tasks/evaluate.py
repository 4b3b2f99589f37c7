"""Prefect tasks of the evaluate step: the fp32 baseline stored once, and a registered variant measured in a fresh
process (slmops.evaluate does the work), or its measurements reused while nothing they depend on has changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from slmops import register as registering
from slmops import roofline as roofs
from slmops.adapters.genai import context_length, intra_op_threads
from slmops.config import FoundrySpec
from slmops.convert import Export
from slmops.errors import SlmopsError, VariantError
from slmops.evalset import dataset_sha256
from slmops.evaluate.baseline import Baseline, ensure_baseline
from slmops.evaluate.runner import RESULT_NAME, SmokeTestFailed, evaluate_variant
from slmops.evaluate.settings import EvaluationSpec
from slmops.files import read_json
from slmops.keys import baseline_key, evaluation_key
from slmops.metrics import finite, resolved
from slmops.promote.champion import ChampionToMeasure
from slmops.register import SmokeAsk
from slmops.variant import EvaluationRecord, VariantResult


def _progress(name: str):
    """Progress of a long measurement in the run's log: each phase when it starts and when it ends."""
    logger, seen = get_run_logger(), set()

    def report(phase: str, done: int, total: int) -> None:
        if phase not in seen or done == total:
            seen.add(phase)
            logger.info("evaluating %s: %s %d/%d", name, phase, done, total)

    return report


@task(name="baseline", cache_policy=NONE)
def baseline(export: Export, dataset: Path, settings: EvaluationSpec, baselines_dir: Path,
             versions: dict[str, str]) -> Baseline:
    """The fp32 export teacher-forced over the eval rows once, stored for every variant and later sweep."""
    key = baseline_key(export.key, dataset_sha256(dataset), settings.model_dump(mode="json"), versions)
    try:
        return ensure_baseline(export.dir, dataset, settings, key, baselines_dir, _progress("the fp32 baseline"))
    except VariantError as err:
        raise VariantError(f"the fp32 baseline for fidelity could not be computed: {err}") from err


@task(name="evaluate", task_run_name="evaluate-{result.name}", cache_policy=NONE)
def evaluate(result: VariantResult, stored: Baseline | None, settings: EvaluationSpec, dataset: Path,
             foundry_cache: Path, out_dir: Path, versions: dict[str, str],
             smoke: SmokeAsk | None = None) -> VariantResult:
    """Speed, memory, CPU, leak check, quality, edge cases and fidelity of one variant; with ``smoke``, its smoke
    test first, by the same process (one load for both), or reused while its record holds."""
    key = evaluation_key(result.content_key, stored.key if stored else "no-fidelity",
                         settings.model_dump(mode="json"), dataset_sha256(dataset), versions,
                         {"context": context_length(Path(result.onnx_dir)),
                          "threads": intra_op_threads(Path(result.onnx_dir))})
    evaluation = read_json(out_dir / RESULT_NAME)
    reused = bool(settings.reuse and evaluation and evaluation.get("key") == key)
    record = registering.SmokeTestRecord(smoke.record, smoke.key) if smoke else None
    answered = record.passed_before() if record else None
    if record and answered is None and reused:  # the measurements stand and the smoke test's record is gone
        answered = registering.smoke_test(result.foundry_model_id, smoke.prompt, foundry_cache, smoke.max_tokens,
                                          smoke.timeout_s)
        record.save(answered)
    if not reused and (answered is None or answered.passed):
        ask = smoke.request() if record and answered is None else None
        try:
            evaluation = evaluate_variant(
                Path(result.onnx_dir), result.foundry_model_id, foundry_cache, settings, dataset, out_dir,
                baseline=stored.path if stored else None, identical_to_baseline=result.config.route == "export",
                key=key, progress=_progress(result.name), smoke=ask)
        except SmokeTestFailed as failed:
            evaluation = {"smoke": failed.answered}
        except VariantError as err:
            raise VariantError(f"variant {result.name}: evaluation failed: {err}") from err
        if ask:
            answered = registering.smoke_result(evaluation["smoke"], smoke.prompt)
            record.save(answered)
    if answered is not None:
        result = registering.with_smoke_test(result, answered)
        if not result.ok:
            return result
    return result.with_metrics(finite(evaluation["metrics"]), eval_items=evaluation["items"],
                               evaluation=EvaluationRecord(dir=str(out_dir), reused=reused,
                                                           items=len(evaluation["items"])))


def roofline_of(model_dir: Path, metrics: dict[str, float], roofs_dir: Path) -> dict[str, float]:
    """bytes_per_token of the folder's graph; with a decode speed the timer resolved, the bandwidth it achieved and
    its shares of this machine's memory and kernel roofs (measured the first time a format is seen here)."""
    weights, threads = roofs.bytes_per_token(model_dir), intra_op_threads(model_dir)
    decode = metrics.get("decode_tokens_per_s")
    if decode is None or not resolved("decode_tokens_per_s", metrics):
        return roofs.roofline_metrics(weights, None, {})
    try:
        measured = roofs.machine_roofs(roofs_dir, [weights.format], threads)
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:  # no roof is no reason to fail a variant
        get_run_logger().warning("the roofs of this machine could not be measured (%s): no roofline shares", err)
        measured = {}
    return roofs.roofline_metrics(weights, decode, measured, threads)


@task(name="roofline", task_run_name="roofline-{result.name}", cache_policy=NONE)
def roofline(result: VariantResult, roofs_dir: Path) -> VariantResult:
    """The variant's distance to the machine's limits (slmops.roofline): bytes per token, achieved GB/s, shares."""
    return result.with_metrics(roofline_of(Path(result.onnx_dir), result.metrics, roofs_dir))


@task(name="measure-champion", cache_policy=NONE)
def measure_champion(champion: ChampionToMeasure, settings: EvaluationSpec, dataset: Path, foundry: FoundrySpec,
                     foundry_cache: Path, out_dir: Path, roofs_dir: Path | None = None) -> dict[str, float]:
    """The current champion measured again in this sweep, with the candidates' settings (its fidelity stays the one
    measured against its own baseline)."""
    from slmops import register as registering

    name = (champion.foundry_model_id or f"{champion.registered_model}-{champion.name}:0").rpartition(":")[0]
    try:
        model_id = registering.register(champion.folder, name, champion.content_key,
                                        {"display_name": f"{name} (champion)"}, foundry_cache,
                                        foundry.model_config_overrides.model_dump())
        evaluation = evaluate_variant(champion.folder, model_id, foundry_cache,
                                      settings.model_copy(update={"fidelity": False, "reuse": False}), dataset,
                                      out_dir, progress=_progress(f"champion {champion.name}"))
    except SlmopsError as err:
        raise VariantError(f"the champion {champion.name} (version {champion.model_version}) could not be measured "
                           f"again: {err}") from err
    measured = finite(evaluation["metrics"])
    if roofs_dir is not None:
        measured.update(roofline_of(Path(champion.folder), measured, roofs_dir))
    return measured
