"""Promotion by an explicit policy: which variants meet the constraints, which one is best, and whether it beats
the current champion by more than the noise. Pure decisions on numbers; the MLflow side lives in registry.py.

    slmops promote --sweep ID [--policy FILE]    # decide again from what MLflow logged

The champion is judged on today's numbers where they exist: the sweep re-measures it side by side with the
candidates when the policy names a figure of the machine (speed, memory), and those fresh numbers replace its stored
ones for those figures (``champion_fresh``); the decision keeps both.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from slmops.metrics import HEADLINE, MACHINE_METRICS, fmt
from slmops.promote.compare import TermComparison, compare_term
from slmops.promote.policy import PromotionSpec


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
    table: list[dict] = field(default_factory=list)  # metric -> baseline / candidate / champion (used, stored)
    comparison: list[dict] = field(default_factory=list)  # the objective's terms, challenger against champion
    policy: dict = field(default_factory=dict)  # the policy as it was
    champion_stored: dict | None = None  # the champion's numbers from the sweep that measured it
    champion_fresh: dict | None = None  # its numbers re-measured in this sweep, side by side
    champion_note: str | None = None  # how its numbers were had ("re-measured in this sweep", "folder gone", ...)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(metrics: dict[str, float], metric: str) -> float | None:
    value = metrics.get(metric)
    return None if value is None else float(value)


def constraint_failures(candidate: Candidate, baseline: Candidate | None, policy: PromotionSpec,
                        champion: dict[str, float] | None = None) -> list[str]:
    """Every constraint the candidate does not meet, each as a short phrase (``champion``: the champion's numbers,
    for the constraints written against it; with none, those hold)."""
    if candidate.status == "failed":
        return ["the variant failed (build, checks or smoke test)"]
    failures = []
    if candidate.metrics.get("smoke_test_passed", 1.0) < 1.0:
        failures.append("the Foundry Local smoke test did not pass")
    for c in policy.constraints:
        value = _value(candidate.metrics, c.metric)
        if value is None:
            failures.append(f"{c.metric} was not measured")
            continue
        show = fmt(c.metric, value)
        if c.min is not None and value < c.min:
            failures.append(f"{c.metric} {show} < min {fmt(c.metric, c.min)}")
        if c.max is not None and value > c.max:
            failures.append(f"{c.metric} {show} > max {fmt(c.metric, c.max)}")
        for whose, reference, low, high in (
                ("baseline", baseline.metrics if baseline else None, c.min_ratio_to_baseline, c.max_ratio_to_baseline),
                ("champion", champion, c.min_ratio_to_champion, c.max_ratio_to_champion)):
            if low is None and high is None or (whose == "champion" and champion is None):
                continue
            base = _value(reference, c.metric) if reference else None
            if base is None:
                failures.append(f"{c.metric} of the {whose} was not measured")
                continue
            if low is not None and value < low * base:
                failures.append(f"{c.metric} {show} < {low:g} x {whose} {fmt(c.metric, base)}")
            if high is not None and value > high * base:
                failures.append(f"{c.metric} {show} > {high:g} x {whose} {fmt(c.metric, base)}")
    return failures


def objective_key(candidate: Candidate, policy: PromotionSpec) -> tuple:
    """Sort key of the sweep's own variants, smaller is better: each term in order; unmeasured ranks last."""
    key = []
    for term in policy.objective:
        value = _value(candidate.metrics, term.metric)
        key.append((1, 0.0) if value is None else (0, value if term.direction == "minimize" else -value))
    return tuple(key)


def _who(c: Candidate) -> str:
    return f"{c.name} (version {c.model_version})" if c.model_version else c.name


def champion_numbers(champion: Candidate, fresh: dict[str, float] | None) -> dict[str, float]:
    """The champion's numbers for this decision: re-measured ones for the figures of the machine, else stored."""
    return {**champion.metrics, **{k: v for k, v in (fresh or {}).items() if k in MACHINE_METRICS}}


