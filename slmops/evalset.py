"""The eval set: eval.jsonl, one {"prompt": ..., "reference": ...} object per line.

    items = load_eval_set(resolve_dataset(spec.evaluation.dataset, model_dir), limit=100)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from slmops.errors import InputError

EvalItem = dict[str, str]


def resolve_dataset(configured: Path | None, model_dir: Path) -> Path | None:
    """The eval set a sweep uses: the configured file, else eval.jsonl beside the model, else none."""
    if configured is not None:
        if not Path(configured).is_file():
            raise InputError(f"evaluation.dataset {configured}: no such file")
        return Path(configured).resolve()
    default = Path(model_dir) / "eval.jsonl"
    return default.resolve() if default.is_file() else None


def load_eval_set(path: Path, limit: int | None = None) -> list[EvalItem]:
    """The first ``limit`` rows (every row with None); InputError naming the file and line of a bad row."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"eval set {path} is unreadable ({exc}); need a JSON-lines file of prompt/reference") from None
    items: list[EvalItem] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc})") from None
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "reference")):
            raise InputError(f'{path}:{number}: each row needs string fields "prompt" and "reference"')
        items.append({"prompt": row["prompt"], "reference": row["reference"]})
        if limit is not None and len(items) >= limit:
            break
    if not items:
        raise InputError(f"eval set {path} has no rows; need at least one prompt/reference pair")
    return items


def dataset_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
