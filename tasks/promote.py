"""Prefect tasks of promotion: model versions in the MLflow registry, the decision, and the aliases it moves."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime, timezone
from pathlib import Path

from prefect import task

from slmops.adapters.tracking import KIND_TAG, SWEEP_TAG, VARIANT_TAG, Registry, Tracker
from slmops.config import PromotionSpec
from slmops.errors import InputError
from slmops.locks import file_lock
from slmops.promotion import Candidate, Decision, decide, decision_markdown
from tasks.track import TRACKING_RETRY

HEADLINE = ("size_bytes", "exact_match", "kl_div_mean", "top1_agreement", "decode_tokens_per_s", "ttft_ms_p50",
            "peak_rss_mb", "smoke_test_passed")


@task(name="register-model-versions", **TRACKING_RETRY)
def register_model_versions(tracking_uri: str, registered_model: str, sweep_id: str, variants: list[dict],
                            mode: str, lock_dir: str) -> dict[str, str]:
    """Each succeeded variant as a model version (found again by its content, so never twice); name -> version."""
    registry = Registry(Tracker(tracking_uri))
    versions = {}
    with file_lock(Path(lock_dir) / "registry.lock"):  # two sweeps of one content never make two versions
        for v in variants:
            _register_one(registry, registered_model, sweep_id, v, mode, versions)
    return versions


def _register_one(registry: Registry, registered_model: str, sweep_id: str, v: dict, mode: str,
                  versions: dict[str, str]) -> None:
    """Register one succeeded variant as a model version and tag its run with the version."""
    if v["status"] == "failed" or not v.get("content_key"):
        return
    metrics = {f"metric.{k}": v["metrics"][k] for k in HEADLINE if k in v["metrics"]}
    if v.get("size_bytes"):
        metrics["metric.size_bytes"] = v["size_bytes"]
    tags = {"slmops.variant": v["name"], "slmops.sweep_id": sweep_id, "slmops.config": json.dumps(v["config"]),
            "foundry_model_id": v.get("foundry_model_id") or "", "slmops.size_bytes": v.get("size_bytes") or 0,
            **metrics}
    version = registry.register_version(registered_model, v["mlflow_run_id"], Path(v["onnx_dir"]),
                                        v["content_key"], {k: str(val) for k, val in tags.items()}, mode)
    registry.tracker.log(v["mlflow_run_id"], tags={"slmops.model_version": version,
                                                   "slmops.registered_model": registered_model})
    versions[v["name"]] = version


def candidates_from_mlflow(tracker: Tracker, experiment: str, sweep_id: str) -> list[Candidate]:
    """The variants of a logged sweep, as promotion sees them, from MLflow alone."""
    runs = tracker.search(experiment, f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`{KIND_TAG}` = 'variant'")
    out = []
    for run in sorted(runs, key=lambda r: r.info.start_time):
        tags = run.data.tags
        out.append(Candidate(name=tags[VARIANT_TAG], status=tags.get("slmops.status", "failed"),
                             metrics=dict(run.data.metrics), content_key=tags.get("slmops.content_key"),
                             model_version=tags.get("slmops.model_version"),
                             foundry_model_id=tags.get("foundry_model_id"), sweep_id=sweep_id))
    return out


def champion_candidate(registry: Registry, registered_model: str, alias: str = "champion") -> Candidate | None:
    """The current holder of an alias, with the metrics recorded on its model version."""
    version = registry.by_alias(registered_model, alias)
    if version is None:
        return None
    tags = version.tags
    metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
    return Candidate(name=tags.get("slmops.variant", f"version {version.version}"), status="succeeded",
                     metrics=metrics, content_key=tags.get("slmops.content_key"), model_version=str(version.version),
                     foundry_model_id=tags.get("foundry_model_id") or None, sweep_id=tags.get("slmops.sweep_id"))


def find_sweep_experiment(tracker: Tracker, sweep_id: str) -> tuple[str, str]:
    """(experiment name, parent run id) of a logged sweep; InputError when no such sweep was logged."""
    runs = tracker.client.search_runs(
        [e.experiment_id for e in tracker.client.search_experiments()],
        filter_string=f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`{KIND_TAG}` = 'sweep'", max_results=1)
    if not runs:
        raise InputError(f"no sweep {sweep_id!r} in MLflow at {tracker.tracking_uri}; `slmops compare` lists sweeps")
    run = runs[0]
    return tracker.client.get_experiment(run.info.experiment_id).name, run.info.run_id


@task(name="decide-promotion", **TRACKING_RETRY)
def decide_promotion(tracking_uri: str, sweep_id: str, registered_model: str, policy: dict,
                     move_aliases: bool = True, lock_dir: str | None = None) -> dict:
    """Decide from what MLflow holds for the sweep, move the aliases if promoted, log the decision."""
    tracker = Tracker(tracking_uri)
    registry = Registry(tracker)
    spec = PromotionSpec.model_validate(policy)
    experiment, parent_run_id = find_sweep_experiment(tracker, sweep_id)
    candidates = candidates_from_mlflow(tracker, experiment, sweep_id)
    with file_lock(Path(lock_dir) / "registry.lock") if lock_dir else contextlib.nullcontext():
        champion = champion_candidate(registry, registered_model)
        decision = decide(candidates, spec, champion)
        if decision.promoted and move_aliases:
            _move_aliases(registry, registered_model, decision, candidates, champion)
    doc = {**decision.to_dict(), "registered_model": registered_model, "aliases_moved": decision.promoted and
           move_aliases}
    tracker.log_text(parent_run_id, decision_markdown(decision, registered_model), "decision.md")
    tracker.log_dict(parent_run_id, doc, "decision.json")
    tracker.log(parent_run_id, tags={"slmops.decision": "promoted" if decision.promoted else "not promoted",
                                     "slmops.decision_reason": decision.reason[:5000]})
    return doc


def _move_aliases(registry: Registry, name: str, decision: Decision, candidates: list[Candidate],
                  old: Candidate | None) -> None:
    """champion -> the new version; previous-champion -> the old one; challenger -> the runner-up."""
    by_name = {c.name: c for c in candidates}
    new = by_name[decision.candidate]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    registry.set_alias(name, "champion", new.model_version)
    registry.tag_version(name, new.model_version, {"slmops.promoted_at": now, "slmops.promotion_reason":
                                                   decision.reason, "slmops.replaced_version":
                                                   old.model_version if old else "none"})
    if old is not None:
        registry.set_alias(name, "previous-champion", old.model_version)
        registry.tag_version(name, old.model_version, {"slmops.demoted_at": now,
                                                       "slmops.replaced_by": new.model_version})
    if decision.runner_up and by_name[decision.runner_up].model_version:
        registry.set_alias(name, "challenger", by_name[decision.runner_up].model_version)
