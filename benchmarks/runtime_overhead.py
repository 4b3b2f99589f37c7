"""Where the Foundry Local time goes: the same greedy generation, interleaved, through plain onnxruntime-genai loops
(0.14.1, the project's; 0.18.0, the runtime Foundry Local serves with) and through Foundry Local, with the settings
that could explain the difference switched one at a time.

    .venv/bin/python benchmarks/runtime_variants.py --work .slmops/rt          # the four variants, once
    .venv/bin/python benchmarks/runtime_overhead.py --work .slmops/rt          # ~60 min on 2 cores
    .venv/bin/python benchmarks/runtime_overhead.py --summarise-again           # the summary again, from the samples

Needs the variants built and registered by benchmarks/runtime_variants.py (--work/out/report.json, the Foundry
Local cache --work/home/foundry). Creates, once, a virtual environment of its own for onnxruntime-genai 0.18.0
(--work/venv-genai-0.18: `python3.11 -m venv`, then `pip install onnxruntime-genai==0.18.0 onnxruntime==1.31.0`,
onnxruntime pinned to the version foundry-local-sdk 2.2.1 pins, so that the genai version is the only difference);
the project's dependencies are not touched.

Routes (each a worker process holding the model, fed one request at a time over a pipe; every route sees the
same prompt tokens and is asked for the same number of new tokens):

* genai-0.14.1: plain greedy loop, project .venv, search max_length = prompt + new tokens (manual_generate.py's loop)
* genai-0.18: the same loop on onnxruntime-genai 0.18.0 (own venv)
* genai-0.18 ctx: the same, max_length = the model's context_length (32768), what Foundry Local allocates
* genai-0.18 ctx no-share: as ctx, with search.past_present_share_buffer false (the KV cache grows per token)
* genai-0.18 threads=2: session_options.intra_op_num_threads 2 (genai's default here is cores / 2 = 1)
* foundry stream: slmops' adapter, FoundryLocal.chat_stream (the project's harness path)
* foundry non-stream: the SDK's ChatSession.process_request, no Python streaming callback
* foundry stream no-share / ctx-4096: a registration of the same weights whose genai_config.json sets
  search.past_present_share_buffer false / model.context_length 4096 (a folder of symlinks plus that file)

Each repetition runs every route in turn (the order rotates), each route every prompt length, each length as a
one-token request and a full one. Decode speed is measured by difference, as the harness does
(slmops/evaluate/speed.py): (tokens - 1) / (end_full - median end_one), with the true token counts (the
non-streaming response's usage for Foundry Local; the streamed text pieces are not tokens: a token that decodes to
no text yields no piece). The harness's own figure, which counts pieces, is kept beside it for the streaming routes,
and so is an in-stream rate that no per-request cost can touch: the tokens between the first and the last timestamp
of one generation over the time between them (for a stream, the positions of its first and last pieces among the
greedy tokens, which every route shares: the answers are checked to be the same text). Also kept: process CPU time
per token (by difference) and the time of a whole one-token request (set-up, prefill, KV cache allocation).
Every route loads its model for its turn, warms it up (--warm-pairs request pairs, unrecorded) and unloads it
after: the routes are treated alike, and no more than one copy of a 2.5 GB model is resident at a time.

Writes benchmarks/results/runtime-overhead.json (settings, versions, machine, load, every sample, medians with
min-max, ratios to the 0.14.1 loop). Ratios within one run are what count; absolute times depend on the load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENAI_018 = ["onnxruntime-genai==0.18.0", "onnxruntime==1.31.0"]
CTX_TUNED = 4096
# route name -> (worker, request kind, options); "extra" routes load a model of their own for their turn
ROUTES = {
    "genai-0.14.1": ("g014", "gen", {}),
    "genai-0.18": ("g018", "gen", {}),
    "genai-0.18 ctx": ("g018", "gen", {"max_length": "ctx"}),
    "genai-0.18 ctx no-share": ("g018", "gen", {"max_length": "ctx", "past_present_share_buffer": False}),
    "genai-0.18 threads=2": ("g018", "gen", {"extra": {"model": {"decoder": {"session_options": {
        "intra_op_num_threads": 2}}}}}),
    "foundry stream": ("fl", "stream", {}),
    "foundry non-stream": ("fl", "nostream", {}),
    "foundry stream no-share": ("fl", "stream", {"extra": {"search": {"past_present_share_buffer": False}}}),
    f"foundry stream ctx-{CTX_TUNED}": ("fl", "stream", {"extra": {"model": {"context_length": CTX_TUNED}}}),
}
REFERENCE = "genai-0.14.1"


def log(message: str) -> None:
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


# --- workers: one process per runtime, JSON lines in and out ---------------------------------------------------

def genai_worker() -> None:
    """A plain onnxruntime-genai process (whichever version the interpreter has): load, generate, unload."""
    import onnxruntime_genai as og

    models: dict[str, tuple] = {}

    def load(key: str, folder: str, overlay: dict | None) -> dict:
        config = og.Config(folder)
        if overlay:
            config.overlay(json.dumps(overlay))
        model = og.Model(config)
        models[key] = (model, og.Tokenizer(model))
        return {"ort_lib": _mapped("libonnxruntime.so"), "genai_lib": _mapped("libonnxruntime-genai.so")}

    def gen(key: str, text: str, new: int, search: dict) -> dict:
        model, tokenizer = models[key]
        ids = list(tokenizer.encode(text))
        cpu0, started = time.process_time(), time.perf_counter()
        params = og.GeneratorParams(model)
        params.set_search_options(do_sample=False, **{"max_length": len(ids) + new, **search})
        generator = og.Generator(model, params)
        generator.append_tokens(ids)
        stamps, tokens = [], []
        while not generator.is_done() and len(tokens) < new:
            generator.generate_next_token()
            tokens.append(int(generator.get_next_tokens()[0]))
            stamps.append(time.perf_counter())
        end = time.perf_counter()
        cpu = time.process_time() - cpu0
        del generator
        stream = tokenizer.create_stream()  # the text as Foundry Local streams it: token by token, after timing
        pieces = [stream.decode(t) for t in tokens]
        return {"prompt_tokens": len(ids), "tokens": len(tokens), "first_s": stamps[0] - started,
                "last_s": stamps[-1] - started, "end_s": end - started, "cpu_s": cpu, "text": "".join(pieces),
                "with_text": [int(bool(piece)) for piece in pieces]}

    def handle(cmd: dict) -> dict:
        if cmd["op"] == "load":
            return load(cmd["key"], cmd["dir"], cmd.get("overlay"))
        if cmd["op"] == "unload":
            models.pop(cmd["key"], None)
            return {}
        return gen(cmd["key"], cmd["text"], cmd["new"], cmd.get("search", {}))

    _serve(handle, {"genai": getattr(og, "__version__", "?")})


def foundry_worker(cache: Path) -> None:
    """Foundry Local in process, through slmops' adapter (streaming) and the SDK (non-streaming, with usage)."""
    sys.path.insert(0, str(ROOT))
    from foundry_local_sdk import (
        CatalogType,
        ChatSession,
        FoundryLocalManager,
        MessageItem,
        Request,
        RequestOptions,
        SearchOptions,
    )

    from slmops.adapters.foundry import FoundryLocal, _texts
    from slmops.evaluate.speed import time_stream

    foundry = FoundryLocal(cache)
    catalog = FoundryLocalManager.instance.get_catalog(CatalogType.LOCAL)

    def stream(model_id: str, text: str, new: int) -> dict:
        cpu0 = time.process_time()
        timing = time_stream(lambda p, n: foundry.chat_stream(model_id, p, max_tokens=n, temperature=0.0), text, new)
        return {"pieces": timing.pieces, "first_s": timing.first_s, "last_s": timing.last_s, "end_s": timing.end_s,
                "cpu_s": time.process_time() - cpu0, "text": timing.text}

    def nostream(model_id: str, text: str, new: int) -> dict:
        model = catalog.get_model_variant(model_id)
        cpu0, started = time.process_time(), time.perf_counter()
        with ChatSession(model) as session:
            session.set_options(RequestOptions(search=SearchOptions(temperature=0.0, max_output_tokens=new)))
            with Request().add_item(MessageItem.user(text)) as request:
                with session.process_request(request) as response:
                    answer = "".join(_texts(response))
                    usage = response.get_usage()
        return {"prompt_tokens": usage.prompt_tokens, "tokens": usage.completion_tokens,
                "end_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu0, "text": answer}

    def handle(cmd: dict) -> dict:
        op = cmd["op"]
        if op == "register":
            return {"model_id": foundry.register(Path(cmd["dir"]), cmd["name"], cmd["hash"],
                                                 {"precision": cmd["precision"]})}
        if op == "load":
            seconds = foundry.load(cmd["key"])
            return {"load_s": seconds, "ort_lib": _mapped("libonnxruntime.so"),
                    "genai_lib": _mapped("onnxruntime_genai_core")}
        if op == "unload":
            foundry.unload(cmd["key"])
            return {}
        return (stream if op == "stream" else nostream)(cmd["key"], cmd["text"], cmd["new"])

    from importlib.metadata import version
    _serve(handle, {"foundry-local-sdk": version("foundry-local-sdk"),
                    "onnxruntime-genai-core": version("onnxruntime-genai-core"), "onnxruntime": version("onnxruntime")})


def _mapped(fragment: str) -> str | None:
    """The path of a loaded native library whose path contains fragment (which copy really runs)."""
    with open("/proc/self/maps") as maps:
        return next((line.split()[-1] for line in maps if fragment in line and "r-xp" in line), None)


def _reset_peak_rss() -> None:
    """Start the process's peak RSS (VmHWM) afresh, so that each request reports its own peak (Linux 4.0+)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass


def _peak_rss_mb() -> float | None:
    with open("/proc/self/status") as status:
        line = next((x for x in status if x.startswith("VmHWM:")), None)
    return round(int(line.split()[1]) / 1024, 1) if line else None


def _serve(handle, hello: dict) -> None:
    """Answer JSON requests on stdin; native libraries that print to fd 1 are sent to stderr instead."""
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    out.write(json.dumps({"ready": True, "pid": os.getpid(), **hello}) + "\n")
    out.flush()
    for line in sys.stdin:
        _reset_peak_rss()
        try:
            reply = {"ok": True, **handle(json.loads(line))}
        except Exception as exc:  # reported to the orchestrator, which stops
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        reply["threads"] = len(os.listdir("/proc/self/task"))
        reply["peak_rss_mb"] = _peak_rss_mb()
        out.write(json.dumps(reply) + "\n")
        out.flush()


class Worker:
    def __init__(self, name: str, cmd: list[str], log_file: Path) -> None:
        self.name = name
        self._log = open(log_file, "a")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
                                     cwd=ROOT)
        self.hello = json.loads(self.proc.stdout.readline() or '{"ready": false}')
        if not self.hello.get("ready"):
            raise RuntimeError(f"worker {name} did not start; see {log_file}")

    def ask(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        reply = json.loads(line) if line else {"ok": False, "error": "worker exited"}
        if not reply["ok"]:
            raise RuntimeError(f"worker {self.name}: {cmd['op']} failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


# --- set-up ------------------------------------------------------------------------------------------------------

def genai_018_python(work: Path) -> Path:
    """The interpreter of a venv holding onnxruntime-genai 0.18.0 on onnxruntime 1.31.0 (created once)."""
    venv = work / "venv-genai-0.18"
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv} ({' '.join(GENAI_018)})")
        subprocess.run(["python3.11", "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *GENAI_018], check=True)
    return python


def length_prompts(variant_dir: Path, eval_file: Path, targets: list[int]) -> list[dict]:
    """Prompts whose chat-rendered length is at most each target (the harness's rule), with the rendered text."""
    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from slmops.evaluate.speed import build_length_prompts

    hf = AutoTokenizer.from_pretrained(str(variant_dir))

    def render(text: str) -> str:
        return hf.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)

    units = [json.loads(line)["prompt"] for line in eval_file.read_text().splitlines() if line.strip()]
    made = build_length_prompts(lambda t: len(hf.encode(render(t), add_special_tokens=False)), units,
                                tuple(targets), 1 << 20)
    return [{"target": p.target, "text": p.prompt, "rendered": render(p.prompt), "tokens_hf": p.prompt_tokens}
            for p in made]


def tuned_folder(variant_dir: Path, folder: Path, patch: dict) -> Path:
    """A folder of symlinks to variant_dir's files with a patched genai_config.json (same weights, other settings)."""
    folder.mkdir(parents=True, exist_ok=True)
    for item in variant_dir.iterdir():
        link = folder / item.name
        if item.name != "genai_config.json" and not link.is_symlink():
            link.symlink_to(item.resolve())
    config = json.loads((variant_dir / "genai_config.json").read_text())
    for section, values in patch.items():
        config[section].update(values)
    (folder / "genai_config.json").write_text(json.dumps(config, indent=4))
    return folder


# --- measuring ---------------------------------------------------------------------------------------------------

def one_request(workers: dict, route: str, key: str, prompt: dict, new: int, ctx: int) -> dict:
    worker, kind, options = ROUTES[route]
    if kind == "gen":
        search = {k: (ctx if v == "ctx" else v) for k, v in options.items() if k != "extra"}
        return workers[worker].ask(op="gen", key=key, text=prompt["rendered"], new=new, search=search)
    return workers[worker].ask(op=kind, key=key, text=prompt["text"], new=new)


def run_route(workers: dict, route: str, key: str, prompts: list[dict], new: int, ctx: int, warm: int) -> list[dict]:
    """warm unrecorded request pairs at the first length, then one pair (1 token, `new` tokens) per length."""
    for _ in range(warm):
        one_request(workers, route, key, prompts[0], 1, ctx)
        one_request(workers, route, key, prompts[0], new, ctx)
    rows = []
    for prompt in prompts:
        one = one_request(workers, route, key, prompt, 1, ctx)
        full = one_request(workers, route, key, prompt, new, ctx)
        rows.append({"target": prompt["target"], "one": one, "full": full})
    return rows


def measure_variant(variant: dict, workers: dict, prompts: list[dict], args, routes: list[str],
                    foundry_ids: dict) -> list[dict]:
    """Every repetition: every route in turn (the order rotating), each loading its model for its turn, warming it
    up, timing every length, unloading it: all routes are treated alike, and no more than one model is loaded."""
    name, folder, ctx = variant["name"], variant["onnx_dir"], variant["context_length"]
    samples = []
    for rep in range(args.warmup + args.repetitions):
        order = routes[rep % len(routes):] + routes[:rep % len(routes)]
        for route in order:
            worker, _, options = ROUTES[route]
            if worker == "fl":
                key = foundry_ids.get(route, variant["foundry_model_id"])
                workers["fl"].ask(op="load", key=key)
            else:
                key = f"{name}|{route}"
                workers[worker].ask(op="load", key=key, dir=folder, overlay=options.get("extra"))
            try:
                load = os.getloadavg()[0]
                rows = run_route(workers, route, key, prompts, args.new_tokens, ctx, args.warm_pairs)
            finally:
                workers[worker].ask(op="unload", key=key)
            if rep >= args.warmup:
                samples += [{"variant": name, "route": route, "rep": rep - args.warmup, "load": load, **r}
                            for r in rows]
        log(f"  {name}: repetition {rep + 1}/{args.warmup + args.repetitions} done (load {os.getloadavg()[0]:.2f})")
    return samples


# --- summary -----------------------------------------------------------------------------------------------------

def spread(values: list[float], digits: int = 2) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {"median": round(statistics.median(values), digits), "min": round(min(values), digits),
            "max": round(max(values), digits), "n": len(values)}


def decode_rates(rows: list[dict], true_tokens: dict, with_text: dict) -> dict:
    """Per sample: decode tok/s by difference with true token counts, the harness's piece-counting figure, CPU,
    and the in-stream rate: tokens between the first and the last timestamp over the time between them (for a
    stream, the token positions of the first and last non-empty pieces come from the loop's greedy tokens)."""
    out = {"rate": [], "harness_rate": [], "cpu_ms_per_token": [], "in_stream": [], "by_target": {}, "by_rep": {}}
    for target in sorted({r["target"] for r in rows}):
        group = [r for r in rows if r["target"] == target]
        one_end = statistics.median(r["one"]["end_s"] for r in group)
        one_cpu = statistics.median(r["one"]["cpu_s"] for r in group)
        for r in group:
            full = r["full"]
            tokens = full.get("tokens") or true_tokens.get(target)
            extra = full["end_s"] - one_end
            rate = (tokens - 1) / extra if tokens and tokens > 1 and extra > 0 else None
            out["rate"].append(rate)
            out["by_target"].setdefault(target, []).append(rate)
            out["by_rep"].setdefault(r["rep"], []).append(rate)
            if tokens and tokens > 1:
                out["cpu_ms_per_token"].append((full["cpu_s"] - one_cpu) / (tokens - 1) * 1000)
            if "pieces" in full and full["pieces"] > 1 and extra > 0:
                out["harness_rate"].append((full["pieces"] - 1) / extra)
            span = full.get("last_s", 0) - (full.get("first_s") or 0)
            if "with_text" in full and full["tokens"] > 1 and span > 0:
                out["in_stream"].append((full["tokens"] - 1) / span)
            elif "pieces" in full and span > 0:
                positions = [i for i, has in enumerate(with_text.get(target, [])) if has]
                if len(positions) == full["pieces"] and positions[-1] > positions[0]:
                    out["in_stream"].append((positions[-1] - positions[0]) / span)
    return out


def summarise(samples: list[dict], routes: list[str]) -> dict:
    variants = {}
    for name in dict.fromkeys(s["variant"] for s in samples):
        mine = [s for s in samples if s["variant"] == name]
        # (the 0.14.1 loop's count when that route was not run: the answers are checked to be the same text)
        nostream = [s for s in mine if s["route"] == "foundry non-stream"] or [s for s in mine
                                                                              if s["route"] == REFERENCE]
        # true completion tokens per length from the non-streaming usage (greedy: the stream makes the same tokens)
        true_tokens = {t: statistics.median(s["full"]["tokens"] for s in nostream if s["target"] == t)
                       for t in {s["target"] for s in nostream}}
        with_text = {s["target"]: s["full"]["with_text"] for s in mine if s["route"] == REFERENCE}
        rows, per_rep = {}, {}
        for route in routes:
            rates = decode_rates([s for s in mine if s["route"] == route], true_tokens, with_text)
            good = [r for r in rates["rate"] if r]
            per_rep[route] = {rep: statistics.median([r for r in v if r]) for rep, v in rates["by_rep"].items()
                              if any(v)}
            row = {"decode_tok_s": spread(good),
                   "per_token_ms": spread([1000 / r for r in good]),
                   "in_stream_tok_s": spread(rates["in_stream"]),
                   "by_length_tok_s": {t: spread([r for r in v if r]) for t, v in rates["by_target"].items()},
                   "cpu_ms_per_token": spread(rates["cpu_ms_per_token"]),
                   # a whole one-token request: set-up, prefill, first token (and KV cache allocation)
                   "one_token_request_ms": spread([s["one"]["end_s"] * 1000 for s in mine if s["route"] == route], 1),
                   # the worker's peak RSS during the full request (the model, its KV cache, scratch buffers)
                   "peak_rss_mb": spread([s["full"].get("peak_rss_mb") for s in mine if s["route"] == route], 0),
                   "tokens": sorted({s["full"].get("tokens") or true_tokens.get(s["target"])
                                     for s in mine if s["route"] == route})}
            if rates["harness_rate"]:
                row["harness_piece_count_tok_s"] = spread(rates["harness_rate"])
                row["pieces"] = sorted({s["full"]["pieces"] for s in mine if s["route"] == route})
            rows[route] = row
        ref = rows.get(REFERENCE, {}).get("decode_tok_s", {}).get("median")
        for route, row in rows.items():
            if ref and row["decode_tok_s"]["median"]:
                row["over_genai_0.14.1"] = round(row["decode_tok_s"]["median"] / ref, 3)
                paired = [per_rep[route][rep] / per_rep[REFERENCE][rep] for rep in per_rep[route]
                          if rep in per_rep.get(REFERENCE, {})]
                row["over_genai_0.14.1_per_rep"] = spread(paired, 3)
            if ref and row.get("harness_piece_count_tok_s"):
                harness = row["harness_piece_count_tok_s"]["median"]
                row["harness_piece_count_over_genai_0.14.1"] = round(harness / ref, 3)
        variants[name] = {"routes": rows, "same_text": _same_text(mine)}
    return variants


def _same_text(samples: list[dict]) -> dict:
    """Whether every route generated the same answer as the 0.14.1 loop (same prompt tokens, greedy)."""
    def norm(text: str) -> str:
        return "".join(text.replace("\ufffd", "").split())

    ref = {s["target"]: norm(s["full"]["text"]) for s in samples if s["route"] == REFERENCE}
    return {route: all(norm(s["full"]["text"]) == ref.get(s["target"])
                       for s in samples if s["route"] == route) for route in dict.fromkeys(s["route"] for s in samples)}


def _machine() -> dict:
    """The machine, as benchmarks/sweep_vs_manual.py records it (imported here: the genai 0.18 worker's venv runs
    this file too and has none of that script's dependencies)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from sweep_vs_manual import machine

    return machine()


# --- main --------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / ".slmops" / "rt",
                        help="runtime_variants.py's folder (out/report.json, home/foundry); default .slmops/rt")
    parser.add_argument("--variants", default="int4-b128,int4-b32,int8,fp32", help="comma-separated, in run order")
    parser.add_argument("--routes", default=",".join(ROUTES), help="comma-separated route names")
    parser.add_argument("--lengths", default="16,64,160", help="prompt lengths in tokens (chat-rendered)")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1, help="unrecorded repetitions first")
    parser.add_argument("--warm-pairs", type=int, default=4,
                        help="unrecorded request pairs after each load (Foundry Local's first requests are slow)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime-overhead.json")
    parser.add_argument("--summarise-again", action="store_true",
                        help="no runs: recompute --out's summary from the samples it holds")
    parser.add_argument("--worker", choices=("genai", "foundry"), help=argparse.SUPPRESS)
    parser.add_argument("--foundry-cache", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "genai":
        genai_worker()
        return 0
    if args.worker == "foundry":
        foundry_worker(args.foundry_cache)
        return 0
    if args.summarise_again:
        doc = json.loads(args.out.read_text())
        doc["summary"] = summarise(doc["samples"], list(doc["settings"]["routes"]))
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
        print_table(doc)
        return 0

    work = args.work.resolve()
    report = json.loads((work / "out" / "report.json").read_text())
    wanted = args.variants.split(",")
    routes = args.routes.split(",")
    unknown = [r for r in routes if r not in ROUTES]
    if unknown:
        parser.error(f"unknown routes {unknown}; known: {list(ROUTES)}")
    variants = sorted((v for v in report["variants"] if v["name"] in wanted and v["status"] == "succeeded"),
                      key=lambda v: wanted.index(v["name"]))
    for v in variants:
        v["context_length"] = json.loads((Path(v["onnx_dir"]) / "genai_config.json").read_text())["model"][
            "context_length"]
    eval_file = Path(report["source_model"]["path"]) / "eval.jsonl"
    cache = work / "home" / "foundry"
    logs = work / "runtime-overhead-logs"
    logs.mkdir(exist_ok=True)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_before = os.getloadavg()
    me = str(Path(__file__).resolve())
    workers = {}
    samples, prompts_by_variant, extras = [], {}, {}
    try:
        workers["g014"] = Worker("genai-0.14.1", [sys.executable, me, "--worker", "genai"], logs / "g014.log")
        workers["g018"] = Worker("genai-0.18", [str(genai_018_python(work)), me, "--worker", "genai"],
                                 logs / "g018.log")
        workers["fl"] = Worker("foundry", [sys.executable, me, "--worker", "foundry", "--foundry-cache", str(cache)],
                               logs / "foundry.log")
        for v in variants:
            foundry_ids = {}
            for route, (worker, _, options) in ROUTES.items():
                if worker == "fl" and "extra" in options and route in routes:
                    tag = route.split()[-1]
                    folder = tuned_folder(Path(v["onnx_dir"]), work / "tuned" / f"{v['name']}-{tag}", options["extra"])
                    foundry_ids[route] = workers["fl"].ask(
                        op="register", dir=str(folder), name=f"{v['foundry_model_id'].split(':')[0]}-{tag}",
                        hash=f"{v['name']}-{tag}-{json.dumps(options['extra'], sort_keys=True)}",
                        precision=v["config"]["precision"])["model_id"]
            extras[v["name"]] = foundry_ids
            prompts = length_prompts(Path(v["onnx_dir"]), eval_file, [int(x) for x in args.lengths.split(",")])
            prompts_by_variant[v["name"]] = prompts
            log(f"{v['name']}: {len(routes)} routes, lengths {[p['tokens_hf'] for p in prompts]} tokens")
            samples += measure_variant(v, workers, prompts, args, routes, foundry_ids)
    finally:
        for w in workers.values():
            w.close()
    doc = {"started": started, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "load_average_before": [round(x, 2) for x in load_before],
           "load_average_after": [round(x, 2) for x in os.getloadavg()], "machine": _machine(),
           "workers": {k: w.hello for k, w in workers.items()},
           "settings": {"lengths": args.lengths, "new_tokens": args.new_tokens, "repetitions": args.repetitions,
                        "warmup": args.warmup, "warm_pairs": args.warm_pairs,
                        "routes": {r: f"{ROUTES[r][0]} {ROUTES[r][1]} {json.dumps(ROUTES[r][2])}" for r in routes},
                        "reference": REFERENCE},
           "variants_dir": str(work / "out"), "tuned_registrations": extras,
           "prompts": {k: [{"target": p["target"], "tokens_hf": p["tokens_hf"], "text": p["text"]} for p in v]
                       for k, v in prompts_by_variant.items()},
           "summary": summarise(samples, routes), "samples": samples}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    print_table(doc)
    return 0


def print_table(doc: dict) -> None:
    for name, v in doc["summary"].items():
        print(f"\n{name}")
        print(f"  {'route':32} {'tok/s':>8} {'min-max':>15} {'ms/tok':>7} {'ratio':>6} {'cpu ms/tok':>10} "
              f"{'harness tok/s':>13} {'1-tok req ms':>12} {'in-stream':>9} {'peak MB':>8}")
        for route, r in v["routes"].items():
            d = r["decode_tok_s"]
            harness = r.get("harness_piece_count_tok_s", {}).get("median", "")
            print(f"  {route:32} {d['median']!s:>8} {str(d['min']) + '-' + str(d['max']):>15} "
                  f"{r['per_token_ms']['median']!s:>7} {r.get('over_genai_0.14.1', '')!s:>6} "
                  f"{r['cpu_ms_per_token']['median']!s:>10} {harness!s:>13} "
                  f"{r['one_token_request_ms']['median']!s:>12} {r['in_stream_tok_s']['median']!s:>9} "
                  f"{r.get('peak_rss_mb', {}).get('median')!s:>8}")


if __name__ == "__main__":
    sys.exit(main())
