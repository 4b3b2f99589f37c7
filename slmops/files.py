"""Files that readers must never see half-written, and the small reads every step makes.

    write_json(path, document)   # through a temporary file and os.replace (write_text_atomic)
    read_json(path)              # the document, or None when the file is missing or not JSON
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str) -> Path:
    """Write text to path atomically: a temporary file in the same folder, flushed to disk, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: Path, document: Any) -> Path:
    """Write JSON to path atomically (``write_text_atomic``)."""
    return write_text_atomic(path, json.dumps(document, indent=2, ensure_ascii=False, default=str) + "\n")


def read_json(path: Path) -> Any | None:
    """The JSON document at path, or None when there is no such file or it is not valid JSON."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def folder_size(path: Path) -> int | None:
    """Total bytes of the files under path, or None when the folder is gone."""
    path = Path(path)
    if not path.is_dir():
        return None
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
