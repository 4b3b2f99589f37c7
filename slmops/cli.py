"""The ``slmops`` command.

    slmops doctor                              # tool versions and the pairs that must match
    slmops make-demo-model DIR                 # train the demo fine-tuned model into DIR
    slmops sweep configs/demo.yaml --out DIR   # convert, quantize, check and log a sweep
    slmops demo --out DIR                      # the demo model through the demo sweep
    slmops compare [--sweep ID]                # a logged sweep's variants, from MLflow
    slmops promote --sweep ID [--policy FILE]  # decide again from logged metrics; move the aliases
    slmops sync --out DIR                      # log a sweep that lost its tracking server, afterwards
    slmops champion [MODEL]                    # the champion, its metrics and Foundry Local id
    slmops publish PATH                        # a checkpoint.published event: the triggered deployment sweeps it
    slmops watch DIR [--interval S] [--once]   # publish each new complete checkpoint folder that appears in DIR
    slmops foundry list                        # like `foundry cache ls`: every registered variant
    slmops foundry chat ID PROMPT              # like `foundry model run`: stream an answer
    slmops foundry remove ID                   # unload and unregister
    slmops foundry export --to DIR [ID ...]    # lay variants out for the Foundry Local CLI's cache
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import threading
import time
from pathlib import Path

from slmops.errors import InputError, SlmopsError


def _progress(label: str):
    """Progress on stderr for steps that take minutes: a bar on a terminal, a line per 10% in a log."""
    state = {"last": -1}
    tty = sys.stderr.isatty()

    def update(done: int, total: int) -> None:
        pct = int(100 * done / max(total, 1))
        if pct == state["last"] or (not tty and pct % 10 and done < total):
            return
        state["last"] = pct
        if tty:
            sys.stderr.write(f"\r{label} [{'#' * (pct // 4):<25}] {pct:3d}%" + ("\n" if done >= total else ""))
        else:
            sys.stderr.write(f"{label}: {pct}%\n")
        sys.stderr.flush()

    return update


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    parent = out if out.exists() else next((p for p in out.parents if p.exists()), Path("."))
    import os

    if not os.access(parent, os.W_OK):
        raise InputError(f"--out {out}: {parent} is not writable")


def _check_disk(spec, out: Path, work_dir: Path) -> None:
    """Refuse, before any work, a sweep that would fill the disk half-way through."""
    import shutil

    from slmops.source import estimate_disk_bytes

    need = estimate_disk_bytes(spec.model.path, [v.resolved() for v in spec.variants])
    for folder in (out, work_dir):
        existing = next((p for p in (folder, *folder.parents) if p.exists()), Path("/"))
        free = shutil.disk_usage(existing).free
        if free < need:
            raise InputError(f"not enough disk for this sweep: it needs about {need / 1e9:.2f} GB in {existing}, "
                             f"which has {free / 1e9:.2f} GB free; free space or sweep fewer variants")


def _start_temporary_prefect_server() -> threading.Thread | None:
    """With no PREFECT_API_URL, a flow starts Prefect's temporary server (about 4 s here, in a process of its own)
    when it first needs it. Start it now, in the background, so that it comes up while this process imports the
    flow and opens the MLflow store: the flow then finds it running (the server is one per process,
    ``SubprocessASGIServer``). Join the thread before the flow starts."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_EPHEMERAL_ENABLED

    if PREFECT_API_URL.value() or not PREFECT_SERVER_EPHEMERAL_ENABLED.value():
        return None

    def start() -> None:
        from prefect.server.api.server import SubprocessASGIServer  # about 3 s of imports: in this thread too

        SubprocessASGIServer().start()

    thread = threading.Thread(target=start, name="prefect-temporary-server", daemon=True)
    thread.start()
    return thread


