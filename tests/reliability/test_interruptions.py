"""Faults injected for real: a sweep killed with SIGKILL mid-conversion, and two sweeps of one model at once.

Nothing may be lost or duplicated: no half-written variant folder, no second MLflow run or model version for the
same variant, no dangling Foundry Local registration.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from helpers import wait_until_none, write_spec

VARIANTS = [{"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
            {"name": "int4-b32", "precision": "int4", "block_size": 32, "symmetric": False},
            {"name": "int4-b128", "precision": "int4", "block_size": 128}]


def sweep_cmd(spec: Path, out: Path, work: Path) -> list[str]:
    return [sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(out), "--work-dir", str(work)]


def env_for(tmp: Path) -> dict:
    return {**os.environ, "SLMOPS_FOUNDRY_CACHE": str(tmp / "foundry")}


def client(work: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{work / 'mlflow.db'}")


def runs_of(work: Path, sweep_id: str) -> list:
    c = client(work)
    exp = c.get_experiment_by_name("slmops-demo")
    return c.search_runs([exp.experiment_id], f"tags.`slmops.sweep_id` = '{sweep_id}' and "
                                               "tags.`slmops.kind` = 'variant'")


def test_a_sweep_killed_mid_conversion_resumes_without_loss_or_duplicates(demo_model, tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    spec = write_spec(tmp_path / "s.yaml", demo_model, VARIANTS, name="demo")
    # a PREFECT_HOME of its own: every process the sweep starts carries it, which is how the test finds them
    env = {**env_for(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect-home")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(sweep_cmd(spec, out, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    deadline = time.monotonic() + 300
    staging = []
    while time.monotonic() < deadline and proc.poll() is None:
        staging = list((out / "variants").glob(".staging-int4-b32-*")) if (out / "variants").is_dir() else []
        if staging:
            break
        time.sleep(0.02)
    assert staging, "the sweep never reached the conversion of int4-b32"
    os.kill(proc.pid, signal.SIGKILL)  # while int4-b32 converts
    proc.wait()
    assert wait_until_none("PREFECT_HOME", env["PREFECT_HOME"]) == [], "the killed sweep left a process running"
    assert not (out / "variants" / "int4-b32").exists(), "a half-written variant folder was published"
    interrupted = json.loads((out / ".slmops-sweep.json").read_text())

    result = subprocess.run(sweep_cmd(spec, out, work), capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert wait_until_none("PREFECT_HOME", env["PREFECT_HOME"]) == [], "the resumed sweep left a process running"
    report = json.loads((out / "report.json").read_text())
    statuses = {v["name"]: v["status"] for v in report["variants"]}
    assert statuses == {"fp32": "cached", "int8": "cached", "int4-b32": "succeeded", "int4-b128": "succeeded"}
    assert report["sweep_id"] == interrupted["sweep_id"], "the re-run must resume the interrupted sweep"
    assert not (out / ".slmops-sweep.json").exists()
    assert sorted(p.name for p in (out / "variants").iterdir()) == ["fp32", "int4-b128", "int4-b32", "int8"]
    assert not list((work / "exports").glob(".staging-*"))

    runs = runs_of(work, report["sweep_id"])
    assert sorted(r.data.tags["slmops.variant"] for r in runs) == sorted(statuses), "one MLflow run per variant"
    versions = client(work).search_model_versions("name = 'demo'")
    keys = [v.tags["slmops.content_key"] for v in versions]
    assert len(keys) == len(set(keys)) == 4, "one model version per content"

    listed = subprocess.run([sys.executable, "-m", "slmops.cli", "foundry", "list", "--json", "--work-dir",
                             str(work)], capture_output=True, text=True, timeout=120, env=env_for(tmp_path))
    rows = json.loads(listed.stdout)
    assert sorted(r["id"] for r in rows) == sorted(f"demo-{n}:1" for n in statuses), "no dangling registration"
    assert all(r["path_exists"] and r["in_catalog"] for r in rows)


def test_two_sweeps_of_one_model_at_once_both_complete_without_clobbering(tiny_model, tmp_path):
    work = tmp_path / "work"
    spec = write_spec(tmp_path / "s.yaml", tiny_model, VARIANTS, name="demo")
    outs = [tmp_path / "out-a", tmp_path / "out-b", tmp_path / "out-a"]  # two folders, and one of them twice
    logs = [tmp_path / f"sweep-{i}.log" for i in range(len(outs))]
    # output in files and a session per sweep: a temporary Prefect server left behind by a sweep (seen when several
    # start at once on two cores) would hold pipes open; the group is stopped once the sweep has exited
    procs = []
    for out, log in zip(outs, logs):
        with log.open("w") as sink:
            procs.append(subprocess.Popen(sweep_cmd(spec, out, work), stdout=sink, stderr=subprocess.STDOUT,
                                          env=env_for(tmp_path), start_new_session=True))
    try:
        for proc, log in zip(procs, logs):
            assert proc.wait(timeout=600) == 0, log.read_text()[-3000:]
    finally:
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
    reports = [json.loads((out / "report.json").read_text()) for out in outs[:2]]
    for report in reports:
        assert {v["status"] for v in report["variants"]} <= {"succeeded", "cached"}
        for v in report["variants"]:
            assert (Path(v["onnx_dir"]) / "model.onnx").is_file()
    # one output folder, one writer at a time: the second sweep into out-a waited, then reused what the first built
    # (its report is the one left in out-a)
    waited = [i for i in (0, 2) if "waiting: another sweep is writing" in logs[i].read_text()]
    assert len(waited) == 1, "exactly one of the two sweeps into out-a waits for the other"
    assert {v["status"] for v in reports[0]["variants"]} == {"cached"}, "the waiting sweep rebuilt variants"
    # one fp32 export, built once: by whichever of the sweeps got there first, the others reused it
    built_export = [out.name for out in outs[:2] if (out / "logs" / "fp32-export.olive.log").exists()]
    assert len(built_export) == 1, f"the fp32 export was built by the sweeps into {built_export}, not once"
    assert [v["content_key"] for v in reports[0]["variants"]] == [v["content_key"] for v in reports[1]["variants"]]
    versions = client(work).search_model_versions("name = 'demo'")
    keys = [v.tags["slmops.content_key"] for v in versions]
    assert len(keys) == len(set(keys)) == 4, "one model version per content, whoever registered it"
    champion = client(work).get_model_version_by_alias("demo", "champion")
    assert champion.tags["slmops.content_key"] in keys
    for out in outs[:2]:
        assert not list((out / "variants").glob(".staging-*"))


RACE = """
import json, sys, time
from pathlib import Path
from slmops.adapters.tracking import Tracker
from slmops.variant import VariantResult
from tasks.promote import register_versions
uri, run_id, folder, lock_dir, ready, go = sys.argv[1:7]
Tracker(uri)  # the store opened (one client per process) before the start, so that all three start together
Path(ready).touch()
while not Path(go).exists():
    time.sleep(0.005)
