"""The sweeps the UI tests run on their stack, and what they expect of them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FAILURE_SHOTS = ROOT / "out" / "ui-failures"
TRIGGERED, NIGHTLY = "sweep-checkpoint/on-checkpoint", "sweep-from-spec-file/nightly"
MODEL = "uitiny"
VARIANTS = [{"name": "fp32", "precision": "fp32"}, {"name": "int8", "precision": "int8"},
            {"name": "int4-b32", "precision": "int4", "block_size": 32}]
# HQQ fails on the tiny model's odd vocabulary (283 rows): Olive logs it and returns no model (tests/flows)
FAILING = {"name": "int4-hqq", "precision": "int4", "method": "hqq"}
# enough to fill every figure the UIs show (speed, fidelity, quality) in seconds on the tiny model
EVALUATION = {"profile": "quick", "fidelity": True, "max_eval_items": 4, "prompt_lengths": [8, 16, 24], "warmup": 1,
              "min_repetitions": 3, "repetitions": 3, "edge_cases": ["empty"], "max_new_tokens": 8}
EVAL_ROWS = [{"prompt": f"Say the word number {i}.", "reference": "hello"} for i in range(6)]


@dataclass(frozen=True)
class Sweep:
    """A sweep the stack ran: its top flow run, the quantization-sweep flow run below it, and its report.json."""

    run: object
    sweep_run: object
    report: dict

    @property
    def variants(self) -> dict[str, dict]:
        return {v["name"]: v for v in self.report["variants"]}
