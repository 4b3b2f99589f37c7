"""LoRA adapters as most single-machine fine-tunes are: a PEFT folder beside its base. Base plus adapter swept end
to end (merged once per content of both, each variant smoke-tested in Foundry Local and evaluated): the merged model
answers the adapter's task, the base alone does not. Every bad input: one line, exit 2, before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slmops.lora import ADAPTER_CONFIG


@pytest.fixture(scope="module")
def demo_lora(demo_model, tmp_path_factory) -> Path:
    """The demo trainer's adapter (`slmops make-demo-model BASE --lora DIR`): prices in cents."""
    lora = tmp_path_factory.mktemp("lora") / "demo-lora"
    made = subprocess.run([sys.executable, "-m", "slmops.cli", "make-demo-model", str(demo_model), "--lora",
                           str(lora)], capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stderr[-3000:]
    assert f"LoRA adapter of {demo_model} written to {lora}" in made.stdout
    return lora


def sweep(spec: Path, out: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(out), "--work-dir",
                           str(work)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "SLMOPS_FOUNDRY_CACHE": str(work / "foundry")})


def write(path: Path, model: dict, variants: list[dict] | None = None, **extra) -> Path:
    path.write_text(yaml.safe_dump({"model": {"name": "cents", **model},
                                    "variants": variants or [{"name": "fp32", "precision": "fp32"}], **extra}))
    return path


EVALUATION = {"profile": "quick", "fidelity": True, "max_eval_items": 16}


