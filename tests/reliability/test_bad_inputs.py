"""Broken and unsafe inputs: each refused with a message naming the file, before any work; damaged variant folders
are rebuilt rather than reused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_spec


def sweep(spec: Path, out: Path, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "slmops.cli", "sweep", str(spec), "--out", str(out), "--work-dir",
                           str(work)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "SLMOPS_FOUNDRY_CACHE": str(work / "foundry")})


@pytest.fixture
def model(tiny_model, tmp_path) -> Path:
    return shutil.copytree(tiny_model, tmp_path / "model")


def refused(model: Path, tmp_path: Path) -> str:
    spec = write_spec(tmp_path / "s.yaml", model, [{"name": "fp32", "precision": "fp32"}])
    result = sweep(spec, tmp_path / "out", tmp_path / "work")
    assert result.returncode == 2, result.stderr[-2000:]
    assert not (tmp_path / "out").exists()
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_truncated_safetensors_is_refused_naming_the_file(model, tmp_path):
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size - 1000)
    assert refused(model, tmp_path).startswith(f"error: {weights}: truncated safetensors file: its header needs ")


def test_a_tokenizer_of_another_model_is_refused(model, tmp_path):
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] = 100
    (model / "config.json").write_text(json.dumps(config))
    assert refused(model, tmp_path).startswith(
        f"error: {model / 'tokenizer.json'}: token ids go up to ")


def test_a_symlink_out_of_the_model_folder_is_refused(model, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("not yours")
    (model / "notes.txt").symlink_to(outside)
    assert refused(model, tmp_path) == (f"error: {model / 'notes.txt'}: a symlink to {outside}, outside the model "
                                        "folder; copy the file into the folder (links out of it are refused)")


def test_a_sweep_bigger_than_the_free_disk_is_refused_before_any_work(model, tmp_path):
    # a sparse weights file whose header promises 2 TB: the estimate, not the disk, is what gets big
    weights = model / "model.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [5 * 10**11], "data_offsets": [0, 2 * 10**12]}}).encode()
    with weights.open("wb") as f:
        f.write(len(header).to_bytes(8, "little") + header)
    os.truncate(weights, 8 + len(header) + 2 * 10**12)
    message = refused(model, tmp_path)
    assert message.startswith("error: not enough disk for this sweep: it needs about 6000.00 GB in ")


def test_variant_names_cannot_leave_the_output_folder(model, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", model, [{"name": "../escape", "precision": "fp32"}])
    result = sweep(spec, tmp_path / "out", tmp_path / "work")
    assert result.returncode == 2 and "variant name '../escape' cannot be a Foundry Local id" in result.stderr
    assert not (tmp_path / "escape").exists() and not (tmp_path / "out").exists()


def test_damaged_variant_files_are_rebuilt_not_reused(model, tmp_path):
    spec = write_spec(tmp_path / "s.yaml", model, [{"name": "fp32", "precision": "fp32"}])
    out, work = tmp_path / "out", tmp_path / "work"
    assert sweep(spec, out, work).returncode == 0
    data = out / "variants" / "fp32" / "model.onnx.data"
    os.truncate(data, data.stat().st_size // 2)
    result = sweep(spec, out, work)
    assert result.returncode == 0, result.stderr[-2000:]
    (variant,) = json.loads((out / "report.json").read_text())["variants"]
    assert variant["status"] == "succeeded"  # rebuilt, not "cached"
    manifest = json.loads((out / "variants" / "fp32" / "slmops_variant.json").read_text())
    assert data.stat().st_size == manifest["files"]["model.onnx.data"]
    assert "trust_remote_code" not in json.dumps(manifest["olive_config"]), "never on unless the spec asks"


def test_a_corrupt_genai_config_is_a_clear_registration_error(tiny_model, tmp_path):
    from slmops.adapters.foundry import FoundryLocal
    from slmops.convert import convert
    from slmops.errors import VariantError
    from slmops.workspace import Workspace, default_work_dir

    folder = tmp_path / "export"
    convert(tiny_model, folder, "k", False, tmp_path / "logs")
    (folder / "genai_config.json").write_text("{ not json")
    foundry = FoundryLocal(Workspace(default_work_dir(), default_work_dir()).foundry_cache)
    with pytest.raises(VariantError, match=rf"{folder / 'genai_config.json'} is unreadable"):
        foundry.register(folder, "corrupt", "hash", {})


def test_a_missing_genai_config_is_a_clear_registration_error(tiny_model, tmp_path):
    from slmops.adapters.foundry import FoundryLocal
    from slmops.convert import convert
    from slmops.errors import VariantError
    from slmops.workspace import Workspace, default_work_dir

    folder = tmp_path / "export"
    convert(tiny_model, folder, "k", False, tmp_path / "logs")
    (folder / "genai_config.json").unlink()
    foundry = FoundryLocal(Workspace(default_work_dir(), default_work_dir()).foundry_cache)
    with pytest.raises(VariantError, match=rf"^{folder} has no genai_config.json: not an onnxruntime-genai model"):
        foundry.register(folder, "missing", "hash", {})
