"""The MLflow side of promotion: each succeeded variant as a model version of one registered model (found again by
content, never made twice), the candidates and the champion as promotion sees them, and the aliases a decision
moves (``champion``, ``previous-champion``, ``challenger``) with when and why on the versions.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from slmops.adapters.tracking import KIND_TAG, SWEEP_TAG, VARIANT_TAG, Registry, Tracker
from slmops.errors import InputError
from slmops.metrics import HEADLINE
from slmops.promote.decide import Candidate, Decision
from slmops.promote.policy import PromotionSpec
from slmops.variant import VariantResult

# the metrics a model version carries as tags (metric.<name>): what `slmops champion` shows and promotion reads
VERSION_METRICS = (*HEADLINE, "smoke_test_passed")


def register_version(registry: Registry, registered_model: str, sweep_id: str, result: VariantResult,
                     mode: str) -> str:
    """The model version holding this variant's content (found, or created) and its run tagged with it."""
    metrics = {f"metric.{k}": result.metrics[k] for k in VERSION_METRICS if k in result.metrics}
    if result.size_bytes:
        metrics["metric.size_bytes"] = result.size_bytes
    tags = {"slmops.variant": result.name, "slmops.sweep_id": sweep_id,
            "slmops.config": json.dumps(result.config.knobs()), "foundry_model_id": result.foundry_model_id or "",
            "slmops.size_bytes": result.size_bytes or 0, **metrics}
    version = registry.register_version(registered_model, result.mlflow_run_id, Path(result.onnx_dir),
                                        result.content_key, {k: str(v) for k, v in tags.items()}, mode)
    registry.tracker.log(result.mlflow_run_id, tags={"slmops.model_version": version,
                                                     "slmops.registered_model": registered_model})
    return version


def candidates(tracker: Tracker, experiment: str, sweep_id: str) -> list[Candidate]:
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


def champion(registry: Registry, registered_model: str, alias: str = "champion") -> Candidate | None:
    """The current holder of an alias, with every metric its variant's run logged (those its model version's tags
    keep, when the run is gone)."""
    version = registry.by_alias(registered_model, alias)
    return None if version is None else _as_candidate(registry, version)


def version_candidate(registry: Registry, registered_model: str, version: str) -> Candidate:
    """One model version as promotion sees it."""
    return _as_candidate(registry, registry.version(registered_model, version))


def _as_candidate(registry: Registry, version) -> Candidate:
    tags = version.tags
    metrics = {k.removeprefix("metric."): float(v) for k, v in tags.items() if k.startswith("metric.")}
    metrics.update(registry.tracker.run_metrics(version.run_id))
    return Candidate(name=tags.get("slmops.variant", f"version {version.version}"), status="succeeded",
                     metrics=metrics, content_key=tags.get("slmops.content_key"), model_version=str(version.version),
                     foundry_model_id=tags.get("foundry_model_id") or None, sweep_id=tags.get("slmops.sweep_id"))


def find_sweep(tracker: Tracker, sweep_id: str) -> tuple[str, str]:
    """(experiment name, parent run id) of a logged sweep; InputError when no such sweep was logged."""
    found = tracker.find_sweep(sweep_id)
    if found is None:
        raise InputError(f"no sweep {sweep_id!r} in MLflow at {tracker.tracking_uri}; `slmops compare` lists sweeps")
    return found


def move_aliases(registry: Registry, name: str, decision: Decision, candidates: list[Candidate],
                 old: Candidate | None) -> None:
    """champion -> the new version (with the decision's record: the policy as it was, the comparison with its
    margins, the old champion's stored and re-measured numbers); previous-champion -> the old one; challenger -> the
    runner-up."""
    by_name = {c.name: c for c in candidates}
    new = by_name[decision.candidate]
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    registry.set_alias(name, "champion", new.model_version)
    named = PromotionSpec.model_validate(decision.policy).metrics() if decision.policy else []
    record = {"slmops.promoted_at": now, "slmops.promotion_reason": decision.reason,
              "slmops.replaced_version": old.model_version if old else "none",
              "slmops.promotion_policy": json.dumps(decision.policy, sort_keys=True),
              "slmops.promotion_comparison": json.dumps(decision.comparison),
              **{f"slmops.replaced_numbers_{kind}": json.dumps({m: numbers[m] for m in named if m in numbers})
                 for kind, numbers in (("stored", decision.champion_stored), ("fresh", decision.champion_fresh))
                 if numbers is not None}}
    registry.tag_version(name, new.model_version, {k: v[:5000] for k, v in record.items()})
    if old is not None:
        registry.set_alias(name, "previous-champion", old.model_version)
        registry.tag_version(name, old.model_version, {"slmops.demoted_at": now,
                                                       "slmops.replaced_by": new.model_version})
    if decision.runner_up and by_name[decision.runner_up].model_version:
        registry.set_alias(name, "challenger", by_name[decision.runner_up].model_version)
