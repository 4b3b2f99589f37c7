"""Olive's user script for the GPTQ pass's calibration data: no hub dataset, no `datasets` package.

Olive imports this file by path (``olive.gptq_config`` names it as the data config's ``user_script``), and the pass
reads the dataset it registers: each calibration row (prompt/reference, as the eval set) rendered with the model's
own chat template, as the runtime will see a conversation, and tokenized into ``input_ids`` and
``attention_mask`` (batch size 1, so rows of any length).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from olive.data.registry import Registry

DATASET = "slmops_calibration_rows"
MAX_TOKENS = 2048


@Registry.register_dataset(DATASET)
def calibration_rows(rows_file: str, model_path: str, **_: object) -> list[tuple[dict[str, torch.Tensor], int]]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    dataset = []
    for line in Path(rows_file).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        messages = [{"role": "user", "content": row["prompt"]}, {"role": "assistant", "content": row["reference"]}]
        text = tokenizer.apply_chat_template(messages, tokenize=False)
        ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"][:MAX_TOKENS], dtype=torch.long)
        dataset.append(({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, 0))
    return dataset
