"""The stack of plain processes end to end: a published checkpoint starts the triggered deployment on a worker, the
sweep completes and is in MLflow; bad events, killed workers and two workers sharing one sweep; and its security
(docs/security.md): each server refuses requests without the right credentials, the pipeline's MLflow user is no
admin, an event for a folder outside the allowed roots does no work, and no secret is left in a log, a database,
an artifact or a flow run.

    .venv/bin/python -m pytest tests/stack/test_stack.py      # starts and stops its own stack (conftest.py)
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ops import events
from ops.stack import DEFAULT_CRON, Postgres, main
from slmops.config import SweepSpec
from slmops.errors import SlmopsError
from stack_helpers import (VARIANTS, prefect_client, publish, runs_by_worker, subflow_runs, wait_for_run,
                           write_sweep_spec)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
TRIGGERED = "sweep-checkpoint/on-checkpoint"
NIGHTLY = "sweep-from-spec-file/nightly"


def now() -> datetime:
    return datetime.now(timezone.utc)


def sweep_out(stack, checkpoint: Path) -> Path:
    """Where the triggered deployment writes a checkpoint's sweep (flows/triggered.py, spec model name `tiny`)."""
    return stack.work_dir / "sweeps" / "tiny" / checkpoint.name


def report_rows(out: Path) -> list[tuple]:
    report = json.loads((out / "report.json").read_text())
    return [(v["name"], v["status"], v.get("content_key")) for v in report["variants"]]


def mlflow_runs(stack, sweep_id: str) -> list:
    client = MlflowClient(stack.mlflow_url)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, f"tags.`slmops.sweep_id` = '{sweep_id}'")


def test_a_published_checkpoint_starts_a_sweep_that_completes_and_is_in_mlflow(stack, checkpoint):
    started = now()
    publish(stack, checkpoint)
    run = wait_for_run(stack, TRIGGERED, started, checkpoint_path=str(checkpoint))
    assert run.state.is_completed(), run.state.message
    assert run.name == f"checkpoint-{checkpoint.name}"

    children = subflow_runs(stack, run.id)
    variant_runs = sorted(c.name for c in children if c.name in {v["name"] for v in VARIANTS})
    assert variant_runs == sorted(v["name"] for v in VARIANTS), "one flow run per variant, below the sweep's"
    assert all(c.state.is_completed() for c in children)
    with prefect_client(stack) as client:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[c.id for c in children])))
    assert artifacts, "the sweep's report is in the Prefect UI as artifacts"

    report = json.loads((sweep_out(stack, checkpoint) / "report.json").read_text())
    assert report["source_model"]["path"] == str(checkpoint)
    assert {v["name"]: v["status"] for v in report["variants"]} == {v["name"]: "succeeded" for v in VARIANTS}
    assert report["mlflow"]["tracking_uri"] == stack.mlflow_url
    runs = mlflow_runs(stack, report["sweep_id"])
    kinds = sorted((r.data.tags["slmops.kind"], r.data.tags.get("slmops.variant", "")) for r in runs)
    assert kinds == sorted([("sweep", "")] + [("variant", v["name"]) for v in VARIANTS])
    assert {r.info.status for r in runs} == {"FINISHED"}
    # the workers logged in as the pipeline's user, which created the registered model and moved its alias
    assert report["decision"]["aliases_moved"], report["decision"]
    champion = MlflowClient(stack.mlflow_url).get_model_version_by_alias(report["decision"]["registered_model"],
                                                                         "champion")
    assert champion.run_id in {r.info.run_id for r in runs}


def test_an_event_for_a_folder_that_is_not_a_model_fails_the_run_at_once_with_the_reason(stack, tmp_path):
    not_a_model = tmp_path / "step-broken"
    not_a_model.mkdir()
    (not_a_model / "README.md").write_text("a half-copied checkpoint")
    started = now()
    publish(stack, not_a_model, check=False)
    run = wait_for_run(stack, TRIGGERED, started, checkpoint_path=str(not_a_model))
    assert run.state.is_failed()
    assert f"{not_a_model}: no config.json; a Hugging Face model folder needs one" in run.state.message
    assert subflow_runs(stack, run.id) == [], "it failed before any sweep started"
    assert run.total_run_time.total_seconds() < 10
    assert not sweep_out(stack, not_a_model).exists()


