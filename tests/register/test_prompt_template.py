"""The PromptTemplate slmops derives, checked against what each family's own chat template renders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from chat_families import FAMILIES
from transformers import AutoTokenizer

from slmops.errors import InputError
from slmops.prompt_template import (
    CONTENT,
    derive_chat_format,
    derive_prompt_template,
    write_inference_model_json,
)

USER = "What does the red widget cost?\nAnswer briefly."
SYSTEM = "You are a shop assistant. Quote prices in dollars."
ASSISTANT = "It costs 12 dollars."


def _render(folder: Path, messages: list[tuple[str, str]], generation: bool = True) -> str:
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    conversation = [{"role": role, "content": content} for role, content in messages]
    return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prompt_template_prompt_equals_chat_template_without_system(family: str, family_dirs: dict[str, Path]) -> None:
    template = derive_prompt_template(family_dirs[family])

    assert set(template) == {"system", "user", "assistant", "prompt"}
    assert all(part.count(CONTENT) == 1 for part in template.values())
    assert template["prompt"].replace(CONTENT, USER) == _render(family_dirs[family], [("user", USER)])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prompt_template_system_part_equals_chat_template_with_system(
    family: str, family_dirs: dict[str, Path]
) -> None:
    chat = derive_chat_format(family_dirs[family])

    if family == "gemma":
        # Gemma's template raises on a system message: slmops folds it into the first user turn
        assert chat.system_style == "unsupported"
        expected = _render(family_dirs[family], [("user", SYSTEM + "\n\n" + USER)])
    else:
        expected = _render(family_dirs[family], [("system", SYSTEM), ("user", USER)])
    assert chat.render(USER, SYSTEM) == expected
    # the composition needs nothing but the PromptTemplate's own strings
    template = chat.prompt_template()
    if chat.system_style == "turn":
        # the generation prompt is what `prompt` adds after the user turn
        generation = template["prompt"].split(CONTENT)[1].removeprefix(template["user"].split(CONTENT)[1])
        assert expected == template["system"].replace(CONTENT, SYSTEM) + template["user"].replace(CONTENT, USER) + (
            generation
        )
    else:
        assert expected == template["prompt"].replace(CONTENT, template["system"].replace(CONTENT, SYSTEM) + USER)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_prompt_template_turns_compose_a_multi_turn_conversation(family: str, family_dirs: dict[str, Path]) -> None:
    chat = derive_chat_format(family_dirs[family])
    second = "And the blue gadget?"

    composed = (
        chat.bos
        + chat.default_system
        + chat.user.replace(CONTENT, USER)
        + chat.assistant.replace(CONTENT, ASSISTANT)
        + chat.user.replace(CONTENT, second)
        + chat.generation
    )

    assert composed == _render(family_dirs[family], [("user", USER), ("assistant", ASSISTANT), ("user", second)])


def test_prompt_template_keeps_one_bos_where_the_template_puts_it(family_dirs: dict[str, Path]) -> None:
    template = derive_prompt_template(family_dirs["llama3"])

    assert template["prompt"].startswith("<|begin_of_text|><|start_header_id|>user")
    assert template["prompt"].count("<|begin_of_text|>") == 1
    assert template["system"].startswith("<|begin_of_text|><|start_header_id|>system")
    assert "<|begin_of_text|>" not in template["user"] + template["assistant"]


def test_prompt_template_chatml_matches_published_parts(family_dirs: dict[str, Path]) -> None:
    template = derive_prompt_template(family_dirs["qwen2"])

    # Foundry Local's catalog entry for Qwen, with the separators the template renders
    assert template["system"] == "<|im_start|>system\n{Content}<|im_end|>\n"
    assert template["user"] == "<|im_start|>user\n{Content}<|im_end|>\n"
    assert template["assistant"] == "<|im_start|>assistant\n{Content}<|im_end|>\n"
    # Qwen2's template adds its default system prompt to a conversation without one
    assert template["prompt"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n{Content}<|im_end|>\n<|im_start|>assistant\n"
    )


def test_prompt_template_mistral_folds_system_into_first_user_turn(family_dirs: dict[str, Path]) -> None:
    chat = derive_chat_format(family_dirs["mistral"])

    assert chat.system_style == "folded"
    assert chat.system == "{Content}\n\n"
    assert chat.prompt == "<s> [INST] {Content} [/INST]"


def test_prompt_template_raises_input_error_without_chat_template(variant_copy) -> None:
    folder = variant_copy("qwen2")
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))

    with pytest.raises(InputError, match="has no chat template") as raised:
        derive_prompt_template(folder)
    assert "\n" not in str(raised.value)


def test_prompt_template_raises_input_error_when_template_has_no_turns(family_dirs: dict[str, Path]) -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(family_dirs["qwen2"]))
    tokenizer.chat_template = "{{ messages[-1]['content'] }}"

    with pytest.raises(InputError, match="cannot be split into per-role parts"):
        derive_prompt_template(tokenizer)


def test_inference_model_json_holds_name_template_and_generation_defaults(variant_copy) -> None:
    folder = variant_copy("phi3")

    path = write_inference_model_json(folder, "shop-phi3-fp32")

    document = json.loads(path.read_text())
    assert path == folder / "inference_model.json"
    assert document["Name"] == "shop-phi3-fp32"
    assert document["PromptTemplate"] == derive_prompt_template(folder)
    # from the folder's generation_config.json (repetition_penalty is not in genai_config.json)
    assert document["ModelConfig"] == {"max_length": 512, "temperature": 0.6, "top_p": 0.9, "repetition_penalty": 1.05}
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_inference_model_json_takes_overrides(variant_copy) -> None:
    folder = variant_copy("qwen2")

    path = write_inference_model_json(folder, "shop-qwen2", {"temperature": 0.2, "max_length": 128, "top_p": None})

    config = json.loads(path.read_text())["ModelConfig"]
    assert config == {"max_length": 128, "temperature": 0.2, "top_p": 0.9, "repetition_penalty": 1.05}


def test_deriving_the_template_of_a_folder_with_tokenizer_json_does_not_import_torch(family_dirs) -> None:
    # a warm re-run registers every variant again without converting anything: torch (1-2 s to import) is not needed
    import subprocess
    import sys

    folder = family_dirs["qwen2"]
    assert (folder / "tokenizer.json").is_file()
    code = ("import sys; from slmops.prompt_template import derive_prompt_template; "
            f"template = derive_prompt_template({str(folder)!r}); "
            "print('torch' in sys.modules, template['prompt'].count('{Content}'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["False", "1"]
