"""Reading the eval set: one loader for the sweep's pre-flight, the measuring processes and fidelity."""

from __future__ import annotations

import pytest

from slmops.errors import InputError
from slmops.evalset import load_eval_set


def test_load_eval_set_stops_at_the_limit_and_skips_blank_lines(tmp_path):
    path = tmp_path / "eval.jsonl"
    path.write_text('{"prompt": "a", "reference": "b"}\n\n{"prompt": "c", "reference": "d"}\n{"prompt": "e", '
                    '"reference": "f"}\n')
    assert load_eval_set(path, 2) == [{"prompt": "a", "reference": "b"}, {"prompt": "c", "reference": "d"}]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"prompt": "a"}\n', 'needs string fields "prompt" and "reference"'),
        ("not json\n", "not valid JSON"),
        ("\n", "has no rows"),
    ],
)
def test_load_eval_set_names_the_bad_row(tmp_path, content, message):
    path = tmp_path / "eval.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        load_eval_set(path)
