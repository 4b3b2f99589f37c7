"""Speed through the serving runtime, streaming: time to first token, prefill and decode tokens/s, whole-response
time, at several prompt lengths, each figure with its median, p95, spread and the median's 95 % interval.

    .venv/bin/python -m pytest tests/evaluate/test_speed.py tests/evaluate/test_speed_summary.py -q

Each timed request is counted once. Decode speed comes from the stream's own token times (the inverse slope of a
line through the pieces' arrival times), wherever every token streams a piece of its own and tokens come slower than
the stream delivers them: through Foundry Local 2.2.1 each token reaches Python as it is made when it takes a few ms
(any real model). Otherwise the pieces' times say nothing about the tokens': when tokens are faster than the callback
that drains the runtime's queue (the demo model makes one in ~0.15 ms) they arrive in one burst at the end; and a token
that is one byte of a multi-byte character streams no piece, so pieces cannot be matched to tokens (on a random-weight
494M model, an answer whose last 16 tokens were such bytes streamed its pieces at the token rate over the first half
only, and scaling their rate by tokens per piece said 207 tok/s for a 100 tok/s decode). There, and only there, decode
speed is taken by difference: each prompt is also sent with a budget of one token, and
decode = (n - 1) / (end_n - median(end_1)), the set-up and prefill cancelling out. Which method timed a
length is decided by its first measured request and recorded; a difference too small to stand clear of the
request-to-request jitter is marked unresolved (``decode_timing_resolved``), not reported as a fact.

Warm-up requests are unmeasured: the first makes a whole answer (the decode path), the rest one token each (the
prefill of their length), as the measured requests that follow need nothing else primed.

Repetitions are adaptive: a length is repeated until the 95 % interval of its median decode speed and time to first
token is within ``ci_target`` of the median, or ``repetitions`` is reached; the record says which stopped it. Lengths
take turns within each round, so a change of load on a shared machine hits all of them alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from slmops.evaluate.stats import converged, describe

ChatFn = Callable[[str, int], Iterator[str]]
CountFn = Callable[[str], int]
# tokens whose pieces arrive at least this far apart on the median are streamed as they are made (a burst delivers
# them microseconds apart)
STREAM_MIN_GAP_S = 0.001
FIGURES = ("ttft_ms", "prefill_tokens_per_s", "decode_tokens_per_s", "response_ms")


@dataclass(frozen=True)
class StreamTiming:
    """One streamed request, timed from the call: each piece's arrival, the end of the stream, and the tokens it
    generated (the runtime's count: a token with no text of its own sends no piece)."""

    first_s: float | None
    end_s: float
    last_s: float | None
    pieces: int
    median_gap_s: float | None
    text: str
    stamps: tuple[float, ...] = ()
    tokens: int = 0


def stream_rate(stamps: list[float]) -> float | None:
    """Tokens per second from the arrival times of the pieces: the inverse slope of a least-squares line through
    them. A first piece that reaches Python late (the reader thread waits for a core after the prefill, seen on a
    loaded machine) would shorten t_last - t_first and inflate (n - 1) / (t_last - t_first); the line is carried by
    the steady arrivals after it."""
    if len(stamps) < 3:
        return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) == 2 and stamps[1] > stamps[0] else None
    slope = float(np.polyfit(np.arange(len(stamps)), np.asarray(stamps), 1)[0])
    return 1.0 / slope if slope > 0 else None


def time_stream(chat: ChatFn, prompt: str, max_tokens: int) -> StreamTiming:
    """Send one request and time its stream as the caller sees it."""
    started = time.perf_counter()
    stamps: list[float] = []
    parts: list[str] = []
    stream = chat(prompt, max_tokens)
    for piece in stream:
        stamps.append(time.perf_counter())
        parts.append(piece)
    end = time.perf_counter()
    gaps = np.diff(stamps)
    return StreamTiming(first_s=stamps[0] - started if stamps else None, end_s=end - started,
                        last_s=stamps[-1] - started if stamps else None, pieces=len(parts),
                        median_gap_s=float(np.median(gaps)) if gaps.size else None, text="".join(parts),
                        stamps=tuple(round(t - started, 6) for t in stamps),
                        tokens=getattr(stream, "completion_tokens", None) or len(parts))


