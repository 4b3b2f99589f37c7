"""How far a variant's decode is from what this machine allows: the bytes of weights one decode step reads, and two
roofs measured once per machine with onnxruntime itself.

    weights = bytes_per_token(model_dir)                   # from the graph's initializers, no weight loaded
    roofs = machine_roofs(cache_dir, [weights.format], 1)  # once per machine, format and thread count, then cached
    metrics = roofline_metrics(weights, decode_tokens_per_s, roofs, 1)

On a CPU a decode step reads every weight of every MatMul once (the KV cache and activations are small beside them
at these lengths), so decode tok/s x bytes per token is the bandwidth the step achieved:

- the **memory roof** is the read bandwidth of the machine: a single-row fp32 MatMul against a weight far bigger than
  the last-level cache, best of several runs (a MatMul, not memcpy, so that it counts what onnxruntime can stream);
- the **kernel roof** is what one large single-row MatMul of the variant's own weight format reaches (MatMulNBits at
  its bits, block size, accuracy level and zero points; fp32 MatMul), in bytes of that format per second, on as many
  threads as the variant is served with (onnxruntime-genai's default is half the cores; a matrix of the LM head's
  shape reads 27.3 GB/s on one thread of this machine and 43.2 on two: benchmarks/kernel_shapes.py). Its share says how much the rest of the graph and the runtime's loop cost on top of
  the weights' own kernels.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slmops.adapters import ort
from slmops.files import read_json, write_json
from slmops.locks import file_lock

# the weight operand(s) of each operator that reads weights whole in a decode step: input indexes
_WEIGHT_INPUTS = {"MatMul": (1,), "Gemm": (1, 2), "MatMulNBits": (1, 2, 3, 4, 5), "MatMulInteger": (1, 3),
                  "FusedMatMul": (1,)}
# an embedding lookup reads one row of each of these inputs
_ROW_INPUTS = {"Gather": (0,), "GatherBlockQuantized": (0, 2, 3)}
# the roofs' sizes: single-row MatMuls whose weights are far bigger than any last-level cache here
MEMORY_ROOF_SHAPE = (4096, 16384)   # fp32: 256 MiB
KERNEL_ROOF_SHAPE = (8192, 16384)   # 4-bit: 64 MiB + scales; 8-bit: 128 MiB + scales
ROOF_RUNS, ROOF_CALLS = 10, 8


@dataclass(frozen=True)
class WeightFormat:
    """The format most of a graph's weight bytes are stored in: what its kernel roof is measured with."""

    op: str                       # MatMul (fp32), MatMulNBits, MatMulInteger
    bits: int = 32
    block_size: int | None = None
    accuracy_level: int | None = None
    zero_points: bool = False

    @property
    def key(self) -> str:
        if self.op != "MatMulNBits":
            return f"{self.op}-{self.bits}bit"
        return (f"MatMulNBits-{self.bits}bit-b{self.block_size}-acc{self.accuracy_level or 0}"
                f"-{'asym' if self.zero_points else 'sym'}")


@dataclass(frozen=True)
class WeightBytes:
    """The bytes of weights one decode step reads, by part, and the format most of them are in."""

    total: int
    matmul: int
    embedding: int
    lm_head: int
    format: WeightFormat


def _tensor_bytes(tensor) -> int:
    from onnx import TensorProto, helper

    count = 1
    for dim in tensor.dims:
        count *= dim
    if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4):
        return (count + 1) // 2
    return count * helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def bytes_per_token(model_dir: Path) -> WeightBytes:
    """Every MatMul/MatMulNBits/MatMulInteger/Gemm weight of model.onnx with its scales and zero points, plus one row
    of each embedding Gather (and of its scales and zero points when quantized); the weights are not loaded."""
    import onnx

    graph = onnx.load(str(Path(model_dir) / "model.onnx"), load_external_data=False).graph
    sizes = {t.name: (_tensor_bytes(t), t.dims[0] if t.dims else 1) for t in graph.initializer}
    matmul = embedding = head = 0
    formats: Counter[WeightFormat] = Counter()
    for node in graph.node:
        if node.op_type in _WEIGHT_INPUTS:
            read = sum(sizes[node.input[i]][0] for i in _WEIGHT_INPUTS[node.op_type]
                       if i < len(node.input) and node.input[i] in sizes)
            if not read:
                continue  # a MatMul of two activations (attention)
            matmul += read
            if node.name.startswith("/lm_head/"):
                head += read
            formats[_format_of(node)] += read
        elif node.op_type in _ROW_INPUTS:
            embedding += sum(sizes[node.input[i]][0] // max(sizes[node.input[i]][1], 1)
                             for i in _ROW_INPUTS[node.op_type] if i < len(node.input) and node.input[i] in sizes)
    dominant = formats.most_common(1)[0][0] if formats else WeightFormat("MatMul")
    return WeightBytes(total=matmul + embedding, matmul=matmul, embedding=embedding, lm_head=head, format=dominant)


