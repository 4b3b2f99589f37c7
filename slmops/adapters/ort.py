"""Plain onnxruntime: a decoder run over a whole sequence at once, for the logits of every position (teacher
forcing). onnxruntime-genai only hands out the last position's; fidelity needs them all.

The graphs onnxruntime-genai's builder makes take the KV cache as inputs: a prompt pass feeds them empty (past
length 0), which GroupQueryAttention accepts.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slmops.adapters.genai import genai_config
from slmops.errors import VariantError

_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(bfloat16)": np.float32}


class LogitModel:
    """One ONNX decoder, run over a whole sequence at once with an empty KV cache: logits at every position."""

    def __init__(self, model_dir: Path) -> None:
        import onnxruntime as ort

        self.model_dir = Path(model_dir)
        config = genai_config(self.model_dir)["model"]
        decoder = config.get("decoder", {})
        self.kv_heads = int(decoder.get("num_key_value_heads") or decoder.get("num_attention_heads"))
        self.head_size = int(decoder.get("head_size") or decoder["hidden_size"] // decoder["num_attention_heads"])
        self.context_length = int(config.get("context_length") or 0) or None
        eos = config.get("eos_token_id")
        self.eos_token_id = int(eos[0] if isinstance(eos, list) else eos) if eos is not None else None
        filename = decoder.get("filename", "model.onnx")
        try:
            self.session = ort.InferenceSession(str(self.model_dir / filename), providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...) for a bad file
            raise VariantError(f"{self.model_dir.name}: onnxruntime cannot load {filename}: {exc}") from exc
        self.inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if "logits" not in outputs:
            raise VariantError(f"{self.model_dir.name}: the graph has no 'logits' output (outputs: {outputs})")
        known = {"input_ids", "attention_mask", "position_ids"}
        unknown = [n for n in self.inputs if n not in known and not n.startswith("past_key_values.")]
        if unknown:
            raise VariantError(f"{self.model_dir.name}: cannot teacher-force a graph with inputs {unknown}")

    def logits(self, ids: list[int]) -> np.ndarray:
        """Logits (positions x vocabulary, float64) of the sequence, each position predicting the next token."""
        n = len(ids)
        feed: dict[str, np.ndarray] = {
            "input_ids": np.asarray([ids], dtype=np.int64),
            "attention_mask": np.ones((1, n), dtype=np.int64),
        }
        if "position_ids" in self.inputs:
            feed["position_ids"] = np.arange(n, dtype=np.int64)[None, :]
        for name, arg in self.inputs.items():
            if name.startswith("past_key_values."):
                feed[name] = np.zeros((1, self.kv_heads, 0, self.head_size), dtype=_DTYPES.get(arg.type, np.float32))
        (logits,) = self.session.run(["logits"], feed)
        return logits[0].astype(np.float64)


def version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def time_calls(model_bytes: bytes, feed: dict[str, np.ndarray], runs: int, calls: int, warmup: int = 3,
               threads: int | None = None) -> list[float]:
    """Seconds per call of an in-memory ONNX model on the CPU, one figure per run of `calls` calls (after a warm-up),
    with every graph optimisation on and onnxruntime's default threads (or `threads`): the roofline's measurements."""
    import time

    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
    for _ in range(warmup):
        session.run(None, feed)
    per_call = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(calls):
            session.run(None, feed)
        per_call.append((time.perf_counter() - started) / calls)
    return per_call
