"""Promotion end to end in MLflow: model versions by content, aliases and their history, decisions re-made from
MLflow alone, and the same against a real `mlflow server` on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.quantization_sweep import quantization_sweep
from slmops.adapters.tracking import Registry, Tracker
from slmops.config import parse_spec

from helpers import free_port, start_mlflow_server, stop_server, write_spec


def spec(model: Path, variants: list[dict], **promotion):
    return parse_spec({"model": {"path": str(model), "name": "promo"}, "variants": variants,
                       "promotion": promotion})


BASE = [{"name": "fp32", "precision": "fp32"}, {"name": "int4-b32", "precision": "int4", "block_size": 32},
        {"name": "int4-b128", "precision": "int4", "block_size": 128}]
SMALLER = {"name": "int4-b32-emb", "precision": "int4", "block_size": 32, "quantize_embeddings": True}


@pytest.fixture(scope="module")
def store(tiny_model, tmp_path_factory):
    work, out = tmp_path_factory.mktemp("promo-work"), tmp_path_factory.mktemp("promo-out")
    first = quantization_sweep(spec=spec(tiny_model, BASE), out_dir=str(out / "a"), work_dir=str(work))
    return work, out, first


def registry_of(report: dict) -> Registry:
    return Registry(Tracker(report["mlflow"]["tracking_uri"]))


def versions(report: dict) -> list[str]:
    return sorted(str(v.version) for v in registry_of(report).client.search_model_versions("name = 'promo'"))


def test_first_sweep_promotes_its_best_variant_and_sets_the_alias(store):
    _, out, report = store
    decision = report["decision"]
    assert decision["promoted"] and decision["aliases_moved"]
    assert decision["champion"]["name"] == decision["ranking"][0]
    champion = registry_of(report).by_alias("promo", "champion")
    assert champion.tags["slmops.variant"] == decision["champion"]["name"]
    assert champion.tags["foundry_model_id"] == f"promo-{decision['champion']['name']}:1"
    assert "slmops.promoted_at" in champion.tags and champion.tags["slmops.promotion_reason"] == decision["reason"]
    assert registry_of(report).by_alias("promo", "challenger").tags["slmops.variant"] == decision["ranking"][1]
    assert versions(report) == ["1", "2", "3"]
    md = (out / "a" / "report.md").read_text()
    assert "## Decision" in md and decision["reason"] in md


def test_running_again_creates_no_version_and_promotes_nothing_twice(store, tiny_model):
    work, out, first = store
    again = quantization_sweep(spec=spec(tiny_model, BASE), out_dir=str(out / "a"), work_dir=str(work))
    assert versions(again) == ["1", "2", "3"]
    assert not again["decision"]["promoted"]
    assert again["decision"]["reason"].endswith("is the best variant and already the champion.")
    assert str(registry_of(again).by_alias("promo", "champion").version) == first["decision"]["champion"]["model_version"]


def test_promote_from_mlflow_alone_makes_the_same_decision(store):
    work, _, report = store
    result = subprocess.run([sys.executable, "-m", "slmops.cli", "promote", "--sweep", report["sweep_id"],
                             "--dry-run", "--json", "--work-dir", str(work)], capture_output=True, text=True,
                            timeout=300, env=dict(os.environ))
    assert result.returncode == 0, result.stderr
    remade = json.loads(result.stdout[result.stdout.index("{"):result.stdout.rindex("}") + 1])
    for key in ("candidate", "runner_up", "ranking", "failures", "baseline"):
        assert remade[key] == report["decision"][key], key
    # the same numbers (the champion column differs: the first decision made the champion)
    assert [(r["metric"], r["baseline"], r["candidate"]) for r in remade["table"]] == [
        (r["metric"], r["baseline"], r["candidate"]) for r in report["decision"]["table"]]


def test_a_worse_sweep_does_not_replace_the_champion(store, tiny_model):
    work, out, first = store
    worse = quantization_sweep(spec=spec(tiny_model, [{"name": "fp32", "precision": "fp32"}]),
                               out_dir=str(out / "worse"), work_dir=str(work))
    assert not worse["decision"]["promoted"]
    assert "does not beat the champion" in worse["decision"]["reason"]
    assert str(registry_of(worse).by_alias("promo", "champion").version) == first["decision"]["champion"]["model_version"]


def test_a_better_challenger_replaces_the_champion_and_keeps_the_history(store, tiny_model):
    work, out, first = store
    better = quantization_sweep(spec=spec(tiny_model, [*BASE, SMALLER]), out_dir=str(out / "b"),
                                work_dir=str(work))
    decision = better["decision"]
    assert decision["promoted"] and decision["champion"]["name"] == "int4-b32-emb"
    assert "beats the champion" in decision["reason"]
    registry = registry_of(better)
    old = first["decision"]["champion"]["model_version"]
    assert str(registry.by_alias("promo", "previous-champion").version) == old
    assert registry.version("promo", old).tags["slmops.replaced_by"] == decision["champion"]["model_version"]
    assert registry.by_alias("promo", "champion").tags["slmops.replaced_version"] == old


def test_a_bad_policy_or_sweep_id_moves_no_alias(store, tmp_path):
    work, _, report = store
    before = registry_of(report).by_alias("promo", "champion").version
    policy = tmp_path / "policy.yaml"
    policy.write_text("constraints:\n  - {metric: accuracy, min: 0.9}\n")
    for args, message in (
        (["--sweep", report["sweep_id"], "--policy", str(policy)],
         f"error: {policy}: promotion.constraints[0].metric: unknown metric 'accuracy'; known: "),
        (["--sweep", "no-such-sweep"], "error: no sweep 'no-such-sweep' in MLflow at "),
    ):
        result = subprocess.run([sys.executable, "-m", "slmops.cli", "promote", *args, "--work-dir", str(work)],
                                capture_output=True, text=True, timeout=300, env=dict(os.environ))
        assert result.returncode == 2
        assert result.stderr.strip().startswith(message)
    assert registry_of(report).by_alias("promo", "champion").version == before


@pytest.fixture
def mlflow_server(tmp_path):
    proc, url = start_mlflow_server(tmp_path, free_port())
    yield url
    stop_server(proc)


def test_everything_works_against_a_real_tracking_server(mlflow_server, tiny_model, tmp_path):
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server, "SLMOPS_FOUNDRY_CACHE": str(tmp_path / "foundry")}
    spec_file = write_spec(tmp_path / "s.yaml", tiny_model, BASE[:2], name="served")
    cli = [sys.executable, "-m", "slmops.cli"]
    result = subprocess.run([*cli, "sweep", str(spec_file), "--out", str(tmp_path / "out"), "--work-dir",
                             str(tmp_path / "work")], capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["mlflow"]["tracking_uri"] == mlflow_server
    assert report["decision"]["promoted"]
    champion = subprocess.run([*cli, "champion", "served"], capture_output=True, text=True, timeout=120, env=env)
    assert champion.returncode == 0, champion.stderr
    assert champion.stdout.startswith(f"champion of served: {report['decision']['champion']['name']}")
    compare = subprocess.run([*cli, "compare", "--sweep", report["sweep_id"]], capture_output=True, text=True,
                             timeout=120, env=env)
    assert compare.returncode == 0 and "int4-b32" in compare.stdout
    # the champion's artifacts were uploaded through the server: the version's folder is downloadable
    tracker = Tracker(mlflow_server)
    version = Registry(tracker).by_alias("served", "champion")
    files = {a.path for a in tracker.client.list_artifacts(version.run_id, "model")}
    assert "model/genai_config.json" in files and "model/inference_model.json" in files


def test_a_tracking_server_that_is_down_is_a_clear_error_not_a_hang(tiny_model, tmp_path):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    spec_file = write_spec(tmp_path / "s.yaml", tiny_model, BASE[:1])
    result = subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec_file), "--out",
                             str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "MLFLOW_TRACKING_URI": url})
    assert result.returncode == 1
    assert result.stderr.strip().startswith(f"error: MLflow tracking server {url} is unreachable (")
    assert not (tmp_path / "out").exists()
