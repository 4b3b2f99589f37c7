"""The one naming rule: a model or variant name is also a folder, an MLflow run name and a Foundry Local id
(`<name>:<version>`), so it must be safe as all of them."""

from __future__ import annotations

import re

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "1-64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
_NAME_RE = re.compile(NAME_PATTERN)


def is_valid_name(value: str) -> bool:
    return bool(_NAME_RE.match(value))


def check_name(value: str, what: str) -> str:
    """value, or ValueError naming what it is and the rule."""
    if not is_valid_name(value):
        raise ValueError(f"{what} {value!r} cannot be a Foundry Local id; allowed: {NAME_RULE}")
    return value
