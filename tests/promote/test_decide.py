"""Promotion decisions on numbers: constraints, ranking, and the champion comparison."""

from __future__ import annotations

import pytest

from slmops.config import PromotionSpec, parse_spec
from slmops.errors import SpecError
from slmops.promote import Candidate, decide

POLICY = PromotionSpec.model_validate({
    "constraints": [{"metric": "kl_div_mean", "max": 0.05},
                    {"metric": "exact_match", "min_ratio_to_baseline": 0.98}],
    "objective": [{"metric": "size_bytes"}, {"metric": "decode_tokens_per_s"}],
})


def cand(name, size, kl, em, speed=50.0, version=None, key=None, status="succeeded", smoke=1.0):
    return Candidate(name, status, {"size_bytes": size, "kl_div_mean": kl, "exact_match": em,
                                    "decode_tokens_per_s": speed, "smoke_test_passed": smoke},
                     content_key=key or name, model_version=version)


SWEEP = [cand("fp32", 100, 0.0, 1.0, 16, "1"), cand("int8", 50, 0.001, 1.0, 30, "2"),
         cand("int4-b32", 25, 0.01, 0.99, 70, "3"), cand("int4-b128", 25, 0.02, 0.99, 80, "4")]


def test_the_smallest_variant_meeting_the_policy_wins_ties_broken_by_speed():
    decision = decide(SWEEP, POLICY)
    assert decision.promoted
    assert decision.ranking == ["int4-b128", "int4-b32", "int8", "fp32"]
    assert (decision.candidate, decision.runner_up) == ("int4-b128", "int4-b32")
    assert decision.reason == "int4-b128 (version 4) is the best of 4 variant(s) meeting the policy, and there was " \
                              "no champion."


def test_nothing_is_promoted_when_no_variant_meets_the_policy_and_the_reason_names_each_failure():
    strict = PromotionSpec.model_validate({"constraints": [{"metric": "kl_div_mean", "max": 0.0},
                                                           {"metric": "size_bytes", "max": 60}]})
    decision = decide(SWEEP, strict)
    assert not decision.promoted and decision.candidate is None and decision.champion is None
    assert decision.failures == {
        "fp32": ["size_bytes 100 B > max 60 B"],
        "int8": ["kl_div_mean 1.00e-03 > max 0"],
        "int4-b32": ["kl_div_mean 0.01 > max 0"],
        "int4-b128": ["kl_div_mean 0.02 > max 0"],
    }
    assert decision.reason.startswith("No variant meets the policy (fp32: size_bytes")
    assert "int4-b128: kl_div_mean 0.02 > max 0" in decision.reason


def test_a_failed_or_unanswering_variant_is_never_promoted():
    sweep = [cand("fp32", 100, 0.0, 1.0, version="1"), cand("tiny", 1, 0.0, 1.0, version="2", status="failed"),
             cand("mute", 2, 0.0, 1.0, version="3", smoke=0.0)]
    decision = decide(sweep, PromotionSpec())
    assert decision.candidate == "fp32"
    assert decision.failures == {"tiny": ["the variant failed (build, checks or smoke test)"],
                                 "mute": ["the Foundry Local smoke test did not pass"]}


def test_a_better_challenger_replaces_the_champion():
    champion = cand("int8", 50, 0.001, 1.0, 30, "2")
    decision = decide(SWEEP, POLICY, champion=champion)
    assert decision.promoted and decision.champion["name"] == "int4-b128"
    assert decision.previous_champion["model_version"] == "2"
    assert decision.reason == ("int4-b128 (version 4) beats the champion int8 (version 2) on the objective "
                               "(size_bytes 25 B vs 50 B).")


def test_a_worse_candidate_does_not_replace_the_champion():
    champion = cand("int4-old", 10, 0.001, 1.0, 90, "9", key="old")
    decision = decide(SWEEP, POLICY, champion=champion)
    assert not decision.promoted and decision.champion["name"] == "int4-old"
    assert decision.reason.startswith("int4-b128 (version 4) does not beat the champion int4-old (version 9) on the "
                                      "objective (size_bytes")


def test_the_same_champion_is_not_promoted_twice():
    decision = decide(SWEEP, POLICY, champion=cand("int4-b128", 25, 0.02, 0.99, 80, "4"))
    assert not decision.promoted
    assert decision.reason == "int4-b128 (version 4) is the best variant and already the champion."


def test_a_champion_that_no_longer_meets_the_policy_is_replaced():
    champion = cand("int4-bad", 5, 0.5, 0.5, 100, "7", key="bad")
    decision = decide(SWEEP, POLICY, champion=champion)
    assert decision.promoted and decision.champion["name"] == "int4-b128"
    assert "no longer does (kl_div_mean 0.5 > max 0.05" in decision.reason


def test_the_decision_table_puts_baseline_candidate_and_champion_side_by_side():
    decision = decide(SWEEP, POLICY, champion=cand("int8", 50, 0.001, 1.0, 30, "2"))
    rows = {r["metric"]: r for r in decision.table}
    assert rows["size_bytes"] == {"metric": "size_bytes", "baseline": 100.0, "candidate": 25.0, "champion": 50.0}


@pytest.mark.parametrize("policy, message", [
    ({"constraints": [{"metric": "kl", "max": 1}]}, "promotion.constraints[0].metric: unknown metric 'kl'; known:"),
    ({"constraints": [{"metric": "size_bytes", "min": 5, "max": 1}]},
     "contradictory constraint on size_bytes: min 5.0 > max 1.0"),
    ({"constraints": [{"metric": "size_bytes", "min": 5}, {"metric": "size_bytes", "max": 1}]},
     "contradictory constraints on size_bytes: min 5.0 > max 1.0"),
    ({"constraints": [{"metric": "exact_match", "min": 1.5}]},
     "constraint on exact_match cannot be met: min 1.5 is above its highest possible value 1"),
    ({"constraints": [{"metric": "exact_match"}]}, "constraint on exact_match sets no bound"),
    ({"objective": [{"metric": "speed"}]}, "promotion.objective[0].metric: unknown metric 'speed'"),
    ({"baseline": "fp16"}, "promotion.baseline 'fp16' is not a variant; variants: fp32"),
])
def test_bad_policies_are_refused_before_any_work(policy, message):
    with pytest.raises(SpecError) as err:
        parse_spec({"model": {"path": "m", "name": "m"}, "variants": [{"name": "fp32", "precision": "fp32"}],
                    "promotion": policy}, "spec.yaml")
    assert message in str(err.value)
