"""Faults injected for real: a sweep killed with SIGKILL mid-conversion, and two sweeps of one model at once.

Nothing may be lost or duplicated: no half-written variant folder, no second MLflow run or model version for the
same variant, no dangling Foundry Local registration.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from helpers import write_spec

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
    proc = subprocess.Popen(sweep_cmd(spec, out, work), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env_for(tmp_path))
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
    assert not (out / "variants" / "int4-b32").exists(), "a half-written variant folder was published"
    interrupted = json.loads((out / ".slmops-sweep.json").read_text())

    result = subprocess.run(sweep_cmd(spec, out, work), capture_output=True, text=True, timeout=600,
                            env=env_for(tmp_path))
    assert result.returncode == 0, result.stderr[-3000:]
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
    procs = [subprocess.Popen(sweep_cmd(spec, out, work), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env_for(tmp_path)) for out in outs]
    results = [(p, *p.communicate(timeout=600)) for p in procs]
    for proc, _, err in results:
        assert proc.returncode == 0, err[-3000:]
    reports = [json.loads((out / "report.json").read_text()) for out in outs[:2]]
    for report in reports:
        assert {v["status"] for v in report["variants"]} <= {"succeeded", "cached"}
        for v in report["variants"]:
            assert (Path(v["onnx_dir"]) / "model.onnx").is_file()
    assert [v["content_key"] for v in reports[0]["variants"]] == [v["content_key"] for v in reports[1]["variants"]]
    versions = client(work).search_model_versions("name = 'demo'")
    keys = [v.tags["slmops.content_key"] for v in versions]
    assert len(keys) == len(set(keys)) == 4, "one model version per content, whoever registered it"
    champion = client(work).get_model_version_by_alias("demo", "champion")
    assert champion.tags["slmops.content_key"] in keys
    for out in outs[:2]:
        assert not list((out / "variants").glob(".staging-*"))
