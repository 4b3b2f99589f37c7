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

And one thing the block-wise RTN pass (int8, and int4 from the export) does that costs more than it serves:

* It reads every weight of the export into memory before quantizing (onnx_ir's ``load_to_model``): 2.5 GB of
  fresh memory filled with a copy of the mapped file, most of its cost the machine's for first touching that
  memory. Here the pass quantizes from the mapped export and writes the unquantized tensors from it. A loaded copy
  is only needed to save a model over the data file its tensors map (onnx_ir's save invalidates them), and every
  run here writes into a folder of its own. On the 494M-parameter model, int8, int4-b32 and int4-b128 built one
  after another in one process took 16.4-17.3 s with the copy and 7.8-10.1 s without (sys time 10.3-11.1 s against
  1.8-3.3 s; three runs each), and the output is byte for byte Olive's (tests/test_convert_equivalence.py).

All three replace private parts of Olive 0.13.0 (pinned in pyproject.toml); ``install`` checks they are still there.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path
from types import ModuleType

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


class _Overlay:
    """``target`` as an attribute-reader sees it, with some attributes replaced (a module, for one module's view)."""

    def __init__(self, target: ModuleType | _Overlay, **replaced: object) -> None:
        self._target = target
        self.__dict__.update(replaced)

    def __getattr__(self, name: str):
        return getattr(self._target, name)


def _leave_external(model):
    """onnx_ir's ``external_data.load_to_model`` for the RTN pass: the weights stay in the mapped file."""
    return model


def install() -> None:
    """Patch Olive once per process (every run this project makes has a fresh cache folder)."""
    global _installed
    with _LOCK:
        if _installed:
            return
        import onnx_ir
        from olive import resource_path
        from olive.common.utils import copy_dir, hardlink_copy_file
        from olive.model.config.model_config import ModelConfig
        from olive.passes.onnx import rtn_quantization

        if not (callable(getattr(ModelConfig, "_get_file_hash", None)) and resource_path.copy_dir is copy_dir
                and rtn_quantization.ir is onnx_ir and callable(onnx_ir.external_data.load_to_model)):
            raise RuntimeError("Olive's internals that slmops/adapters/olive_speed.py replaces moved: update it")

        def link_dir(src_dir, dst_dir, ignore=None, **kwargs):
            # hardlink_copy_file falls back to a copy across file systems
            kwargs.pop("copy_function", None)
            return copy_dir(src_dir, dst_dir, ignore=ignore, copy_function=hardlink_copy_file, **kwargs)

        ModelConfig._get_file_hash = lambda self, file_path: _stat_key(Path(file_path))
        resource_path.copy_dir = link_dir
        rtn_quantization.ir = _Overlay(onnx_ir, external_data=_Overlay(onnx_ir.external_data,
                                                                      load_to_model=_leave_external))
        _installed = True
