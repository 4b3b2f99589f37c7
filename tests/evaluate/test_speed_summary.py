"""How speed figures are derived from streamed requests: prompts of given lengths, decode speed from the stream's
own token times (or by difference where tokens burst), each figure with its spread, repetitions that stop when sure.

    .venv/bin/python -m pytest tests/evaluate/test_speed_summary.py -q
"""

from __future__ import annotations

import pytest

from slmops.evaluate.speed import LengthPrompt, build_length_prompts, measure_speed, summarise_speed


def _words(text: str) -> int:
    return len(text.split()) + 5  # five tokens of chat template around the words


def test_build_length_prompts_takes_the_longest_run_within_each_target():
    units = ["one two three", "four five", "six"]
    prompts = build_length_prompts(_words, units, (10, 20, 40), limit=30)
    assert [p.prompt_tokens for p in prompts] == [10, 20, 29]  # 24 words: the next unit would pass 30
    assert [p.clipped for p in prompts] == [False, False, True]
    assert prompts[0].prompt == "one two three four five"


class FakeRuntime:
    """A stream whose pieces come after a set-up time, one per token_s, or all together at the end (burst); it
    counts the requests it answered."""

    def __init__(self, clock: list[float], setup_s: float, token_s: float, burst: bool, jitter=None) -> None:
        self.clock, self.setup_s, self.token_s, self.burst = clock, setup_s, token_s, burst
        self.jitter = jitter or (lambda: 0.0)
        self.requests = 0
        self.budgets: list[int] = []

    def chat(self, prompt: str, max_tokens: int):
        self.requests += 1
        self.budgets.append(max_tokens)
        self.clock[0] += self.setup_s
        token_s = self.token_s + self.jitter()
        times = [self.clock[0] + token_s * (i + 1) for i in range(max_tokens)]
        for t in times:
            self.clock[0] = times[-1] if self.burst else t
            yield "x"


@pytest.fixture
def clock(monkeypatch) -> list[float]:
    now = [0.0]
    monkeypatch.setattr("slmops.evaluate.speed.time.perf_counter", lambda: now[0])
    return now


PROMPTS = [LengthPrompt(t, "p", t, False) for t in (16, 64, 160)]


def test_decode_speed_comes_from_the_streams_token_times_when_tokens_stream(clock):
    runtime = FakeRuntime(clock, setup_s=0.015, token_s=0.002, burst=False)
    runs = measure_speed(runtime.chat, PROMPTS, max_new_tokens=11, warmup=1, min_repetitions=3, repetitions=10,
                         ci_target=0.03, progress=lambda d, t: None)
    metrics, per_length = summarise_speed(runs)
    assert [r.method for r in runs] == ["stream"] * 3
    # each timed request counted once: a warm-up and three measured requests per length, no one-token requests
    assert runtime.requests == 3 * (1 + 3)
    # the first warm-up makes a whole answer (the decode path), the others a prefill of their length only
    assert runtime.budgets == [11, 1, 1] + [11] * 9
    assert [r.stopped_by for r in runs] == ["interval"] * 3, "identical timings: sure after the minimum"
    assert metrics["decode_tokens_per_s"] == pytest.approx(500.0)
    assert metrics["ttft_ms_p50"] == pytest.approx(17.0)
    assert metrics["prefill_tokens_per_s"] == pytest.approx(64 / 0.017)
    assert metrics["response_ms_p50"] == pytest.approx(15 + 22)
    assert (metrics["speed_consistency"], metrics["decode_timing_resolved"], metrics["decode_timed_by_stream"]) == (
        pytest.approx(1.0), 1.0, 1.0)
    assert metrics["decode_tokens_per_s_ci95_low"] == pytest.approx(500.0) == metrics["decode_tokens_per_s_ci95_high"]
    assert set(per_length) == {16, 64, 160} and per_length[64]["repetitions"] == 3


def test_no_whole_answer_is_made_to_warm_up_when_one_was_made_already(clock):
    runtime = FakeRuntime(clock, setup_s=0.015, token_s=0.002, burst=False)
    measure_speed(runtime.chat, PROMPTS, max_new_tokens=11, warmup=2, min_repetitions=3, repetitions=3,
                  ci_target=0.03, progress=lambda d, t: None, decode_primed=True)
    # the smoke test's answer primed the decode path: every warm-up is a prefill of its length
    assert runtime.budgets == [1] * 6 + [11] * 9


