"""The current champion, measured again beside the candidates: speed and memory are figures of the machine's state,
and a champion measured weeks ago on another day cannot be compared with a challenger measured now.

    champion = champion_to_measure(registry, "demo-shop", policy, candidate_keys, work_dir)
    (the sweep then measures champion.folder between its candidates, with the same settings)

Its folder is found, in order, where its variant was built (if that folder still holds its content), where its
model version points (artifacts: reference), or in the version's own artifacts (artifacts: copy, downloaded once
into the work folder). A champion whose folder is gone anywhere is named, and the decision uses its stored numbers.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from slmops.adapters.tracking import Registry
from slmops.metrics import MACHINE_METRICS
from slmops.promote.policy import PromotionSpec
from slmops.promote.registry import champion as current_champion
from slmops.staging import is_complete

REMEASURED = "champion_remeasured.json"  # the parent run's record of the champion's numbers of that sweep


class ChampionToMeasure(BaseModel):
    """The champion a sweep measures again (``folder``), or why it cannot (``note``)."""

    registered_model: str
    name: str
    model_version: str
    content_key: str | None
    foundry_model_id: str | None
    folder: Path | None = None
    note: str | None = None


def needs_measuring(policy: PromotionSpec) -> bool:
    """Whether the policy names a figure of the machine (speed, memory), which only a side-by-side measurement
    compares fairly."""
    return any(m in MACHINE_METRICS for m in policy.metrics())


def champion_to_measure(registry: Registry, registered_model: str, policy: PromotionSpec, candidate_keys: set[str],
                        work_dir: Path) -> ChampionToMeasure | None:
    """The champion to measure in this sweep: None when there is none, when it is one of the sweep's own variants
    (measured anyway), or when the policy names no figure of the machine."""
    held = current_champion(registry, registered_model)
    if held is None or not needs_measuring(policy) or held.content_key in candidate_keys:
        return None
    champion = ChampionToMeasure(registered_model=registered_model, name=held.name, model_version=held.model_version,
                                 content_key=held.content_key, foundry_model_id=held.foundry_model_id)
    folder = _locate(registry, champion, work_dir)
    if folder is None:
        return champion.model_copy(update={"note": f"its folder is gone (not where {held.name} was built, nor in "
                                                   f"model version {held.model_version}'s artifacts); stored numbers "
                                                   "used"})
    return champion.model_copy(update={"folder": folder})


def _locate(registry: Registry, champion: ChampionToMeasure, work_dir: Path) -> Path | None:
    version = registry.version(champion.registered_model, champion.model_version)
    tags = registry.tracker.run_tags(version.run_id)
    places = [Path(tags["slmops.onnx_dir"])] if tags.get("slmops.onnx_dir") else []
    if str(version.source).startswith("file:"):
        places.append(Path(unquote(urlparse(str(version.source)).path)))
    for place in places:
        if champion.content_key and is_complete(place, champion.content_key):
            return place
    if version.tags.get("slmops.artifacts") != "copy" or not champion.content_key:
        return None
    copy = work_dir / "champions" / champion.content_key[:16]
    if not is_complete(copy / "model", champion.content_key):
        registry.tracker.download(version.run_id, "model", copy)
    return copy / "model" if is_complete(copy / "model", champion.content_key) else None


class ChampionMeasured(BaseModel):
    """The champion's numbers of this sweep (``fresh``), or why it has none; what the decision records."""

    fresh: dict[str, float] | None
    note: str
