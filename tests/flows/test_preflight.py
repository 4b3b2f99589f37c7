"""Every flow checks its input before it writes anything (a deployment's run has no CLI in front of it)."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from flows.quantization_sweep import quantization_sweep
from slmops.config import parse_spec
from slmops.errors import InputError


def spec_for(model, **extra):
    return parse_spec({"model": {"path": str(model), "name": "tiny"},
                       "variants": [{"name": "fp32", "precision": "fp32"}], **extra})


def test_a_bad_eval_set_is_refused_before_the_resume_marker_is_written(tiny_model, tmp_path):
    out = tmp_path / "out"
    spec = spec_for(tiny_model, evaluation={"dataset": str(tmp_path / "missing.jsonl")})
    with pytest.raises(InputError, match=r"evaluation.dataset .*missing.jsonl: no such file"):
        quantization_sweep(spec=spec, out_dir=str(out), work_dir=str(tmp_path / "work"))
    assert not out.exists(), "nothing written, so no sweep to resume"

    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a", "reference": "b"}\nnot json\n')
    with pytest.raises(InputError, match=rf"{broken}:2: not valid JSON"):
        quantization_sweep(spec=spec_for(tiny_model, evaluation={"dataset": str(broken)}), out_dir=str(out),
                           work_dir=str(tmp_path / "work"))
    assert not out.exists()


def test_a_sweep_bigger_than_the_free_disk_is_refused_by_the_flow_too(tiny_model, tmp_path):
    model = shutil.copytree(tiny_model, tmp_path / "model")
    weights = model / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [5 * 10**11], "data_offsets": [0, 2 * 10**12]}}).encode()
    with weights.open("wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
    os.truncate(weights, 8 + len(header) + 2 * 10**12)  # sparse: the estimate, not the disk, is what gets big
    out = tmp_path / "out"
    with pytest.raises(InputError, match="^not enough disk for this sweep: it needs about 6000.00 GB in "):
        quantization_sweep(spec=spec_for(model), out_dir=str(out), work_dir=str(tmp_path / "work"))
    assert not out.exists() and not (tmp_path / "work").exists()


def test_a_served_context_longer_than_the_models_is_refused_before_anything_is_written(tiny_model, tmp_path):
    out = tmp_path / "out"
    own = json.loads((tiny_model / "config.json").read_text())["max_position_embeddings"]
    spec = spec_for(tiny_model, foundry={"model_config_overrides": {"max_length": own * 2}})
    with pytest.raises(InputError) as raised:
        quantization_sweep(spec=spec, out_dir=str(out), work_dir=str(tmp_path / "work"))
    assert str(raised.value) == (
        f"foundry.model_config_overrides.max_length is {own * 2}, longer than the model's own context of {own} "
        f"tokens (max_position_embeddings in {tiny_model / 'config.json'}); allowed: 1 to {own}, or unset")
    assert not out.exists() and not (tmp_path / "work").exists()
