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
    assert decision.reason == ("int4-b128 (version 4) beats the champion int8 (version 2) on size_bytes: 25 B vs "
                               "50 B, -50.0%, margin none.")


def test_a_worse_candidate_does_not_replace_the_champion():
    champion = cand("int4-old", 10, 0.001, 1.0, 90, "9", key="old")
    decision = decide(SWEEP, POLICY, champion=champion)
    assert not decision.promoted and decision.champion["name"] == "int4-old"
    assert decision.reason == ("int4-b128 (version 4) does not beat the champion int4-old (version 9): it is worse "
                               "on size_bytes: 25 B vs 10 B, +150.0%, margin none.")


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
    assert rows["size_bytes"] == {"metric": "size_bytes", "baseline": 100.0, "candidate": 25.0, "champion": 50.0,
                                  "champion_stored": 50.0}


@pytest.mark.parametrize("policy, message", [
    ({"constraints": [{"metric": "kl", "max": 1}]}, "promotion.constraints[0].metric: unknown metric 'kl'; known:"),
    ({"constraints": [{"metric": "size_bytes", "min": 5, "max": 1}]},
     "contradictory constraint on size_bytes: min 5.0 > max 1.0"),
    ({"constraints": [{"metric": "decode_tokens_per_s", "min_ratio_to_champion": 1.1, "max_ratio_to_champion": 1}]},
     "contradictory constraint on decode_tokens_per_s: min_ratio_to_champion 1.1 > max_ratio_to_champion 1.0"),
    ({"objective": [{"metric": "decode_tokens_per_s", "min_relative_change": -0.1}]},
     "promotion.objective[0].min_relative_change: Input should be greater than or equal to 0"),
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


# --- noise cannot fool it: margins, intervals, the champion's numbers of today --------------------------------------

SPEED = PromotionSpec.model_validate({"objective": [{"metric": "decode_tokens_per_s"}]})


def timed(name, speed, low, high, version, resolved=1.0) -> Candidate:
    return Candidate(name, "succeeded", {"decode_tokens_per_s": speed, "decode_tokens_per_s_ci95_low": low,
                                         "decode_tokens_per_s_ci95_high": high, "decode_timing_resolved": resolved},
                     content_key=name, model_version=version)


def test_a_challenger_inside_the_noise_keeps_the_champion():
    champion = timed("int4-b32", 50.0, 48.9, 51.2, "3")
    decision = decide([timed("int4-b128", 50.5, 49.4, 51.8, "4")], SPEED, champion=champion)
    assert not decision.promoted and decision.champion["name"] == "int4-b32"
    assert decision.reason == (
        "int4-b128 (version 4) does not beat the champion int4-b32 (version 3): within the margin on every term "
        "(decode_tokens_per_s: 50.5 tok/s [49.4, 51.8] vs 50 tok/s [48.9, 51.2], +1.0%, margin 95 % intervals "
        "apart).")
    assert decision.comparison == [{"metric": "decode_tokens_per_s", "verdict": "tie",
                                    "challenger": "50.5 tok/s [49.4, 51.8]", "champion": "50 tok/s [48.9, 51.2]",
                                    "change": "+1.0%", "margin": "95 % intervals apart"}]


def test_a_clear_win_replaces_the_champion_and_names_its_numbers():
    champion = timed("int4-b32", 52.3, 51.0, 53.1, "3")
    decision = decide([timed("int4-b128", 61.2, 59.8, 62.5, "4")], SPEED, champion=champion)
    assert decision.promoted and decision.champion["name"] == "int4-b128"
    assert decision.reason == ("int4-b128 (version 4) beats the champion int4-b32 (version 3) on decode_tokens_per_s: "
                               "61.2 tok/s [59.8, 62.5] vs 52.3 tok/s [51, 53.1], +17.0%, margin 95 % intervals apart.")


def test_a_win_against_stale_champion_numbers_that_the_fresh_measurement_erases_keeps_the_champion():
    stale = timed("int4-b32", 40.0, 39.0, 41.0, "3")  # measured weeks ago, on a slower day
    challenger = timed("int4-b128", 52.0, 51.0, 53.0, "4")
    assert decide([challenger], SPEED, champion=stale).promoted, "against the stored numbers it would win"
    fresh = {"decode_tokens_per_s": 51.8, "decode_tokens_per_s_ci95_low": 50.9, "decode_tokens_per_s_ci95_high": 52.9}
    decision = decide([challenger], SPEED, champion=stale, champion_fresh=fresh,
                      champion_note="re-measured in this sweep, side by side")
    assert not decision.promoted and decision.champion["name"] == "int4-b32"
    assert "52 tok/s [51, 53] vs 51.8 tok/s [50.9, 52.9]" in decision.reason
    assert decision.reason.endswith("(champion's numbers: re-measured in this sweep, side by side).")
    assert (decision.champion_stored["decode_tokens_per_s"], decision.champion_fresh["decode_tokens_per_s"]) == (
        40.0, 51.8)
    row = {r["metric"]: r for r in decision.table}["decode_tokens_per_s"]
    assert (row["champion"], row["champion_stored"]) == (51.8, 40.0)


def test_a_relative_margin_decides_and_earlier_terms_tie_within_theirs():
    policy = PromotionSpec.model_validate({"objective": [
        {"metric": "size_bytes", "min_relative_change": 0.05}, {"metric": "exact_match", "min_absolute_change": 0.01}]})
    champion = Candidate("old", "succeeded", {"size_bytes": 100, "exact_match": 0.90}, "old", "1")
    slightly_smaller = Candidate("new", "succeeded", {"size_bytes": 97, "exact_match": 0.95}, "new", "2")
    decision = decide([slightly_smaller], policy, champion=champion)
    assert decision.promoted
    assert decision.reason == ("new (version 2) beats the champion old (version 1) on exact_match: 95.0% vs 90.0%, "
                               "+5.6%, margin 1.0% (within the margin on size_bytes).")
    worse_inside = Candidate("new2", "succeeded", {"size_bytes": 97, "exact_match": 0.895}, "new2", "3")
    kept = decide([worse_inside], policy, champion=champion)
    assert not kept.promoted and "within the margin on every term" in kept.reason


def test_an_unresolved_decode_speed_never_decides():
    champion = timed("int4-b32", 3000.0, 2000.0, 4000.0, "3", resolved=0.0)
    decision = decide([timed("int4-b128", 9000.0, 8900.0, 9100.0, "4", resolved=0.0)], SPEED, champion=champion)
    assert not decision.promoted
    assert "not resolved" in decision.reason and "margin none (the timer could not resolve it)" in decision.reason


def test_a_constraint_against_the_champion_uses_its_numbers_of_today():
    policy = PromotionSpec.model_validate({
        "constraints": [{"metric": "decode_tokens_per_s", "min_ratio_to_champion": 0.98}],
        "objective": [{"metric": "size_bytes"}]})
    champion = Candidate("old", "succeeded", {"size_bytes": 100, "decode_tokens_per_s": 40.0}, "old", "1")
    smaller_slower = Candidate("new", "succeeded", {"size_bytes": 50, "decode_tokens_per_s": 45.0}, "new", "2")
    assert decide([smaller_slower], policy, champion=champion).promoted, "45 >= 0.98 x 40 stored"
    decision = decide([smaller_slower], policy, champion=champion, champion_fresh={"decode_tokens_per_s": 50.0})
    assert not decision.promoted and decision.candidate is None
    assert decision.failures == {"new": ["decode_tokens_per_s 45 tok/s < 0.98 x champion 50 tok/s"]}
    assert decide([smaller_slower], policy).promoted, "with no champion the constraint holds"
