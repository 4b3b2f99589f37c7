"""The commands that run the pipeline: sweep, demo, sync; and the two around it, doctor and make-demo-model.

    slmops doctor                              # tool versions and the pairs that must match
    slmops make-demo-model DIR                 # train the demo fine-tuned model into DIR
    slmops sweep configs/demo.yaml --out DIR   # convert, quantize, register, measure, track, promote
    slmops demo --out DIR                      # the demo model through configs/demo.yaml
    slmops sync --out DIR                      # log a sweep that lost its tracking server, afterwards
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from slmops.cli.common import add_work_dir, progress, quiet_tracebacks, work_dir
from slmops.errors import InputError, SlmopsError


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
    from slmops.demo.model import make_demo_model

    out = Path(args.dir)
    lora = Path(args.lora) if args.lora else None
    if lora is not None and lora.exists():
        raise InputError(f"--lora {lora} already exists; choose a new folder (the adapter is written whole or not at "
                         "all)")
    if out.exists() and lora is None:
        raise InputError(f"{out} already exists; choose a new folder (the demo model is written whole or not at all)")
    if out.exists() and (args.dtype != "float32" or args.max_shard_size):
        raise InputError(f"{out} already exists, so it is the LoRA's base as it is: --dtype and --max-shard-size "
                         "apply only to a new demo model")
    started = time.perf_counter()
    if not out.exists():
        make_demo_model(out, seed=args.seed, progress=progress("training demo model"), dtype=args.dtype,
                        max_shard_size=args.max_shard_size)
        print(f"demo model written to {out} in {time.perf_counter() - started:.0f} s (eval set: {out / 'eval.jsonl'})")
    if lora is not None:
        from slmops.demo.lora import make_demo_lora

        started = time.perf_counter()
        make_demo_lora(out, lora, seed=args.seed, progress=progress("training LoRA adapter"))
        print(f"LoRA adapter of {out} written to {lora} in {time.perf_counter() - started:.0f} s (its task: prices in "
              f"cents, eval set {lora / 'eval.jsonl'}); sweep it with model: {{path: {out}, adapter: {lora}}}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from slmops.config import load_spec, with_model_path

    spec = load_spec(args.config)
    if args.model:
        spec = with_model_path(spec, args.model, args.config)
    return _run_sweep(spec, Path(args.out), work_dir(args), args.sweep_id, args.debug)


def cmd_demo(args: argparse.Namespace) -> int:
    from slmops.demo import demo_spec, ensure_demo_model
    from slmops.preflight import check_out_dir

    work = work_dir(args)
    check_out_dir(Path(args.out).resolve())
    model_dir, made = ensure_demo_model(work / "demo-model", progress=progress("training demo model"))
    print(f"demo model: {model_dir} ({'made now' if made else 'reused'})")
    return _run_sweep(demo_spec(model_dir), Path(args.out), work, args.sweep_id, args.debug)


def cmd_sync(args: argparse.Namespace) -> int:
    work = work_dir(args)
    with _flows_on_prefect(work, "flows.sync", args.debug):
        from flows.sync import sync_sweep

        doc = sync_sweep(out_dir=str(Path(args.out).resolve()), work_dir=str(work))
    print(f"synced sweep {doc['sweep_id']}: {len(doc['variants'])} variant run(s) in {doc['mlflow']['tracking_uri']} "
          f"(parent run {doc['mlflow']['parent_run_id']})")
    if doc.get("decision"):
        print(f"{'PROMOTED' if doc['decision']['promoted'] else 'not promoted'}: {doc['decision']['reason']}")
    return 0


@contextlib.contextmanager
def _flows_on_prefect(work: Path, module: str, debug: bool = False) -> Iterator[None]:
    """Start the temporary Prefect server (if one is needed) before importing the flows module and opening the
    MLflow store, so that it comes up while this process does both; wait for it; point the flows at it; stop it
    afterwards, whatever happens. Prefect's console lines come without tracebacks unless debug."""
    from slmops.adapters import tracking
    from slmops.cli.server import prefect_api

    with prefect_api(work) as server:
        importlib.import_module(module)
        if not debug:
            quiet_tracebacks()
        if server is None:
            yield
            return
        tracking.prepare(tracking.default_tracking_uri(work))  # the server takes about 3 s to come up
        server.wait_ready()
        with server.settings():
            yield


