"""The flows the deployments run, checked before any sweep starts: which checkpoint, which spec, which error; a
checkpoint is input from outside (docs/security.md): only from SLMOPS_ALLOWED_MODEL_ROOTS, symlinks and .. resolved,
never with the folder's own code, pickle weights only when the spec allows them, the spec read with a safe loader.

    .venv/bin/python -m pytest tests/stack/test_triggered.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from flows.triggered import latest_checkpoint, spec_for_checkpoint
from slmops.checkpoints import ALLOWED_ROOTS_VAR
from slmops.errors import InputError, SpecError
from stack_helpers import write_sweep_spec


@pytest.fixture(autouse=True)
def allowed_roots(monkeypatch, tmp_path, tiny_model) -> str:
    """The workers' setting: checkpoints from this test's folder and the tiny model's."""
    roots = f"{tmp_path}:{tiny_model.parent}"
    monkeypatch.setenv(ALLOWED_ROOTS_VAR, roots)
    return roots


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


def test_a_checkpoint_outside_the_allowed_roots_is_refused_even_through_a_symlink_or_dotdot(tiny_model, tmp_path,
                                                                                          tmp_path_factory,
                                                                                          monkeypatch):
    spec_file = write_sweep_spec(tmp_path / "spec.yaml", tiny_model)
    monkeypatch.setenv(ALLOWED_ROOTS_VAR, str(tmp_path / "ckpts"))
    outside = shutil.copytree(tiny_model, tmp_path_factory.mktemp("outside") / "step-1")
    (tmp_path / "ckpts").mkdir()
    link = tmp_path / "ckpts" / "step-1"
    link.symlink_to(outside, target_is_directory=True)
    for path, shown in ((outside, str(outside)), (link, f"{link} (resolves to {outside})"),
                        (tmp_path / "ckpts" / ".." / ".." / outside.parent.name / "step-1", None)):
        with pytest.raises(InputError, match="is outside the folders checkpoints may come from") as err:
            spec_for_checkpoint(spec_file, path)
        assert shown is None or str(err.value).startswith(f"{shown} is outside"), err.value
        assert f"({ALLOWED_ROOTS_VAR}={tmp_path / 'ckpts'}): refused before any work" in str(err.value)
    with pytest.raises(InputError, match="is outside the folders"):
        latest_checkpoint(outside.parent)
    inside = shutil.copytree(tiny_model, tmp_path / "ckpts" / "step-2")
    assert spec_for_checkpoint(spec_file, inside).model.path == inside
    assert latest_checkpoint(tmp_path / "ckpts") == inside, "the symlink out of the root is passed over"


def test_no_checkpoint_is_taken_where_the_allowed_roots_are_not_set(tiny_model, tmp_path, monkeypatch):
    spec_file = write_sweep_spec(tmp_path / "spec.yaml", tiny_model)
    monkeypatch.delenv(ALLOWED_ROOTS_VAR)
    with pytest.raises(InputError, match=f"^{ALLOWED_ROOTS_VAR} is not set where this runs"):
        spec_for_checkpoint(spec_file, tiny_model)


def test_a_published_checkpoint_is_never_swept_with_its_own_code(tiny_model, tmp_path):
    spec_file = write_sweep_spec(tmp_path / "spec.yaml", tiny_model, model_extra={"trust_remote_code": True})
    with pytest.raises(InputError, match="the spec sets model.trust_remote_code"):
        spec_for_checkpoint(spec_file, tiny_model)


def test_pickle_weights_are_refused_unless_the_spec_allows_them(tiny_model, tmp_path):
    checkpoint = shutil.copytree(tiny_model, tmp_path / "step-1")
    for weights in checkpoint.glob("*.safetensors"):
        weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(InputError, match=r"weights are pickle files \(model.bin\), which can run code"):
        spec_for_checkpoint(write_sweep_spec(tmp_path / "spec.yaml", tiny_model), checkpoint)
    allowing = write_sweep_spec(tmp_path / "allowing.yaml", tiny_model, model_extra={"allow_pickle_weights": True})
    assert spec_for_checkpoint(allowing, checkpoint).model.path == checkpoint


def test_a_spec_is_read_with_a_safe_loader(tiny_model, tmp_path):
    marker = tmp_path / "ran"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        spec_for_checkpoint(evil, tiny_model)
    assert not marker.exists()