def _run_sweep(spec, out: Path, work_dir: Path, sweep_id: str | None) -> int:
    from slmops.source import validate_model_dir
    from slmops.workspace import configure_environment

    validate_model_dir(spec.model.path, spec.model.allow_pickle_weights)
    _check_out_dir(out)
    _check_disk(spec, out, work_dir)
    configure_environment(work_dir)
    server = _start_temporary_prefect_server()
    from slmops.adapters.tracking import Tracker, default_tracking_uri

    Tracker(default_tracking_uri(work_dir)).check_reachable()
    import flows.quantization_sweep  # noqa: F401 (imported while the server starts)

    if server is not None:
        server.join()  # a failed start is raised again by the flow's own start()
    with _embedded_settings(server is not None):
        return _sweep_and_print(spec, out, work_dir, sweep_id)


@contextlib.contextmanager
def _embedded_settings(embedded: bool):
    """With Prefect's temporary server, no flow-run heartbeats: nothing watches them for crashed runs (the
    stack's automation does, deployments/automations.yaml), and each flow waits up to 1 s for its heartbeat
    thread at the end (five flows a demo sweep)."""
    if not embedded:
        yield
        return
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


def _sweep_and_print(spec, out: Path, work_dir: Path, sweep_id: str | None) -> int:
    from flows.quantization_sweep import quantization_sweep
    from slmops import report

    started = time.perf_counter()
    try:
        doc = quantization_sweep(spec=spec, out_dir=str(out), work_dir=str(work_dir), sweep_id=sweep_id)
    except SlmopsError:
        doc = json.loads((out / "report.json").read_text()) if (out / "report.json").is_file() else None
        if doc:
            print(report.table(doc))
        raise
    print(report.table(doc))
    decision = doc.get("decision")
    if decision:
        print(f"\n{'PROMOTED' if decision['promoted'] else 'not promoted'}: {decision['reason']}")
        if decision.get("champion"):
            c = decision["champion"]
            print(f"champion of {decision['registered_model']}: {c['name']} (model version {c['model_version']}, "
                  f"Foundry Local id {c['foundry_model_id']})")
        print(f"report: {out / 'report.md'}")
    print(f"\n{len(doc['variants'])} variants in {time.perf_counter() - started:.1f} s; report: {out / 'report.json'}")
    print(f"MLflow: {doc['mlflow']['tracking_uri']} (parent run {doc['mlflow']['parent_run_id']})")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from slmops.versions import checks

    bad = 0
    for check in checks():
        bad += not check.ok
        print(f"{'ok ' if check.ok else 'BAD'}  {check.name:<38} {check.detail}")
    if bad:
        print(f"\n{bad} check(s) failed: reinstall with `make install` (pins in pyproject.toml)", file=sys.stderr)
        return 1
    return 0


def cmd_make_demo_model(args: argparse.Namespace) -> int:
    from slmops.demo_model import make_demo_model

    out = Path(args.dir)
    if out.exists():
        raise InputError(f"{out} already exists; choose a new folder (the demo model is written whole or not at all)")
    started = time.perf_counter()
    make_demo_model(out, seed=args.seed, progress=_progress("training demo model"))
    print(f"demo model written to {out} in {time.perf_counter() - started:.0f} s (eval set: {out / 'eval.jsonl'})")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from slmops.config import load_spec, parse_spec
    from slmops.workspace import default_work_dir

    spec = load_spec(args.config)
    if args.model:
        data = spec.model_dump(mode="json")
        data["model"]["path"] = args.model
        spec = parse_spec(data, args.config)
    work_dir = Path(args.work_dir).resolve() if args.work_dir else default_work_dir()
    return _run_sweep(spec, Path(args.out), work_dir, args.sweep_id)


def cmd_demo(args: argparse.Namespace) -> int:
    from slmops.demo import demo_spec, ensure_demo_model
    from slmops.workspace import default_work_dir

    work_dir = Path(args.work_dir).resolve() if args.work_dir else default_work_dir()
    _check_out_dir(Path(args.out))
    model_dir, made = ensure_demo_model(work_dir / "demo-model", progress=_progress("training demo model"))
    print(f"demo model: {model_dir} ({'made now' if made else 'reused'})")
    return _run_sweep(demo_spec(model_dir), Path(args.out), work_dir, args.sweep_id)


