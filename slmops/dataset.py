"""The eval set: eval.jsonl, one {"prompt": ..., "reference": ...} object per line."""

from __future__ import annotations

import json
from pathlib import Path

from slmops.errors import InputError


def resolve_dataset(configured: Path | None, model_dir: Path) -> Path | None:
    """The eval set a sweep uses: the configured file, else eval.jsonl beside the model, else none."""
    if configured is not None:
        if not Path(configured).is_file():
            raise InputError(f"evaluation.dataset {configured}: no such file")
        return Path(configured)
    default = model_dir / "eval.jsonl"
    return default if default.is_file() else None


def load_eval_set(path: Path) -> list[dict]:
    """Read and check every line; an error names the file, the line and what a line must hold."""
    rows = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{path}:{number}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not isinstance(
                row.get("reference"), str):
            raise InputError(f"{path}:{number}: each line must be an object with string 'prompt' and 'reference'")
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: the eval set is empty")
    return rows
