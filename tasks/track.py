"""Prefect tasks that log a sweep to MLflow (slmops.track does the work); only an unreachable store is retried."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NONE

from slmops import track
from slmops.adapters.tracking import Tracker, retry_delays, tracker_for
from slmops.config import SweepSpec
from slmops.errors import TransientError
from slmops.variant import VariantResult


def _transient(_task, _task_run, state) -> bool:
    return isinstance(state.result(raise_on_failure=False), TransientError)


# MLflow calls retry only what may pass: an unreachable or busy tracking store
TRACKING_RETRY = dict(retries=3, retry_delay_seconds=retry_delays(), retry_condition_fn=_transient, cache_policy=NONE)


@task(name="track-sweep", **TRACKING_RETRY)
def track_sweep(tracking_uri: str, artifact_root: str, spec: SweepSpec, sweep_id: str, source_path: str,
                source_sha: str, versions: dict[str, str]) -> str:
    """Find or create the sweep's parent run and log the resolved spec."""
    return track.start_sweep(Tracker(tracking_uri, Path(artifact_root)), spec, sweep_id, Path(source_path),
                             source_sha, versions)


@task(name="track-variant", task_run_name="track-{result.name}", **TRACKING_RETRY)
def track_variant(tracking_uri: str, lost: str | None, parent_run_id: str, sweep_id: str, result: VariantResult,
                  source_sha: str, versions: dict[str, str]) -> str | None:
    """Find or create the variant's child run and log its config, metrics, tags and artifacts."""
    return track.log_variant(tracker_for(tracking_uri, lost), parent_run_id, sweep_id, result, source_sha, versions)


@task(name="finish-sweep", **TRACKING_RETRY)
def finish_sweep(tracking_uri: str, parent_run_id: str, report: dict[str, Any]) -> None:
    """Log the sweep's totals and report, and close its parent run."""
    track.finish_sweep(Tracker(tracking_uri), parent_run_id, report)