def test_the_nightly_deployment_is_scheduled_and_sweeps_the_newest_complete_checkpoint(stack, checkpoint, tmp_path):
    unfinished = checkpoint.parent / "step-999999999"  # newer, still being copied: not a model folder yet
    unfinished.mkdir()
    (unfinished / "config.json").write_text((checkpoint / "config.json").read_text())
    out = tmp_path / "nightly"
    started = now()
    with prefect_client(stack) as client:
        deployment = client.read_deployment_by_name(NIGHTLY)
        assert [s.schedule.cron for s in deployment.schedules] == [DEFAULT_CRON]
        client.create_flow_run_from_deployment(deployment.id, parameters={
            "latest_checkpoint_in": str(checkpoint.parent), "out_dir": str(out)})
    run = wait_for_run(stack, NIGHTLY, started, out_dir=str(out))
    assert run.state.is_completed(), run.state.message
    report = json.loads((out / "report.json").read_text())
    assert report["source_model"]["path"] == str(checkpoint)
    assert {v["status"] for v in report["variants"]} == {"succeeded"}


def test_two_workers_share_the_variants_of_one_sweep_and_give_the_result_of_one(stack, checkpoint, tmp_path):
    if "execution" not in SweepSpec.model_fields:
        pytest.skip("needs the spec switch execution.variants_on (slmops/config.py, flows/quantization_sweep.py)")
    variants = VARIANTS[::2]  # two variants, two workers: each takes one (a worker runs one conversion at a time)
    names = {v["name"] for v in variants}
    spec = write_sweep_spec(tmp_path / "on-workers.yaml", checkpoint, variants=variants,
                            execution={"variants_on": "workers"})

    def sweep(out: Path):
        started = now()
        with prefect_client(stack) as client:
            deployment = client.read_deployment_by_name(TRIGGERED)
            client.create_flow_run_from_deployment(deployment.id, parameters={
                "checkpoint_path": str(checkpoint), "spec_path": str(spec), "out_dir": str(out)})
        run = wait_for_run(stack, TRIGGERED, started, out_dir=str(out))
        assert run.state.is_completed(), run.state.message
        variant_runs = {str(c.id) for c in subflow_runs(stack, run.id) if c.name in names}
        assert len(variant_runs) == len(variants)
        return {worker: ids & variant_runs for worker, ids in runs_by_worker(stack).items() if ids & variant_runs}

    two = sweep(tmp_path / "two-workers")
    assert set(two) == {"variants-1", "variants-2"}, f"both variant workers converted: {two}"

    stack.stop_process("worker-variants-2")
    try:
        one = sweep(tmp_path / "one-worker")
    finally:
        stack.start_workers()
    assert set(one) == {"variants-1"}
    assert report_rows(tmp_path / "two-workers") == report_rows(tmp_path / "one-worker")
    assert {status for _, status, _ in report_rows(tmp_path / "one-worker")} == {"succeeded"}


def test_a_worker_lost_mid_sweep_leaves_a_crashed_run_and_the_rerun_reuses_finished_variants(stack, checkpoint):
    """The worker and its flow-run processes killed at once (a machine lost): no process is left to report the
    end, so the heartbeat automation (deployments/automations.yaml) marks the run Crashed; the re-run resumes."""
    out = sweep_out(stack, checkpoint)
    started = now()
    publish(stack, checkpoint)
    deadline = time.monotonic() + 240
    while not (out / "variants" / VARIANTS[0]["name"]).is_dir():
        assert time.monotonic() < deadline, f"the sweep never finished its first variant; see {stack.logs}"
        time.sleep(0.05)
    stack.stop_process("worker-sweeps-1", sig=signal.SIGKILL)  # the worker and every process below it, at once
    crashed = wait_for_run(stack, TRIGGERED, started, timeout_s=200, checkpoint_path=str(checkpoint))
    assert crashed.state.is_crashed(), crashed.state
    assert "no heartbeat" in crashed.state.message
    interrupted = json.loads((out / ".slmops-sweep.json").read_text())

    stack.start_workers()
    rerun_started = now()
    publish(stack, checkpoint)
    rerun = wait_for_run(stack, TRIGGERED, rerun_started, checkpoint_path=str(checkpoint))
    assert rerun.state.is_completed(), rerun.state.message
    report = json.loads((out / "report.json").read_text())
    assert report["sweep_id"] == interrupted["sweep_id"], "the re-run resumes the crashed sweep"
    statuses = {v["name"]: v["status"] for v in report["variants"]}
    assert statuses[VARIANTS[0]["name"]] == "cached", statuses
    assert set(statuses.values()) <= {"cached", "succeeded"}
    variants = [r.data.tags["slmops.variant"] for r in mlflow_runs(stack, report["sweep_id"])
                if r.data.tags["slmops.kind"] == "variant"]
    assert sorted(variants) == sorted(v["name"] for v in VARIANTS), "one MLflow run per variant, no duplicate"
    assert not (out / ".slmops-sweep.json").exists()


