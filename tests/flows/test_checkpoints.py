"""Checkpoints as people have them: bf16 weights in shards with their index. Swept end to end (each variant built,
smoke-tested in Foundry Local and evaluated, fidelity measured against the fp32 export of the bf16 source), and a
shard that disagrees with its index refused with one line before any work."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from slmops.source import SHARD_INDEX


@pytest.fixture(scope="module")
def bf16_sharded(demo_model, tmp_path_factory) -> Path:
    """The demo model saved as a released checkpoint is: bfloat16, in shards of at most 2 MB (the demo trainer's
    own save: slmops.demo.model.save_weights)."""
    from transformers import AutoModelForCausalLM

    from slmops.demo.model import save_weights

    target = tmp_path_factory.mktemp("checkpoints") / "demo-bf16"
    shutil.copytree(demo_model, target, ignore=shutil.ignore_patterns("*.safetensors"))
    save_weights(AutoModelForCausalLM.from_pretrained(demo_model), target, "bfloat16", "2MB")
    return target


def sweep(spec: Path, out: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(out), "--work-dir",
                           str(work)], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "SLMOPS_FOUNDRY_CACHE": str(work / "foundry")})


def spec_for(path: Path, model: Path, variants: list[dict], **extra) -> Path:
    path.write_text(yaml.safe_dump({"model": {"path": str(model), "name": "bf16shop"}, "variants": variants,
                                    **extra}))
    return path


def test_the_demo_trainer_saves_bf16_shards_with_their_index(bf16_sharded):
    config = json.loads((bf16_sharded / "config.json").read_text())
    assert config["dtype"] == "bfloat16"
    shards = sorted(p.name for p in bf16_sharded.glob("*.safetensors"))
    index = json.loads((bf16_sharded / SHARD_INDEX).read_text())
    assert len(shards) >= 2 and sorted(set(index["weight_map"].values())) == shards


def test_a_bf16_sharded_checkpoint_is_swept_end_to_end(bf16_sharded, demo_model, tmp_path):
    import numpy as np
    import onnx
    from onnx import numpy_helper
    from safetensors import safe_open

    variants = [{"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
                {"name": "int4", "precision": "int4", "block_size": 32}]
    spec = spec_for(tmp_path / "s.yaml", bf16_sharded, variants,
                    evaluation={"profile": "quick", "fidelity": True, "max_eval_items": 8})
    out = tmp_path / "out"
    result = sweep(spec, out, tmp_path / "work")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    for v in report["variants"]:
        assert v["status"] == "succeeded", (v["name"], v["error"])
        assert v["smoke_test"]["passed"], v["smoke_test"]
        assert v["metrics"]["decode_tokens_per_s"] > 0 and "kl_div_mean" in v["metrics"], v["metrics"]
    assert report["variants"][0]["metrics"]["kl_div_mean"] == 0  # the baseline itself
    weights = report["source_model"]["weights"]
    assert weights["dtype"] == "bfloat16" and weights["files"] >= 2
    assert ("bfloat16 weights" in (out / "report.md").read_text() and
            "Fidelity is measured against the fp32 export of this bfloat16 source" in (out / "report.md").read_text())

    # the fp32 export holds the bf16 weights widened exactly: the baseline is the source, not a rounding of it
    export = onnx.load(Path(report["variants"][0]["onnx_dir"]) / "model.onnx")
    embedding = next(numpy_helper.to_array(t) for t in export.graph.initializer if "embed_tokens" in t.name)
    index = json.loads((bf16_sharded / SHARD_INDEX).read_text())["weight_map"]
    with safe_open(bf16_sharded / index["model.embed_tokens.weight"], "pt") as f:
        source = f.get_tensor("model.embed_tokens.weight").float().numpy()
    assert embedding.dtype == np.float32 and np.array_equal(embedding, source)


@pytest.fixture
def sharded_copy(bf16_sharded, tmp_path) -> Path:
    return shutil.copytree(bf16_sharded, tmp_path / "ckpt")


def refused(model: Path, tmp_path: Path) -> str:
    result = sweep(spec_for(tmp_path / "s.yaml", model, [{"name": "fp32", "precision": "fp32"}]),
                   tmp_path / "out", tmp_path / "work")
    assert result.returncode == 2, result.stderr[-2000:]
    assert not (tmp_path / "out").exists() and not (tmp_path / "work" / "exports").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_an_index_naming_a_missing_shard_is_refused(sharded_copy, tmp_path):
    shard = sorted(sharded_copy.glob("*.safetensors"))[-1]
    shard.unlink()
    assert refused(sharded_copy, tmp_path) == (f"error: {sharded_copy / SHARD_INDEX} names shard(s) missing from the "
                                               f"folder: {shard.name}")


def test_a_shard_missing_from_the_index_is_refused(sharded_copy, tmp_path):
    index_path = sharded_copy / SHARD_INDEX
    index = json.loads(index_path.read_text())
    last = sorted(set(index["weight_map"].values()))[-1]
    index["weight_map"] = {k: v for k, v in index["weight_map"].items() if v != last}
    index_path.write_text(json.dumps(index))
    assert refused(sharded_copy, tmp_path) == (f"error: {sharded_copy}: shard(s) missing from {SHARD_INDEX}: {last} "
                                               "(the index does not belong to these weights)")


def test_shards_without_their_index_are_refused(sharded_copy, tmp_path):
    (sharded_copy / SHARD_INDEX).unlink()
    names = ", ".join(sorted(p.name for p in sharded_copy.glob("*.safetensors")))
    assert refused(sharded_copy, tmp_path) == (
        f"error: {sharded_copy}: {len(names.split(', '))} safetensors files ({names}) and no {SHARD_INDEX}: sharded "
        "weights need the index their checkpoint was saved with")
