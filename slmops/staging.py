"""Folders that appear whole or not at all: each model folder (the fp32 export, every variant) is built under a
staging name and renamed into place only when whole and checked, with a manifest (``slmops_variant.json``) whose
``key`` says what content it holds. A folder whose manifest matches its key, and whose files are all there at their
recorded sizes, is reused; anything else is rebuilt.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from slmops.errors import SlmopsError, VariantError
from slmops.files import read_json, write_json

MANIFEST = "slmops_variant.json"
# a write that fails for want of room: the disk is full, a quota or the file-size limit (RLIMIT_FSIZE) is reached
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


class WriteFailedError(SlmopsError):
    """A write failed part-way for want of room (disk full, quota, file-size limit). Not one variant's fault, and
    every variant after it would fail the same way: it stops the sweep (exit 1). Nothing half-written is published;
    a re-run resumes and reuses what was finished."""


def read_manifest(folder: Path) -> dict[str, Any] | None:
    return read_json(Path(folder) / MANIFEST)


def file_sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file() and p.name != MANIFEST}


def is_complete(folder: Path, key: str, required: str = "model.onnx") -> bool:
    """True when the folder holds the content ``key`` names: its manifest matches, and every file it recorded is
    there with its size (a truncated or deleted model file means rebuild, not reuse)."""
    manifest = read_manifest(folder)
    if not manifest or manifest.get("key") != key or not (folder / required).is_file():
        return False
    for name, size in (manifest.get("files") or {}).items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != size:
            return False
    return True


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


@contextlib.contextmanager
def staged(dest: Path, what: str) -> Iterator[Path]:
    """A fresh staging folder beside ``dest`` for the block, removed afterwards whatever happens.

    A write that fails for want of room becomes WriteFailedError (stops the sweep); another OSError becomes the
    VariantError of ``what`` (the variant fails, the sweep goes on).
    """
    staging = dest.parent / f".staging-{dest.name}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        yield staging
    except (VariantError, OSError) as err:
        cause = _disk_cause(err)
        if cause:
            raise WriteFailedError(
                f"{what}: a write failed part-way while building it in {staging} ({cause}); nothing of it was "
                f"published to {dest} and the partial files were removed. Free disk space (or raise the file-size "
                "limit) and run the sweep again: what was finished is reused") from err
        if isinstance(err, VariantError):
            raise
        raise VariantError(f"{what}: {err}") from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def rewrite(folder: Path, name: str, data: bytes) -> None:
    """Replace (or add) one file of a folder atomically. A published folder's manifest then records the file's new
    size, so the folder still counts as complete; a crash between the two means a rebuild, never a wrong reuse."""
    path = Path(folder) / name
    tmp = path.with_name(f".{name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    manifest = read_manifest(folder)
    if manifest is not None and isinstance(manifest.get("files"), dict):
        write_json(Path(folder) / MANIFEST, {**manifest, "files": {**manifest["files"], name: len(data)}})


def publish(model_dir: Path, dest: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest (with the files' sizes) and swap the finished folder into place; the old one, if any, is
    removed only after the rename."""
    manifest = {**manifest, "files": file_sizes(model_dir)}
    write_json(model_dir / MANIFEST, manifest)
    old = dest.parent / f".old-{dest.name}-{os.getpid()}"
    if dest.exists():
        os.replace(dest, old)
    os.replace(model_dir, dest)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


def copy_model(src: Path, dst: Path) -> None:
    """Copy a model folder's files (not its manifest)."""
    # a copy, not a hard link. onnxruntime-genai 0.14.1, onnxruntime 1.31 and Foundry Local load a linked model, but
    # onnx and onnx_ir refuse external data with several links ("may indicate a hard link attack"), and Olive's
    # ONNX-level passes read the fp32 export with onnx_ir: linking the export into the fp32 variant would fail
    # every variant derived from it afterwards (checked 2026-11, docs/toolchain.md)
    dst.mkdir(parents=True, exist_ok=True)
    for item in src.iterdir():
        if item.is_file() and item.name != MANIFEST:
            shutil.copy2(item, dst / item.name)


def clean_stale_staging(folder: Path) -> list[Path]:
    """Remove staging folders left by processes that died (a kill -9 mid-build); return what was removed."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for path in folder.iterdir():
        if not path.name.startswith((".staging-", ".old-")):
            continue
        pid = path.name.rsplit("-", 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and psutil.pid_exists(int(pid)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
