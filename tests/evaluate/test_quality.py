"""Scoring answers: exact match, token F1, expected format.

    .venv/bin/python -m pytest tests/evaluate/test_quality.py -q
"""

from __future__ import annotations

import pytest

from slmops.evaluate.quality import (
    FormatCheck,
    exact_match,
    score_items,
    summarise_quality,
    token_f1,
)
from slmops.evaluate.settings import EvaluationSpec


def test_exact_match_ignores_only_outer_and_repeated_whitespace():
    assert exact_match("  The lamp is red.\n", "The lamp is red.")
    assert exact_match("The  lamp is\nred.", "The lamp is red.")
    assert not exact_match("the lamp is red.", "The lamp is red.")
    assert not exact_match("The lamp is red", "The lamp is red.")


def test_token_f1_gives_partial_credit_like_squad():
    assert token_f1("The lamp is red.", "the lamp is RED") == 1.0
    assert token_f1("The lamp is blue.", "The lamp is red.") == pytest.approx(2 / 3)
    assert token_f1("", "The lamp is red.") == 0.0
    assert token_f1("", "") == 1.0


def test_format_check_uses_the_regex_when_configured():
    check = FormatCheck(EvaluationSpec(format_regex=r"The .+ costs \$\d+\."))
    assert check("The oak lamp costs $42.", finished=True)
    assert not check("The oak lamp costs forty-two dollars.", finished=True)


def test_format_check_uses_the_json_schema_when_configured():
    schema = {"type": "object", "properties": {"price": {"type": "number"}}, "required": ["price"]}
    check = FormatCheck(EvaluationSpec(json_schema=schema))
    assert check(' {"price": 42} ', finished=True)
    assert not check('{"price": "42"}', finished=True)
    assert not check("price: 42", finished=True)


def test_format_check_without_a_format_wants_a_finished_non_empty_answer():
    check = FormatCheck(EvaluationSpec())
    assert check("An answer.", finished=True)
    assert not check("  ", finished=True)
    assert not check("An answer cut off at the tok", finished=False)


def test_summarise_quality_gives_shares_over_items():
    records = [
        {"answer": "The lamp is red.", "reference": "The lamp is red.", "finished": True},
        {"answer": "The lamp is blue.", "reference": "The lamp is red.", "finished": True},
    ]
    metrics = summarise_quality(score_items(records, FormatCheck(EvaluationSpec())))
    assert metrics["exact_match"] == 0.5
    assert metrics["token_f1"] == pytest.approx((1 + 2 / 3) / 2, abs=1e-6)
    assert metrics["format_ok"] == 1.0
