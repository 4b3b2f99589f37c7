"""Source model checks: each unusable folder gets a message naming what is wrong and what is allowed."""

from __future__ import annotations

import json
import shutil

import pytest

from slmops.errors import InputError
from slmops.source import is_memoized, model_sha256, validate_model_dir


@pytest.fixture
def model_copy(tiny_model, tmp_path):
    return shutil.copytree(tiny_model, tmp_path / "model")


def test_validate_accepts_a_complete_model(tiny_model):
    assert validate_model_dir(tiny_model)["architectures"] == ["Qwen2ForCausalLM"]


def test_validate_rejects_a_missing_folder(tmp_path):
    with pytest.raises(InputError, match=f"^model folder not found: {tmp_path / 'nope'}$"):
        validate_model_dir(tmp_path / "nope")


def test_validate_rejects_a_folder_without_config(model_copy):
    (model_copy / "config.json").unlink()
    with pytest.raises(InputError, match="no config.json; a Hugging Face model folder needs one"):
        validate_model_dir(model_copy)


def test_validate_rejects_a_folder_without_weights(model_copy):
    (model_copy / "model.safetensors").unlink()
    with pytest.raises(InputError, match=r"no weights found; expected \*.safetensors files"):
        validate_model_dir(model_copy)


def test_validate_refuses_pickle_weights_unless_allowed(model_copy):
    (model_copy / "model.safetensors").rename(model_copy / "pytorch_model.bin")
    with pytest.raises(InputError, match=r"weights are pickle files \(pytorch_model.bin\)"):
        validate_model_dir(model_copy)
    validate_model_dir(model_copy, allow_pickle=True)


def test_validate_rejects_an_unsupported_architecture(model_copy):
    config = json.loads((model_copy / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (model_copy / "config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match=r"architecture BertForMaskedLM is not supported by the ONNX model "
                                         r"builder; supported: .*LlamaForCausalLM.*Qwen2ForCausalLM"):
        validate_model_dir(model_copy)


def test_validate_rejects_a_tokenizer_without_chat_template(model_copy):
    (model_copy / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((model_copy / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model_copy / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(InputError, match="the tokenizer has no chat template"):
        validate_model_dir(model_copy)


def test_model_hash_changes_with_content_and_memo_is_reused(model_copy, tmp_path):
    memo = tmp_path / "memo.json"
    assert not is_memoized(model_copy, memo)
    first = model_sha256(model_copy, memo)
    assert is_memoized(model_copy, memo)
    assert model_sha256(model_copy, memo) == first == model_sha256(model_copy)
    (model_copy / "config.json").write_text((model_copy / "config.json").read_text() + " ")
    assert not is_memoized(model_copy, memo)  # a changed file is read again: the sweep will convert
    assert model_sha256(model_copy, memo) != first
