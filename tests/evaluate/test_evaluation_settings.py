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


def test_each_profile_sets_its_fields_and_any_field_overrides_it():
    quick, standard, thorough = (EvaluationSpec(profile=p) for p in ("quick", "standard", "thorough"))
    assert EvaluationSpec() == standard
    assert (quick.max_eval_items, quick.fidelity, quick.repetitions, quick.edge_cases) == (16, False, 5, EDGE_CASES)
    assert (standard.max_eval_items, standard.fidelity, standard.ci_target) == (32, True, 0.03)
    assert (standard.min_repetitions, standard.repetitions) == (5, 10)
    assert (thorough.max_eval_items, thorough.leak_generations) == (None, 500)
    tuned = parse_spec(_spec({"profile": "quick", "max_eval_items": 40, "repetitions": 2})).evaluation
    assert (tuned.max_eval_items, tuned.repetitions, tuned.min_repetitions, tuned.warmup) == (40, 2, 2, 1)


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ({"profile": "fast"}, "evaluation.profile: Input should be 'quick', 'standard' or 'thorough'"),
        ({"min_repetitions": 9, "repetitions": 4}, "min_repetitions 9 is above repetitions 4"),
        ({"ci_target": 2}, "evaluation.ci_target"),
    ],
)
def test_profile_and_repetition_settings_are_checked(evaluation, message):
    with pytest.raises(SpecError, match=message):
        parse_spec(_spec(evaluation))


def test_a_policy_on_fidelity_figures_is_refused_when_the_profile_does_not_measure_them():
    data = {**_spec({"profile": "quick"}), "promotion": {"constraints": [{"metric": "kl_div_mean", "max": 0.01}]}}
    with pytest.raises(SpecError) as err:
        parse_spec(data)
    assert str(err.value) == ("spec: the promotion policy names kl_div_mean, which evaluation profile 'quick' does "
                              "not measure; set evaluation.fidelity: true or use profile standard or thorough")
    data["evaluation"]["fidelity"] = True
    assert parse_spec(data).evaluation.fidelity
