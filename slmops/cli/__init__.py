"""The ``slmops`` command: one module per command family.

    slmops doctor | make-demo-model DIR | sweep SPEC --out DIR | demo --out DIR | sync --out DIR   (sweep.py)
    slmops compare | promote --sweep ID | champion [MODEL]                                           (registry.py)
    slmops foundry list | chat ID PROMPT | remove ID | export --to DIR                               (foundry.py)
    slmops publish PATH | watch DIR                       (checkpoint events for the stack's triggered deployment)

A clear error ends the command with one line and a non-zero exit; --debug (on any command) adds its traceback.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from slmops.errors import SlmopsError


# `slmops --help` lists the commands in the order of the pipeline
ORDER = ("doctor", "make-demo-model", "sweep", "demo", "publish", "watch", "foundry", "compare", "promote", "champion",
         "sync")


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, with each command's description on the line of its name (argparse measures the names one
    indent short, and would put make-demo-model's description on a line of its own)."""

    def add_argument(self, action: argparse.Action) -> None:
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(len(name) for name in action.choices) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def build_parser() -> argparse.ArgumentParser:
    from slmops.cli import foundry, registry, sweep
    from ops.events import add_cli as add_event_commands

    parser = argparse.ArgumentParser(prog="slmops", description="Convert, quantize, register, measure and promote "
                                                                "small language models",
                                     formatter_class=_HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands, in the order of the pipeline")
    sweep.add_commands(sub)
    registry.add_commands(sub)
    foundry.add_commands(sub)
    add_event_commands(sub)
    # argparse lists the commands as they were added; each family adds its own, so put them in ORDER here
    sub._choices_actions.sort(key=lambda action: ORDER.index(action.dest))
    _add_debug(parser)
    return parser


def _add_debug(parser: argparse.ArgumentParser, top: bool = True) -> None:
    """--debug on every command, before or after its name."""
    parser.add_argument("--debug", action="store_true", default=False if top else argparse.SUPPRESS,
                        help="on an error, show the traceback as well as the one line")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _add_debug(child, top=False)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SlmopsError as err:
        if args.debug:
            traceback.print_exc()
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted: finished variants are kept and reused by the next run", file=sys.stderr)
        return 130
