"""Convert: the source model's fp32 ONNX export, made once per source content and shared by every variant derived
from it (the fp32 variant is a copy of it; int8 and the ONNX-level int4 variants are passes on it).

    manifest = convert(source_dir, work/"exports"/key[:16], key, trust_remote_code=False, log_dir=out/"logs")
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from slmops import source, staging
from slmops.adapters import genai, olive
from slmops.files import folder_size
from slmops.locks import file_lock
from slmops.timing import Steps


def fingerprint(source_dir: Path, memo_file: Path) -> str:
    """The source folder's content hash (the key of its export and variants).

    A folder this work folder has not hashed yet is about to be converted (nothing can be cached under a hash never
    made): Olive starts importing now, beside the hashing (hashlib lets other threads run while it reads) and
    MLflow's start-up, instead of at the head of the conversion. A re-run hashes nothing and imports nothing.
    """
    if not source.is_memoized(source_dir, memo_file):
        olive.preload()
    return source.model_sha256(source_dir, memo_file)


def convert(source_dir: Path, dest: Path, key: str, trust_remote_code: bool, log_dir: Path) -> dict[str, Any]:
    """Make (or reuse) the fp32 ONNX export of the source model at ``dest``; return its manifest."""
    # sweeps of one model in several output folders share the export: one builds it, the others wait and reuse it
    with file_lock(dest.parent / f"{dest.name}.lock"):
        if staging.is_complete(dest, key):
            return staging.read_manifest(dest)
        started, steps = time.perf_counter(), Steps()
        with staging.staged(dest, "the fp32 export") as work:
            config = olive.export_config(source_dir, work / "model", work / "olive-cache", trust_remote_code)
            with steps("build"):
                model_dir = olive.run_workflow(config, "fp32 export", log_dir / "fp32-export.olive.log")
            with steps("load"):
                genai.load_and_generate(model_dir)
            return staging.publish(model_dir, dest, {
                "key": key, "kind": "fp32-export", "olive_config": config, "size_bytes": folder_size(model_dir),
                "seconds": round(time.perf_counter() - started, 3), "steps": steps.seconds})


class Export(BaseModel):
    """The outcome of the convert step: the export's folder, or why there is none."""

    key: str
    dir: Path | None = None
    error: str | None = None