def _run_sweep(spec, out: Path, work: Path, sweep_id: str | None, debug: bool = False) -> int:
    from slmops.preflight import preflight
    from slmops.workspace import Workspace

    ws = Workspace.of(out, work)
    preflight(spec, ws)  # bad input: one line and exit 2 before Prefect or MLflow start
    from slmops.adapters.tracking import check_reachable, default_tracking_uri

    check_reachable(default_tracking_uri(work))
    started = time.perf_counter()
    with _flows_on_prefect(work, "flows.quantization_sweep", debug):
        from flows.quantization_sweep import quantization_sweep

        try:
            doc = quantization_sweep(spec=spec, out_dir=str(ws.out_dir), work_dir=str(work), sweep_id=sweep_id)
        except SlmopsError:
            _print_outcome(ws.report, None, started)
            raise
    _print_outcome(ws.report, doc, started)
    return 0


def _print_outcome(report_path: Path, doc: dict | None, started: float) -> None:
    from slmops import report
    from slmops.files import read_json

    doc = doc or read_json(report_path)
    if not doc:
        return
    print(report.table(doc))
    decision = doc.get("decision")
    if decision:
        print(f"\n{'PROMOTED' if decision['promoted'] else 'not promoted'}: {decision['reason']}")
        if decision.get("champion"):
            c = decision["champion"]
            print(f"champion of {decision['registered_model']}: {c['name']} (model version {c['model_version']}, "
                  f"Foundry Local id {c['foundry_model_id']})")
        print(f"report: {report_path.parent / 'report.md'}")
    print(f"\n{len(doc['variants'])} variants in {time.perf_counter() - started:.1f} s; report: {report_path}")
    print(f"MLflow: {doc['mlflow']['tracking_uri']} (parent run {doc['mlflow']['parent_run_id']})")


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="tool versions; checks the pairs that must match")
    p.set_defaults(func=cmd_doctor)
    p = sub.add_parser("make-demo-model", help="train the demo fine-tuned chat model into DIR")
    p.add_argument("dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                   help="weights as saved (released small models are bfloat16; default float32)")
    p.add_argument("--max-shard-size", help="save the weights in shards of at most this size, e.g. 2MB, with "
                                            "model.safetensors.index.json (default: one file)")
    p.add_argument("--lora", metavar="ADAPTER_DIR",
                   help="also fine-tune a LoRA adapter of the demo model (in DIR, trained first if missing) for a "
                        "second task, into ADAPTER_DIR")
    p.set_defaults(func=cmd_make_demo_model)
    for name, func, help_ in (("sweep", cmd_sweep, "convert, register, measure, track, promote: a spec"),
                            ("demo", cmd_demo, "the demo model through configs/demo.yaml")):
        p = sub.add_parser(name, help=help_)
        if name == "sweep":
            p.add_argument("config", help="sweep spec (YAML)")
            p.add_argument("--model", help="source model folder (overrides model.path of the spec)")
        p.add_argument("--out", required=True, help="output folder: variants/, logs/, report.json")
        add_work_dir(p)
        p.add_argument("--sweep-id", help="id of the sweep (default: <model>-<UTC time>-<random>)")
        p.set_defaults(func=func)
    p = sub.add_parser("sync", help="log a sweep that lost MLflow, from its report.json")
    p.add_argument("--out", required=True, help="the sweep's output folder")
    add_work_dir(p)
    p.set_defaults(func=cmd_sync)
