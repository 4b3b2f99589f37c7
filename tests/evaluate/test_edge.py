"""An edge case passes only when the runtime handles the input cleanly and still answers a normal request after it.

    .venv/bin/python -m pytest tests/evaluate/test_edge.py -q

The runtime here is a stand-in with chat()'s signature, for the one thing a real one will not do on demand: break
after a bad input. What Foundry Local does with each case is tested on the demo model (test_runner.py).
"""

from __future__ import annotations

from slmops.errors import VariantError
from slmops.evaluate.edge import HEALTH_TOKENS, run_edge_case


class Runtime:
    """Refuses empty prompts as Foundry Local does; once ``broken``, refuses everything."""

    def __init__(self, breaks_after_edge: bool = False) -> None:
        self.breaks_after_edge, self.broken = breaks_after_edge, False
        self.requests: list[tuple[str, int]] = []

    def chat(self, prompt: str, max_tokens: int):
        self.requests.append((prompt, max_tokens))
        if self.broken:
            raise VariantError("Foundry Local: ... Session::Run(...) the session is gone")
        if not prompt.strip():
            self.broken = self.breaks_after_edge
            raise VariantError("Foundry Local: ... Generator::Generate(Request const&) the request has nothing to "
                               "generate from: no message content")
        yield from ["a"] * max_tokens


def test_a_refused_edge_case_passes_when_a_short_normal_request_is_answered_after_it():
    runtime = Runtime()
    result = run_edge_case(runtime.chat, "empty", 256, "What does the lamp cost?", 16)
    assert (result["passed"], result["outcome"]) == (True, "rejected")
    assert result["detail"] == "the request has nothing to generate from: no message content"
    assert runtime.requests == [("", 16), ("What does the lamp cost?", HEALTH_TOKENS)]
    assert HEALTH_TOKENS == 4  # as the manual route's benchmark asks (benchmarks/manual_generate.py)


def test_an_edge_case_after_which_the_runtime_no_longer_answers_fails_saying_so():
    runtime = Runtime(breaks_after_edge=True)
    result = run_edge_case(runtime.chat, "whitespace", 256, "What does the lamp cost?", 16)
    assert result["passed"] is False
    assert result["outcome"] == "rejected, then the runtime failed a normal request"
    assert result["detail"].endswith("; afterwards: the session is gone")
