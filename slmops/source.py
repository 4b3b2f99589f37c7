"""The source model: checks that a Hugging Face folder can be converted, and its content hash.

Everything here runs before any conversion starts, so bad input costs seconds, not a half-built sweep.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from functools import lru_cache
from pathlib import Path

from slmops.errors import InputError
from slmops.variant import Variant

WEIGHT_SUFFIXES = (".safetensors",)
SHARD_INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")


@lru_cache(maxsize=1)
def supported_architectures() -> tuple[str, ...]:
    """Architectures onnxruntime-genai's model builder converts, read from the installed builder's source."""
    spec = importlib.util.find_spec("onnxruntime_genai")
    if spec is None or not spec.submodule_search_locations:
        return ()
    builder = Path(next(iter(spec.submodule_search_locations))) / "models" / "builder.py"
    text = builder.read_text(encoding="utf-8") if builder.exists() else ""
    found = re.findall(r'config\.architectures\[0\] == "(\w+)"', text)
    return tuple(sorted({a for a in found if a.endswith("ForCausalLM")}))


def has_chat_template(model_dir: Path) -> bool:
    if any((model_dir / name).is_file() for name in CHAT_TEMPLATE_FILES):
        return True
    config = _read_json(model_dir / "tokenizer_config.json", required=False) or {}
    return bool(config.get("chat_template"))


def _read_json(path: Path, required: bool = True) -> dict | None:
    if not path.is_file():
        if required:
            raise InputError(f"{path.parent}: no {path.name}; a Hugging Face model folder needs one")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _check_symlinks(model_dir: Path) -> None:
    root = model_dir.resolve()
    for path in model_dir.rglob("*"):
        if path.is_symlink():
            target = path.resolve()
            if root != target and root not in target.parents:
                raise InputError(f"{path}: a symlink to {target}, outside the model folder; copy the file into the "
                                 "folder (links out of it are refused)")


def _header(path: Path) -> dict:
    """A safetensors file's header (tensor name -> dtype, shape, data offsets), checked to be whole."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise InputError(f"{path}: truncated safetensors file ({size} bytes, not even a header)")
        header_len = int.from_bytes(raw, "little")
        if header_len <= 0 or 8 + header_len > size:
            raise InputError(f"{path}: truncated or corrupt safetensors file (header of {header_len} bytes in a "
                             f"{size}-byte file)")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise InputError(f"{path}: corrupt safetensors header") from None
    header.pop("__metadata__", None)
    header["__bytes__"] = 8 + header_len
    return header


def _check_safetensors(path: Path) -> set[str]:
    """The header is whole and the file holds every byte the header promises (a truncated copy fails here); the
    names of the tensors it holds."""
    header = _header(path)
    start, size = header.pop("__bytes__"), path.stat().st_size
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if start + end > size:
        raise InputError(f"{path}: truncated safetensors file: its header needs {start + end} bytes, "
                         f"the file has {size}")
    return set(header)


def safetensors_shapes(model_dir: Path, files: list[Path] | None = None) -> dict[str, list[int]]:
    """Every tensor's shape, read from the headers of the folder's safetensors files (or of `files`)."""
    files = files if files is not None else sorted(Path(model_dir).glob("*.safetensors"))
    return {name: t["shape"] for path in files for name, t in _header(path).items() if name != "__bytes__"}


def _check_shards(model_dir: Path, tensors: dict[str, set[str]]) -> None:
    """Sharded weights agree with their index (model.safetensors.index.json): every shard it names is in the
    folder and holds the tensors it is named for, and every shard in the folder is named."""
    index_path = model_dir / SHARD_INDEX
    if not index_path.is_file():
        if len(tensors) > 1:
            raise InputError(f"{model_dir}: {len(tensors)} safetensors files ({', '.join(sorted(tensors))}) and no "
                             f"{SHARD_INDEX}: sharded weights need the index their checkpoint was saved with")
        return
    weight_map = (_read_json(index_path) or {}).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise InputError(f"{index_path}: no weight_map (tensor name -> shard file)")
    named = set(weight_map.values())
    missing = sorted(named - set(tensors))
    if missing:
        raise InputError(f"{index_path} names shard(s) missing from the folder: {', '.join(missing)}")
    unnamed = sorted(set(tensors) - named)
    if unnamed:
        raise InputError(f"{model_dir}: shard(s) missing from {SHARD_INDEX}: {', '.join(unnamed)} (the index "
                         "does not belong to these weights)")
    for tensor, shard in weight_map.items():
        if tensor not in tensors[shard]:
            raise InputError(f"{index_path}: tensor {tensor} is mapped to {shard}, which does not hold it")


