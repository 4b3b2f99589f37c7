"""Olive, in process: the fp32 export of a source model and the quantized variants derived from it.

The only module that imports Olive. Olive 0.13.0 logs a failing pass and still returns normally with no model in
the output folder (docs/toolchain.md), so every run here checks its output and turns an empty result into a
``VariantError`` that carries Olive's logged cause.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import os
import re
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

from slmops.errors import VariantError

# Files of an onnxruntime-genai model folder that are not the ONNX graph: the ONNX-level passes write only
# model.onnx (+ data), so these are copied from the fp32 build to make each variant a complete model.
OLIVE_BYPRODUCTS = ("footprint.json", "output_footprint.json", "run_history.txt", "model_config.json")

# ModelBuilder's name for the embedding lookup. The fp32 export keeps it a Gather on its own fp32 table (tied
# weights or not), and OnnxBlockWiseRtnQuantization quantizes every Gather on an initializer: leaving this one out
# gives the embedding ModelBuilder int4 keeps when `int4_op_types_to_quantize` is not set.
EMBEDDING_NODE = "/model/embed_tokens/Gather"

# OnnxBlockWiseRtnQuantization appends _Q<bits> to the output of every node it quantizes; the LM head's output is
# the graph output `logits`, which onnxruntime-genai, Foundry Local and the fidelity metrics look up by name.
RENAMED_LOGITS = re.compile(r"logits_Q\d+")

_CPU_SYSTEM = {
    "local_system": {
        "type": "LocalSystem",
        "accelerators": [{"device": "cpu", "execution_providers": ["CPUExecutionProvider"]}],
    }
}


def _workflow(input_model: dict, passes: dict, output_dir: Path, cache_dir: Path) -> dict[str, Any]:
    return {
        "input_model": input_model,
        "systems": _CPU_SYSTEM,
        "passes": passes,
        "host": "local_system",
        "target": "local_system",
        "cache_dir": str(cache_dir),
        "output_dir": str(output_dir),
        "log_severity_level": 1,
    }


def export_config(source_dir: Path, output_dir: Path, cache_dir: Path, trust_remote_code: bool = False) -> dict:
    """Olive workflow of the fp32 export (ModelBuilder) that every ONNX-level variant starts from."""
    model: dict[str, Any] = {"type": "HfModel", "model_path": str(source_dir), "task": "text-generation"}
    if trust_remote_code:
        model["load_kwargs"] = {"trust_remote_code": True}
    return _workflow(model, {"builder": {"type": "ModelBuilder", "precision": "fp32"}}, output_dir, cache_dir)


def builder_int4_config(
    source_dir: Path, output_dir: Path, cache_dir: Path, *, block_size: int, symmetric: bool, accuracy_level: int,
    algorithm: str, quantize_embeddings: bool, nodes_to_exclude: list[str], trust_remote_code: bool = False,
) -> dict:
    """Olive workflow of an int4 model from the source folder through ModelBuilder (builder 0.14.1 option names)."""
    extra: dict[str, Any] = {
        "int4_block_size": block_size,
        "int4_is_symmetric": symmetric,
        "int4_accuracy_level": accuracy_level,
        "int4_algo_config": algorithm,
    }
    if quantize_embeddings:
        # a list, never the CLI's "MatMul/Gather" string, which quantizes nothing and says nothing
        extra["int4_op_types_to_quantize"] = ["MatMul", "Gather"]
    if nodes_to_exclude:
        extra["int4_nodes_to_exclude"] = list(nodes_to_exclude)
    model: dict[str, Any] = {"type": "HfModel", "model_path": str(source_dir), "task": "text-generation"}
    if trust_remote_code:
        model["load_kwargs"] = {"trust_remote_code": True}
    passes = {"builder": {"type": "ModelBuilder", "precision": "int4", "extra_options": extra}}
    return _workflow(model, passes, output_dir, cache_dir)


def gptq_config(
    source_dir: Path, output_dir: Path, cache_dir: Path, *, block_size: int, symmetric: bool, accuracy_level: int,
    calibration_rows: Path, trust_remote_code: bool = False,
) -> dict:
    """Olive workflow of a GPTQ int4 model: Olive's `Gptq` pass on the source (PyTorch, on CPU), calibrated on the
    rows in ``calibration_rows`` (olive_calibration.py renders and tokenizes them), then ModelBuilder int4, which
    packs the GPTQ weights as MatMulNBits and quantizes the LM head itself (RTN, the same block size)."""
    from slmops.adapters import olive_calibration

    data_config = {
        "name": "slmops_calibration",
        "user_script": olive_calibration.__file__,
        "load_dataset_config": {"type": olive_calibration.DATASET,
                                "params": {"rows_file": str(calibration_rows), "model_path": str(source_dir)}},
        "pre_process_data_config": {"type": "skip_pre_process"},
        "dataloader_config": {"batch_size": 1},
    }
    extra = {"int4_block_size": block_size, "int4_is_symmetric": symmetric, "int4_accuracy_level": accuracy_level}
    model: dict[str, Any] = {"type": "HfModel", "model_path": str(source_dir), "task": "text-generation"}
    if trust_remote_code:
        model["load_kwargs"] = {"trust_remote_code": True}
    passes = {
        "gptq": {"type": "Gptq", "bits": 4, "group_size": block_size, "sym": symmetric, "data_config": data_config},
        "builder": {"type": "ModelBuilder", "precision": "int4", "extra_options": extra},
    }
    return _workflow(model, passes, output_dir, cache_dir)


def onnx_quantize_config(
    fp32_dir: Path, output_dir: Path, cache_dir: Path, *, method: str, bits: int, block_size: int | None,
    symmetric: bool | None, accuracy_level: int | None, nodes_to_exclude: list[str],
) -> dict:
    """Olive workflow of one ONNX-level quantization pass on the fp32 export: rtn, k_quant, hqq or dynamic."""
    exclude = list(nodes_to_exclude)
    if method == "rtn":
        # the LM head is quantized like every other MatMul (its renamed output is put back: restore_logits);
        # external data keeps model.onnx a small graph, so reading or fixing the graph never parses the weights
        quant: dict[str, Any] = {"type": "OnnxBlockWiseRtnQuantization", "bits": bits, "block_size": block_size,
                                 "is_symmetric": symmetric, "accuracy_level": accuracy_level,
                                 "nodes_to_exclude": exclude, "save_as_external_data": True}
    elif method == "k_quant":
        quant = {"type": "OnnxKQuantQuantization", "bits": bits, "block_size": block_size}
    elif method == "hqq":
        quant = {"type": "OnnxHqqQuantization", "block_size": block_size}
    elif method == "dynamic":
        quant = {"type": "OnnxDynamicQuantization", "weight_type": "QInt8" if symmetric else "QUInt8"}
    else:
        raise ValueError(f"unknown ONNX-level method {method!r}")
    if method != "rtn" and exclude:
        quant["nodes_to_exclude"] = exclude
    model = {"type": "ONNXModel", "model_path": str(fp32_dir), "onnx_file_name": "model.onnx"}
    return _workflow(model, {"quantize": quant}, output_dir, cache_dir)


def builder_int4_from_export_config(fp32_dir: Path, output_dir: Path, cache_dir: Path, *, block_size: int,
                                    symmetric: bool, accuracy_level: int) -> dict:
    """Olive workflow that makes ModelBuilder int4's graph (algorithm `default`, embedding unquantized, nothing
    excluded) from the fp32 export instead of the source.

    Both quantize every MatMul with onnxruntime's quantize_matmul_4bits kernel, the LM head included, so the packed
    weights, scales and zero points are byte for byte the builder's and the operator counts equal
    (tests/test_convert_equivalence.py); only names differ, and the declared shape of scales and zero points.
    """
    return onnx_quantize_config(fp32_dir, output_dir, cache_dir, method="rtn", bits=4, block_size=block_size,
                                symmetric=symmetric, accuracy_level=accuracy_level, nodes_to_exclude=[EMBEDDING_NODE])


def restore_logits(model_dir: Path) -> bool:
    """Give the graph output renamed by OnnxBlockWiseRtnQuantization (`logits_Q4`, `logits_Q8`) its name back.

    Only model.onnx is rewritten: the graph is read without its external data, whose references (file, offset,
    length) are kept as they are. Returns whether anything was renamed.
    """
    import onnx

    path = Path(model_dir) / "model.onnx"
    model = onnx.load(str(path), load_external_data=False)
    graph = model.graph
    names = {o.name for o in graph.output}
    renamed = {n: "logits" for n in names if RENAMED_LOGITS.fullmatch(n)}
    if not renamed or "logits" in names or len(renamed) > 1:
        return False
    for node in graph.node:
        node.output[:] = [renamed.get(n, n) for n in node.output]
        node.input[:] = [renamed.get(n, n) for n in node.input]
    for value in (*graph.output, *graph.value_info):
        value.name = renamed.get(value.name, value.name)
    onnx.save(model, str(path))
    return True


def _quiet_telemetry() -> None:
    """Keep Olive from queueing its start-up heartbeat.

    OLIVE_DISABLE_TELEMETRY only takes effect after the heartbeat is queued, and at exit the exporter then
    retries an unreachable endpoint for ~20 s (seen with py-spy). Olive skips the heartbeat in CI environments:
    take that path.
    """
    os.environ.setdefault("OLIVE_DISABLE_TELEMETRY", "1")
    if os.environ.get("OLIVE_DISABLE_TELEMETRY") != "1":
        return
    from olive.telemetry import telemetry

    telemetry.Telemetry._is_ci_environment = staticmethod(lambda: True)


class _Capture(logging.Handler):
    """Keeps the warnings and errors Olive logs during one run, to name the cause when it returns nothing."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.causes: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            return
        exc = record.exc_info[1] if record.exc_info else None
        cause = f"{type(exc).__name__}: {exc}" if exc else record.getMessage()
        self.causes.append(cause.strip().splitlines()[0] if cause.strip() else record.getMessage())


