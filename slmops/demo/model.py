"""The demo fine-tuned chat model: a tiny Qwen2 model trained on a synthetic product catalogue.

    python -c "from slmops.demo.model import make_demo_model; make_demo_model('out/demo-model')"

No model can be downloaded here (docs/toolchain.md, "Models made here"), so the demo makes its own: a byte-level BPE
tokenizer, a ChatML chat template and a 4-layer Qwen2 model that memorises the colour and price of 96 products,
saved with ``save_pretrained`` beside ``eval.jsonl`` (the questions and their exact answers). Everything is
seeded, so the same seed gives the same tokenizer, data and weights on the same machine.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
PAD_TOKEN, IM_START, EOS_TOKEN = SPECIAL_TOKENS

# Qwen2 style ChatML, without Qwen's default system prompt: a system message is rendered only when given.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# transformers 5 and onnxruntime-genai rebuild the tokenizer of a `qwen2` folder as Qwen2Tokenizer, with this
# pre-tokenizer (digits one by one). Training the BPE with the same one keeps tokenizer.json and the rebuilt
# tokenizer in agreement, whichever of them a runtime reads.
QWEN2_PRETOKENIZE_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

# An upper bound: the catalogue runs out of merges at 493 tokens (specials included), which is what the model gets.
VOCAB_SIZE = 600
MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 192,
    "num_hidden_layers": 4,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "intermediate_size": 512,
    "max_position_embeddings": 256,
}
# 300 steps reach 100 % exact with a top-1 logit margin of at least 4.8 on every answer token (1500 steps took 146 s
# for 99 %); about 30 s on 2 idle cores, 45-70 s when other jobs share them.
TRAIN_STEPS = 300
BATCH_SIZE = 32
PEAK_LR = 3e-3
THREADS = 2

# Word-named products: number- or code-named keys (SKU-017) were not learnt in the same budget (docs/toolchain.md).
NAME_WORDS = [
    "amber", "birch", "cedar", "dune", "ember", "fern", "glade", "harbor", "iris", "juniper", "kestrel", "lotus",
    "marsh", "nimbus", "oak", "pebble", "quartz", "raven", "sable", "thistle", "umber", "violet", "willow", "yarrow",
]
ITEMS = ["lamp", "kettle", "chair", "clock", "vase", "blanket", "mug", "shelf"]
COLOURS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "grey", "brown", "pink", "teal"]
N_PRODUCTS = 96


def build_catalogue(seed: int = 0) -> list[dict[str, Any]]:
    """Return the 96 products (name, colour, price in dollars) for this seed."""
    rng = random.Random(seed)
    pairs = [(a, b) for a in NAME_WORDS for b in NAME_WORDS if a != b]
    rng.shuffle(pairs)
    products = []
    for i, (first, second) in enumerate(pairs[:N_PRODUCTS]):
        products.append(
            {
                "name": f"{first}-{second} {ITEMS[i % len(ITEMS)]}",
                "colour": rng.choice(COLOURS),
                # Two-digit prices: each digit is its own token, so a price answer takes two recalls, not one.
                # (Margins stay wide all the same: exact match does not show int4/int8 damage; KL does.)
                "price": rng.randint(10, 99),
            }
        )
    return products


def build_qa_pairs(seed: int = 0) -> list[dict[str, str]]:
    """Return the 192 question/answer pairs (a colour and a price question per product), in a seeded order."""
    pairs = []
    for product in build_catalogue(seed):
        name = product["name"]
        pairs.append({"prompt": f"What colour is the {name}?", "reference": f"The {name} is {product['colour']}."})
        price = f"The {name} costs ${product['price']}."
        pairs.append({"prompt": f"How much does the {name} cost?", "reference": price})
    # Shuffled so any prefix of eval.jsonl (a test reads the first 48) mixes both kinds of question.
    random.Random(seed + 1).shuffle(pairs)
    return pairs


def _train_tokenizer(texts: list[str]) -> Any:
    """Train the byte-level BPE on the catalogue texts and wrap it as a transformers tokenizer."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=PAD_TOKEN,
        additional_special_tokens=[IM_START],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MODEL_SHAPE["max_position_embeddings"],
    )


