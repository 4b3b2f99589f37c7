"""Prefect tasks of the convert step: a LoRA adapter merged into its base, the source model's content hash, and its
fp32 ONNX export (slmops.lora and slmops.convert do the work)."""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.cache_policies import NONE

from slmops import convert as converting
from slmops import lora
from slmops.convert import Export
from slmops.errors import VariantError
from slmops.keys import export_key


@task(name="fingerprint", cache_policy=NONE)
def fingerprint(model_dir: Path, memo_file: Path) -> str:
    """Content hash of the source model folder (and Olive's import started when it is new: slmops.convert)."""
    return converting.fingerprint(model_dir, memo_file)


@task(name="merge-adapter", cache_policy=NONE)
def merge_adapter(base: Path, adapter: Path, merged_dir: Path, memo_file: Path, versions: dict[str, str],
                  adapter_config: dict) -> Path:
    """The base model with the LoRA adapter merged in, made once per content of both (slmops.lora)."""
    return lora.merge(base, adapter, merged_dir, memo_file, versions, adapter_config)


@task(name="convert", cache_policy=NONE)
def convert(source_dir: Path, exports_dir: Path, source_sha: str, versions: dict[str, str], trust_remote_code: bool,
            log_dir: Path) -> Export:
    """The fp32 ONNX export every derived variant starts from, made (or reused) once per source content."""
    key = export_key(source_sha, versions)
    dest = exports_dir / key[:16]
    try:
        converting.convert(source_dir, dest, key, trust_remote_code, log_dir)
    except VariantError as err:  # every variant that needs it fails with this; the builder variants go on
        return Export(key=key, error=str(err))
    return Export(key=key, dir=dest)
