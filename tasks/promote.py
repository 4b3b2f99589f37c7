"""Prefect tasks of promotion: model versions in the MLflow registry, the champion measured again beside the
candidates, the decision, and the aliases it moves (slmops.promote does the work)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from prefect import task

from slmops.adapters.tracking import Registry, Tracker
from slmops.locks import file_lock
from slmops.promote import Candidate, decide, decision_markdown, registry
from slmops.promote.champion import ChampionToMeasure, champion_to_measure
from slmops.promote.policy import PromotionSpec
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


@task(name="find-champion", **TRACKING_RETRY)
def find_champion(tracking_uri: str, registered_model: str, policy: PromotionSpec, candidate_keys: list[str],
                  work_dir: Path) -> ChampionToMeasure | None:
    """The current champion, when this sweep must measure it again beside its candidates."""
    return champion_to_measure(Registry(Tracker(tracking_uri)), registered_model, policy, set(candidate_keys),
                               work_dir)


@task(name="promote", **TRACKING_RETRY)
def promote(tracking_uri: str, sweep_id: str, registered_model: str, policy: PromotionSpec,
            move_aliases: bool = True, lock_dir: str | None = None, champion_fresh: dict[str, float] | None = None,
            champion_note: str | None = None, faced: dict[str, Any] | None = None) -> dict[str, Any]:
    """Decide from what MLflow holds for the sweep, move the aliases if promoted, log the decision.

    ``faced``: the decision this sweep logged (`slmops promote --sweep`). A dry run decides again against the champion
    of then, with its numbers of then, so that the decision is reproduced from MLflow alone; otherwise the decision
    is made against today's champion (with the numbers the sweep re-measured, if it is the same one) and acts.
    """
    tracker = Tracker(tracking_uri)
    reg = Registry(tracker)
    experiment, parent_run_id = registry.find_sweep(tracker, sweep_id)
    candidates = registry.candidates(tracker, experiment, sweep_id)
    with _registry_lock(lock_dir):
        champion = registry.champion(reg, registered_model)
        if faced is not None:
            champion, champion_fresh, champion_note = _as_faced(reg, registered_model, sweep_id, champion, faced,
                                                                again=not move_aliases)
        decision = decide(candidates, policy, champion, champion_fresh=champion_fresh, champion_note=champion_note)
        if decision.promoted and move_aliases:
            registry.move_aliases(reg, registered_model, decision, candidates, champion)
    doc = {**decision.to_dict(), "registered_model": registered_model,
           "aliases_moved": decision.promoted and move_aliases}
    if move_aliases:  # what acted is recorded; a dry run leaves the record as it was
        tracker.log_text(parent_run_id, decision_markdown(decision, registered_model), "decision.md")
        tracker.log_dict(parent_run_id, doc, "decision.json")
        tracker.log(parent_run_id, tags={"slmops.decision": "promoted" if decision.promoted else "not promoted",
                                         "slmops.decision_reason": decision.reason[:5000]})
    return doc


def _as_faced(reg: Registry, registered_model: str, sweep_id: str, current: Candidate | None, faced: dict[str, Any],
              again: bool) -> tuple[Candidate | None, dict | None, str | None]:
    """The champion to decide against, with its numbers. ``again`` (a dry run): the one the logged decision faced,
    as it was then. Otherwise today's, with the numbers the sweep re-measured if it is still the same one."""
    then = faced.get("previous_champion")
    if again:
        champion = registry.version_candidate(reg, registered_model, then["model_version"]) if then else None
        return champion, faced.get("champion_fresh"), faced.get("champion_note")
    if current is not None and then and then["model_version"] == current.model_version:
        return current, faced.get("champion_fresh"), faced.get("champion_note")
    note = f"stored numbers: the champion changed after sweep {sweep_id}" if current is not None else None
    return current, None, note
