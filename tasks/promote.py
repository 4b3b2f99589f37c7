"""Prefect tasks of promotion: model versions in the MLflow registry, the decision, and the aliases it moves
(slmops.promote does the work)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import task

from slmops.adapters.tracking import Registry, Tracker
from slmops.config import PromotionSpec
from slmops.locks import file_lock
from slmops.promote import decide, decision_markdown, registry
from slmops.variant import VariantResult
from tasks.track import TRACKING_RETRY


def _registry_lock(lock_dir: str | Path | None):
    # two sweeps of one content never make two versions, nor move the aliases at once
    return file_lock(Path(lock_dir) / "registry.lock") if lock_dir else contextlib.nullcontext()


@task(name="register-versions", **TRACKING_RETRY)
def register_versions(tracking_uri: str, registered_model: str, sweep_id: str, results: list[VariantResult],
                      mode: str, lock_dir: str) -> list[VariantResult]:
    """Each succeeded variant as a model version (found again by its content, so never twice)."""
    reg = Registry(Tracker(tracking_uri))
    with _registry_lock(lock_dir):
        return [r.model_copy(update={"model_version": registry.register_version(reg, registered_model, sweep_id,
                                                                                 r, mode)})
                if r.ok and r.content_key and r.mlflow_run_id else r for r in results]


@task(name="promote", **TRACKING_RETRY)
def promote(tracking_uri: str, sweep_id: str, registered_model: str, policy: PromotionSpec,
            move_aliases: bool = True, lock_dir: str | None = None) -> dict[str, Any]:
    """Decide from what MLflow holds for the sweep, move the aliases if promoted, log the decision."""
    tracker = Tracker(tracking_uri)
    reg = Registry(tracker)
    experiment, parent_run_id = registry.find_sweep(tracker, sweep_id)
    candidates = registry.candidates(tracker, experiment, sweep_id)
    with _registry_lock(lock_dir):
        champion = registry.champion(reg, registered_model)
        decision = decide(candidates, policy, champion)
        if decision.promoted and move_aliases:
            registry.move_aliases(reg, registered_model, decision, candidates, champion)
    doc = {**decision.to_dict(), "registered_model": registered_model,
           "aliases_moved": decision.promoted and move_aliases}
    tracker.log_text(parent_run_id, decision_markdown(decision, registered_model), "decision.md")
    tracker.log_dict(parent_run_id, doc, "decision.json")
    tracker.log(parent_run_id, tags={"slmops.decision": "promoted" if decision.promoted else "not promoted",
                                     "slmops.decision_reason": decision.reason[:5000]})
    return doc
