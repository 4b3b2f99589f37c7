"""LoRA adapters (PEFT folders): found, checked against their base before any work, and merged into the base once per
content of both, so that the rest of the sweep converts the merged model as any other.

    model: {path: ./base-model, adapter: ./my-lora}     # or path: ./my-lora, whose adapter_config.json names a
                                                         # local base in base_model_name_or_path

The merged folder (<work>/merged/<key>/) holds the base's tokenizer and configs, the merged weights in the base's
dtype, the adapter's eval.jsonl when it has one (else the base's), and slmops_merge.json: both folders, their
content hashes and the adapter's config (rank, alpha, target modules), which the report and MLflow record.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

from slmops import staging
from slmops.errors import InputError
from slmops.files import write_json
from slmops.source import model_sha256, safetensors_shapes
from slmops.versions import installed

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MERGE_RECORD = "slmops_merge.json"
_LORA_TENSOR = re.compile(r"^base_model\.model\.(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def _adapter_config(adapter: Path) -> dict:
    try:
        return json.loads((adapter / ADAPTER_CONFIG).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise InputError(f"{adapter / ADAPTER_CONFIG}: unreadable ({err})") from None


def split(path: Path, adapter: Path | None) -> tuple[Path, Path | None]:
    """(base folder, adapter folder or None) of a spec's model: an adapter named beside its base, a PEFT folder
    whose config names a local base, or a plain model folder."""
    path = Path(path)
    if adapter is not None:
        adapter = Path(adapter)
        if not is_adapter_dir(adapter):
            raise InputError(f"model.adapter {adapter}: not a PEFT adapter folder (no {ADAPTER_CONFIG})")
        return path, adapter
    if not is_adapter_dir(path):
        return path, None
    named = _adapter_config(path).get("base_model_name_or_path")
    if not named:
        raise InputError(f"{path / ADAPTER_CONFIG}: no base_model_name_or_path; name the base model: "
                         f"model: {{path: BASE, adapter: {path}}}")
    for candidate in (Path(named).expanduser(), path / named):
        if candidate.is_dir():
            return candidate.resolve(), path
    raise InputError(f"{path}: its base model {named!r} is not a local folder, and slmops downloads nothing; put the "
                     f"base on disk and name it: model: {{path: BASE, adapter: {path}}}")


def check_adapter(adapter: Path, base: Path, base_config: dict) -> dict:
    """The adapter fits its base: a LoRA adapter in safetensors whose every target module exists in the base with
    the shapes the adapter was trained on. Returns its config as reports record it (rank, alpha, target modules)."""
    config = _adapter_config(adapter)
    if config.get("peft_type") != "LORA":
        raise InputError(f"{adapter / ADAPTER_CONFIG}: peft_type {config.get('peft_type')!r}; only LoRA adapters "
                         "can be merged")
    weights = adapter / ADAPTER_WEIGHTS
    if not weights.is_file():
        pickled = " (adapter_model.bin is a pickle, which can run code when loaded: save it as safetensors)" \
            if (adapter / "adapter_model.bin").is_file() else ""
        raise InputError(f"{adapter}: no {ADAPTER_WEIGHTS}{pickled}")
    base_shapes = safetensors_shapes(base)
    arch = (base_config.get("architectures") or ["an unknown architecture"])[0]
    pairs: dict[str, dict[str, list[int]]] = {}
    for name, shape in safetensors_shapes(adapter, [weights]).items():
        found = _LORA_TENSOR.match(name)
        if found:
            pairs.setdefault(found["module"], {})[found["ab"]] = shape
    if not pairs:
        raise InputError(f"{weights}: no LoRA tensors (base_model.model.<module>.lora_A/B.weight)")
    missing = sorted(m for m in pairs if f"{m}.weight" not in base_shapes)
    if missing:
        raise InputError(f"{adapter}: its LoRA modules are not in the base {base} ({arch}): {', '.join(missing[:3])}"
                         f"{f' and {len(missing) - 3} more' if len(missing) > 3 else ''}; the adapter was trained "
                         "on another model")
    for module, ab in sorted(pairs.items()):
        out_features, in_features = base_shapes[f"{module}.weight"]
        if ab.get("A", [0, in_features])[1] != in_features or ab.get("B", [out_features, 0])[0] != out_features:
            raise InputError(f"{adapter}: {module} is {out_features}x{in_features} in the base {base} ({arch}), but "
                             f"the adapter's LoRA expects {ab.get('B', ['?'])[0]}x{ab.get('A', ['?', '?'])[1]}: it "
                             "was trained on another architecture")
    targets = config.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else list(targets)
    base_modules = {name.rsplit(".", 2)[-2] for name in base_shapes if name.endswith(".weight") and "." in name}
    absent = sorted(t for t in targets if t not in base_modules)
    if absent:
        raise InputError(f"{adapter / ADAPTER_CONFIG}: target modules not in the base {base} ({arch}): "
                         f"{', '.join(absent)}; the base has {', '.join(sorted(base_modules))}")
    return {"r": config.get("r"), "lora_alpha": config.get("lora_alpha"), "target_modules": sorted(targets)}


def merge_key(base_sha: str, adapter_sha: str, versions: dict[str, str]) -> str:
    pinned = {"peft": installed("peft"), **{k: versions.get(k) for k in ("transformers", "torch")}}
    return hashlib.sha256(json.dumps([base_sha, adapter_sha, pinned], sort_keys=True).encode()).hexdigest()


def merge(base: Path, adapter: Path, merged_dir: Path, memo: Path, versions: dict[str, str],
          adapter_config: dict) -> Path:
    """The base with the adapter merged in (PEFT, in process), made once per content of both and reused after."""
    base_sha, adapter_sha = model_sha256(base, memo), model_sha256(adapter, memo)
    key = merge_key(base_sha, adapter_sha, versions)
    dest = merged_dir / key[:16]
    if staging.is_complete(dest, key, required="config.json"):
        return dest
    merged_dir.mkdir(parents=True, exist_ok=True)
    with staging.staged(dest, f"merging the adapter {adapter} into {base}") as folder:
        _merge_into(base, adapter, folder)
        write_json(folder / MERGE_RECORD, {"base": str(base), "base_sha256": base_sha, "adapter": str(adapter),
                                           "adapter_sha256": adapter_sha, "adapter_config": adapter_config})
        staging.publish(folder, dest, {"key": key})
    return dest


def _merge_into(base: Path, adapter: Path, folder: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(folder, safe_serialization=True)
    weights = (".safetensors", ".bin", ".pt", ".pth")
    for item in base.iterdir():  # the tokenizer, chat template and configs; save_pretrained's own files win
        if item.is_file() and not item.name.endswith(weights) and item.name != "model.safetensors.index.json" \
                and not (folder / item.name).exists():
            shutil.copy2(item, folder / item.name)
    if (adapter / "eval.jsonl").is_file():  # the adapter's own task is what its sweep measures
        shutil.copy2(adapter / "eval.jsonl", folder / "eval.jsonl")


def merge_record(model_dir: Path) -> dict | None:
    """What a merged folder was made from (None for a model folder that is not one)."""
    path = Path(model_dir) / MERGE_RECORD
    return json.loads(path.read_text()) if path.is_file() else None