@dataclass(frozen=True)
class LengthPrompt:
    """A prompt made to be about ``target`` tokens long, and its length as the runtime counts it."""

    target: int
    prompt: str
    prompt_tokens: int
    clipped: bool


def build_length_prompts(
    count_tokens: CountFn, units: list[str], targets: tuple[int, ...], limit: int
) -> list[LengthPrompt]:
    """For each target length, the longest run of eval prompts whose rendered length stays within it (and limit)."""
    if not units:
        raise ValueError("need at least one prompt to build speed prompts from")
    cache: dict[int, int] = {}

    def text(k: int) -> str:
        return " ".join(units[i % len(units)] for i in range(k))

    def tokens(k: int) -> int:
        if k not in cache:
            cache[k] = count_tokens(text(k))
        return cache[k]

    prompts = []
    for target in targets:
        goal = min(target, limit)
        low, high = 1, 1
        # grow until over the goal, then bisect: the run with the most units within it
        while tokens(high) <= goal and high < 4096:
            low, high = high, high * 2
        while high - low > 1:
            middle = (low + high) // 2
            if tokens(middle) <= goal:
                low = middle
            else:
                high = middle
        prompts.append(LengthPrompt(target, text(low), tokens(low), clipped=goal < target))
    return prompts


class LengthRun:
    """The requests of one prompt length: its method, its samples, and what stopped it."""

    def __init__(self, prompt: LengthPrompt) -> None:
        self.prompt = prompt
        self.method: str | None = None  # "stream" or "difference", set by the first request
        self.samples: list[dict[str, Any]] = []
        self.stopped_by: str | None = None

    def warm_up(self, chat: ChatFn, max_new_tokens: int) -> None:
        """One unmeasured request: a prefill of this length (a token's budget) primes what the measured ones reuse;
        the decode path is primed by the first warm-up of a run, which makes a whole answer, unless a whole answer was
        made before the run (measure_speed's ``decode_primed``: the smoke test's)."""
        time_stream(chat, self.prompt.prompt, max_new_tokens)

    def request(self, chat: ChatFn, max_new_tokens: int) -> None:
        full = time_stream(chat, self.prompt.prompt, max_new_tokens)
        if self.method is None:
            gap = full.median_gap_s
            # greedy decoding makes the same tokens every time: the first request's pieces tell for the length
            streams = full.pieces >= 2 and full.pieces == full.tokens and gap is not None and gap >= STREAM_MIN_GAP_S
            self.method = "stream" if streams else "difference"
        one = time_stream(chat, self.prompt.prompt, 1) if self.method == "difference" else None
        self.samples.append({"full": asdict(full), "one": asdict(one) if one else None})

    def figures(self) -> dict[str, list[float]]:
        """ttft_ms, prefill_tokens_per_s, decode_tokens_per_s and response_ms of every measured request."""
        out: dict[str, list[float]] = {name: [] for name in FIGURES}
        one_end = statistics.median(s["one"]["end_s"] for s in self.samples) if self.method == "difference" \
            and self.samples else None
        for s in self.samples:
            full, one = s["full"], s["one"]
            # a one-token request's piece arrives when it is made; a longer request's first piece may wait in a burst
            first = (one or full)["first_s"]
            if first:
                out["ttft_ms"].append(first * 1000)
                out["prefill_tokens_per_s"].append(self.prompt.prompt_tokens / first)
            out["response_ms"].append(full["end_s"] * 1000)
            if full["pieces"] < 2:
                continue
            # a piece per token (the method's condition); a request whose count differs says nothing by its times
            per_piece = stream_rate(list(full["stamps"])) if self.method == "stream" \
                and full["pieces"] == full["tokens"] else None
            if per_piece is not None:
                out["decode_tokens_per_s"].append(per_piece)
            elif self.method == "difference" and full["end_s"] > one_end:
                out["decode_tokens_per_s"].append((full["tokens"] - 1) / (full["end_s"] - one_end))
        return out

    def resolved(self) -> bool:
        """Stream timing always is; a difference is when the extra tokens take clearly longer than one-token
        requests vary."""
        if self.method == "stream":
            return True
        ones = [s["one"]["end_s"] for s in self.samples]
        fulls = [s["full"]["end_s"] for s in self.samples]
        if not ones:
            return False
        extra = statistics.median(fulls) - statistics.median(ones)
        return extra > 2 * (float(np.percentile(ones, 75)) - float(np.percentile(ones, 25)))

    def done(self, min_repetitions: int, repetitions: int, ci_target: float) -> bool:
        n = len(self.samples)
        if n >= repetitions:
            self.stopped_by = "max_repetitions"
        elif n >= min_repetitions and ci_target > 0:
            figures = self.figures()
            if converged(figures["decode_tokens_per_s"], ci_target) and converged(figures["ttft_ms"], ci_target):
                self.stopped_by = "interval"
        return self.stopped_by is not None


