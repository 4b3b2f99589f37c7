"""Which checkpoint folders the pipeline may sweep: a checkpoint is input from outside (docs/security.md).

validate_checkpoint refuses a folder outside SLMOPS_ALLOWED_MODEL_ROOTS (after resolving symlinks and ..), one that
is not a safe model folder (slmops.source.validate_model_dir: safetensors, no pickle weights unless allowed, no
symlink out of it) and a spec that would run the folder's own code. The triggered flows (flows/triggered.py) check
on the worker, since the server side cannot trust a publisher; `slmops publish` and `slmops watch` (ops.events)
check what they can before sending.
"""

from __future__ import annotations

import os
from pathlib import Path

from slmops.errors import InputError

ALLOWED_ROOTS_VAR = "SLMOPS_ALLOWED_MODEL_ROOTS"


def allowed_model_roots(environ: dict[str, str] | None = None) -> list[Path] | None:
    """The real paths of SLMOPS_ALLOWED_MODEL_ROOTS (colon-separated), or None when it is unset or empty."""
    raw = (os.environ if environ is None else environ).get(ALLOWED_ROOTS_VAR, "")
    roots = [Path(os.path.realpath(os.path.expanduser(r))) for r in raw.split(":") if r.strip()]
    return roots or None


def check_inside_roots(path: str | Path, require: bool = False) -> Path:
    """The real path of `path` (symlinks and .. resolved) when it lies in an allowed root; InputError when not,
    or when require and SLMOPS_ALLOWED_MODEL_ROOTS is not set."""
    real = Path(os.path.realpath(Path(path).expanduser()))
    roots = allowed_model_roots()
    if roots is None:
        if require:
            raise InputError(f"{ALLOWED_ROOTS_VAR} is not set where this runs: set it to the folders checkpoints may "
                             "come from (colon-separated); the stack sets it on its workers")
        return real
    if not any(real == root or root in real.parents for root in roots):
        shown = f"{path} (resolves to {real})" if str(real) != str(path) else str(path)
        raise InputError(f"{shown} is outside the folders checkpoints may come from ({ALLOWED_ROOTS_VAR}="
                         f"{':'.join(map(str, roots))}): refused before any work")
    return real


def validate_checkpoint(path: str | Path, allow_pickle: bool = False, trust_remote_code: bool = False,
                        require_roots: bool = False) -> Path:
    """The real path of a checkpoint folder that came from outside, once it is safe to sweep: inside the allowed
    roots, never run with the folder's own code, and a model folder validate_model_dir accepts."""
    from slmops.source import validate_model_dir

    real = check_inside_roots(path, require_roots)
    if trust_remote_code:
        raise InputError(f"{path}: the spec sets model.trust_remote_code, which would run code shipped in a "
                         "checkpoint from outside; a published checkpoint is swept only without it")
    validate_model_dir(real, allow_pickle)
    return real