def test_decode_speed_is_taken_by_difference_when_tokens_burst(clock):
    runtime = FakeRuntime(clock, setup_s=0.015, token_s=0.002, burst=True)
    runs = measure_speed(runtime.chat, PROMPTS, max_new_tokens=11, warmup=1, min_repetitions=3, repetitions=10,
                         ci_target=0.03, progress=lambda d, t: None)
    metrics, _ = summarise_speed(runs)
    assert [r.method for r in runs] == ["difference"] * 3
    assert metrics["decode_tokens_per_s"] == pytest.approx(500.0)
    assert metrics["ttft_ms_p50"] == pytest.approx(17.0)  # from the one-token requests, whose piece is not held back
    assert metrics["decode_timed_by_stream"] == 0.0


def test_noisy_timings_repeat_until_the_interval_is_tight_or_the_maximum(clock):
    import random

    noise = random.Random(7)
    runtime = FakeRuntime(clock, setup_s=0.015, token_s=0.002, burst=False,
                          jitter=lambda: noise.uniform(-0.0008, 0.0008))
    runs = measure_speed(runtime.chat, PROMPTS, max_new_tokens=11, warmup=1, min_repetitions=3, repetitions=12,
                         ci_target=0.005, progress=lambda d, t: None)
    assert {r.stopped_by for r in runs} == {"max_repetitions"}
    assert [len(r.samples) for r in runs] == [12] * 3
    metrics, _ = summarise_speed(runs)
    low, mid, high = (metrics[f"decode_tokens_per_s{s}"] for s in ("_ci95_low", "", "_ci95_high"))
    assert low < mid < high and metrics["decode_tokens_per_s_std"] > 0


def test_without_a_target_every_length_gets_every_repetition(clock):
    runtime = FakeRuntime(clock, setup_s=0.015, token_s=0.002, burst=False)
    runs = measure_speed(runtime.chat, PROMPTS, max_new_tokens=5, warmup=0, min_repetitions=2, repetitions=4,
                         ci_target=0.0, progress=lambda d, t: None)
    assert [(len(r.samples), r.stopped_by) for r in runs] == [(4, "max_repetitions")] * 3


def test_a_first_piece_that_reaches_python_late_does_not_inflate_the_decode_speed():
    from slmops.evaluate.speed import stream_rate

    steady = [0.010 + 0.004 * i for i in range(32)]  # a token every 4 ms: 250 tok/s
    late = [steady[1] - 0.0001, *steady[1:]]  # the first piece held back until the second came (a loaded machine)
    assert stream_rate(steady) == pytest.approx(250.0)
    assert stream_rate(late) == pytest.approx(250.0, rel=0.02)
    assert (len(late) - 1) / (late[-1] - late[0]) > 254, "what (n - 1) / (t_last - t_first) would have said"


@pytest.mark.parametrize(("has_text", "by_pieces"), [
    # every other token has text: 6 pieces 4 ms apart, whose own rate is 250
    (lambda i: i % 2 == 0, 250.0),
    # the last 5 tokens are bytes of one character: 6 pieces 2 ms apart, then none; their rate scaled by tokens per
    # piece (what timing by the stream did before) is 1000
    (lambda i: i < 6, 500.0 * 10 / 5),
])
def test_tokens_that_stream_no_piece_are_timed_by_difference_and_still_count(clock, has_text, by_pieces):
    """A byte of a multi-byte character streams no piece of its own, so pieces cannot be matched to tokens: decode
    is timed by difference, in the runtime's token count (seen on a random-weight 494M model: its pieces, scaled by
    tokens per piece, said 207 tok/s for a 100 tok/s decode)."""

    class Counted(FakeRuntime):
        def chat(self, prompt: str, max_tokens: int):
            runtime = self

            class Stream:
                completion_tokens = None

                def __iter__(self):
                    for i, piece in enumerate(FakeRuntime.chat(runtime, prompt, max_tokens)):  # a token every 2 ms
                        if has_text(i):
                            yield piece
                    self.completion_tokens = max_tokens

            return Stream()

    runtime = Counted(clock, setup_s=0.015, token_s=0.002, burst=False)
    runs = measure_speed(runtime.chat, PROMPTS, max_new_tokens=11, warmup=1, min_repetitions=3, repetitions=10,
                         ci_target=0.03, progress=lambda d, t: None)
    metrics, per_length = summarise_speed(runs)
    assert [r.method for r in runs] == ["difference"] * 3
    assert metrics["decode_tokens_per_s"] == pytest.approx(500.0)
    assert metrics["decode_tokens_per_s"] != pytest.approx(by_pieces)
    assert per_length[64]["answer_tokens"] == 11