def describe_weights(model_dir: Path) -> dict:
    """What a report says of the source's weights: their dtype (config.json), the number of safetensors files and
    their bytes."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    config = _read_json(Path(model_dir) / "config.json", required=False) or {}
    return {"dtype": config.get("dtype") or config.get("torch_dtype") or "float32", "files": len(files),
            "bytes": sum(p.stat().st_size for p in files)}


def _check_tokenizer_fits(model_dir: Path, config: dict) -> None:
    path = model_dir / "tokenizer.json"
    vocab_size = config.get("vocab_size")
    if not path.is_file() or not isinstance(vocab_size, int):
        return
    tok = _read_json(path)
    ids = list(((tok.get("model") or {}).get("vocab") or {}).values())
    ids += [t.get("id", -1) for t in tok.get("added_tokens") or []]
    top = max((i for i in ids if isinstance(i, int)), default=-1)
    if top >= vocab_size:
        raise InputError(f"{path}: token ids go up to {top} but config.json has vocab_size {vocab_size}: the "
                         "tokenizer does not belong to this model")


def validate_model_dir(model_dir: str | Path, allow_pickle: bool = False) -> dict:
    """Check that a folder is a convertible causal LM with a chat template; return its config.json."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"model folder not found: {model_dir}")
    _check_symlinks(model_dir)
    config = _read_json(model_dir / "config.json")
    files = [p for p in model_dir.iterdir() if p.is_file()]
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        pickles = [p.name for p in files if p.suffix in PICKLE_SUFFIXES]
        if pickles and not allow_pickle:
            raise InputError(
                f"{model_dir}: weights are pickle files ({', '.join(sorted(pickles))}), which can run code when "
                "loaded; convert them to .safetensors or set model.allow_pickle_weights: true"
            )
        if not pickles:
            raise InputError(f"{model_dir}: no weights found; expected *.safetensors files")
    archs = config.get("architectures") or []
    supported = supported_architectures()
    if not archs or archs[0] not in supported:
        got = archs[0] if archs else "none in config.json"
        raise InputError(
            f"{model_dir}: architecture {got} is not supported by the ONNX model builder; "
            f"supported: {', '.join(supported)}"
        )
    if not (model_dir / "tokenizer.json").is_file() and not (model_dir / "tokenizer.model").is_file():
        raise InputError(f"{model_dir}: no tokenizer (tokenizer.json or tokenizer.model)")
    tensors = {weights.name: _check_safetensors(weights) for weights in files if weights.suffix == ".safetensors"}
    _check_shards(model_dir, tensors)
    _check_tokenizer_fits(model_dir, config)
    if not has_chat_template(model_dir):
        raise InputError(
            f"{model_dir}: the tokenizer has no chat template; add one (chat_template.jinja, or "
            "'chat_template' in tokenizer_config.json) so prompts can be formatted for Foundry Local"
        )
    return config


def estimate_disk_bytes(model_dir: Path, variants: list[Variant]) -> int:
    """Bytes a sweep may write: the fp32 export, and per variant its folder plus Olive's working copy."""
    weights = describe_weights(model_dir)
    # the export is fp32 whatever the source
    fp32 = weights["bytes"] * (2 if weights["dtype"] in ("float16", "bfloat16") else 1)
    share = {"fp32": 1.0, "int8": 0.5, "int4": 0.4}  # of fp32 size; int4 keeps its fp32 embedding by default
    total = fp32  # the shared export
    for v in variants:
        total += 2 * share[v.precision] * fp32  # staging (Olive's cache) and the published folder
    return int(total)


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _hashed_files(model_dir: Path) -> list[tuple[Path, str]]:
    """The files the content hash covers, with their relative names (hidden files and eval.jsonl left out)."""
    files = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if not (any(part.startswith(".") for part in rel.split("/")) or rel == "eval.jsonl"):
            files.append((path, rel))
    return files


def _read_memo(memo_file: Path | None) -> dict[str, list]:
    if memo_file and memo_file.is_file():
        try:
            return json.loads(memo_file.read_text())
        except (json.JSONDecodeError, OSError):
            return {}
    return {}


def is_memoized(model_dir: str | Path, memo_file: Path | None) -> bool:
    """Whether hashing the folder would read nothing: every file's hash is remembered at its size and mtime."""
    memo = _read_memo(memo_file)
    for path, _ in _hashed_files(Path(model_dir)):
        entry, st = memo.get(f"{path.resolve()}"), path.stat()
        if not entry or entry[0] != st.st_size or entry[1] != st.st_mtime_ns:
            return False
    return True


def model_sha256(model_dir: str | Path, memo_file: Path | None = None) -> str:
    """Content hash of a model folder: every file's path and bytes (hidden files and eval.jsonl left out).

    ``memo_file`` remembers each file's hash by (size, mtime) so an unchanged multi-GB folder is not read again.
    """
    model_dir = Path(model_dir)
    memo = _read_memo(memo_file)
    digest = hashlib.sha256()
    fresh: dict[str, list] = {}
    for path, rel in _hashed_files(model_dir):
        st = path.stat()
        key = f"{path.resolve()}"
        entry = memo.get(key)
        if entry and entry[0] == st.st_size and entry[1] == st.st_mtime_ns:
            file_hash = entry[2]
        else:
            file_hash = _file_sha256(path)
        fresh[key] = [st.st_size, st.st_mtime_ns, file_hash]
        digest.update(f"{rel}\0{file_hash}\n".encode())
    if memo_file:
        memo.update(fresh)
        memo_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(memo))
        os.replace(tmp, memo_file)
    return digest.hexdigest()