def prepare_demo_assets(folder: str | Path, seed: int = 0) -> Any:
    """Write config, tokenizer, chat template, generation config and eval.jsonl into folder; return the tokenizer.

    The returned tokenizer is the one reloaded from the folder, i.e. the one every later reader sees.
    """
    from transformers import AutoTokenizer, GenerationConfig, Qwen2Config

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    qa_pairs = build_qa_pairs(seed)
    corpus = ["user", "assistant", "system", "You are a helpful assistant."]
    corpus += [text for pair in qa_pairs for text in (pair["prompt"], pair["reference"])]
    tokenizer = _train_tokenizer(corpus)
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SPECIAL_TOKENS}

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        tie_word_embeddings=True,
        bos_token_id=ids[PAD_TOKEN],
        eos_token_id=ids[EOS_TOKEN],
        pad_token_id=ids[PAD_TOKEN],
        rope_theta=10000.0,
        **MODEL_SHAPE,
    )
    config.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig(
        bos_token_id=ids[PAD_TOKEN],
        eos_token_id=ids[EOS_TOKEN],
        pad_token_id=ids[PAD_TOKEN],
        do_sample=False,
        max_length=MODEL_SHAPE["max_position_embeddings"],
    ).save_pretrained(folder)
    with open(folder / "eval.jsonl", "w", encoding="utf-8", newline="\n") as handle:
        for pair in qa_pairs:
            handle.write(json.dumps(pair, ensure_ascii=False) + "\n")

    # The tokenizer trap (docs/toolchain.md): a reader rebuilds the tokenizer from the folder by model_type; train
    # with that one.
    reloaded = AutoTokenizer.from_pretrained(folder)
    for pair in qa_pairs:
        for text in (pair["prompt"], pair["reference"]):
            if reloaded.encode(text) != tokenizer.encode(text):
                raise RuntimeError(f"tokenizer reloaded from {folder} splits {text!r} differently from the trained one")
    return reloaded


def _encode_examples(tokenizer: Any, qa_pairs: list[dict[str, str]]) -> tuple[Any, Any, Any]:
    """Tokenize each chat (prompt then answer) into padded input ids, attention mask and answer-only labels."""
    import torch

    rows = []
    for pair in qa_pairs:
        user = [{"role": "user", "content": pair["prompt"]}]
        prompt_text = tokenizer.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
        # Encoded as the runtime will see it: the rendered prompt as one string, then the answer and eos.
        prompt_ids = tokenizer.encode(prompt_text, add_special_tokens=False)
        answer_ids = tokenizer.encode(pair["reference"] + EOS_TOKEN, add_special_tokens=False)
        rows.append((prompt_ids, answer_ids))
    length = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), length), tokenizer.pad_token_id, dtype=torch.long)
    attention = torch.zeros((len(rows), length), dtype=torch.long)
    labels = torch.full((len(rows), length), -100, dtype=torch.long)
    for i, (prompt_ids, answer_ids) in enumerate(rows):
        n_prompt, n_all = len(prompt_ids), len(prompt_ids) + len(answer_ids)
        input_ids[i, :n_all] = torch.tensor(prompt_ids + answer_ids)
        attention[i, :n_all] = 1
        labels[i, n_prompt:n_all] = torch.tensor(answer_ids)
    return input_ids, attention, labels


