"""Work Olive 0.13.0 does in every run that this project's runs do not need, taken out.

Every run here gets a cache folder of its own, inside the staging folder of what it builds, and the folder is
removed as soon as the run ends (``olive.run_workflow``). Olive's cache serves nothing across runs, so two things
it does for that cache only cost time (measured on the 494M-parameter model, docs/benchmarks.md):

* It keys the cache by the SHA-256 of every file of the input model: the 2 GB source for a ModelBuilder run, the
  2.5 GB fp32 export for each ONNX-level pass, about 2.2 s a run. Here the key is the files' paths, sizes and
  modification times: a fresh cache folder never holds anything to be confused with.
* A pass writes its model into the cache, and the run then copies it into the output folder: 2.5 GB for the
  export, 0.6-0.9 GB for a variant. Here the output files are hard links to the cache's; removing the cache leaves
  them the only link. That matters: onnx_ir, which Olive's ONNX passes read the export with, refuses external data
  with more than one link.

Both replace private functions of Olive 0.13.0 (pinned in pyproject.toml); ``install`` checks they are still there.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

_LOCK = threading.Lock()
_installed = False


def _stat_key(path: Path) -> list[str]:
    """What identifies a file of an input model within one run: path, size and modification time, no content."""
    if path.is_dir():
        return [key for child in sorted(path.iterdir()) for key in _stat_key(child)]
    if path.is_file():
        stat = path.stat()
        blob = f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    else:  # a hub name or a path that is not there: Olive hashes the string
        blob = path.as_posix()
    return [hashlib.sha256(blob.encode()).hexdigest()[:8]]


def install() -> None:
    """Patch Olive once per process (every run this project makes has a fresh cache folder)."""
    global _installed
    with _LOCK:
        if _installed:
            return
        from olive import resource_path
        from olive.common.utils import copy_dir, hardlink_copy_file
        from olive.model.config.model_config import ModelConfig

        if not (callable(getattr(ModelConfig, "_get_file_hash", None)) and resource_path.copy_dir is copy_dir):
            raise RuntimeError("Olive's cache internals moved: slmops/adapters/olive_speed.py needs updating")

        def link_dir(src_dir, dst_dir, ignore=None, **kwargs):
            # hardlink_copy_file falls back to a copy across file systems
            kwargs.pop("copy_function", None)
            return copy_dir(src_dir, dst_dir, ignore=ignore, copy_function=hardlink_copy_file, **kwargs)

        ModelConfig._get_file_hash = lambda self, file_path: _stat_key(Path(file_path))
        resource_path.copy_dir = link_dir
        _installed = True