_PRELOAD_LOCK = threading.Lock()
_preloading: threading.Thread | None = None


def _import_olive() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_telemetry()
    import olive.workflows  # noqa: F401  (5-12 s here: torch, transformers, onnx_ir, Olive's passes)

    from slmops.adapters import olive_speed

    olive_speed.install()


def preload() -> None:
    """Start importing Olive in a thread of its own, for a process about to convert while it does other work first.

    The first ``run_workflow`` waits for it (Python's import lock) instead of importing again. Not a daemon: the
    process waits for an import in progress at exit rather than cut it off half-way.
    """
    global _preloading
    with _PRELOAD_LOCK:
        if _preloading is not None or "olive.workflows" in sys.modules:
            return

        def target() -> None:
            try:
                _import_olive()
            except Exception:  # noqa: BLE001 -- run_workflow imports again, and reports a failure where it is handled
                pass

        _preloading = threading.Thread(target=target, name="olive-preload")
        _preloading.start()


def run_workflow(config: dict, what: str, log_file: Path) -> Path:
    """Run one Olive workflow in this process, its chatter sent to ``log_file``; return the output folder.

    The config's ``cache_dir`` must be the run's own: it is removed when the run ends. Raises VariantError naming
    ``what`` and Olive's logged cause when the output folder has no model.
    """
    _import_olive()  # imported only when something converts (or preload started it)
    from olive.workflows import run as olive_run

    output_dir = Path(config["output_dir"])
    capture = _Capture()
    olive_logger = logging.getLogger("olive")
    log_file.parent.mkdir(parents=True, exist_ok=True)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(logging.Formatter("[%(asctime)s] [%(levelname)s] [%(name)s] %(message)s"))
    # Olive's own handlers write to the stdout of import time: set them aside so its chatter goes to the log only
    own_handlers = list(olive_logger.handlers)
    for handler in own_handlers:
        olive_logger.removeHandler(handler)
    olive_logger.addHandler(capture)
    olive_logger.addHandler(file_handler)
    propagate = olive_logger.propagate
    olive_logger.propagate = False
    try:
        with open(log_file, "a", encoding="utf-8") as sink, contextlib.redirect_stdout(sink), \
                contextlib.redirect_stderr(sink):
            # a copy: Olive replaces parts of the dict it is given with its own objects (a SystemConfig), and the
            # config is kept in the cached result and MLflow as plain JSON (decoding it would import Olive: 4.5 s)
            olive_run(copy.deepcopy(config))
    except Exception as err:  # Olive re-raises configuration errors: still one variant's failure
        # one line (a pydantic error spans several): what the table, MLflow and the Prefect UI show
        said = "; ".join(line.strip() for line in str(err).splitlines()
                         if line.strip() and not line.strip().startswith("For further information"))
        raise VariantError(f"{what}: Olive raised {type(err).__name__}: {said} (log: {log_file})") from err
    finally:
        olive_logger.removeHandler(capture)
        olive_logger.removeHandler(file_handler)
        olive_logger.propagate = propagate
        for handler in own_handlers:
            olive_logger.addHandler(handler)
        file_handler.close()
        # the output's files are hard links into this cache (olive_speed): without it they are single links again
        shutil.rmtree(config["cache_dir"], ignore_errors=True)
        release_olive_garbage()
    if not (output_dir / "model.onnx").is_file():
        cause = capture.causes[-1] if capture.causes else "no error was logged"
        raise VariantError(f"{what}: Olive produced no model.onnx; its logged cause: {cause} (log: {log_file})")
    for name in OLIVE_BYPRODUCTS:
        (output_dir / name).unlink(missing_ok=True)
    if any(p["type"] == "OnnxBlockWiseRtnQuantization" for p in config["passes"].values()):
        restore_logits(output_dir)
    return output_dir


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


def complete_from(fp32_dir: Path, variant_dir: Path, skip: tuple[str, ...] = ()) -> None:
    """Copy the genai config, tokenizer and chat template of the fp32 build into an ONNX-level variant."""
    for src in fp32_dir.iterdir():
        if src.name in skip or not src.is_file() or src.name.startswith("model.onnx"):
            continue
        if not (variant_dir / src.name).exists():
            shutil.copy2(src, variant_dir / src.name)
