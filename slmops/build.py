"""Building variant folders: the shared fp32 export, each quantized variant, and the checks a variant passes
before it counts. No Prefect here: tasks/ wraps these functions.

Every folder is built under a staging name and renamed into place only when whole and checked, with a manifest
(``slmops_variant.json``) whose ``key`` says what content it holds; a folder whose manifest matches is reused.
"""

from __future__ import annotations

import errno
import gc
import hashlib
import json
import os
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slmops.adapters import genai, olive
from slmops.errors import SlmopsError, VariantError
from slmops.locks import file_lock

MANIFEST = "slmops_variant.json"
RECIPE_VERSION = 1  # bump when the way a variant is built changes, so old cache entries stop matching
# a write that fails for want of room: the disk is full, a quota or the file-size limit (RLIMIT_FSIZE) is reached
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class WriteFailedError(SlmopsError):
    """A write failed part-way for want of room (disk full, quota, file-size limit). Not one variant's fault, and
    every variant after it would fail the same way: it stops the sweep (exit 1). Nothing half-written is published;
    a re-run resumes and reuses what was finished."""


def _disk_cause(err: BaseException) -> str | None:
    """The disk-full kind of cause of ``err`` ("[Errno 28] No space left on device"), or None if it is another.

    Olive swallows the OSError of a pass and only logs it (its text reaches us in the VariantError's message), so
    both an OSError's errno and the strerror of a logged cause are looked at.
    """
    for cause in (err, err.__cause__, err.__context__):
        if isinstance(cause, OSError) and cause.errno in DISK_ERRNOS:
            return f"[Errno {cause.errno}] {cause.strerror}"
    text = str(err)
    for code in DISK_ERRNOS:
        if os.strerror(code) in text:
            return f"[Errno {code}] {os.strerror(code)}"
    return None


def _write_failed(what: str, staging: Path, dest: Path, cause: str) -> WriteFailedError:
    return WriteFailedError(
        f"{what}: a write failed part-way while building it in {staging} ({cause}); nothing of it was published "
        f"to {dest} and the partial files were removed. Free disk space (or raise the file-size limit) and run the "
        "sweep again: what was finished is reused")


def content_key(*parts: Any) -> str:
    """A stable hash of JSON-able parts (source hash, resolved config, tool versions)."""
    blob = json.dumps([RECIPE_VERSION, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}


def is_complete(folder: Path, key: str) -> bool:
    """True when the folder holds the content ``key`` names: its manifest matches, and every file it recorded is
    there with its size (a truncated or deleted model file means rebuild, not reuse)."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("key") != key or not (folder / "model.onnx").is_file():
        return False
    for name, size in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _staging(dest: Path) -> Path:
    staging = dest.parent / f".staging-{dest.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


def _publish(staging_model: Path, dest: Path) -> None:
    """Swap a finished folder into place; the old one (if any) is removed only after the rename."""
    old = dest.parent / f".old-{dest.name}-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(staging_model, dest)
    shutil.rmtree(old, ignore_errors=True)


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove staging folders left by processes that died (a kill -9 mid-build); return what was removed."""
    removed = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if not path.name.startswith((".staging-", ".old-")):
            continue
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and _alive(int(pid)) and int(pid) != os.getpid():
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


_FREEZE_LOCK = threading.Lock()
_frozen = False


def release_olive_garbage() -> None:
    """Free, now, what an Olive run left in reference cycles; called after every Olive run of this process.

    Olive's ModelBuilder pass leaves its onnx_ir graph behind in reference cycles (graph, values and their uses,
    about 5,000 objects), and with it the source weights as torch tensors over the safetensors mmap: the size of
    the model's weights, per builder run. Only a full collection frees cycles, and Python runs one only after a
    quarter as many new long-lived objects as the process already holds; a process that has imported Olive, torch,
    transformers, MLflow and Prefect holds about a million, so twenty variants never got there (measured on the demo
    model: +6.4 MB of tensors and ~10 MB of RSS per builder variant, 141 MB over variants 6-20; malloc_trim(0) gave
    back only 2-14 MB a variant, so it is unfreed objects, not fragmentation). See docs/reliability.md.

    A full collection of a million objects takes 0.6-0.9 s, so the first call also freezes what survives it (the
    imported libraries and the sweep's own state, gc.freeze): later collections, ours and Python's own, skip those
    and take about 5 ms. The frozen objects are never collected, which costs only what is alive at the first call.
    """
    global _frozen
    gc.collect()
    with _FREEZE_LOCK:
        if not _frozen:
            gc.freeze()
            _frozen = True


def _alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid)