def measure_speed(chat: ChatFn, prompts: list[LengthPrompt], max_new_tokens: int, warmup: int,
                  min_repetitions: int, repetitions: int, ci_target: float,
                  progress: Callable[[int, int], None], decode_primed: bool = False) -> list[LengthRun]:
    """Warm-up (a whole answer first, unless one was made already: ``decode_primed``; then prefills), then rounds of
    one request per length still running, until each length is done."""
    runs = [LengthRun(p) for p in prompts]
    total = (warmup + repetitions) * len(runs)
    done = 0
    for _ in range(warmup):
        for run in runs:
            run.warm_up(chat, max_new_tokens if done == 0 and not decode_primed else 1)
            done += 1
            progress(done, total)
    active = list(runs)
    while active:
        for run in active:
            run.request(chat, max_new_tokens)
            done += 1
            progress(done, total)
        active = [run for run in active if not run.done(min_repetitions, repetitions, ci_target)]
    progress(total, total)
    return runs


def _named(figure: str, summary: dict[str, float]) -> dict[str, float]:
    """A figure's summary under its metric names: ttft_ms_p50 ..., decode_tokens_per_s (the median) ..."""
    head = f"{figure}_p50" if figure.endswith("_ms") else figure
    return {head: summary["p50"], f"{figure}_p95": summary["p95"], f"{figure}_std": summary["std"],
            f"{figure}_ci95_low": summary["ci95_low"], f"{figure}_ci95_high": summary["ci95_high"]}


def summarise_speed(runs: list[LengthRun]) -> tuple[dict[str, float], dict[int, dict[str, Any]]]:
    """Each figure pooled over every length (median, p95, std, 95 % interval), the per-length medians, and how
    consistent decode speed is across lengths."""
    pooled: dict[str, list[float]] = {name: [] for name in FIGURES}
    per_length: dict[int, dict[str, Any]] = {}
    for run in runs:
        figures = run.figures()
        for name in FIGURES:
            pooled[name] += figures[name]
        per_length[run.prompt.target] = {
            "prompt_tokens": run.prompt.prompt_tokens, "clipped": run.prompt.clipped, "prompt": run.prompt.prompt,
            "answer_tokens": int(statistics.median(s["full"]["tokens"] for s in run.samples)),
            "method": run.method, "repetitions": len(run.samples), "stopped_by": run.stopped_by,
            "decode_timing_resolved": run.resolved(),
            **{name: describe(values) for name, values in figures.items()},
        }
    metrics: dict[str, float] = {}
    for name in FIGURES:
        metrics.update(_named(name, describe(pooled[name])))
    rates = [row["decode_tokens_per_s"]["p50"] for row in per_length.values()]
    finite = [r for r in rates if np.isfinite(r)]
    # 1.0: decode runs as fast at the longest prompt as at the shortest
    metrics["speed_consistency"] = min(finite) / max(finite) if len(finite) == len(rates) and max(finite) > 0 \
        else float("nan")
    # share of lengths whose decode time stood clear of the timer's limits; below 1, read decode_tokens_per_s and
    # speed_consistency as rough (a model that makes a token in 0.1 ms, like the demo's)
    metrics["decode_timing_resolved"] = sum(r["decode_timing_resolved"] for r in per_length.values()) / len(runs)
    metrics["decode_timed_by_stream"] = sum(r["method"] == "stream" for r in per_length.values()) / len(runs)
    for target, row in per_length.items():
        metrics[f"ttft_ms_p50_at_{target}"] = row["ttft_ms"]["p50"]
        metrics[f"prefill_tokens_per_s_at_{target}"] = row["prefill_tokens_per_s"]["p50"]
        metrics[f"decode_tokens_per_s_at_{target}"] = row["decode_tokens_per_s"]["p50"]
    return metrics, per_length