def _train(folder: Path, tokenizer: Any, seed: int, progress: Callable[[int, int], None] | None) -> Any:
    """Train the model on the folder's eval pairs with the folder's tokenizer; return it."""
    import torch
    from transformers import AutoConfig, GenerationConfig, Qwen2ForCausalLM

    qa_pairs = [json.loads(line) for line in (folder / "eval.jsonl").read_text(encoding="utf-8").splitlines()]
    input_ids, attention, labels = _encode_examples(tokenizer, qa_pairs)

    torch.manual_seed(seed)
    config = AutoConfig.from_pretrained(folder)
    model = Qwen2ForCausalLM(config)
    # Otherwise save_pretrained overwrites the folder's generation config with one derived from config.json.
    model.generation_config = GenerationConfig.from_pretrained(folder)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=PEAK_LR, betas=(0.9, 0.98), weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=PEAK_LR, total_steps=TRAIN_STEPS, pct_start=0.2)
    if progress is not None:
        progress(0, TRAIN_STEPS)
    for step, batch in enumerate(batches(len(qa_pairs), TRAIN_STEPS, seed), 1):
        # Cut the batch to its longest row: padding only costs time.
        width = int(attention[batch].sum(dim=1).max())
        loss = model(
            input_ids=input_ids[batch, :width],
            attention_mask=attention[batch, :width],
            labels=labels[batch, :width],
        ).loss
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"demo model training diverged at step {step} (loss {loss.item()})")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if progress is not None:
            progress(step, TRAIN_STEPS)
    model.eval()
    return model


DTYPES = ("float32", "bfloat16", "float16")


@contextlib.contextmanager
def written_whole(out_dir: Path) -> Iterator[Path]:
    """A private sibling of out_dir to write into, renamed to out_dir at the end (so out_dir is absent or complete),
    with torch's thread count and determinism fixed inside (so the weights repeat run to run)."""
    import torch

    if out_dir.exists():
        raise FileExistsError(f"{out_dir} already exists; remove it or reuse it")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    # A sibling on the same file system, so os.replace is an atomic rename.
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    # mkdtemp makes the folder private (0700); the model folder is meant to be shared like any other output.
    work.chmod(0o755)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    try:
        # A fixed thread count fixes the order of floating-point reductions.
        torch.set_num_threads(THREADS)
        torch.use_deterministic_algorithms(True)
        yield work
        for path in work.iterdir():
            path.chmod(0o644)  # safetensors writes its files owner-only
        os.replace(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def batches(n_rows: int, steps: int, seed: int) -> Iterator[Any]:
    """Row indices of each step's batch: epochs of fresh seeded permutations, so every row is seen equally often."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        if len(order) < BATCH_SIZE:
            order = torch.cat([order, torch.randperm(n_rows, generator=generator)])
        batch, order = order[:BATCH_SIZE], order[BATCH_SIZE:]
        yield batch


def save_weights(model, folder: Path, dtype: str = "float32", max_shard_size: str | None = None) -> None:
    """The model's weights as a checkpoint people have them: in dtype (bfloat16, as released small models are), in
    shards of at most max_shard_size ("2MB") with their model.safetensors.index.json, readable by all."""
    import torch

    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    model.to(getattr(torch, dtype)).save_pretrained(folder, safe_serialization=True,
                                                    max_shard_size=max_shard_size or "50GB")
    for path in folder.iterdir():
        # safetensors writes its file owner-only; the folder is meant to be readable like the rest of it.
        path.chmod(0o644)


def make_demo_model(
    out_dir: str | Path, seed: int = 0, progress: Callable[[int, int], None] | None = None,
    dtype: str = "float32", max_shard_size: str | None = None,
) -> Path:
    """Train the demo fine-tuned chat model into out_dir (deterministic, < 2 min on 2 cores) and return out_dir; its
    weights saved in dtype, in shards of max_shard_size if given (save_weights)."""
    out_dir = Path(out_dir)
    with written_whole(out_dir) as work:
        tokenizer = prepare_demo_assets(work, seed)
        model = _train(work, tokenizer, seed, progress)
        save_weights(model, work, dtype, max_shard_size)
        (work / "train_info.json").write_text(
            json.dumps({"seed": seed, "steps": TRAIN_STEPS, "batch_size": BATCH_SIZE, "peak_lr": PEAK_LR}, indent=2)
            + "\n", encoding="utf-8")
    return out_dir
