"""The flows the deployments run, checked before any sweep starts: which checkpoint, which spec, which error.

    .venv/bin/python -m pytest tests/stack/test_triggered.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flows.triggered import latest_checkpoint, spec_for_checkpoint
from slmops.errors import InputError, SpecError
from stack_helpers import write_sweep_spec


def _age(folder: Path, seconds_ago: int) -> None:
    stamp = os.stat(folder).st_mtime - seconds_ago
    os.utime(folder, (stamp, stamp))


def test_latest_checkpoint_is_the_newest_complete_folder(tiny_model, tmp_path):
    old = shutil.copytree(tiny_model, tmp_path / "step-100")
    new = shutil.copytree(tiny_model, tmp_path / "step-200")
    half = tmp_path / "step-300"  # newest, but its copy has only begun
    half.mkdir()
    (half / "config.json").write_text((tiny_model / "config.json").read_text())
    _age(old, 300)
    _age(new, 200)
    assert latest_checkpoint(tmp_path) == new


def test_latest_checkpoint_says_why_when_no_folder_is_complete(tmp_path):
    (tmp_path / "step-1").mkdir()
    with pytest.raises(InputError, match=r"no subfolder is a complete model folder; the newest one: .*step-1: no "
                                         r"config.json"):
        latest_checkpoint(tmp_path)
    with pytest.raises(InputError, match="checkpoint folder not found"):
        latest_checkpoint(tmp_path / "missing")


def test_the_checkpoint_replaces_the_spec_model_path(tiny_model, tmp_path):
    spec_file = write_sweep_spec(tmp_path / "spec.yaml", tmp_path / "elsewhere")
    spec = spec_for_checkpoint(spec_file, tiny_model)
    assert spec.model.path == tiny_model
    assert spec.model.name == "tiny"


def test_a_checkpoint_that_is_not_a_model_is_refused_with_the_reason(tmp_path):
    spec_file = write_sweep_spec(tmp_path / "spec.yaml", tmp_path)
    with pytest.raises(InputError, match=r"model folder not found: .*/nowhere"):
        spec_for_checkpoint(spec_file, tmp_path / "nowhere")
    with pytest.raises(SpecError, match="cannot read the spec"):
        spec_for_checkpoint(tmp_path / "no-spec.yaml", tmp_path)