def decide(candidates: list[Candidate], policy: PromotionSpec, champion: Candidate | None = None,
           baseline_name: str | None = None, champion_fresh: dict[str, float] | None = None,
           champion_note: str | None = None) -> Decision:
    """Rank the candidates that meet the policy and decide whether the best replaces the champion."""
    baseline_name = baseline_name or policy.baseline or next((c.name for c in candidates if c.name == "fp32"), None)
    baseline = next((c for c in candidates if c.name == baseline_name), None)
    held = champion_numbers(champion, champion_fresh) if champion else None
    failures = {c.name: constraint_failures(c, baseline, policy, held) for c in candidates}
    eligible = sorted((c for c in candidates if not failures[c.name]), key=lambda c: objective_key(c, policy))
    best = eligible[0] if eligible else None
    champ = _brief(champion)
    record = dict(
        candidate=best.name if best else None, runner_up=eligible[1].name if len(eligible) > 1 else None,
        ranking=[c.name for c in eligible], failures={k: v for k, v in failures.items() if v}, baseline=baseline_name,
        previous_champion=champ, table=_table(policy, baseline, best, champion, held),
        policy=policy.model_dump(mode="json"), champion_stored=dict(champion.metrics) if champion else None,
        champion_fresh=champion_fresh, champion_note=champion_note)
    if best is None:
        why = "; ".join(f"{name}: {', '.join(f)}" for name, f in failures.items())
        return Decision(False, champ, f"No variant meets the policy ({why}).", **record)
    if champion is None:
        return Decision(True, _brief(best), f"{_who(best)} is the best of {len(eligible)} variant(s) meeting the "
                        f"policy, and there was no champion.", **record)
    same = (best.content_key and best.content_key == champion.content_key) or (
        best.model_version is not None and best.model_version == champion.model_version)
    if same:
        return Decision(False, champ, f"{_who(best)} is the best variant and already the champion.", **record)
    note = f" (champion's numbers: {champion_note})" if champion_note else ""
    # the champion must still meet today's policy to be defended; one that no longer does is replaced
    champion_failures = constraint_failures(Candidate(champion.name, "succeeded", held), baseline, policy)
    if champion_failures:
        return Decision(True, _brief(best), f"{_who(best)} meets the policy and the champion {_who(champion)} no "
                        f"longer does ({', '.join(champion_failures)}){note}.", **record)
    terms = [compare_term(term, best.metrics, held) for term in policy.objective]
    record["comparison"] = [t.to_dict() for t in terms]
    promoted, reason = _verdict(best, champion, terms)
    return Decision(promoted, _brief(best) if promoted else champ, reason + note + ".", **record)


def _verdict(best: Candidate, champion: Candidate, terms: list[TermComparison]) -> tuple[bool, str]:
    """The first term that differs by more than its margin decides; the ones before it tied within theirs."""
    for i, term in enumerate(terms):
        if term.verdict == "tie":
            continue
        ties = f" (within the margin on {', '.join(t.metric for t in terms[:i])})" if i else ""
        if term.verdict == "better":
            return True, f"{_who(best)} beats the champion {_who(champion)} on {term.phrase()}{ties}"
        return False, (f"{_who(best)} does not beat the champion {_who(champion)}: it is worse on "
                       f"{term.phrase()}{ties}")
    return False, (f"{_who(best)} does not beat the champion {_who(champion)}: within the margin on every term ("
                   + "; ".join(t.phrase() for t in terms) + ")")


def _brief(c: Candidate | None) -> dict | None:
    if c is None:
        return None
    return {"name": c.name, "model_version": c.model_version, "sweep_id": c.sweep_id,
            "foundry_model_id": c.foundry_model_id, "content_key": c.content_key}


def _table(policy: PromotionSpec, baseline: Candidate | None, best: Candidate | None, champion: Candidate | None,
           held: dict[str, float] | None) -> list[dict]:
    rows = []
    for m in dict.fromkeys(policy.metrics() + [m for m in HEADLINE if m != "ttft_ms_p50"]):
        values = {"baseline": _value(baseline.metrics, m) if baseline else None,
                  "candidate": _value(best.metrics, m) if best else None,
                  "champion": _value(held, m) if held else None,
                  "champion_stored": _value(champion.metrics, m) if champion else None}
        if any(v is not None for v in values.values()):
            rows.append({"metric": m, **values})
    return rows


def decision_markdown(decision: Decision, registered_model: str) -> str:
    """The decision for people: what happened, why, and the numbers side by side."""
    head = "Promoted" if decision.promoted else "Not promoted"
    champion = decision.champion
    lines = [f"# {head}: {registered_model}", "", decision.reason, ""]
    if champion:
        lines += [f"**Champion:** {champion['name']} (model version {champion['model_version']}, Foundry Local "
                  f"id `{champion['foundry_model_id']}`, sweep {champion['sweep_id']})", ""]
    if decision.comparison:
        lines += ["| objective term | challenger | champion | change | margin | verdict |", "|---|---|---|---|---|---|"]
        lines += [f"| {t['metric']} | {t['challenger']} | {t['champion']} | {t['change']} | {t['margin']} | "
                  f"{t['verdict']} |" for t in decision.comparison]
        lines.append("")
    if decision.table:
        fresh = decision.champion_fresh is not None
        head_row = "| metric | baseline | candidate | champion" + (" (re-measured) | champion (stored) |" if fresh
                                                                   else " before |")
        lines += [head_row, "|---|---|---|---|" + ("---|" if fresh else "")]
        for row in decision.table:
            cells = [fmt(row["metric"], row[k]) for k in ("baseline", "candidate", "champion")]
            if fresh:
                cells.append(fmt(row["metric"], row["champion_stored"]))
            lines.append(f"| {row['metric']} | " + " | ".join(cells) + " |")
        lines.append("")
    if decision.champion_note:
        lines += [f"Champion's numbers: {decision.champion_note}.", ""]
    lines.append(f"Ranking of the variants meeting the policy: {', '.join(decision.ranking) or 'none'}")
    if decision.failures:
        lines += ["", "Variants that do not meet the policy:", ""]
        lines += [f"- {name}: {', '.join(f)}" for name, f in decision.failures.items()]
    return "\n".join(lines) + "\n"