def test_base_plus_adapter_is_merged_and_swept_and_answers_the_adapters_task(demo_model, demo_lora, tmp_path):
    from slmops.adapters.tracking import Tracker

    variants = [{"name": "fp32", "precision": "fp32"}, {"name": "int4", "precision": "int4", "block_size": 32}]
    spec = write(tmp_path / "s.yaml", {"path": str(demo_model), "adapter": str(demo_lora)}, variants,
                 evaluation=EVALUATION)
    out = tmp_path / "out"
    result = sweep(spec, out, tmp_path / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for v in report["variants"]:
        assert v["status"] == "succeeded" and v["smoke_test"]["passed"], (v["name"], v["error"])
        # the adapter's own eval set (prices in cents): the merged model answers it
        assert v["metrics"]["exact_match"] >= 0.9, (v["name"], v["metrics"]["exact_match"])
        assert "kl_div_mean" in v["metrics"] and v["metrics"]["decode_tokens_per_s"] > 0
    merged = report["source_model"]["merged_from"]
    assert merged["base"] == str(demo_model) and merged["adapter"] == str(demo_lora)
    assert merged["adapter_config"] == {"r": 8, "lora_alpha": 16, "target_modules": [
        "down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]}
    assert len(merged["base_sha256"]) == len(merged["adapter_sha256"]) == 64
    assert "Merged from the LoRA adapter" in (out / "report.md").read_text()
    parent = Tracker(report["mlflow"]["tracking_uri"]).run(report["mlflow"]["parent_run_id"])
    assert parent.data.params["adapter.r"] == "8" and parent.data.params["model.adapter"] == str(demo_lora)
    assert parent.data.tags["slmops.adapter_sha256"] == merged["adapter_sha256"]

    # merged once per content of both: the second sweep reuses the merged folder (and so every variant)
    merged_dirs = list((tmp_path / "work" / "merged").iterdir())
    stamp = [p.stat().st_mtime_ns for p in merged_dirs]
    again = sweep(spec, tmp_path / "out2", tmp_path / "work")
    assert again.returncode == 0, again.stderr[-3000:]
    assert list((tmp_path / "work" / "merged").iterdir()) == merged_dirs
    assert [p.stat().st_mtime_ns for p in merged_dirs] == stamp


def test_the_base_alone_does_not_answer_the_adapters_task(demo_model, demo_lora, tmp_path):
    spec = write(tmp_path / "s.yaml", {"path": str(demo_model)},
                 evaluation={**EVALUATION, "fidelity": False, "dataset": str(demo_lora / "eval.jsonl")})
    result = sweep(spec, tmp_path / "out", tmp_path / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    [fp32] = json.loads((tmp_path / "out" / "report.json").read_text())["variants"]
    assert fp32["metrics"]["exact_match"] <= 0.1, fp32["metrics"]["exact_match"]


def test_a_peft_folder_naming_a_local_base_is_taken_as_base_plus_adapter(demo_model, demo_lora, tmp_path):
    from slmops.config import load_spec
    from slmops.preflight import preflight
    from slmops.workspace import Workspace

    checked = preflight(load_spec(write(tmp_path / "s.yaml", {"path": str(demo_lora)})),
                        Workspace.of(tmp_path / "out", tmp_path / "work"))
    assert (checked.base, checked.adapter) == (demo_model.resolve(), demo_lora)
    assert checked.dataset == (demo_lora / "eval.jsonl").resolve()


def refused(spec: Path, tmp_path: Path) -> str:
    result = sweep(spec, tmp_path / "out", tmp_path / "work")
    assert result.returncode == 2, result.stderr[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "merged").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def lora_copy(demo_lora, tmp_path) -> Path:
    return shutil.copytree(demo_lora, tmp_path / "lora")


def edit_config(lora: Path, **changes) -> None:
    config = json.loads((lora / ADAPTER_CONFIG).read_text())
    (lora / ADAPTER_CONFIG).write_text(json.dumps({**config, **changes}))


def test_a_base_that_would_need_a_download_is_refused(lora_copy, tmp_path):
    edit_config(lora_copy, base_model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct")
    assert refused(write(tmp_path / "s.yaml", {"path": str(lora_copy)}), tmp_path) == (
        f"error: {lora_copy}: its base model 'Qwen/Qwen2.5-0.5B-Instruct' is not a local folder, and slmops "
        f"downloads nothing; put the base on disk and name it: model: {{path: BASE, adapter: {lora_copy}}}")


def test_an_adapter_of_another_model_is_refused_naming_the_modules(tiny_model, demo_lora, tmp_path):
    # the tiny model has 2 layers of width 64; the adapter was trained on the demo model's 4 of width 192
    line = refused(write(tmp_path / "s.yaml", {"path": str(tiny_model), "adapter": str(demo_lora)}), tmp_path)
    assert line.startswith(f"error: {demo_lora}: its LoRA modules are not in the base {tiny_model} "
                           "(Qwen2ForCausalLM): model.layers.2.")
    assert line.endswith("more; the adapter was trained on another model")


def test_target_modules_the_base_lacks_are_refused_naming_them(demo_model, lora_copy, tmp_path):
    edit_config(lora_copy, target_modules=["q_proj", "c_attn", "query_key_value"])
    line = refused(write(tmp_path / "s.yaml", {"path": str(demo_model), "adapter": str(lora_copy)}), tmp_path)
    assert line.startswith(f"error: {lora_copy / ADAPTER_CONFIG}: target modules not in the base {demo_model} "
                           "(Qwen2ForCausalLM): c_attn, query_key_value; the base has ")


def test_an_adapter_without_safetensors_weights_is_refused(demo_model, lora_copy, tmp_path):
    (lora_copy / "adapter_model.safetensors").rename(lora_copy / "adapter_model.bin")
    assert refused(write(tmp_path / "s.yaml", {"path": str(demo_model), "adapter": str(lora_copy)}), tmp_path) == (
        f"error: {lora_copy}: no adapter_model.safetensors (adapter_model.bin is a pickle, which can run code when "
        "loaded: save it as safetensors)")


def test_an_adapter_whose_shapes_differ_from_the_base_is_refused_naming_both(demo_model, lora_copy, tmp_path):
    from safetensors.torch import load_file, save_file

    weights = lora_copy / "adapter_model.safetensors"
    tensors = load_file(weights)
    name = "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"
    rank, in_features = tensors[name].shape
    tensors[name] = tensors[name].new_zeros((rank, in_features + 1))  # as if trained on a wider MLP
    save_file(tensors, weights)
    assert refused(write(tmp_path / "s.yaml", {"path": str(demo_model), "adapter": str(lora_copy)}), tmp_path) == (
        f"error: {lora_copy}: model.layers.0.mlp.down_proj is 192x{in_features} in the base {demo_model} "
        f"(Qwen2ForCausalLM), but the adapter's LoRA expects 192x{in_features + 1}: it was trained on another "
        "architecture")
