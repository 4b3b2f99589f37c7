"""MLflow: a parent run per sweep, a child run per variant, found again by tags so a retry never duplicates one.

The only module that imports mlflow. Run ids are passed explicitly (MlflowClient), since MLflow keeps its active
run per thread and Prefect runs tasks in other threads (docs/toolchain.md). Every call goes through
``Tracker._call``, so a store that cannot be reached is a ``TransientError`` wherever it happens. ``NullTracker`` has
the same methods and logs nothing: a sweep that lost its store goes on with it, and `slmops sync` logs it later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from slmops.errors import SlmopsError, TransientError

SWEEP_TAG = "slmops.sweep_id"
KIND_TAG = "slmops.kind"
VARIANT_TAG = "slmops.variant"

# A tracking server that is down makes the client retry for about 4 minutes by default (measured, docs/toolchain.md):
# bound it so a dead server is reported in seconds; Prefect's task retries take over from there.
_HTTP_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def retry_delays() -> list[float]:
    """Seconds between the retries of a tracking task: SLMOPS_MLFLOW_RETRY_DELAYS (comma-separated), or 2, 5, 10."""
    raw = os.environ.get("SLMOPS_MLFLOW_RETRY_DELAYS", "2,5,10")
    try:
        return [float(x) for x in raw.split(",") if x.strip()]
    except ValueError:
        raise SlmopsError(f"SLMOPS_MLFLOW_RETRY_DELAYS={raw!r}: expected comma-separated seconds, e.g. 2,5,10") from None


def default_tracking_uri(work_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(work_dir / 'mlflow.db').resolve()}"


_SQLITE_CLIENTS: dict[str, object] = {}


def _sqlite_client(tracking_uri: str):
    """A client of an embedded store, created under a lock: creating the tracking and registry stores runs the
    database migrations, and two sweeps starting at once race on them (seen: alembic errors in one of them).
    One per store and process: opening the store again costs about 0.1 s a time, ten times a sweep."""
    if tracking_uri in _SQLITE_CLIENTS:
        return _SQLITE_CLIENTS[tracking_uri]
    from mlflow.tracking import MlflowClient

    from slmops.locks import file_lock

    db = Path(tracking_uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(db.with_name(db.name + ".init.lock")):
        client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)
    _SQLITE_CLIENTS[tracking_uri] = client
    return client


def prepare(tracking_uri: str) -> None:
    """Import MLflow and open the embedded store (its database is made on first use: about 3 s), for a process with
    time to spare before its first tracking call: the CLI's, while the temporary Prefect server starts. Quietly: a
    server that then fails to start is reported in one line. A failure here is left to the tracking call that meets
    it again, where it is reported and retried."""
    chatter = logging.getLogger("mlflow.store.db.utils")  # "Creating initial MLflow database tables..."
    level = chatter.level
    chatter.setLevel(logging.WARNING)
    with contextlib.suppress(Exception):  # see the docstring
        if tracking_uri.startswith("sqlite:///"):
            _sqlite_client(tracking_uri)
        else:
            import mlflow.tracking  # noqa: F401
    chatter.setLevel(level)


def _is_connection_problem(err: Exception) -> bool:
    text = f"{type(err).__name__}: {err}"
    return any(s in text for s in ("ConnectionError", "Max retries exceeded", "Connection refused", "timed out",
                                   "Read timed out", "503", "502", "504", "database is locked"))


def check_reachable(tracking_uri: str, timeout_s: float = 5.0) -> None:
    """For a tracking server: fail in seconds, before any work, when it does not answer its health check."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    url = f"{tracking_uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (the user's server)
            if response.status == 200:
                return
            problem = f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):  # a server with authentication answers; the client's credentials decide
            return
        problem = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        problem = str(getattr(err, "reason", err))
    raise SlmopsError(f"MLflow tracking server {tracking_uri} is unreachable ({problem}); start it, or "
                      "unset MLFLOW_TRACKING_URI to use the embedded store")


class Tracker:
    """The MLflow calls slmops makes, against one tracking URI."""

    def __init__(self, tracking_uri: str, artifact_root: Path | None = None) -> None:
        for name, value in _HTTP_BOUNDS.items():
            os.environ.setdefault(name, value)
        from mlflow.tracking import MlflowClient

        self.tracking_uri = tracking_uri
        self.artifact_root = artifact_root
        if tracking_uri.startswith("sqlite:///"):
            self.client = _sqlite_client(tracking_uri)
        else:
            self.client = MlflowClient(tracking_uri=tracking_uri)

    def _call(self, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as err:
            if _is_connection_problem(err):
                raise TransientError(f"MLflow at {self.tracking_uri} is unreachable: {err}") from err
            raise

    def check_reachable(self) -> None:
        check_reachable(self.tracking_uri)

    def experiment_id(self, name: str) -> str:
        exp = self._call(self.client.get_experiment_by_name, name)
        if exp is not None:
            return exp.experiment_id
        location = None
        if self.artifact_root is not None and self.tracking_uri.startswith("sqlite:"):
            location = (self.artifact_root / name).resolve().as_uri()
        try:
            return self._call(self.client.create_experiment, name, artifact_location=location)
        except TransientError:
            raise
        except Exception:  # created by a concurrent sweep between the look-up and the create
            exp = self._call(self.client.get_experiment_by_name, name)
            if exp is None:
                raise
            return exp.experiment_id

    def _find(self, experiment_id: str, tags: dict[str, str]) -> str | None:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        runs = self._call(self.client.search_runs, [experiment_id], filter_string=query, max_results=1)
        return runs[0].info.run_id if runs else None

    def sweep_run(self, experiment: str, sweep_id: str, tags: dict[str, str]) -> str:
        """The sweep's parent run: found by its sweep id, or created."""
        exp_id = self.experiment_id(experiment)
        found = self._find(exp_id, {SWEEP_TAG: sweep_id, KIND_TAG: "sweep"})
        if found:
            return found
        run = self._call(self.client.create_run, exp_id, run_name=sweep_id,
                         tags={SWEEP_TAG: sweep_id, KIND_TAG: "sweep", **tags})
        return run.info.run_id

    def variant_run(self, parent_run_id: str, sweep_id: str, variant: str) -> str:
        """A variant's child run in this sweep: found by tags, or created (so a retried task reuses it)."""
        parent = self._call(self.client.get_run, parent_run_id)
        exp_id = parent.info.experiment_id
        found = self._find(exp_id, {SWEEP_TAG: sweep_id, VARIANT_TAG: variant})
        if found:
            return found
        run = self._call(
            self.client.create_run, exp_id, run_name=variant,
            tags={SWEEP_TAG: sweep_id, VARIANT_TAG: variant, KIND_TAG: "variant",
                  "mlflow.parentRunId": parent_run_id},
        )
        return run.info.run_id

    def log(self, run_id: str, params: dict[str, Any] | None = None, metrics: dict[str, float] | None = None,
            tags: dict[str, str] | None = None) -> None:
        import time

        from mlflow.entities import Metric, Param, RunTag

        now = int(time.time() * 1000)
        self._call(
            self.client.log_batch, run_id,
            metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
            params=[Param(k, _param_value(v)) for k, v in (params or {}).items()],
            tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
        )

    def log_dict(self, run_id: str, data: Any, artifact_file: str) -> None:
        self._call(self.client.log_dict, run_id, data, artifact_file)

    def log_table(self, run_id: str, rows: list[dict], artifact_file: str) -> None:
        """Rows as an MLflow table artifact (shown in the UI's artifact view and Evaluation tab)."""
        columns: dict[str, list] = {}
        for row in rows:
            for k in row:
                columns.setdefault(k, [])
        for row in rows:
            for k in columns:
                value = row.get(k)
                columns[k].append(value if value is None or isinstance(value, (str, int, float, bool))
                                  else json.dumps(value))
        self._call(self.client.log_table, run_id, columns, artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        self._call(self.client.log_text, run_id, text, artifact_file)

    def load_dict(self, run_id: str, artifact_file: str) -> Any:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            path = self._call(self.client.download_artifacts, run_id, artifact_file, tmp)
            return json.loads(Path(path).read_text())

    def load_dict_if_any(self, run_id: str, artifact_file: str) -> Any | None:
        """A logged JSON artifact, or None when the run has none by that name."""
        from mlflow.exceptions import MlflowException

        try:
            return self.load_dict(run_id, artifact_file)
        except (MlflowException, OSError):
            return None

    def download(self, run_id: str, artifact_path: str, dest: Path) -> Path | None:
        """A run's artifact folder, copied under dest; None when the run or the artifact is gone."""
        from mlflow.exceptions import MlflowException

        dest.mkdir(parents=True, exist_ok=True)
        try:
            return Path(self._call(self.client.download_artifacts, run_id, artifact_path, str(dest)))
        except (MlflowException, OSError):
            return None

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self._call(self.client.set_terminated, run_id, status)

    def run(self, run_id: str):
        return self._call(self.client.get_run, run_id)

    def search(self, experiment: str, filter_string: str, max_results: int = 1000) -> list:
        exp = self._call(self.client.get_experiment_by_name, experiment)
        if exp is None:
            return []
        return self._call(self.client.search_runs, [exp.experiment_id], filter_string=filter_string,
                          max_results=max_results)

    def run_tags(self, run_id: str | None) -> dict[str, str]:
        """The tags of a run; empty when there is no such run."""
        data = self._run_data(run_id)
        return dict(data.tags) if data else {}

    def run_metrics(self, run_id: str | None) -> dict[str, float]:
        """The latest value of every metric of a run; empty when there is no such run."""
        data = self._run_data(run_id)
        return dict(data.metrics) if data else {}

    def _run_data(self, run_id: str | None):
        from mlflow.exceptions import MlflowException

        if not run_id:
            return None
        try:
            return self.run(run_id).data
        except MlflowException:
            return None

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        self._call(self.client.log_artifact, run_id, str(path), artifact_path)

    def _sweep_runs(self, filter_string: str, max_results: int) -> list:
        experiments = [e.experiment_id for e in self._call(self.client.search_experiments)]
        if not experiments:
            return []
        return self._call(self.client.search_runs, experiments, filter_string=filter_string, max_results=max_results,
                          order_by=["attributes.start_time DESC"])

    def latest_sweep_id(self) -> str | None:
        """The sweep logged last, in any experiment."""
        runs = self._sweep_runs(f"tags.`{KIND_TAG}` = 'sweep'", 1)
        return runs[0].data.tags[SWEEP_TAG] if runs else None

    def find_sweep(self, sweep_id: str) -> tuple[str, str] | None:
        """(experiment name, parent run id) of a logged sweep, or None."""
        runs = self._sweep_runs(f"tags.`{SWEEP_TAG}` = '{sweep_id}' and tags.`{KIND_TAG}` = 'sweep'", 1)
        if not runs:
            return None
        run = runs[0]
        return self._call(self.client.get_experiment, run.info.experiment_id).name, run.info.run_id

    def run_url(self, run_id: str) -> str:
        """Where the run is in the MLflow UI (for a local store: the address `mlflow ui` serves by default)."""
        run = self.run(run_id)
        base = self.tracking_uri if self.tracking_uri.startswith("http") else "http://127.0.0.1:5000"
        return f"{base.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run_id}"


class NullTracker:
    """A tracker for a store that was lost mid-sweep: Tracker's logging methods, which log nothing.

    ``reason`` says why, for the variants it did not log."""

    def __init__(self, tracking_uri: str, reason: str) -> None:
        self.tracking_uri = tracking_uri
        self.reason = reason

    def sweep_run(self, *_: Any, **__: Any) -> None:
        return None

    def variant_run(self, *_: Any, **__: Any) -> None:
        return None

    def log(self, *_: Any, **__: Any) -> None:
        return None

    log_dict = log_table = log_text = log_artifact = finish = log


def tracker_for(tracking_uri: str, lost: str | None = None) -> Tracker | NullTracker:
    """The tracker of a sweep: the store's, or a NullTracker once it was lost (``lost`` says why)."""
    return NullTracker(tracking_uri, lost) if lost else Tracker(tracking_uri)


def _param_value(value: Any) -> str:
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True)
    return str(value)


class Registry:
    """The MLflow model registry as promotion uses it: versions found by content, aliases moved with a history."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.client = tracker.client

    def model_names(self) -> list[str]:
        return [m.name for m in self.tracker._call(self.client.search_registered_models)]

    def ensure_model(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.tracker._call(self.client.get_registered_model, name)
        except MlflowException:
            try:
                self.tracker._call(self.client.create_registered_model, name,
                                   description="Variants of one fine-tuned model, registered by slmops")
            except MlflowException:  # created by a concurrent sweep
                self.tracker._call(self.client.get_registered_model, name)

    def version_by_content(self, name: str, content_key: str):
        found = self.tracker._call(self.client.search_model_versions,
                                   f"name = '{name}' and tag.`slmops.content_key` = '{content_key}'")
        return min(found, key=lambda v: int(v.version)) if found else None

    def register_version(self, name: str, run_id: str, variant_dir: Path, content_key: str, tags: dict[str, str],
                         mode: str = "copy") -> str:
        """The model version holding this content: found by its content key, or created (never twice)."""
        self.ensure_model(name)
        existing = self.version_by_content(name, content_key)
        if existing is not None:
            return str(existing.version)
        if mode == "copy":
            self.tracker._call(self.client.log_artifacts, run_id, str(variant_dir), "model")
            source = f"runs:/{run_id}/model"
        else:
            source = Path(variant_dir).resolve().as_uri()
        version = self.tracker._call(self.client.create_model_version, name, source, run_id=run_id,
                                     tags={"slmops.content_key": content_key, "slmops.artifacts": mode, **tags})
        return str(version.version)

    def by_alias(self, name: str, alias: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.tracker._call(self.client.get_model_version_by_alias, name, alias)
        except MlflowException:
            return None

    def version(self, name: str, version: str):
        return self.tracker._call(self.client.get_model_version, name, version)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.tracker._call(self.client.set_registered_model_alias, name, alias, version)

    def tag_version(self, name: str, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.tracker._call(self.client.set_model_version_tag, name, version, key, str(value))