def _format_of(node) -> WeightFormat:
    attrs = {a.name: a.i for a in node.attribute if a.type == a.INT}
    if node.op_type == "MatMulNBits":
        return WeightFormat("MatMulNBits", attrs.get("bits", 4), attrs.get("block_size"),
                            attrs.get("accuracy_level", 0), len(node.input) > 3 and bool(node.input[3]))
    if node.op_type == "MatMulInteger":
        return WeightFormat("MatMulInteger", 8)
    return WeightFormat("MatMul", 32)


# ---- the roofs ---------------------------------------------------------------------------------------------------

def _best_bytes_per_s(per_call: list[float], weight_bytes: int) -> dict[str, Any]:
    """Weight bytes over the fastest call time, with the median beside it."""
    best, median = min(per_call), sorted(per_call)[len(per_call) // 2]
    return {"gb_per_s": round(weight_bytes / best / 1e9, 3), "weight_bytes": weight_bytes,
            "best_call_ms": round(best * 1e3, 3), "median_call_ms": round(median * 1e3, 3)}


def _fp32_matmul(k: int, n: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((k, n), dtype=np.float32), "W")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "roof",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], [weight])
    return helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17)]), k * n * 4


def _nbits_matmul(fmt: WeightFormat, k: int, n: int):
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    bits, block = fmt.bits, fmt.block_size or 32
    blocks = (k + block - 1) // block
    packed = rng.integers(0, 256, (n, blocks, block * bits // 8), dtype=np.uint8)
    scales = (rng.random(n * blocks, dtype=np.float32) * 0.01 + 1e-3).astype(np.float32)
    inits = [numpy_helper.from_array(packed, "B"), numpy_helper.from_array(scales, "scales")]
    inputs = ["x", "B", "scales"]
    if fmt.zero_points:
        zp_bytes = n * ((blocks * bits + 7) // 8)
        inits.append(numpy_helper.from_array(rng.integers(0, 256, zp_bytes, dtype=np.uint8), "zp"))
        inputs.append("zp")
    node = helper.make_node("MatMulNBits", inputs, ["y"], domain="com.microsoft", K=k, N=n, bits=bits,
                            block_size=block, accuracy_level=fmt.accuracy_level or 0)
    graph = helper.make_graph([node], "roof", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])], inits)
    model = helper.make_model(graph, ir_version=9,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return model, sum(int(t.nbytes) for t in [packed, scales]) + (zp_bytes if fmt.zero_points else 0)


def measure_roof(fmt: WeightFormat | None, threads: int | None = None) -> dict[str, Any] | None:
    """One roof: None for the memory roof (fp32 MatMul, MEMORY_ROOF_SHAPE), else the kernel roof of fmt
    (KERNEL_ROOF_SHAPE). None when the format has no kernel roof here (MatMulInteger)."""
    import numpy as np

    if fmt is not None and fmt.op == "MatMulInteger":
        return None
    if fmt is None or fmt.op != "MatMulNBits":
        model, weight_bytes = _fp32_matmul(*MEMORY_ROOF_SHAPE)
        k = MEMORY_ROOF_SHAPE[0]
        how = f"single-row fp32 MatMul, weight {MEMORY_ROOF_SHAPE[0]}x{MEMORY_ROOF_SHAPE[1]} ({weight_bytes >> 20} MiB)"
    else:
        k, n = KERNEL_ROOF_SHAPE
        model, weight_bytes = _nbits_matmul(fmt, k, n)
        how = (f"single-row MatMulNBits ({fmt.bits} bits, block {fmt.block_size}, accuracy level "
               f"{fmt.accuracy_level or 0}, {'with' if fmt.zero_points else 'no'} zero points), K={k} N={n} "
               f"({weight_bytes >> 20} MiB with scales)")
    feed = {"x": np.random.default_rng(1).standard_normal((1, k), dtype=np.float32)}
    measured = _best_bytes_per_s(ort.time_calls(model.SerializeToString(), feed, ROOF_RUNS, ROOF_CALLS,
                                                threads=threads), weight_bytes)
    return {**measured, "how": f"{how}, best of {ROOF_RUNS} runs of {ROOF_CALLS} calls, onnxruntime "
                               f"{ort.version()} CPU, {threads or 'default'} threads"}


def measure_fresh(fmt: WeightFormat | None, threads: int | None = None) -> dict[str, Any] | None:
    """measure_roof in a process of its own: the caller's threads, allocations and loaded runtimes (a sweep holds
    onnxruntime-genai and Foundry Local's) do not weigh on a figure that is cached for the machine's lifetime."""
    arg = json.dumps(asdict(fmt) if fmt else None)
    done = subprocess.run([sys.executable, "-m", "slmops.roofline", arg, str(threads or 0)], capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"measuring the roof of {fmt.key if fmt else 'memory'} failed: {done.stderr[-800:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def machine_id() -> dict[str, Any]:
    """What the roofs depend on: the CPU, how many cores this process may use, onnxruntime's version."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": model, "cores": cores, "onnxruntime": ort.version()}


def kernel_key(fmt: WeightFormat, threads: int) -> str:
    return f"{fmt.key}-{threads}t"


def machine_roofs(cache_dir: Path, formats: list[WeightFormat], threads: int) -> dict[str, Any]:
    """The memory roof (onnxruntime's default threads: every core) and the kernel roof of each format on ``threads``
    threads, measured once per machine (machine_id) and cached in cache_dir/roofs.json; what is not measured yet on
    this machine is measured now."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / "roofs.json"
    machine = machine_id()
    with file_lock(cache_dir / "roofs.lock"):
        stored = read_json(path) or {}
        if stored.get("machine") != machine:
            stored = {"machine": machine, "kernels": {}}
        changed = False
        if "memory" not in stored:
            stored["memory"] = {**measure_fresh(None), "measured_at": _now()}
            changed = True
        for fmt in formats:
            key = kernel_key(fmt, threads)
            if key in stored["kernels"]:
                continue
            if fmt.op == "MatMul" and threads == machine["cores"]:  # the memory roof's own measurement
                stored["kernels"][key] = stored["memory"]
            else:
                measured = measure_fresh(None if fmt.op == "MatMul" else fmt, threads)
                stored["kernels"][key] = {**measured, "measured_at": _now()} if measured else None
            changed = True
        if changed:
            write_json(path, stored)
    return stored


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def roofline_metrics(weights: WeightBytes, decode_tokens_per_s: float | None, roofs: dict[str, Any],
                     threads: int | None = None) -> dict:
    """bytes_per_token always; achieved_gb_per_s, bandwidth_share and kernel_share (against the kernel roof on the
    variant's threads) when decode speed is known."""
    metrics: dict[str, float] = {"bytes_per_token": float(weights.total)}
    if not decode_tokens_per_s or decode_tokens_per_s <= 0:
        return metrics
    achieved = weights.total * decode_tokens_per_s / 1e9
    metrics["achieved_gb_per_s"] = round(achieved, 4)
    memory = (roofs.get("memory") or {}).get("gb_per_s")
    if memory:
        metrics["bandwidth_share"] = round(achieved / memory, 4)
    kernel = (roofs.get("kernels", {}).get(kernel_key(weights.format, threads or 1)) or {}).get("gb_per_s")
    if kernel:
        metrics["kernel_share"] = round(achieved / kernel, 4)
    return metrics


if __name__ == "__main__":  # measure_fresh's child: one roof, printed as JSON
    given = json.loads(sys.argv[1])
    print(json.dumps(measure_roof(WeightFormat(**given) if given else None, int(sys.argv[2]) or None)))