def _status(url: str, credentials: str | tuple[str, str] | None = None, method: str = "GET",
            body: dict | None = None) -> int:
    """The HTTP status of one request; credentials: Prefect's auth string, or MLflow's (user, password)."""
    import urllib.error
    import urllib.request

    headers = {"Content-Type": "application/json"} if body is not None else {}
    if credentials is not None:
        token = credentials if isinstance(credentials, str) else ":".join(credentials)
        headers["Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    data = json.dumps(body).encode() if body is not None else None
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as err:
        return err.code


def _mlflow_users(stack) -> dict[str, tuple[str, str]]:
    s = stack.secrets
    return {"admin": (s["SLMOPS_MLFLOW_ADMIN_USER"], s["SLMOPS_MLFLOW_ADMIN_PASSWORD"]),
            "pipeline": (s["SLMOPS_MLFLOW_USER"], s["SLMOPS_MLFLOW_PASSWORD"])}


def test_each_server_refuses_requests_without_credentials_or_with_a_wrong_one(stack, tiny_model):
    wrong = "wrong-" + base64.b64encode(time.monotonic_ns().to_bytes(8, "big")).decode()  # unlike any real one
    auth = stack.secrets["SLMOPS_PREFECT_AUTH_STRING"]
    api = stack.prefect_api_url
    for method, url, body in (("GET", f"{api}/admin/version", None), ("POST", f"{api}/deployments/filter", {}),
                              ("POST", f"{api}/flow_runs/filter", {})):
        assert (_status(url, None, method, body), _status(url, wrong, method, body)) == (401, 401), url
        assert _status(url, auth, method, body) == 200, url
    assert _status(f"{api}/health") == 200, "health probes need no credentials"

    for url in (f"{stack.mlflow_url}/api/2.0/mlflow/experiments/search?max_results=1", f"{stack.mlflow_url}/"):
        assert _status(url) == 401, url
        for user, password in _mlflow_users(stack).values():
            assert _status(url, (user, wrong)) == 401, (url, user)
            assert _status(url, (user, password)) == 200, (url, user)

    # the events websocket (what `slmops publish` and a trigger use) refuses a wrong auth string too
    from prefect.events.clients import PrefectEventsClient

    from ops.stack import prefect_settings

    async def emit() -> None:
        async with PrefectEventsClient(api_url=api, reconnection_attempts=0, checkpoint_every=1) as client:
            await client.emit(events.checkpoint_event(tiny_model))

    with prefect_settings(api, wrong), pytest.raises(Exception, match="Unable to authenticate to the event stream"):
        asyncio.run(emit())
    with prefect_settings(api, wrong), pytest.raises(SlmopsError, match=r"refused this client's credentials"):
        events.publish_checkpoint(tiny_model, api_url=api)


def test_the_pipelines_mlflow_user_is_no_admin_and_sees_only_what_it_owns(stack):
    users, base = _mlflow_users(stack), f"{stack.mlflow_url}/api/2.0/mlflow"
    name = f"admins-own-{time.monotonic_ns()}"
    assert _status(f"{base}/experiments/create", users["admin"], "POST", {"name": name}) == 200
    assert _status(f"{base}/experiments/get-by-name?experiment_name={name}", users["admin"]) == 200
    assert _status(f"{base}/experiments/get-by-name?experiment_name={name}", users["pipeline"]) == 403
    assert _status(f"{base}/users/create", users["pipeline"], "POST",
                   {"username": f"intruder{time.monotonic_ns()}", "password": "a-long-password-1"}) == 403

    # rotating its password (what `up` does with a new SLMOPS_MLFLOW_PASSWORD): the old one stops working
    from ops.stack import ensure_mlflow_user

    user, old_password = users["pipeline"]
    search = f"{base}/experiments/search?max_results=1"
    try:
        assert ensure_mlflow_user(stack.mlflow_url, users["admin"], (user, old_password + "-rotated")) == "updated"
        assert (_status(search, (user, old_password)), _status(search, (user, old_password + "-rotated"))) == (401, 200)
    finally:
        ensure_mlflow_user(stack.mlflow_url, users["admin"], (user, old_password))  # the workers hold this one


def test_an_event_for_a_folder_outside_the_allowed_roots_is_refused_before_any_work(stack, tiny_model,
                                                                                    monkeypatch):
    outside = Path(tempfile.mkdtemp(prefix="slmops-outside-"))  # below none of the roots the stack was given
    try:
        checkpoint = shutil.copytree(tiny_model, outside / "step-1")
        # a client with the stack's settings refuses it before sending anything
        monkeypatch.setenv(events.ALLOWED_ROOTS_VAR, stack.client_env()[events.ALLOWED_ROOTS_VAR])
        with pytest.raises(SlmopsError, match="is outside the folders checkpoints may come from"):
            publish(stack, checkpoint)
        monkeypatch.delenv(events.ALLOWED_ROOTS_VAR)
        # another publisher, which checked nothing: the worker refuses it
        started = now()
        publish(stack, checkpoint, check=False)
        run = wait_for_run(stack, TRIGGERED, started, checkpoint_path=str(checkpoint))
        assert run.state.is_failed()
        assert (f"{checkpoint} is outside the folders checkpoints may come from ({events.ALLOWED_ROOTS_VAR}="
                f"{stack.client_env()[events.ALLOWED_ROOTS_VAR]}): refused before any work") in run.state.message
        assert subflow_runs(stack, run.id) == [], "no sweep, no conversion started"
        assert not sweep_out(stack, checkpoint).exists()
    finally:
        shutil.rmtree(outside)


def test_no_secret_is_left_in_logs_stores_artifacts_or_flow_runs(stack, capsys):
    """After the sweeps of this module: every file of the stack and its work folder, both PostgreSQL stores as a
    dump, and what the Prefect and MLflow APIs give back hold none of the credentials (nor their Basic forms)."""
    import os

    from ops.stack import GENERATED_VARS, SECRET_VARS

    assert list(stack.work_dir.glob("sweeps/*/*/report.json")), "the module's sweeps ran through this stack"
    needles = {name: stack.secrets[name] for name in (*SECRET_VARS, *GENERATED_VARS)}
    needles["Basic form of the Prefect auth string"] = base64.b64encode(
        needles["SLMOPS_PREFECT_AUTH_STRING"].encode()).decode()
    for role, pair in _mlflow_users(stack).items():
        needles[f"Basic form of the MLflow {role}"] = base64.b64encode(":".join(pair).encode()).decode()

    def leaks(where: str, data: bytes) -> list[tuple[str, str]]:
        return [(where, name) for name, value in needles.items() if value.encode() in data]

    found, scanned = [], 0
    private = {stack.secrets_file, stack.client_file}  # the two 0600 files that are meant to hold them
    for root in (stack.dir, stack.work_dir, Path(stack.state["pgdata"])):
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink() and path not in private:
                found += leaks(str(path), path.read_bytes())
                scanned += 1
    dump = subprocess.run([str(Postgres.bin_dir() / "pg_dumpall"), "-h", "127.0.0.1", "-p",
                           str(stack.ports["postgres"]), "-U", "postgres"], capture_output=True, check=True,
                          env={**os.environ, "PGPASSWORD": stack.secrets["SLMOPS_POSTGRES_PASSWORD"]}).stdout
    assert b"slmops.sweep_id" in dump and b"sweep-checkpoint" in dump, "the dump holds the sweeps"
    found += leaks("pg_dumpall", dump)
    for host in ("127.0.0.1", stack.state["pgdata"]):  # over TCP and through its socket: a password or nothing
        denied = subprocess.run([str(Postgres.bin_dir() / "psql"), "-h", host, "-p", str(stack.ports["postgres"]),
                                 "-U", "postgres", "-d", "mlflow", "-tAc", "SELECT 1"], capture_output=True, text=True,
                                env={**os.environ, "PGPASSWORD": "not-the-password"})
        assert denied.returncode != 0 and "password authentication failed" in denied.stderr, (host, denied.stderr)

    with prefect_client(stack) as client:
        prefect_rows = [*client.read_flow_runs(limit=200), *client.read_artifacts(limit=200),
                        *client.read_logs(limit=200)]
    assert any(r.parameters for r in prefect_rows if hasattr(r, "parameters"))
    found += leaks("Prefect API: flow runs, artifacts, logs",
                   json.dumps([r.model_dump(mode="json") for r in prefect_rows]).encode())
    client = MlflowClient(stack.mlflow_url)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert runs
    found += leaks("MLflow API: run params and tags", json.dumps([[r.data.params, r.data.tags] for r in runs]).encode())
    assert scanned > 50 and not found, f"secrets found: {found}"

    assert (stack.dir.stat().st_mode & 0o777) == 0o700
    assert {p.stat().st_mode & 0o777 for p in private} == {0o600}
    assert main(["--dir", str(stack.dir), "env"]) == 0
    shown = capsys.readouterr().out
    assert not leaks("env", shown.encode()) and f". {stack.client_file}" in shown
    assert main(["--dir", str(stack.dir), "env", "--with-secrets"]) == 0
    shown = capsys.readouterr().out.encode()
    assert {name for _, name in leaks("env --with-secrets", shown)} == {"SLMOPS_PREFECT_AUTH_STRING",
                                                                         "SLMOPS_MLFLOW_PASSWORD"}
