"""Edge cases: inputs a deployed model will meet, each of which must be answered or rejected cleanly.

    .venv/bin/python -m pytest tests/evaluate -q -k edge

A case passes when the runtime either answers (an empty answer is still an answer) or refuses with slmops's
``VariantError`` carrying Foundry Local's message, *and* a normal request afterwards is still answered. Any other
exception fails the case (e.g. the SDK's ``UnicodeEncodeError`` for a lone surrogate); a worker that dies or hangs
fails it too, which the parent process records (see runner.py), since nothing in the dead process can.

What Foundry Local 2.2.1 does with them (demo model): an empty or NUL-only message is refused ("the request has
nothing to generate from"); a prompt over the context is refused ("request requires 744 total tokens ... exceeds the
model's maximum context length of 256 tokens"); non-ASCII text, emoji and control characters are answered. A NUL
ends the message at the C boundary: the text after it never reaches the model.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from slmops.errors import VariantError
from slmops.evaluate.settings import EdgeCase

ChatFn = Callable[[str, int], Iterator[str]]

NON_ASCII = "Größe und Preis? Ça coûte combien ? 日本語で答えてください。Привет! 🤖🎉👩‍💻"
CONTROL_CHARS = "What colour\x07 is\x1b[31m the\r\n\t lamp?\x7f\x08\x00 after a NUL"
# the normal request after each case proves the runtime still answers: a prefill and a few decode steps do
# (the manual route's benchmark asks for 4 tokens too), a whole answer would only cost time
HEALTH_TOKENS = 4


def edge_prompt(case: EdgeCase, context_length: int) -> str:
    """The input of one edge case; too_long is a few times the model's context."""
    if case == "empty":
        return ""
    if case == "whitespace":
        return " \n\t  \n"
    if case == "too_long":
        # each repetition is several tokens under any tokenizer: well over the context in all
        return "Please read this sentence carefully. " * max(64, context_length)
    if case == "non_ascii":
        return NON_ASCII
    if case == "control_chars":
        return CONTROL_CHARS
    raise ValueError(f"unknown edge case {case!r}")


def run_edge_case(
    chat: ChatFn, case: EdgeCase, context_length: int, health_prompt: str, max_tokens: int
) -> dict[str, Any]:
    """Send one edge case (answers of up to max_tokens), then a normal request of HEALTH_TOKENS; say whether both
    were handled cleanly."""
    result: dict[str, Any] = {"case": case, "passed": False, "outcome": "", "detail": "", "answer": ""}
    started = time.perf_counter()
    try:
        result["answer"] = "".join(chat(edge_prompt(case, context_length), max_tokens))
        result["outcome"] = "answered"
    except VariantError as exc:
        result["outcome"] = "rejected"
        result["detail"] = _last_clause(str(exc))
    except (ValueError, TypeError, UnicodeError, RuntimeError, OSError) as exc:
        # anything but the adapter's VariantError is not a clean refusal: recorded, and the case fails
        result["outcome"] = "error"
        result["detail"] = f"{type(exc).__name__}: {exc}"
    result["ms"] = round((time.perf_counter() - started) * 1000, 3)
    if result["outcome"] == "error":
        return result
    try:
        list(chat(health_prompt, HEALTH_TOKENS))
    except VariantError as exc:
        result["outcome"] += ", then the runtime failed a normal request"
        result["detail"] = f"{result['detail']}; afterwards: {_last_clause(str(exc))}".strip("; ")
        return result
    result["passed"] = True
    return result


def _last_clause(message: str) -> str:
    """Foundry Local's messages start with a C++ location and signature: keep the readable part after them."""
    scope = message.find("::")
    opening = message.find("(", scope) if scope >= 0 else -1
    if opening < 0:
        return message
    depth = 0
    for position in range(opening, len(message)):
        depth += {"(": 1, ")": -1}.get(message[position], 0)
        if depth == 0:
            return message[position + 1 :].strip() or message
    return message
