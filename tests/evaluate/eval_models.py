"""Models the evaluation tests build: the demo model's four variants, and a model slow enough to time decoding on."""

from __future__ import annotations

from pathlib import Path

from slmops.config import VariantSpec
from slmops.convert import convert
from slmops.quantize import quantize

# The demo sweep's variants (configs/demo.yaml).
DEMO_VARIANTS = (
    {"name": "fp32", "precision": "fp32"},
    {"name": "int8", "precision": "int8"},
    {"name": "int4-b32", "precision": "int4", "block_size": 32, "symmetric": False},
    {"name": "int4-b128", "precision": "int4", "block_size": 128, "symmetric": True},
)


def build_variants(source_dir: Path, dest: Path, variants=DEMO_VARIANTS) -> dict[str, Path]:
    """Export source_dir once and build each variant from it; name -> variant folder."""
    logs = dest / "logs"
    fp32_dir = dest / "_fp32-export"
    convert(source_dir, fp32_dir, "test-export", False, logs)
    folders = {}
    for variant in variants:
        folders[variant["name"]] = dest / variant["name"]
        quantize(VariantSpec(**variant).resolved(), "test-variant", source_dir, fp32_dir, folders[variant["name"]], logs)
    return folders


def make_speed_model(out: Path, hidden: int = 512, layers: int = 8, seed: int = 0) -> Path:
    """A random Qwen2 chat model whose every greedy token prints: special and partial-byte tokens can never win.

    Random weights decode at a few ms per token on 2 cores (the demo model takes 0.15 ms, below what a stream can
    time), and the output layer's rows of tokens that decode to nothing are zero, so each token is one streamed piece.
    """
    import torch
    from helpers import make_tiny_model
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    make_tiny_model(out, seed=seed)  # its tokenizer and chat template; the weights are replaced below
    tokenizer = AutoTokenizer.from_pretrained(out)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=8,
        num_key_value_heads=2, intermediate_size=hidden * 3, max_position_embeddings=512, tie_word_embeddings=False,
        eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"), pad_token_id=0,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if token_id in tokenizer.all_special_ids or not text or "\ufffd" in text or not text.isprintable():
                model.lm_head.weight[token_id] = 0
    model.save_pretrained(out)
    return out