def export_fp32(source_dir: Path, dest: Path, key: str, trust_remote_code: bool, log_dir: Path) -> dict:
    """Make (or reuse) the fp32 ONNX export of the source model at ``dest``; return its manifest."""
    # sweeps of one model in several output folders share the export: one builds it, the others wait and reuse it
    with file_lock(dest.parent / f"{dest.name}.lock"):
        if is_complete(dest, key):
            return read_manifest(dest)
        return _export_fp32(source_dir, dest, key, trust_remote_code, log_dir)


def _export_fp32(source_dir: Path, dest: Path, key: str, trust_remote_code: bool, log_dir: Path) -> dict:
    started = time.perf_counter()
    staging = _staging(dest)
    try:
        config = olive.export_config(source_dir, staging / "model", staging / "olive-cache", trust_remote_code)
        model_dir = olive.run_workflow(config, "fp32 export", log_dir / "fp32-export.olive.log")
        genai.load_and_generate(model_dir)
        manifest = {"key": key, "kind": "fp32-export", "olive_config": config, "files": file_sizes(model_dir),
                    "seconds": round(time.perf_counter() - started, 3), "size_bytes": genai.folder_size(model_dir)}
        _write_json(model_dir / MANIFEST, manifest)
        _publish(model_dir, dest)
    except (VariantError, OSError) as err:
        cause = _disk_cause(err)
        if cause:
            raise _write_failed("the fp32 export", staging, dest, cause) from err
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        release_olive_garbage()
    return manifest


def _copy_model(src: Path, dst: Path) -> None:
    # a copy, not a hard link: onnx refuses external data with several links ("may indicate a hard link attack")
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name != MANIFEST:
            shutil.copy2(item, dst / item.name)


def build_variant(
    variant: dict[str, Any], key: str, source_dir: Path, fp32_dir: Path | None, dest: Path, log_dir: Path,
    trust_remote_code: bool = False, extra_manifest: dict | None = None,
) -> dict:
    """Build one resolved variant into ``dest`` (staged, checked, then renamed); return its manifest.

    Raises VariantError when Olive produces nothing, the graph is not what the variant claims, or the model does
    not load and generate.
    """
    name = variant["name"]
    started = time.perf_counter()
    staging = _staging(dest)
    try:
        model_dir = staging / "model"
        fp32_size = genai.folder_size(fp32_dir) if fp32_dir else None
        if variant["precision"] == "fp32":
            if fp32_dir is None:
                raise ValueError("the fp32 variant needs the fp32 export")
            _copy_model(fp32_dir, model_dir)
            olive_config = read_manifest(fp32_dir)["olive_config"]
        else:
            if variant["method"] != "builder" and fp32_dir is None:
                raise ValueError(f"variant {name} is derived from the fp32 export, which was not given")
            olive_config = olive.variant_config(
                variant, source_dir, fp32_dir, model_dir, staging / "olive-cache", trust_remote_code
            )
            olive.run_workflow(olive_config, f"variant {name}", log_dir / f"{name}.olive.log")
            if variant["method"] != "builder":
                olive.complete_from(fp32_dir, model_dir, skip=(MANIFEST,))
        graph = genai.check_graph(model_dir, variant, fp32_size)
        genai.load_and_generate(model_dir)
        manifest = {
            "key": key,
            "kind": "variant",
            "config": variant,
            "olive_config": olive_config,
            "graph": graph,
            "files": file_sizes(model_dir),
            "size_bytes": genai.folder_size(model_dir),
            "seconds": round(time.perf_counter() - started, 3),
            "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **(extra_manifest or {}),
        }
        _write_json(model_dir / MANIFEST, manifest)
        _publish(model_dir, dest)
    except (VariantError, OSError) as err:
        cause = _disk_cause(err)
        if cause:
            raise _write_failed(f"variant {name}", staging, dest, cause) from err
        if isinstance(err, VariantError):
            raise
        raise VariantError(f"variant {name}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        release_olive_garbage()
    return manifest
