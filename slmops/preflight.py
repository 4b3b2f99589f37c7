"""Pre-flight: everything a sweep's input can get wrong, checked before anything is written. The CLI runs it before
it starts Prefect, and every flow runs it again at its start (a deployment's run has no CLI in front of it).

    checked = preflight(spec, Workspace.of("out/demo"))

Bad input is an InputError or SpecError: one line naming what is wrong and what is allowed (exit 2).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import get_args

from slmops import calibration, lora
from slmops.config import BlockSize, SweepSpec
from slmops.errors import InputError
from slmops.evalset import load_eval_set, resolve_dataset
from slmops.source import estimate_disk_bytes, validate_model_dir
from slmops.workspace import Workspace


@dataclass(frozen=True)
class Checked:
    """What the pre-flight found: the eval set (if any), the smoke test's prompt, and for a LoRA adapter its base,
    its folder and its config (rank, alpha, target modules)."""

    dataset: Path | None
    smoke_prompt: str
    base: Path | None = None
    adapter: Path | None = None
    adapter_config: dict | None = None


def preflight(spec: SweepSpec, ws: Workspace) -> Checked:
    """Check the model folder (and a LoRA adapter against it), the eval set, the output folder and the free disk;
    raise before any work."""
    base, adapter = lora.split(spec.model.path, spec.model.adapter)
    config = validate_model_dir(base, spec.model.allow_pickle_weights)
    adapter_config = lora.check_adapter(adapter, base, config) if adapter else None
    check_context(spec, config, base)
    check_sharing(spec, config, base)
    check_gptq_blocks(spec, config, base)
    # an adapter's own eval set is its task: it is what the merged model is measured on
    has_own = adapter is not None and (adapter / "eval.jsonl").is_file()
    dataset = resolve_dataset(spec.evaluation.dataset, adapter if has_own else base)
    items = load_eval_set(dataset) if dataset else None
    calibration.check(spec.calibration, dataset, [v.name for v in spec.variants if v.method == "gptq"])
    check_out_dir(ws.out_dir)
    check_disk(spec, ws, base)
    return Checked(dataset, spec.evaluation.smoke_prompt or (items[0]["prompt"] if items else "Hello"),
                   base if adapter else None, adapter, adapter_config)


def check_context(spec: SweepSpec, config: dict, model_dir: Path | None = None) -> None:
    """The context Foundry Local is to serve with fits in the model's own (ModelBuilder builds for
    max_position_embeddings)."""
    wanted, own = spec.foundry.model_config_overrides.max_length, config.get("max_position_embeddings")
    config_file = Path(model_dir or spec.model.path) / "config.json"
    if wanted and isinstance(own, int) and wanted > own:
        raise InputError(f"foundry.model_config_overrides.max_length is {wanted}, longer than the model's own context "
                         f"of {own} tokens (max_position_embeddings in {config_file}); "
                         f"allowed: 1 to {own}, or unset")


def check_sharing(spec: SweepSpec, config: dict, model_dir: Path | None = None) -> None:
    """shared_embeddings makes the embedding read the LM head's weight: right only where the model ties them."""
    sharing = [v.name for v in spec.variants if v.shared_embeddings]
    if sharing and config.get("tie_word_embeddings") is not True:
        config_file = Path(model_dir or spec.model.path) / "config.json"
        raise InputError(f"variant {', '.join(sharing)}: shared_embeddings needs a model whose embedding and LM head "
                         f"are tied, and {config_file} does not say tie_word_embeddings: true; allowed: "
                         "shared_embeddings on a tied model only")
    hidden = config.get("hidden_size")
    for variant in (v for v in spec.variants if v.shared_embeddings):
        block = variant.resolved().block_size
        if isinstance(hidden, int) and block and hidden % block:
            # ModelBuilder 0.14.1 builds it, and its embedding's Reshape fails on the first token (seen on the demo)
            allowed = _blocks_dividing([hidden])
            raise InputError(f"variant {variant.name}: shared_embeddings reads the embedding from the LM head's "
                             f"blocks, and block_size {block} does not divide hidden_size {hidden} "
                             f"({Path(model_dir or spec.model.path) / 'config.json'}); allowed block sizes for this "
                             f"model: {allowed}")


def check_gptq_blocks(spec: SweepSpec, config: dict, model_dir: Path | None = None) -> None:
    """Olive's GPTQ pass quantizes a linear layer in whole blocks of its input features: the block size must divide
    the width of every layer's input (the hidden size, the attention output, the MLP's intermediate size)."""
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    head_dim = config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and heads else None)
    widths = {"hidden_size": hidden, "intermediate_size": config.get("intermediate_size"),
              "num_attention_heads x head_dim": heads * head_dim if heads and head_dim else None}
    for variant in spec.variants:
        block = variant.resolved().block_size
        if variant.method != "gptq" or block is None:
            continue
        uneven = [f"{name} {width}" for name, width in widths.items() if isinstance(width, int) and width % block]
        if uneven:
            raise InputError(f"variant {variant.name}: method gptq quantizes in whole blocks of a layer's inputs, and "
                             f"block_size {block} does not divide {', '.join(uneven)} "
                             f"({Path(model_dir or spec.model.path) / 'config.json'}); allowed block sizes for this "
                             f"model: {_blocks_dividing(list(widths.values()))}")


def _blocks_dividing(widths: list) -> str:
    """The block sizes a spec may name (config.BlockSize) that divide every known width, as an error lists them."""
    known = [w for w in widths if isinstance(w, int)]
    return ", ".join(str(b) for b in get_args(BlockSize) if all(w % b == 0 for w in known)) or "none"


def check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {out}: {parent} is not writable")


def check_disk(spec: SweepSpec, ws: Workspace, source: Path | None = None) -> None:
    """Refuse a sweep that would fill the disk half-way through."""
    need = estimate_disk_bytes(source or spec.model.path, [v.resolved() for v in spec.variants])
    for folder in (ws.out_dir, ws.work_dir):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        if free < need:
            raise InputError(f"not enough disk for this sweep: it needs about {need / 1e9:.2f} GB in {existing}, "
                             f"which has {free / 1e9:.2f} GB free; free space or sweep fewer variants")
