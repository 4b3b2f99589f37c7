"""How speed figures are derived from streamed requests: prompts of given lengths, burst-proof decode speed.

    .venv/bin/python -m pytest tests/evaluate/test_speed_summary.py -q
"""

from __future__ import annotations

import math

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


def _fake_chat(setup_s: float, token_s: float, burst: bool, clock: list[float]):
    """A stream whose pieces come after a set-up time, one per token_s, or all together at the end (burst)."""

    def chat(prompt: str, max_tokens: int):
        clock[0] += setup_s
        times = [clock[0] + token_s * (i + 1) for i in range(max_tokens)]
        for t in times:
            clock[0] = times[-1] if burst else t
            yield "x"

    return chat


@pytest.mark.parametrize("burst", [False, True])
def test_decode_speed_comes_from_the_extra_time_of_extra_tokens_even_when_pieces_burst(monkeypatch, burst):
    clock = [0.0]
    monkeypatch.setattr("slmops.evaluate.speed.time.perf_counter", lambda: clock[0])
    chat = _fake_chat(setup_s=0.015, token_s=0.002, burst=burst, clock=clock)
    prompts = [LengthPrompt(t, "p", t, False) for t in (16, 64, 160)]
    samples = measure_speed(chat, prompts, max_new_tokens=11, repetitions=3, warmup=1, progress=lambda d, t: None)
    metrics, per_length = summarise_speed(samples, prompts)
    assert len(samples) == 9
    assert metrics["decode_tokens_per_s"] == pytest.approx(500.0)
    assert metrics["ttft_ms_p50"] == pytest.approx(17.0)
    assert metrics["prefill_tokens_per_s"] == pytest.approx(64 / 0.017)
    assert metrics["response_ms_p50"] == pytest.approx(15 + 22)
    assert metrics["speed_consistency"] == pytest.approx(1.0)
    assert metrics["decode_timing_resolved"] == 1.0
    assert set(per_length) == {16, 64, 160}
    stream = metrics["decode_tokens_per_s_stream"]
    # the streamed figure is right only while pieces arrive one by one
    assert stream == pytest.approx(500.0) if not burst else not math.isfinite(stream)
