"""slmops's own index of what it registered with Foundry Local: ``<cache>/slmops-registry.json``, name -> versions,
each with its content hash, folder, time and metadata.

It lives under an ``fcntl.flock`` held across a whole registration, so two processes registering at once both land
and never pick the same version; it is written atomically, so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from slmops.errors import ToolchainError
from slmops.files import write_json

INDEX_NAME = "slmops-registry.json"
LOCK_NAME = "slmops-registry.lock"

Index = dict[str, list[dict[str, Any]]]


class RegistrationIndex:
    """The index of one Foundry Local cache folder."""

    def __init__(self, cache_dir: Path) -> None:
        self.path = cache_dir / INDEX_NAME
        self._lock_path = cache_dir / LOCK_NAME

    @contextlib.contextmanager
    def locked(self, exclusive: bool) -> Iterator[Index]:
        """The index, read under the lock file; with exclusive, written back (atomically) before the lock is freed."""
        with open(self._lock_path, "a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                index = self._read()
                before = json.dumps(index, sort_keys=True)
                yield index
                if exclusive and json.dumps(index, sort_keys=True) != before:
                    write_json(self.path, index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> Index:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except ValueError as exc:
            # written atomically, so this is damage from outside: say so rather than start over and lose versions
            raise ToolchainError(f"{self.path} is not valid JSON ({exc}); restore or delete it") from exc
        return data if isinstance(data, dict) else {}

    @staticmethod
    def entry(version: int, content_hash: str, path: Path, record: dict[str, Any]) -> dict[str, Any]:
        """One registered version, as the index keeps it."""
        return {"version": version, "content_hash": content_hash, "path": str(path),
                "registered_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "metadata": record}