def _foundry(args: argparse.Namespace):
    from slmops.adapters.foundry import FoundryLocal
    from slmops.workspace import Workspace, configure_environment, default_work_dir

    work_dir = Path(args.work_dir).resolve() if args.work_dir else default_work_dir()
    configure_environment(work_dir)
    cache = Path(args.cache).resolve() if args.cache else Workspace(work_dir, work_dir).foundry_cache
    return FoundryLocal(cache)


def cmd_foundry_list(args: argparse.Namespace) -> int:
    from slmops.report import human_size

    rows = _foundry(args).list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("id", "precision", "size", "registered at", "folder")]
    for r in rows:
        folder = r["path"] if r["path_exists"] else f"{r['path']} (MISSING)"
        table.append((r["id"], r["precision"] or "-", human_size(r["size_bytes"]), r["registered_at"], folder))
    widths = [max(len(str(row[i])) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    if not rows:
        print("(no variant registered yet: run `slmops demo` or `slmops sweep`)")
    return 0


def cmd_foundry_chat(args: argparse.Namespace) -> int:
    foundry = _foundry(args)
    for piece in foundry.chat_stream(args.id, args.prompt, max_tokens=args.max_tokens,
                                     temperature=args.temperature):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_foundry_remove(args: argparse.Namespace) -> int:
    _foundry(args).remove(args.id)
    print(f"removed {args.id}")
    return 0


def cmd_foundry_export(args: argparse.Namespace) -> int:
    from slmops.foundry_export import export_for_foundry_cli

    rows = {r["id"]: r for r in _foundry(args).list()}
    if args.ids:
        unknown = [i for i in args.ids if i not in rows]
        if unknown:
            raise InputError(f"not registered: {', '.join(unknown)}; `slmops foundry list` shows the ids")
        chosen = [rows[i] for i in args.ids]
    else:  # the newest version of each registered name
        newest: dict[str, dict] = {}
        for r in rows.values():
            if r["path_exists"] and r["version"] > newest.get(r["name"], {}).get("version", -1):
                newest[r["name"]] = r
        chosen = list(newest.values())
    names = [r["name"] for r in chosen]
    if len(set(names)) != len(names):
        raise InputError("two versions of one model were chosen; the Foundry Local CLI lists a model by name once")
    missing = [r["id"] for r in chosen if not r["path_exists"]]
    if missing:
        raise InputError(f"the folders of {', '.join(missing)} no longer exist; rebuild or remove them")
    written = export_for_foundry_cli({r["name"]: Path(r["path"]) for r in chosen}, Path(args.to))
    for path in written:
        print(path)
    print(f"\n{len(written)} model(s) in {args.to}; on Windows or macOS: foundry cache cd {args.to} && "
          "foundry cache ls")
    return 0


def _work_dir(args: argparse.Namespace) -> Path:
    from slmops.workspace import default_work_dir

    return Path(args.work_dir).resolve() if args.work_dir else default_work_dir()


def _tracker(args: argparse.Namespace):
    from slmops.adapters.tracking import Tracker, default_tracking_uri
    from slmops.workspace import configure_environment, default_work_dir

    work_dir = Path(args.work_dir).resolve() if args.work_dir else default_work_dir()
    configure_environment(work_dir)
    tracker = Tracker(default_tracking_uri(work_dir))
    tracker.check_reachable()
    return tracker


def cmd_compare(args: argparse.Namespace) -> int:
    from slmops.adapters.tracking import KIND_TAG, SWEEP_TAG
    from slmops.metrics import fmt
    from tasks.promote import candidates_from_mlflow, find_sweep_experiment

    tracker = _tracker(args)
    sweep_id = args.sweep
    if sweep_id is None:
        experiments = [e.experiment_id for e in tracker.client.search_experiments()]
        runs = tracker.client.search_runs(experiments, f"tags.`{KIND_TAG}` = 'sweep'", max_results=1,
                                          order_by=["attributes.start_time DESC"]) if experiments else []
        if not runs:
            raise InputError(f"no sweep logged in MLflow at {tracker.tracking_uri}; run `slmops sweep` first")
        sweep_id = runs[0].data.tags[SWEEP_TAG]
    experiment, parent = find_sweep_experiment(tracker, sweep_id)
    candidates = candidates_from_mlflow(tracker, experiment, sweep_id)
    columns = ["size_bytes", "exact_match", "kl_div_mean", "top1_agreement", "decode_tokens_per_s", "ttft_ms_p50",
               "peak_rss_mb"]
    columns = [c for c in columns if any(c in cand.metrics for cand in candidates)]
    rows = [("variant", "status", "version", "foundry id", *columns)]
    for c in candidates:
        rows.append((c.name, c.status, c.model_version or "-", c.foundry_model_id or "-",
                     *(fmt(m, c.metrics.get(m)) for m in columns)))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    print(f"sweep {sweep_id} (experiment {experiment}, parent run {parent})\n")
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip())
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from slmops.config import load_policy, parse_spec
    from slmops.promotion import Decision, decision_markdown
    from tasks.promote import decide_promotion, find_sweep_experiment

    policy = load_policy(args.policy) if args.policy else None  # a bad policy stops here, before MLflow
    tracker = _tracker(args)
    _, parent = find_sweep_experiment(tracker, args.sweep)
    logged = parse_spec(tracker.load_dict(parent, "sweep_spec.json"), "logged spec")
    policy = policy or logged.promotion
    registered_model = policy.registered_model or logged.model.name
    doc = decide_promotion.fn(tracker.tracking_uri, args.sweep, registered_model, policy.model_dump(mode="json"),
                              move_aliases=not args.dry_run, lock_dir=str(_work_dir(args)))
    fields = {k: doc[k] for k in Decision.__dataclass_fields__}
    print(decision_markdown(Decision(**fields), registered_model))
    if args.json:
        print(json.dumps(doc, indent=2))
    if args.dry_run:
        print("(dry run: no alias moved)")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from slmops.workspace import configure_environment

    work_dir = _work_dir(args)
    configure_environment(work_dir)
    from flows.sync import sync_report

    doc = sync_report(Path(args.out).resolve(), work_dir)
    print(f"synced sweep {doc['sweep_id']}: {len(doc['variants'])} variant run(s) in {doc['mlflow']['tracking_uri']} "
          f"(parent run {doc['mlflow']['parent_run_id']})")
    if doc.get("decision"):
        print(f"{'PROMOTED' if doc['decision']['promoted'] else 'not promoted'}: {doc['decision']['reason']}")
    return 0


def cmd_champion(args: argparse.Namespace) -> int:
    from slmops.adapters.tracking import Registry
    from slmops.metrics import fmt
    from tasks.promote import champion_candidate

    tracker = _tracker(args)
    registry = Registry(tracker)
    names = [m.name for m in tracker.client.search_registered_models()]
    name = args.model
    if name is None:
        if len(names) != 1:
            raise InputError(f"name the model: registered models are {', '.join(names) or 'none yet'}")
        name = names[0]
    elif name not in names:
        raise InputError(f"no registered model {name!r}; registered: {', '.join(names) or 'none yet'}")
    champion = champion_candidate(registry, name)
    if champion is None:
        print(f"{name} has no champion yet: no sweep promoted a variant")
        return 1
    version = registry.version(name, champion.model_version)
    print(f"champion of {name}: {champion.name} (model version {champion.model_version})")
    print(f"  Foundry Local id: {champion.foundry_model_id or '-'}")
    print(f"  sweep:            {champion.sweep_id}")
    print(f"  promoted at:      {version.tags.get('slmops.promoted_at', '-')}")
    print(f"  why:              {version.tags.get('slmops.promotion_reason', '-')}")
    print(f"  source:           {version.source}")
    for metric, value in sorted(champion.metrics.items()):
        print(f"  {metric:<24}{fmt(metric, value)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slmops", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="print tool versions and check the pairs that must match")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("make-demo-model", help="train the demo fine-tuned chat model into DIR")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_make_demo_model)

    for name, func, help_ in (("sweep", cmd_sweep, "run a sweep spec"), ("demo", cmd_demo, "run the demo sweep")):
        p = sub.add_parser(name, help=help_)
        if name == "sweep":
            p.add_argument("config", help="sweep spec (YAML)")
            p.add_argument("--model", help="source model folder (overrides model.path of the spec)")
        p.add_argument("--out", required=True, help="output folder: variants/, logs/, report.json")
        p.add_argument("--work-dir", help="caches, MLflow store, Foundry Local cache (default: $SLMOPS_HOME or "
                                          "./.slmops)")
        p.add_argument("--sweep-id", help="id of the sweep (default: <model>-<UTC time>-<random>)")
        p.set_defaults(func=func)

    p = sub.add_parser("compare", help="a logged sweep's variants, from MLflow (default: the latest sweep)")
    p.add_argument("--sweep", help="sweep id")
    p.add_argument("--work-dir", help="work folder (default: $SLMOPS_HOME or ./.slmops)")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("promote", help="decide again from a sweep's logged metrics and move the aliases")
    p.add_argument("--sweep", required=True, help="sweep id")
    p.add_argument("--policy", help="policy YAML (a spec's promotion: section); default: the sweep's own")
    p.add_argument("--dry-run", action="store_true", help="decide, but move no alias")
    p.add_argument("--json", action="store_true", help="also print the decision as JSON")
    p.add_argument("--work-dir", help="work folder (default: $SLMOPS_HOME or ./.slmops)")
    p.set_defaults(func=cmd_promote)
    p = sub.add_parser("sync", help="log a sweep that lost its tracking server to MLflow, from its report.json")
    p.add_argument("--out", required=True, help="the sweep's output folder")
    p.add_argument("--work-dir", help="work folder (default: $SLMOPS_HOME or ./.slmops)")
    p.set_defaults(func=cmd_sync)
    p = sub.add_parser("champion", help="the champion of a registered model")
    p.add_argument("model", nargs="?", help="registered model (default: the only one)")
    p.add_argument("--work-dir", help="work folder (default: $SLMOPS_HOME or ./.slmops)")
    p.set_defaults(func=cmd_champion)

    foundry = sub.add_parser("foundry", help="the variants registered with Foundry Local").add_subparsers(
        dest="foundry_command", required=True)
    for name, func, help_ in (("list", cmd_foundry_list, "list registered variants (like `foundry cache ls`)"),
                              ("chat", cmd_foundry_chat, "stream an answer (like `foundry model run`)"),
                              ("remove", cmd_foundry_remove, "unload and unregister a variant"),
                              ("export", cmd_foundry_export, "lay variants out for the Foundry Local CLI cache")):
        p = foundry.add_parser(name, help=help_)
        p.add_argument("--work-dir", help="work folder (default: $SLMOPS_HOME or ./.slmops)")
        p.add_argument("--cache", help="Foundry Local cache folder (default: $SLMOPS_FOUNDRY_CACHE or "
                                       "<work dir>/foundry)")
        p.set_defaults(func=func)
        if name == "list":
            p.add_argument("--json", action="store_true", help="print JSON")
        elif name == "chat":
            p.add_argument("id", help="Foundry Local id, name:version")
            p.add_argument("prompt")
            p.add_argument("--max-tokens", type=int, default=256)
            p.add_argument("--temperature", type=float, default=0.0)
        elif name == "remove":
            p.add_argument("id", help="Foundry Local id, name:version")
        else:
            p.add_argument("--to", required=True, help="folder to lay the models out in")
            p.add_argument("ids", nargs="*", help="ids to export (default: the newest version of each)")

    # the one use of ops/ in slmops: `slmops publish` and `slmops watch` are operations' commands
    from ops.events import add_cli as add_event_commands

    add_event_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SlmopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished variants are kept and reused by the next run", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
