"""What every command family shares: the work folder, progress on stderr, the tracking store."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_work_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--work-dir", help="caches, MLflow store, Foundry Local cache (default: $SLMOPS_HOME or "
                                           "./.slmops)")


def work_dir(args: argparse.Namespace) -> Path:
    """The command's work folder, with the process set up for it (before Prefect, MLflow or Olive load)."""
    from slmops.workspace import configure_environment, default_work_dir

    folder = Path(args.work_dir).resolve() if args.work_dir else default_work_dir()
    configure_environment(folder)
    return folder


def tracker(args: argparse.Namespace):
    """The MLflow store of the work folder (or MLFLOW_TRACKING_URI), checked to answer."""
    from slmops.adapters.tracking import Tracker, default_tracking_uri

    found = Tracker(default_tracking_uri(work_dir(args)))
    found.check_reachable()
    return found


def progress(label: str):
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


def print_table(rows: list[tuple]) -> None:
    """Rows of cells as aligned columns, the first row the header."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


class _NoTraceback(logging.Formatter):
    """A console formatter that prints a log line without the traceback attached to it."""

    def __init__(self, inner: logging.Formatter | None) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()

    def format(self, record: logging.LogRecord) -> str:
        exc_info, exc_text, stack_info = record.exc_info, record.exc_text, record.stack_info
        record.exc_info = record.exc_text = record.stack_info = None
        try:
            return self.inner.format(record)
        finally:  # other handlers (Prefect's API log handler) still get the traceback
            record.exc_info, record.exc_text, record.stack_info = exc_info, exc_text, stack_info


def quiet_tracebacks() -> None:
    """Prefect's console log lines without their tracebacks: a failed task or flow run logs the exception it ended
    with, and the command already ends with one clear line saying it (--debug keeps them; the Prefect server's logs
    of the run keep them too). Call it once Prefect is imported: its import sets up the handlers."""
    loggers = [logging.getLogger(), *(logging.getLogger(name) for name in list(logging.root.manager.loggerDict))]
    for logger in loggers:
        for handler in getattr(logger, "handlers", []):
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler.formatter, _NoTraceback):
                handler.setFormatter(_NoTraceback(handler.formatter))
