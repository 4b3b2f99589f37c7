"""Calibration rows for the calibrated variants (method gptq), never the rows any variant is measured on.

    calib = prepare(spec.calibration, eval_set, ws.calibration)
    calib.rows_file       # what GPTQ sees: prompt/reference rows (rendered with the chat template by the adapter)
    calib.measured_file   # the eval set quality and fidelity use, for every variant of the sweep, calibrated or not

With ``calibration.dataset`` named, its first ``samples`` rows calibrate and the eval set is measured whole (a
prompt in both is refused by the pre-flight). With none, a seeded ``holdout`` share of the eval set (at most
``samples`` rows) calibrates and the rest is measured: a calibrated variant measured on its own calibration rows
would flatter itself. The report says which (report.json's ``calibration``).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from slmops.errors import InputError
from slmops.evalset import EvalItem, load_eval_set
from slmops.files import write_text_atomic


class CalibrationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: Path | None = Field(
        None, description="JSON-lines file of prompt/reference rows to calibrate on (as the eval set); default: a "
        "seeded holdout share of the eval set, which is then measured on the rest only")
    samples: int = Field(32, ge=1, le=4096, description="Calibration rows at most")
    holdout: float = Field(0.25, gt=0, lt=1, description="Share of the eval set held out when no dataset is named")
    seed: int = Field(0, description="Seed of the holdout's choice of rows")


class Calibration(BaseModel):
    """The calibration rows a sweep's calibrated variants were built with, and the eval set it measured."""

    model_config = ConfigDict(frozen=True)

    source: Literal["dataset", "eval-set holdout"]
    rows_file: Path
    rows: int
    sha256: str
    measured_file: Path | None = None
    measured_rows: int | None = None
    seed: int | None = None

    def describe(self) -> str:
        if self.source == "dataset":
            return f"GPTQ calibrated on {self.rows} rows of its own dataset; the eval set is measured whole"
        return (f"GPTQ calibrated on {self.rows} rows held out of the eval set (seed {self.seed}); every variant is "
                f"measured on the other {self.measured_rows} rows only")


def holdout_indices(n_rows: int, share: float, cap: int, seed: int) -> list[int]:
    """Which rows of an eval set of n_rows are held out: a seeded choice of round(share x n) rows, at least one, at
    most ``cap``, always leaving one to measure."""
    count = min(cap, max(1, round(share * n_rows)), n_rows - 1)
    return sorted(random.Random(seed).sample(range(n_rows), count))


def _jsonl(items: list[EvalItem]) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)


def prepare(spec: CalibrationSpec, eval_set: Path | None, folder: Path) -> Calibration:
    """Write the calibration rows (and, for a holdout, the measured rest) under ``folder``, named by content."""
    if spec.dataset is not None:
        items = load_eval_set(spec.dataset, spec.samples)
        text = _jsonl(items)
        sha = hashlib.sha256(text.encode()).hexdigest()
        rows_file = folder / sha[:16] / "calibration.jsonl"
        write_text_atomic(rows_file, text)
        return Calibration(source="dataset", rows_file=rows_file, rows=len(items), sha256=sha)
    if eval_set is None:
        raise InputError("method gptq needs calibration rows: name calibration.dataset, or give an eval set of at "
                         "least 2 rows to hold some out of")
    items = load_eval_set(eval_set)
    held = set(holdout_indices(len(items), spec.holdout, spec.samples, spec.seed))
    calib_text = _jsonl([row for i, row in enumerate(items) if i in held])
    measured_text = _jsonl([row for i, row in enumerate(items) if i not in held])
    sha = hashlib.sha256(calib_text.encode()).hexdigest()
    split = folder / hashlib.sha256((calib_text + measured_text).encode()).hexdigest()[:16]
    write_text_atomic(split / "calibration.jsonl", calib_text)
    write_text_atomic(split / "measured.jsonl", measured_text)
    return Calibration(source="eval-set holdout", rows_file=split / "calibration.jsonl", rows=len(held), sha256=sha,
                       measured_file=split / "measured.jsonl", measured_rows=len(items) - len(held), seed=spec.seed)


def check(spec: CalibrationSpec, eval_set: Path | None, calibrated: list[str]) -> None:
    """Pre-flight of the calibrated variants' rows: a dataset that loads and shares no prompt with the eval set, or
    an eval set with rows to spare."""
    if not calibrated:
        return
    names = ", ".join(calibrated)
    eval_items = load_eval_set(eval_set) if eval_set else []
    if spec.dataset is None:
        if len(eval_items) < 2:
            raise InputError(f"variant {names}: method gptq needs calibration rows: name calibration.dataset, or give "
                             f"an eval set of at least 2 rows to hold some out of (it has {len(eval_items)})")
        return
    if not Path(spec.dataset).is_file():
        raise InputError(f"calibration.dataset {spec.dataset}: no such file")
    shared = {r["prompt"] for r in load_eval_set(spec.dataset, spec.samples)} & {r["prompt"] for r in eval_items}
    if shared:
        raise InputError(f"calibration.dataset {spec.dataset} shares {len(shared)} prompt(s) with the eval set "
                         f"{eval_set}: a variant calibrated on the rows it is measured on flatters itself; allowed: "
                         "rows the eval set does not hold, or no calibration.dataset (a holdout of the eval set)")
