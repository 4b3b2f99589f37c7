"""Lay variants out as the Foundry Local CLI's model cache expects, for Windows and macOS users.

    slmops foundry export --to DIR      then, on Windows/macOS: foundry cache cd DIR && foundry cache ls

Those users run the Foundry Local CLI, not the SDK. Its cache scanner lists a model folder that holds an
``inference_model.json`` with a ``Name`` (the name ``foundry model run`` takes) and a ``genai_config.json``, and skips
one that still has a ``download.tmp`` (a download in progress). So each variant becomes ``DIR/<Name>/`` holding its
model, tokenizer and chat template files, ``genai_config.json`` and an ``inference_model.json`` whose ``Name`` is the
folder's name; Olive's run records stay behind. A folder is built under a hidden temporary name and renamed into
place, so the scanner never sees half a model; files are hard-linked when source and target share a filesystem.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from slmops.errors import InputError, SpecError
from slmops.files import write_json
from slmops.names import NAME_RULE, is_valid_name
from slmops.prompt_template import INFERENCE_MODEL_JSON, write_inference_model_json
from slmops.register import BUILT_GENAI_CONFIG

# Olive's records of the run that built a variant: not part of the model
# Olive's leftovers, and the variant's genai_config.json as built (the export serves the context registered)
_NOT_EXPORTED = {"footprint.json", "output_footprint.json", "run_history.txt", "model_config.json", "download.tmp",
                 BUILT_GENAI_CONFIG}


def _link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src to dst (no bytes copied) where the filesystem allows it, else copy."""
    try:
        os.link(src, dst)
    except OSError:
        # another filesystem (EXDEV), or one without hard links
        shutil.copy2(src, dst)


def _export_one(name: str, variant_dir: Path, to_dir: Path) -> Path:
    """Build DIR/<name> from variant_dir under a temporary name, then rename it into place."""
    if not (variant_dir / "genai_config.json").is_file():
        raise InputError(f"{variant_dir} has no genai_config.json: not an onnxruntime-genai model folder to export")
    target = to_dir / name
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=to_dir))
    try:
        for src in sorted(variant_dir.rglob("*")):
            rel = src.relative_to(variant_dir)
            if src.name in _NOT_EXPORTED or rel.name == INFERENCE_MODEL_JSON:
                continue
            dst = staging / rel
            if src.is_dir():
                dst.mkdir(parents=True, exist_ok=True)
            elif src.is_file():
                dst.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(src, dst)
        _write_inference_model(variant_dir, staging, name)

        if target.exists():
            # a directory cannot be os.replace'd onto a non-empty one: move the old aside, then drop it
            old = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=to_dir))
            os.replace(target, old / name)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _write_inference_model(variant_dir: Path, staging: Path, name: str) -> None:
    """The variant's inference_model.json with Name set to the export name, or a fresh one from its chat template."""
    source = variant_dir / INFERENCE_MODEL_JSON
    if source.is_file():
        try:
            document = json.loads(source.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise InputError(f"{source} is not valid JSON ({exc}); delete it to have it derived again") from exc
        document["Name"] = name
        write_json(staging / INFERENCE_MODEL_JSON, document)
    else:
        write_inference_model_json(staging, name)


def export_for_foundry_cli(variant_dirs: dict[str, Path], to_dir: Path | str) -> list[Path]:
    """Export each {Name: variant folder} to ``to_dir/<Name>/`` as the Foundry Local CLI's cache expects."""
    for name in variant_dirs:
        # the Name is a folder name on Windows too, where ':' is not allowed: the CLI's Name, not an SDK id
        if not is_valid_name(name):
            raise SpecError(f"export name {name!r} is not allowed; allowed: {NAME_RULE}")
    to_dir = Path(to_dir).expanduser().resolve()
    try:
        to_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        reason = exc.strerror or exc
        raise InputError(f"cannot create export folder {to_dir} ({reason}); choose a writable folder") from exc
    return [_export_one(name, Path(src).resolve(), to_dir) for name, src in variant_dirs.items()]
