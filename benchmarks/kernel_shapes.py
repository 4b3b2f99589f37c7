"""MatMulNBits (4 bits, block 128, symmetric, accuracy level 4) bandwidth by matrix shape and thread count, apart from
any model: the kernel roof's one large matrix, one matrix of the 494M model's LM head shape, and a chain of 120
matrices of its layers' shapes (24 layers of q/k/v, o, gate/up and down widths). Says how much of a decode step's
gap to the kernel roof is the kernels' own pace on smaller matrices.

    .venv/bin/python benchmarks/kernel_shapes.py          # ~1 min on 2 cores

Writes benchmarks/results/kernel-shapes.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from slmops.adapters import ort  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
HIDDEN, INTERMEDIATE, VOCAB = 896, 4864, 151936
CASES = {
    "roof shape K=8192 N=16384": [(8192, 16384)],
    "LM head K=896 N=151936": [(HIDDEN, VOCAB)],
    # chainable stand-ins for a layer's matrices: qkv (896->1152), o (1152->896), gate+up (896->9728), then a
    # 9728->4864 link and down (4864->896)
    "24 layers, 120 matrices": [(HIDDEN, 1152), (1152, HIDDEN), (HIDDEN, 2 * INTERMEDIATE),
                                (2 * INTERMEDIATE, INTERMEDIATE), (INTERMEDIATE, HIDDEN)] * 24,
}


def chain(shapes: list[tuple[int, int]], rng: np.random.Generator, block: int = 128) -> tuple[bytes, int]:
    """A graph of MatMulNBits nodes, each feeding the next; returns it and the bytes of its weights and scales."""
    nodes, inits, total, current = [], [], 0, "x"
    for i, (k, n) in enumerate(shapes):
        packed = rng.integers(0, 256, (n, (k + block - 1) // block, block // 2), dtype=np.uint8)
        scales = (rng.random(n * ((k + block - 1) // block), dtype=np.float32) * 0.01 + 1e-3).astype(np.float32)
        inits += [numpy_helper.from_array(packed, f"B{i}"), numpy_helper.from_array(scales, f"s{i}")]
        total += packed.nbytes + scales.nbytes
        nodes.append(helper.make_node("MatMulNBits", [current, f"B{i}", f"s{i}"], [f"y{i}"], domain="com.microsoft",
                                      K=k, N=n, bits=4, block_size=block, accuracy_level=4))
        current = f"y{i}"
    graph = helper.make_graph(nodes, "chain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, shapes[0][0]])],
                              [helper.make_tensor_value_info(current, TensorProto.FLOAT, [1, shapes[-1][1]])], inits)
    model = helper.make_model(graph, ir_version=9, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid("com.microsoft", 1)])
    return model.SerializeToString(), total


def main() -> int:
    rng = np.random.default_rng(0)
    results: dict[str, dict] = {}
    for name, shapes in CASES.items():
        model, total = chain(shapes, rng)
        feed = {"x": rng.standard_normal((1, shapes[0][0]), dtype=np.float32)}
        for threads in (1, 2):
            per_call = sorted(ort.time_calls(model, feed, 7, 8, threads=threads))
            results[f"{name}, {threads} threads"] = {
                "matrices": len(shapes), "mb": round(total / 1e6, 1), "best_ms": round(per_call[0] * 1e3, 3),
                "gb_per_s_best": round(total / per_call[0] / 1e9, 2),
                "gb_per_s_median": round(total / per_call[len(per_call) // 2] / 1e9, 2)}
            print(name, threads, results[f"{name}, {threads} threads"], flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "kernel-shapes.json").write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