variant = VariantResult(name="v", status="succeeded", content_key="same-content", size_bytes=1,
                        config={"name": "v", "precision": "fp32", "method": "builder"}, mlflow_run_id=run_id,
                        onnx_dir=folder)
(registered,) = register_versions.fn(uri, "race", "sweep", [variant], "copy", lock_dir)
print(json.dumps({"v": registered.model_version}))
"""


def test_sweeps_registering_one_content_at_the_same_moment_make_one_model_version(tmp_path):
    """The registry lock, at the moment two sweeps meet there (the sweep test above rarely gets them that close)."""
    work = tmp_path / "work"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    from slmops.adapters.tracking import Tracker

    tracker = Tracker(uri, tmp_path / "artifacts")  # artifacts in tmp_path, not ./mlruns
    experiment = tracker.experiment_id("race")
    folder = tmp_path / "variant"
    folder.mkdir()
    # big enough that copying it into the run's artifacts (between the look-up and the create) takes a while
    (folder / "model.onnx").write_bytes(b"x" * 100_000_000)
    go = tmp_path / "go"
    procs, readies = [], []
    for i in range(3):
        run_id = tracker.client.create_run(experiment).info.run_id
        readies.append(tmp_path / f"ready-{i}")
        procs.append(subprocess.Popen([sys.executable, "-c", RACE, uri, run_id, str(folder), str(work),
                                       str(readies[-1]), str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env_for(tmp_path)))
    deadline = time.monotonic() + 120
    while not all(r.exists() for r in readies) and time.monotonic() < deadline:
        time.sleep(0.05)
    go.touch()  # all three register at once
    results = [p.communicate(timeout=120) for p in procs]
    for proc, (_, err) in zip(procs, results):
        assert proc.returncode == 0, err[-3000:]
    assert {out.strip().splitlines()[-1] for out, _ in results} == {'{"v": "1"}'}, [r[0] for r in results]
    assert len(client(work).search_model_versions("name = 'race'")) == 1
    shutil.rmtree(tmp_path / "artifacts")  # copies of a 100 MB file: not worth keeping among pytest's last runs
