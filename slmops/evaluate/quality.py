"""Answer quality on the user's eval set: exact match, token F1 and the share of answers in the expected format.

    .venv/bin/python -m pytest tests/evaluate/test_quality.py -q

The answers come from the serving runtime (Foundry Local, greedy); this module only reads eval.jsonl, scores
answers and summarises. Exact match is strict (the answer is the reference, outer whitespace aside); token F1 is
SQuAD's (lower case, punctuation and articles dropped, bag of words), so near misses get partial credit.
"""

from __future__ import annotations

import json
import re
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from slmops.evaluate.settings import EvaluationSpec

ChatFn = Callable[[str, int], Iterator[str]]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _squad_tokens(text: str) -> list[str]:
    text = text.lower().translate(_PUNCTUATION)
    return _ARTICLES.sub(" ", text).split()


def exact_match(answer: str, reference: str) -> bool:
    """The answer is the reference, apart from surrounding and repeated whitespace."""
    return " ".join(answer.split()) == " ".join(reference.split())


def token_f1(answer: str, reference: str) -> float:
    """SQuAD's token F1 between answer and reference (1.0 when both normalise to nothing)."""
    got, want = _squad_tokens(answer), _squad_tokens(reference)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


class FormatCheck:
    """Whether an answer is in the expected format: the configured regex and/or JSON schema, else non-empty and
    not cut off at the token limit."""

    def __init__(self, settings: EvaluationSpec) -> None:
        self.regex = re.compile(settings.format_regex) if settings.format_regex else None
        self.schema_validator = None
        if settings.json_schema is not None:
            from jsonschema import validators

            self.schema_validator = validators.validator_for(settings.json_schema)(settings.json_schema)

    @property
    def configured(self) -> bool:
        return self.regex is not None or self.schema_validator is not None

    def __call__(self, answer: str, finished: bool) -> bool:
        if not self.configured:
            return bool(answer.strip()) and finished
        text = answer.strip()
        if self.regex is not None and not self.regex.fullmatch(text):
            return False
        if self.schema_validator is not None:
            try:
                document = json.loads(text)
            except ValueError:
                return False
            if not self.schema_validator.is_valid(document):
                return False
        return True


def answer_items(
    chat: ChatFn, items: list[dict[str, str]], max_new_tokens: int, progress: Callable[[int, int], None],
    after_each: Callable[[], None] = lambda: None,
) -> list[dict[str, Any]]:
    """Each item's greedy answer from the runtime, with its piece count and time; ``after_each`` runs after every
    answer (the leak check follows resident memory there)."""
    records = []
    for index, item in enumerate(items):
        started = time.perf_counter()
        stream = chat(item["prompt"], max_new_tokens)
        pieces = list(stream)
        tokens = getattr(stream, "completion_tokens", None) or len(pieces)
        reason = getattr(stream, "finish_reason", None)
        records.append(
            {
                "index": index,
                "prompt": item["prompt"],
                "reference": item["reference"],
                "answer": "".join(pieces).strip(),
                "answer_tokens": tokens,
                "response_ms": round((time.perf_counter() - started) * 1000, 3),
                # the runtime's own reason when it gives one; else an answer that used every token was cut off
                "finished": reason == "STOP" if reason else tokens < max_new_tokens,
            }
        )
        after_each()
        progress(index + 1, len(items))
    return records


def score_items(records: Iterable[dict[str, Any]], check: FormatCheck) -> list[dict[str, Any]]:
    """Add exact_match, token_f1 and format_ok to each answered item."""
    scored = []
    for record in records:
        scored.append(
            {
                **record,
                "exact_match": exact_match(record["answer"], record["reference"]),
                "token_f1": round(token_f1(record["answer"], record["reference"]), 6),
                "format_ok": check(record["answer"], record["finished"]),
            }
        )
    return scored


def summarise_quality(scored: list[dict[str, Any]]) -> dict[str, float]:
    """Shares over the scored items: exact match, mean token F1, in-format."""
    n = len(scored)
    return {
        "exact_match": sum(r["exact_match"] for r in scored) / n,
        "token_f1": sum(r["token_f1"] for r in scored) / n,
        "format_ok": sum(r["format_ok"] for r in scored) / n,
        "eval_items": float(n),
    }
