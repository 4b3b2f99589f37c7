"""The server stack as plain processes on loopback, started once for the module that asks for it, stopped after.

    .venv/bin/python -m pytest tests/ops              # about 4 minutes on 2 cores; -m "not slow" leaves the stack out

PostgreSQL is installed with apt-get by ops.stack when it is missing (as root). Every port is a free one, every
folder a temporary one, every credential a fresh random one: the stack touches nothing of the developer's.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ops.stack import Stack
from stack_helpers import running_stack, write_sweep_spec


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_model, session_dir) -> Iterator[Stack]:
    """The stack (stack_helpers.running_stack) deployed with the tiny model's sweep, two variant workers; per module:
    stopped as soon as the module's tests are done."""
    root = tmp_path_factory.mktemp("stack")
    spec = write_sweep_spec(root / "deployed-spec.yaml", tiny_model)
    with running_stack(root, spec, [tmp_path_factory.getbasetemp(), session_dir]) as st:
        yield st


@pytest.fixture
def checkpoint(tiny_model, tmp_path) -> Path:
    """A fresh copy of the tiny model under a unique name: each triggered sweep gets an output folder of its own."""
    target = tmp_path / "checkpoints" / f"step-{time.monotonic_ns() % 10**9}"
    shutil.copytree(tiny_model, target)
    return target


