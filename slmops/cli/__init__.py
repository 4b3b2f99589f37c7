"""The ``slmops`` command: one module per command family.

    slmops doctor | make-demo-model DIR | sweep SPEC --out DIR | demo --out DIR | sync --out DIR   (sweep.py)
    slmops compare | promote --sweep ID | champion [MODEL]                                           (registry.py)
    slmops foundry list | chat ID PROMPT | remove ID | export --to DIR                               (foundry.py)
    slmops publish PATH | watch DIR                       (checkpoint events for the stack's triggered deployment)
"""

from __future__ import annotations

import argparse
import sys

from slmops.errors import SlmopsError


def build_parser() -> argparse.ArgumentParser:
    from slmops.cli import foundry, registry, sweep
    from ops.events import add_cli as add_event_commands

    parser = argparse.ArgumentParser(prog="slmops", description="Convert, quantize, register, measure and promote "
                                                                "small language models")
    sub = parser.add_subparsers(dest="command", required=True)
    sweep.add_commands(sub)
    registry.add_commands(sub)
    foundry.add_commands(sub)
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
