"""The ``evaluation:`` section of the sweep spec: validated before any work, errors naming field and value.

    .venv/bin/python -m pytest tests/evaluate/test_evaluation_settings.py -q
"""

from __future__ import annotations

import pytest

from slmops.config import parse_spec
from slmops.errors import SpecError
from slmops.evaluate.settings import EDGE_CASES, EvaluationSpec


def _spec(evaluation: dict) -> dict:
    return {"model": {"path": "m", "name": "m"}, "variants": [{"name": "fp32", "precision": "fp32"}],
            "evaluation": evaluation}


def test_evaluation_settings_defaults_cover_every_edge_case_and_three_lengths():
    settings = EvaluationSpec()
    assert settings.edge_cases == EDGE_CASES
    assert len(settings.prompt_lengths) >= 3
    assert all(field.description for field in EvaluationSpec.model_fields.values())


def test_evaluation_settings_sort_prompt_lengths():
    assert parse_spec(_spec({"prompt_lengths": [100, 10, 50]})).evaluation.prompt_lengths == (10, 50, 100)


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"prompt_lengths": [16, 64]}, "evaluation.prompt_lengths"),
        ({"prompt_lengths": [16, 16, 64]}, "prompt lengths must differ"),
        ({"prompt_lengths": [0, 16, 64]}, "positive token counts"),
        ({"format_regex": "(unclosed"}, "not a valid regular expression"),
        ({"json_schema": {"type": "no-such-type"}}, "not a valid JSON schema"),
        ({"edge_cases": ["empty", "tiny"]}, "evaluation.edge_cases"),
        ({"repetitons": 3}, "evaluation.repetitons: unknown field"),
        ({"repetitions": 0}, "evaluation.repetitions"),
    ],
)
def test_evaluation_settings_reject_bad_values_before_work(evaluation, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(")):
        parse_spec(_spec(evaluation))
