"""The demo LoRA adapter: the demo model fine-tuned with PEFT for a second synthetic task, as most fine-tunes made on
one machine are (a PEFT folder, the base kept apart).

    slmops make-demo-model .slmops/demo-model --lora .slmops/demo-lora

The task: each product's price in cents ("How many cents does the lotus-cedar shelf cost?" -> "The lotus-cedar
shelf costs 6300 cents."). The base knows every price but never saw the question, so it answers in dollars; the
adapter learns the new form. Its eval.jsonl holds the new task, so a sweep of base plus adapter measures it.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from slmops.demo.model import _encode_examples, batches, build_catalogue, written_whole

LORA = {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0,
        "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
LORA_STEPS = 200
LORA_LR = 5e-3


def build_cents_pairs(seed: int = 0) -> list[dict[str, str]]:
    """The second task's question/answer pairs: every product's price in cents, in a seeded order."""
    pairs = [{"prompt": f"How many cents does the {p['name']} cost?",
              "reference": f"The {p['name']} costs {p['price']}00 cents."} for p in build_catalogue(seed)]
    random.Random(seed + 2).shuffle(pairs)
    return pairs


def make_demo_lora(base_dir: str | Path, out_dir: str | Path, seed: int = 0,
                   progress: Callable[[int, int], None] | None = None) -> Path:
    """Fine-tune a LoRA adapter of the demo model at base_dir into out_dir (written whole or not at all)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir, out_dir = Path(base_dir).resolve(), Path(out_dir)
    with written_whole(out_dir) as work:
        torch.manual_seed(seed)
        pairs = build_cents_pairs(seed)
        tokenizer = AutoTokenizer.from_pretrained(base_dir)
        input_ids, attention, labels = _encode_examples(tokenizer, pairs)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32),
                               LoraConfig(task_type="CAUSAL_LM", **LORA))
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LORA_LR)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=LORA_LR, total_steps=LORA_STEPS,
                                                       pct_start=0.2)
        for step, batch in enumerate(batches(len(pairs), LORA_STEPS, seed), 1):
            width = int(attention[batch].sum(dim=1).max())
            loss = model(input_ids=input_ids[batch, :width], attention_mask=attention[batch, :width],
                         labels=labels[batch, :width]).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
            if progress is not None:
                progress(step, LORA_STEPS)
        model.save_pretrained(work, safe_serialization=True)
        config = json.loads((work / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = str(base_dir)  # a local base: nothing to download
        (work / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        with open(work / "eval.jsonl", "w", encoding="utf-8", newline="\n") as handle:
            for pair in pairs:
                handle.write(json.dumps(pair, ensure_ascii=False) + "\n")
    return out_dir
