"""Promotion by an explicit policy: which variants meet the constraints, which one is best, and whether it beats
the current champion. Pure decisions on numbers; the MLflow side lives in slmops/promote/registry.py.

    slmops promote --sweep ID [--policy FILE]    # decide again from what MLflow logged
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from slmops.config import PromotionSpec
from slmops.metrics import fmt


@dataclass
class Candidate:
    """A variant as promotion sees it: its name, status, metrics and where it is registered."""

    name: str
    status: str
    metrics: dict[str, float]
    content_key: str | None = None
    model_version: str | None = None
    foundry_model_id: str | None = None
    sweep_id: str | None = None


@dataclass
class Decision:
    promoted: bool
    champion: dict | None  # the champion after the decision: {name, model_version, sweep_id, foundry_model_id}
    reason: str
    candidate: str | None  # the best variant that meets the policy
    runner_up: str | None
    ranking: list[str]  # eligible variants, best first
    failures: dict[str, list[str]]  # variant -> constraints it does not meet
    baseline: str | None
    previous_champion: dict | None
    table: list[dict] = field(default_factory=list)  # metric -> baseline / candidate / champion values

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(candidate: Candidate, metric: str) -> float | None:
    value = candidate.metrics.get(metric)
    return None if value is None else float(value)


def constraint_failures(candidate: Candidate, baseline: Candidate | None, policy: PromotionSpec) -> list[str]:
    """Every constraint the candidate does not meet, each as a short phrase."""
    failures = []
    if candidate.status == "failed":
        return ["the variant failed (build, checks or smoke test)"]
    if candidate.metrics.get("smoke_test_passed", 1.0) < 1.0:
        failures.append("the Foundry Local smoke test did not pass")
    for c in policy.constraints:
        value = _value(candidate, c.metric)
        if value is None:
            failures.append(f"{c.metric} was not measured")
            continue
        if c.min is not None and value < c.min:
            failures.append(f"{c.metric} {fmt(c.metric, value)} < min {fmt(c.metric, c.min)}")
        if c.max is not None and value > c.max:
            failures.append(f"{c.metric} {fmt(c.metric, value)} > max {fmt(c.metric, c.max)}")
        if c.min_ratio_to_baseline is not None or c.max_ratio_to_baseline is not None:
            base = _value(baseline, c.metric) if baseline else None
            if base is None:
                failures.append(f"{c.metric} of the baseline was not measured")
                continue
            if c.min_ratio_to_baseline is not None and value < c.min_ratio_to_baseline * base:
                failures.append(f"{c.metric} {fmt(c.metric, value)} < {c.min_ratio_to_baseline:g} x baseline "
                                f"{fmt(c.metric, base)}")
            if c.max_ratio_to_baseline is not None and value > c.max_ratio_to_baseline * base:
                failures.append(f"{c.metric} {fmt(c.metric, value)} > {c.max_ratio_to_baseline:g} x baseline "
                                f"{fmt(c.metric, base)}")
    return failures


def objective_key(candidate: Candidate, policy: PromotionSpec) -> tuple:
    """Sort key, smaller is better: each objective term in order; an unmeasured value ranks last."""
    key = []
    for term in policy.objective:
        value = _value(candidate, term.metric)
        if value is None:
            key.append((1, 0.0))
        else:
            key.append((0, value if term.direction == "minimize" else -value))
    return tuple(key)


def _first_difference(a: Candidate, b: Candidate, policy: PromotionSpec) -> str:
    for term in policy.objective:
        va, vb = _value(a, term.metric), _value(b, term.metric)
        if va != vb:
            return f"{term.metric} {fmt(term.metric, va)} vs {fmt(term.metric, vb)}"
    return "every objective term equal"


def _who(c: Candidate) -> str:
    return f"{c.name} (version {c.model_version})" if c.model_version else c.name


def decide(candidates: list[Candidate], policy: PromotionSpec, champion: Candidate | None = None,
           baseline_name: str | None = None) -> Decision:
    """Rank the candidates that meet the policy and decide whether the best replaces the champion."""
    baseline_name = baseline_name or policy.baseline or next(
        (c.name for c in candidates if c.name == "fp32"), None)
    baseline = next((c for c in candidates if c.name == baseline_name), None)
    failures = {c.name: constraint_failures(c, baseline, policy) for c in candidates}
    eligible = sorted((c for c in candidates if not failures[c.name]), key=lambda c: objective_key(c, policy))
    ranking = [c.name for c in eligible]
    best = eligible[0] if eligible else None
    runner_up = eligible[1] if len(eligible) > 1 else None
    champ = _brief(champion)
    table = _table(policy, baseline, best, champion)
    common = dict(candidate=best.name if best else None, runner_up=runner_up.name if runner_up else None,
                  ranking=ranking, failures={k: v for k, v in failures.items() if v}, baseline=baseline_name,
                  previous_champion=champ, table=table)
    if best is None:
        why = "; ".join(f"{name}: {', '.join(f)}" for name, f in failures.items())
        return Decision(False, champ, f"No variant meets the policy ({why}).", **common)
    if champion is None:
        return Decision(True, _brief(best), f"{_who(best)} is the best of {len(eligible)} variant(s) meeting the "
                        f"policy, and there was no champion.", **common)
    same = (best.content_key and best.content_key == champion.content_key) or (
        best.model_version is not None and best.model_version == champion.model_version)
    if same:
        return Decision(False, champ, f"{_who(best)} is the best variant and already the champion.", **common)
    # the champion must still meet today's policy to be defended; one that no longer does is replaced
    champion_failures = constraint_failures(champion, baseline, policy)
    if champion_failures:
        return Decision(True, _brief(best), f"{_who(best)} meets the policy and the champion {_who(champion)} no "
                        f"longer does ({', '.join(champion_failures)}).", **common)
    if objective_key(best, policy) < objective_key(champion, policy):
        return Decision(True, _brief(best), f"{_who(best)} beats the champion {_who(champion)} on the objective "
                        f"({_first_difference(best, champion, policy)}).", **common)
    return Decision(False, champ, f"{_who(best)} does not beat the champion {_who(champion)} on the objective "
                    f"({_first_difference(best, champion, policy)}).", **common)


def _brief(c: Candidate | None) -> dict | None:
    if c is None:
        return None
    return {"name": c.name, "model_version": c.model_version, "sweep_id": c.sweep_id,
            "foundry_model_id": c.foundry_model_id, "content_key": c.content_key}


def _table(policy: PromotionSpec, baseline: Candidate | None, best: Candidate | None,
           champion: Candidate | None) -> list[dict]:
    metrics = list(dict.fromkeys([t.metric for t in policy.objective] + [c.metric for c in policy.constraints]
                                 + ["size_bytes", "exact_match", "kl_div_mean", "top1_agreement",
                                    "decode_tokens_per_s"]))
    rows = []
    for m in metrics:
        values = {role: (_value(c, m) if c else None) for role, c in
                  (("baseline", baseline), ("candidate", best), ("champion", champion))}
        if any(v is not None for v in values.values()):
            rows.append({"metric": m, **values})
    return rows


def decision_markdown(decision: Decision, registered_model: str) -> str:
    """The decision for people: what happened, why, and the numbers side by side."""
    head = "Promoted" if decision.promoted else "Not promoted"
    champion = decision.champion
    lines = [f"# {head}: {registered_model}", "", decision.reason, ""]
    if champion:
        lines.append(f"**Champion:** {champion['name']} (model version {champion['model_version']}, Foundry Local "
                     f"id `{champion['foundry_model_id']}`, sweep {champion['sweep_id']})")
        lines.append("")
    if decision.table:
        lines += ["| metric | baseline | candidate | champion before |", "|---|---|---|---|"]
        for row in decision.table:
            lines.append(f"| {row['metric']} | {fmt(row['metric'], row['baseline'])} | "
                         f"{fmt(row['metric'], row['candidate'])} | {fmt(row['metric'], row['champion'])} |")
        lines.append("")
    lines.append(f"Ranking of the variants meeting the policy: {', '.join(decision.ranking) or 'none'}")
    if decision.failures:
        lines += ["", "Variants that do not meet the policy:", ""]
        lines += [f"- {name}: {', '.join(f)}" for name, f in decision.failures.items()]
    return "\n".join(lines) + "\n"
