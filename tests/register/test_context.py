"""The context and threads Foundry Local serves with: ``foundry.model_config_overrides.max_length`` and
``foundry.intra_op_threads`` reach genai_config.json, the only place Foundry Local 2.2.1 reads them (it sizes each
request's KV cache for ``model.context_length``), and taking them away gives back the folder as built.

    .venv/bin/python -m pytest tests/register/test_context.py -q
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from slmops import staging
from slmops.adapters.foundry import FoundryLocal
from slmops.adapters.genai import intra_op_threads
from slmops.config import FoundrySpec
from slmops.errors import InputError, VariantError
from slmops.register import register, serving_threads

# about 200 tokens with the tiny tokenizer: over a 64-token context, well under the built one (512)
LONG_PROMPT = "Please read this sentence carefully. " * 4


def published(family_dir: Path, tmp_path: Path) -> Path:
    """A copy of the folder published as a sweep publishes a variant (manifest with every file's size)."""
    staged = shutil.copytree(family_dir, tmp_path / "staged")
    staging.publish(staged, tmp_path / "variant", {"key": "k1"})
    return tmp_path / "variant"


def test_max_length_is_served_by_foundry_local_and_taking_it_away_restores_the_build(
        family_dirs: dict[str, Path], foundry: FoundryLocal, tmp_path: Path) -> None:
    folder = published(family_dirs["qwen2"], tmp_path)
    built = (folder / "genai_config.json").read_bytes()
    own = json.loads(built)["model"]["context_length"]
    assert own > 200

    full = register(folder, "ctx", "k1", {}, foundry.cache_dir, {"max_length": None})
    assert "".join(foundry.chat_stream(full, LONG_PROMPT, max_tokens=3, temperature=0.0))

    short = register(folder, "ctx", "k1", {}, foundry.cache_dir, {"max_length": 64})
    assert short != full, "new content served: a new version"
    served = json.loads((folder / "genai_config.json").read_text())
    assert served["model"]["context_length"] == served["search"]["max_length"] == 64
    assert json.loads((folder / "inference_model.json").read_text())["ModelConfig"]["max_length"] == 64
    assert staging.is_complete(folder, "k1"), "the manifest follows the rewritten file: no rebuild on resume"
    with pytest.raises(VariantError, match="maximum context length of 64 tokens"):
        "".join(foundry.chat_stream(short, LONG_PROMPT, max_tokens=3, temperature=0.0))

    assert register(folder, "ctx", "k1", {}, foundry.cache_dir, {"max_length": None}) == full
    assert (folder / "genai_config.json").read_bytes() == built
    assert staging.is_complete(folder, "k1")


def test_a_max_length_over_the_models_context_is_refused_and_changes_nothing(
        family_dirs: dict[str, Path], foundry: FoundryLocal, tmp_path: Path) -> None:
    folder = published(family_dirs["qwen2"], tmp_path)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    own = json.loads(before["genai_config.json"])["model"]["context_length"]

    with pytest.raises(InputError) as raised:
        register(folder, "ctx-over", "k1", {}, foundry.cache_dir, {"max_length": own + 1})

    assert str(raised.value) == (
        f"foundry.model_config_overrides.max_length is {own + 1}, longer than the model's own context of {own} "
        f"tokens ({folder / 'genai_config.json'}); allowed: 1 to {own}, or unset")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_the_thread_count_is_served_by_foundry_local_and_taking_it_away_restores_the_build(
        family_dirs: dict[str, Path], foundry: FoundryLocal, tmp_path: Path) -> None:
    folder = published(family_dirs["qwen2"], tmp_path)
    built = (folder / "genai_config.json").read_bytes()
    default = intra_op_threads(folder)
    assert default == max(1, min(16, (os.cpu_count() or 2) // 2)), "onnxruntime-genai's own default"

    plain = register(folder, "thr", "k1", {}, foundry.cache_dir, {"max_length": None})
    two = register(folder, "thr", "k1", {}, foundry.cache_dir, {"max_length": None}, threads=2)
    assert two != plain, "new content served: a new version"
    served = json.loads((folder / "genai_config.json").read_text())
    assert served["model"]["decoder"]["session_options"]["intra_op_num_threads"] == 2 == intra_op_threads(folder)
    assert "".join(foundry.chat_stream(two, "hello", max_tokens=3, temperature=0.0))
    assert staging.is_complete(folder, "k1")

    assert register(folder, "thr", "k1", {}, foundry.cache_dir, {"max_length": None}) == plain
    assert (folder / "genai_config.json").read_bytes() == built


def test_the_thread_count_defaults_to_the_physical_cores_and_runtime_leaves_it_to_genai() -> None:
    assert FoundrySpec().intra_op_threads == "physical_cores"
    assert serving_threads("physical_cores") == psutil.cpu_count(logical=False)
    assert serving_threads("runtime") is None, "genai_config.json left as built"
    assert serving_threads(3) == 3
    for wrong in (0, True, "all"):  # a YAML `yes` is no thread count
        with pytest.raises(ValidationError) as raised:
            FoundrySpec(intra_op_threads=wrong)
        assert f"intra_op_threads must be 1 to 256, physical_cores or runtime; got {wrong!r}" in str(raised.value)
