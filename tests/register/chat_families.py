"""Tiny Hugging Face models of each chat family, with that family's own chat template, for the Foundry Local tests.

    .venv/bin/python -m pytest tests/foundry -x -q

Each model has random weights (2 layers, hidden 64) and a byte-level BPE tokenizer trained here that holds the
family's special tokens, so the chat template renders and tokenizes exactly as the real family's would. The
templates are the ones the families publish in their ``tokenizer_config.json`` (verbatim apart from whitespace
layout).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

# The official chat templates. Kept as published: the point of the tests is that slmops derives the
# PromptTemplate from whatever the model ships, so these must be the real thing, quirks included (Qwen2's default
# system prompt, Phi-3's eos after a finished conversation, Llama 3's `| trim`, Mistral folding the system prompt
# into the first user turn, Gemma refusing a system role).

# Qwen/Qwen2-0.5B-Instruct
QWEN2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# microsoft/Phi-3-mini-4k-instruct (and Phi-3.5-mini-instruct)
PHI3_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{'<|system|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}"
    "{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}"
)

# meta-llama/Meta-Llama-3-8B-Instruct
LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    "+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

# mistralai/Mistral-7B-Instruct-v0.2 (the revised template with an optional system message)
MISTRAL_TEMPLATE = """{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.first and system_message is defined %}
            {{- ' [INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}
        {%- else %}
            {{- ' [INST] ' + message['content'] + ' [/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content'] + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

# google/gemma-2b-it (also gemma-1.1 and gemma-2)
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}{% for message in messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
    "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
    "{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"
)


@dataclass(frozen=True)
class Family:
    """One chat family: its architecture, chat template and special tokens."""

    name: str
    model_type: str
    template: str
    special_tokens: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    unk: str | None = None
    # extra config fields the architecture needs
    config: dict = field(default_factory=dict)
    # the tokens that end an assistant turn (generation_config's eos_token_id)
    stop_tokens: tuple[str, ...] = ()


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family(
            "qwen2", "qwen2", QWEN2_TEMPLATE,
            ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
            bos=None, eos="<|im_end|>", pad="<|endoftext|>", stop_tokens=("<|im_end|>", "<|endoftext|>"),
        ),
        Family(
            "phi3", "phi3", PHI3_TEMPLATE,
            ("<unk>", "<s>", "<|endoftext|>", "<|assistant|>", "<|end|>", "<|system|>", "<|user|>"),
            bos="<s>", eos="<|endoftext|>", pad="<|endoftext|>", unk="<unk>",
            # equal to max_position_embeddings: the 4k model, not the LongRoPE one
            config={"original_max_position_embeddings": 512},
            stop_tokens=("<|end|>", "<|endoftext|>"),
        ),
        Family(
            "llama3", "llama", LLAMA3_TEMPLATE,
            ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
            bos="<|begin_of_text|>", eos="<|eot_id|>", pad="<|end_of_text|>",
            stop_tokens=("<|end_of_text|>", "<|eot_id|>"),
        ),
        Family(
            "mistral", "mistral", MISTRAL_TEMPLATE,
            ("<unk>", "<s>", "</s>"),
            bos="<s>", eos="</s>", pad="</s>", unk="<unk>", stop_tokens=("</s>",),
        ),
        Family(
            "gemma", "gemma", GEMMA_TEMPLATE,
            ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
            bos="<bos>", eos="<eos>", pad="<pad>", unk="<unk>", config={"head_dim": 16},
            stop_tokens=("<eos>", "<end_of_turn>"),
        ),
    )
}

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "You are a helpful assistant. What is the capital of France? Paris is the capital of France.",
    "system user assistant model INST Content hello world 0123456789 !?.,:;'\"()[]{}<>|/\\-_=+*&^%$#@~`",
    "Answer briefly. The red widget costs 12 dollars and the blue gadget costs 7 dollars.",
]


def _train_tokenizer(family: Family, vocab_size: int = 400):
    """A byte-level BPE tokenizer whose first ids are the family's special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(family.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    if family.bos is not None:
        # the families whose tokenizers add BOS on encode (Llama 3, Mistral, Gemma, Phi-3) do it in the
        # post-processor; keep that, since it decides whether a rendered prompt ends up with two BOS tokens
        bos_id = tok.token_to_id(family.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{family.bos} $A", pair=f"{family.bos} $A {family.bos} $B", special_tokens=[(family.bos, bos_id)]
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def build_hf_model(family: Family, out_dir: Path) -> Path:
    """Save a random-weight 2-layer model of the family, its tokenizer and chat template, into out_dir."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig, PreTrainedTokenizerFast

    out_dir.mkdir(parents=True, exist_ok=True)
    raw = _train_tokenizer(family)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=raw,
        bos_token=family.bos,
        eos_token=family.eos,
        pad_token=family.pad,
        unk_token=family.unk,
    )
    tokenizer.chat_template = family.template
    tokenizer.save_pretrained(out_dir)

    ids = {t: raw.token_to_id(t) for t in family.special_tokens}
    config = AutoConfig.for_model(
        family.model_type,
        vocab_size=raw.get_vocab_size(),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=ids.get(family.bos) if family.bos else None,
        eos_token_id=ids[family.eos],
        pad_token_id=ids[family.pad],
        tie_word_embeddings=family.model_type in ("qwen2", "gemma"),
        **family.config,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    model.save_pretrained(out_dir)
    GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=[ids[t] for t in family.stop_tokens],
        pad_token_id=config.pad_token_id,
        do_sample=True,
        temperature=0.6,
        top_p=0.9,
        repetition_penalty=1.05,
        max_length=512,
    ).save_pretrained(out_dir)
    return out_dir


def export_onnx_fp32(hf_dir: Path, out_dir: Path, cache_dir: Path) -> Path:
    """Export hf_dir to an onnxruntime-genai fp32 model in out_dir with Olive's ModelBuilder."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    from olive.workflows import run as olive_run

    olive_run(
        {
            "input_model": {"type": "HfModel", "model_path": str(hf_dir), "task": "text-generation"},
            "systems": {
                "local_system": {
                    "type": "LocalSystem",
                    "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
                }
            },
            "passes": {"builder": {"type": "ModelBuilder", "precision": "fp32"}},
            "host": "local_system",
            "target": "local_system",
            "cache_dir": str(cache_dir),
            "output_dir": str(out_dir),
            "log_severity_level": 3,
        }
    )
    # Olive logs a failed pass and returns normally: check the output is there
    missing = [n for n in ("model.onnx", "genai_config.json") if not (out_dir / n).is_file()]
    if missing:
        raise RuntimeError(f"Olive wrote no {', '.join(missing)} into {out_dir}")
    return out_dir


def build_all(root: Path, names: list[str] | None = None) -> dict[str, Path]:
    """Build and export every family (or the named ones) under root; returns family name -> ONNX folder."""
    out: dict[str, Path] = {}
    for name in names or list(FAMILIES):
        fam = FAMILIES[name]
        hf = build_hf_model(fam, root / "hf" / name)
        out[name] = export_onnx_fp32(hf, root / "onnx" / name, root / "olive-cache")
    return out


if __name__ == "__main__":
    import sys

    built = build_all(Path(sys.argv[1]), sys.argv[2:] or None)
    print(json.dumps({k: str(v) for k, v in built.items()}, indent=1))
