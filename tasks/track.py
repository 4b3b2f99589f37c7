"""Prefect tasks that log a sweep to MLflow; only an unreachable tracking server is retried."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NONE

from slmops.adapters.tracking import Tracker, retry_delays
from slmops.errors import TransientError


def _transient(_task, _task_run, state) -> bool:
    return isinstance(state.result(raise_on_failure=False), TransientError)


# MLflow calls retry only what may pass: an unreachable or busy tracking store
TRACKING_RETRY = dict(retries=3, retry_delay_seconds=retry_delays(), retry_condition_fn=_transient, cache_policy=NONE)


@task(name="start-sweep-run", **TRACKING_RETRY)
def start_sweep_run(tracking_uri: str, artifact_root: str, experiment: str, sweep_id: str, tags: dict,
                    params: dict, spec: dict) -> str:
    """Find or create the sweep's parent run and log the resolved spec."""
    from pathlib import Path

    tracker = Tracker(tracking_uri, Path(artifact_root))
    run_id = tracker.sweep_run(experiment, sweep_id, tags)
    tracker.log(run_id, params=params)
    tracker.log_dict(run_id, spec, "sweep_spec.json")
    return run_id


@task(name="log-variant-run", task_run_name="log-{variant}", **TRACKING_RETRY)
def log_variant_run(tracking_uri: str, parent_run_id: str, sweep_id: str, variant: str, params: dict,
                    metrics: dict, tags: dict, artifacts: dict, failed: bool, tables: dict | None = None) -> str:
    """Find or create the variant's child run and log its config, metrics, tags and artifacts."""
    tracker = Tracker(tracking_uri)
    run_id = tracker.variant_run(parent_run_id, sweep_id, variant)
    tracker.log(run_id, params=params, metrics=metrics, tags=tags)
    for name, data in artifacts.items():
        tracker.log_dict(run_id, data, name)
    for name, rows in (tables or {}).items():
        tracker.log_table(run_id, rows, name)
    tracker.finish(run_id, "FAILED" if failed else "FINISHED")
    return run_id


@task(name="finish-sweep-run", **TRACKING_RETRY)
def finish_sweep_run(tracking_uri: str, run_id: str, metrics: dict, report: dict, failed: bool) -> None:
    """Log the sweep's totals and report, and close its parent run."""
    tracker = Tracker(tracking_uri)
    tracker.log(run_id, metrics=metrics)
    tracker.log_dict(run_id, report, "report.json")
    tracker.finish(run_id, "FAILED" if failed else "FINISHED")
