"""Tests of the demo model: folder contents, chat template, exact answers, determinism and atomic writes.

    .venv/bin/python -m pytest tests/test_demo_model.py

The model is trained once per module (about 30-70 s on 2 cores); the other checks are cheap.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slmops.demo.model import EOS_TOKEN, make_demo_model, prepare_demo_assets

EXPECTED_FILES = ["config.json", "model.safetensors", "tokenizer.json", "generation_config.json", "eval.jsonl"]


@pytest.fixture(scope="module")
def built(demo_model: Path) -> tuple[Path, list[tuple[int, int]]]:
    """The session's demo model (trained once per recipe, see tests/conftest.py) and the progress calls it made."""
    calls = json.loads((demo_model.parent / f"{demo_model.name}.progress.json").read_text())
    return demo_model, [tuple(c) for c in calls]


def _eval_rows(folder: Path) -> list[dict]:
    """Read eval.jsonl of a model folder."""
    return [json.loads(line) for line in (folder / "eval.jsonl").read_text(encoding="utf-8").splitlines()]


def test_folder_holds_a_complete_model(built: tuple[Path, list]) -> None:
    """The folder holds the model, tokenizer, chat template and eval set, and no partial sibling is left."""
    folder, _ = built
    for name in EXPECTED_FILES:
        assert (folder / name).is_file(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["model_type"] == "qwen2"
    assert config["tie_word_embeddings"] is True
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")], "a staging folder was left"


def test_chat_template_renders_chatml(built: tuple[Path, list]) -> None:
    """A system + user conversation renders as Qwen2 ChatML with the assistant generation prompt."""
    from transformers import AutoTokenizer

    folder, _ = built
    tokenizer = AutoTokenizer.from_pretrained(folder)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi?<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.eos_token == EOS_TOKEN
    generation = json.loads((folder / "generation_config.json").read_text())
    assert generation["eos_token_id"] == tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    assert generation["do_sample"] is False


def test_eval_set_is_well_formed(built: tuple[Path, list]) -> None:
    """eval.jsonl has at least 96 distinct prompts, each with a non-empty string reference."""
    rows = _eval_rows(built[0])
    assert len(rows) >= 96
    for row in rows:
        assert set(row) == {"prompt", "reference"}
        assert isinstance(row["prompt"], str) and row["prompt"].strip()
        assert isinstance(row["reference"], str) and row["reference"] == row["reference"].strip() != ""
    assert len({row["prompt"] for row in rows}) == len(rows)


def test_torch_model_answers_exactly(built: tuple[Path, list]) -> None:
    """Greedy decoding from the saved folder answers at least 90 % of the first 48 eval prompts exactly."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, _ = built
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    rows = _eval_rows(folder)[:48]
    exact = 0
    with torch.no_grad():
        for row in rows:
            text = tokenizer.apply_chat_template(
                [{"role": "user", "content": row["prompt"]}], add_generation_prompt=True, tokenize=False
            )
            inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
            # max_length, not max_new_tokens: the folder's generation config sets max_length, and both together warn.
            output = model.generate(**inputs, max_length=inputs["input_ids"].shape[1] + 32, do_sample=False)
            answer = tokenizer.decode(output[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            exact += answer.strip() == row["reference"]
    assert exact / len(rows) >= 0.9, f"{exact}/{len(rows)} exact"


def test_progress_reports_every_step(built: tuple[Path, list]) -> None:
    """progress goes from 0 to total, one step at a time."""
    _, calls = built
    total = calls[-1][1]
    assert calls == [(step, total) for step in range(total + 1)]


def test_data_and_tokenizer_are_deterministic(built: tuple[Path, list], tmp_path: Path) -> None:
    """Preparing the assets again (without training) gives byte-identical tokenizer, template and eval set."""
    folder, _ = built
    prepare_demo_assets(tmp_path, seed=0)
    # config.json is left out: saving the weights adds the architecture and dtype to it.
    for name in ["tokenizer.json", "eval.jsonl", "generation_config.json", "chat_template.jinja"]:
        assert (tmp_path / name).read_bytes() == (folder / name).read_bytes(), name


def test_existing_out_dir_is_refused(built: tuple[Path, list], tmp_path: Path) -> None:
    """An existing out_dir, built or empty, raises FileExistsError and is left as it was."""
    folder, _ = built
    before = sorted(p.name for p in folder.iterdir())
    with pytest.raises(FileExistsError):
        make_demo_model(folder)
    assert sorted(p.name for p in folder.iterdir()) == before
    with pytest.raises(FileExistsError):
        make_demo_model(tmp_path)


class _Stop(Exception):
    """Raised by a progress callback to abort a build."""


def test_failed_build_leaves_nothing(tmp_path: Path) -> None:
    """A build that fails part way leaves neither out_dir nor a partial folder, and restores torch's settings."""
    import torch

    def stop(step: int, total: int) -> None:
        """Abort the training at its first step."""
        if step >= 1:
            raise _Stop

    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with pytest.raises(_Stop):
        make_demo_model(tmp_path / "model", progress=stop)
    assert list(tmp_path.iterdir()) == []
    assert (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()) == (threads, deterministic)
