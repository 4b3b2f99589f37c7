"""The commands that read and act on what MLflow holds: compare a sweep's variants, decide again, show a champion.

    slmops compare [--sweep ID]                        # a logged sweep's variants (default: the latest sweep)
    slmops promote --sweep ID [--policy FILE] [--dry-run]  # --dry-run: the sweep's decision made again, from MLflow
    slmops champion [MODEL]                            # a champion with its metrics; no MODEL: every model's
"""

from __future__ import annotations

import argparse
import json

from slmops.cli.common import add_work_dir, print_table, tracker, work_dir
from slmops.errors import InputError


def cmd_compare(args: argparse.Namespace) -> int:
    from slmops.metrics import HEADLINE, fmt_measured
    from slmops.promote import registry

    store = tracker(args)
    sweep_id = args.sweep or store.latest_sweep_id()
    if sweep_id is None:
        raise InputError(f"no sweep logged in MLflow at {store.tracking_uri}; run `slmops sweep` first")
    experiment, parent = registry.find_sweep(store, sweep_id)
    candidates = registry.candidates(store, experiment, sweep_id)
    columns = [c for c in HEADLINE if any(c in cand.metrics for cand in candidates)]
    rows = [("variant", "status", "version", "foundry id", *columns)]
    rows += [(c.name, c.status, c.model_version or "-", c.foundry_model_id or "-",
              *(fmt_measured(m, c.metrics) for m in columns)) for c in candidates]
    print(f"sweep {sweep_id} (experiment {experiment}, parent run {parent})\n")
    print_table(rows)
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from slmops.config import load_policy, parse_spec
    from slmops.promote import registry
    from slmops.report import decision_markdown
    from tasks.promote import promote

    policy = load_policy(args.policy) if args.policy else None  # a bad policy stops here, before MLflow
    store = tracker(args)
    _, parent = registry.find_sweep(store, args.sweep)
    logged = parse_spec(store.load_dict(parent, "sweep_spec.json"), "logged spec")
    policy = policy or logged.promotion
    registered_model = policy.registered_model or logged.model.name
    # the decision the sweep logged: a dry run makes it again against the champion it faced, with its numbers then
    faced = store.load_dict_if_any(parent, "decision.json")
    doc = promote.fn(store.tracking_uri, args.sweep, registered_model, policy, move_aliases=not args.dry_run,
                     lock_dir=str(work_dir(args)), faced=faced)
    print(decision_markdown(doc))
    if args.json:
        print(json.dumps(doc, indent=2))
    if args.dry_run:
        print("(dry run: no alias moved)")
    return 0


def cmd_champion(args: argparse.Namespace) -> int:
    from slmops.adapters.tracking import Registry

    reg = Registry(tracker(args))
    names = reg.model_names()
    if args.model is None:
        return _list_champions(reg, names)
    if args.model not in names:
        raise InputError(f"no registered model {args.model!r}; registered: {', '.join(names) or 'none yet'}")
    return _show_champion(reg, args.model)


def _list_champions(reg, names: list[str]) -> int:
    """Every registered model's champion, one row each."""
    from slmops.promote import registry

    if not names:
        print("no registered model yet: a sweep registers its variants (slmops sweep SPEC --out DIR)")
        return 1
    rows = [("model", "champion", "version", "foundry id", "promoted at")]
    for name in sorted(names):
        champion = registry.champion(reg, name)
        if champion is None:
            rows.append((name, "(none yet)", "-", "-", "-"))
            continue
        promoted_at = reg.version(name, champion.model_version).tags.get("slmops.promoted_at", "-")
        rows.append((name, champion.name, champion.model_version, champion.foundry_model_id or "-", promoted_at))
    print_table(rows)
    print("\nslmops champion MODEL shows one with its metrics")
    return 0


def _show_champion(reg, name: str) -> int:
    from slmops.metrics import fmt
    from slmops.promote import registry

    champion = registry.champion(reg, name)
    if champion is None:
        print(f"{name} has no champion yet: no sweep promoted a variant")
        return 1
    version = reg.version(name, champion.model_version)
    print(f"champion of {name}: {champion.name} (model version {champion.model_version})")
    print(f"  Foundry Local id: {champion.foundry_model_id or '-'}")
    print(f"  sweep:            {champion.sweep_id}")
    print(f"  promoted at:      {version.tags.get('slmops.promoted_at', '-')}")
    print(f"  why:              {version.tags.get('slmops.promotion_reason', '-')}")
    print(f"  source:           {version.source}")
    for metric, value in sorted(champion.metrics.items()):
        print(f"  {metric:<24}{fmt(metric, value)}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="a logged sweep's variants side by side, from MLflow")
    p.add_argument("--sweep", help="sweep id")
    add_work_dir(p)
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("promote", help="decide again from a sweep's metrics; move aliases")
    p.add_argument("--sweep", required=True, help="sweep id")
    p.add_argument("--policy", help="policy YAML (a spec's promotion: section); default: the sweep's own")
    p.add_argument("--dry-run", action="store_true",
                   help="decide again as the sweep did (the champion it faced, its numbers then); move no alias")
    p.add_argument("--json", action="store_true", help="also print the decision as JSON")
    add_work_dir(p)
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("champion", help="each registered model's champion, or one in full")
    p.add_argument("model", nargs="?", help="registered model (default: every model's champion, one line each)")
    add_work_dir(p)
    p.set_defaults(func=cmd_champion)
