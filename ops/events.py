"""Announce new checkpoints to Prefect: the `checkpoint.published` event that starts the triggered sweep deployment.

    slmops publish /ckpts/step-1200                   # one checkpoint folder, now
    slmops watch /ckpts --interval 30                 # every new complete checkpoint folder that appears in /ckpts
    slmops watch /ckpts --once                        # one pass (two polls, `interval` apart), then exit
    python -m ops.events publish PATH                 # the same commands, without the rest of slmops's CLI

The event carries the folder's absolute path (payload `path`, label `slmops.checkpoint.path`); the deployment
`sweep-checkpoint/on-checkpoint` (deployments/prefect.yaml) takes it as its `checkpoint_path` parameter.

A checkpoint is input from outside: `publish` and `watch` check what they can before sending, with the checks of
slmops.checkpoints (inside SLMOPS_ALLOWED_MODEL_ROOTS, a safe model folder); the triggered flows
(flows/triggered.py) check again on the worker, since the server side cannot trust a publisher.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

# ALLOWED_ROOTS_VAR too: what a publisher sets to check as the workers do
from slmops.checkpoints import ALLOWED_ROOTS_VAR, check_inside_roots, validate_checkpoint  # noqa: F401
from slmops.errors import InputError, SlmopsError

EVENT = "checkpoint.published"
RESOURCE_PREFIX = "slmops.checkpoint."
PATH_LABEL = "slmops.checkpoint.path"
STATE_FILE = ".slmops-watch.json"


def resolve_api_url(api_url: str | None = None) -> str:
    """The Prefect API to publish to: the argument, else PREFECT_API_URL (environment or Prefect profile)."""
    url = api_url or os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
    if not url:
        raise SlmopsError("PREFECT_API_URL is not set: a checkpoint event needs a running Prefect server; start the "
                          "stack (python -m ops.stack up) and export the PREFECT_API_URL it prints")
    return url.rstrip("/")


def _auth_header() -> dict[str, str]:
    """The Authorization header of PREFECT_API_AUTH_STRING (environment, profile or temporary settings), if set."""
    import base64

    from prefect.settings import get_current_settings

    secret = get_current_settings().api.auth_string
    value = secret.get_secret_value() if secret is not None else ""
    return {"Authorization": "Basic " + base64.b64encode(value.encode()).decode()} if value else {}


def check_server(api_url: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, with the address, when the Prefect server does not answer its health check or refuses
    this client's PREFECT_API_AUTH_STRING (the health check itself needs none)."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout_s) as response:  # noqa: S310 (user's server)
            problem = None if response.status == 200 else f"HTTP {response.status}"
    except urllib.error.HTTPError as err:
        problem = f"HTTP {err.code}"
    except (urllib.error.URLError, OSError) as err:
        problem = str(getattr(err, "reason", err))
    if problem:
        raise SlmopsError(f"the Prefect server at {api_url} (PREFECT_API_URL) is unreachable ({problem}); start it "
                          "(python -m ops.stack up) or point PREFECT_API_URL at its /api address")
    request = urllib.request.Request(f"{api_url}/admin/version", headers=_auth_header())
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 (user's server)
            return
    except urllib.error.HTTPError as err:
        if err.code == 401:
            raise SlmopsError(f"the Prefect server at {api_url} refused this client's credentials (HTTP 401): set "
                              "PREFECT_API_AUTH_STRING to its API auth string (python -m ops.stack env says "
                              "where it is)") from None
    except (urllib.error.URLError, OSError):
        return  # it answered its health check a moment ago: sending the event will say what is wrong


def checkpoint_event(path: Path):
    """The event for one checkpoint folder: resource id from the path, the path in the payload and a label."""
    from prefect.events import Event

    files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else []
    return Event(
        event=EVENT,
        resource={"prefect.resource.id": RESOURCE_PREFIX + hashlib.sha256(str(path).encode()).hexdigest()[:16],
                  "prefect.resource.name": path.name, PATH_LABEL: str(path)},
        payload={"path": str(path), "files": len(files), "size_bytes": sum(p.stat().st_size for p in files)},
    )


async def _send(event, api_url: str) -> None:
    from prefect.events.clients import PrefectEventsClient

    # emit_event() hands events to a background worker that logs, and drops, what it cannot send. This client
    # raises instead, and checkpoint_every=1 makes emit() wait for the server's pong after the event: delivered.
    async with PrefectEventsClient(api_url=api_url, reconnection_attempts=2, checkpoint_every=1) as client:
        await client.emit(event)


def publish_checkpoint(path: str | Path, api_url: str | None = None, check: bool = True) -> dict:
    """Emit `checkpoint.published` for a folder and wait until the server has it; return the event's id and path.

    With check, a folder that is not a complete model folder, or lies outside SLMOPS_ALLOWED_MODEL_ROOTS (when
    set here), is refused here (InputError); without it only the triggered run checks (for a path that only
    exists where the workers run). The triggered run checks in any case.
    """
    path = Path(path).expanduser().resolve()
    if check:
        validate_checkpoint(path)
    url = resolve_api_url(api_url)
    check_server(url)
    event = checkpoint_event(path)
    from websockets.exceptions import WebSocketException

    try:
        asyncio.run(_send(event, url))
    except (OSError, TimeoutError, WebSocketException) as err:
        raise SlmopsError(f"the Prefect server at {url} (PREFECT_API_URL) did not take the event "
                          f"({type(err).__name__}: {err}); check that it runs and try again") from None
    return {"event_id": str(event.id), "path": str(path), "api_url": url}


def folder_fingerprint(path: Path) -> list:
    """Every file's relative path, size and modification time: equal on two polls = nothing is being written."""
    rows = []
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        st = file.stat()
        rows.append([file.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns])
    return rows


def _load_state(state_file: Path) -> dict:
    try:
        data = json.loads(state_file.read_text())
    except FileNotFoundError:
        return {"published": {}}
    except (json.JSONDecodeError, OSError) as err:
        raise SlmopsError(f"{state_file}: cannot read the watch state ({err}); fix or delete it (deleting it "
                          "publishes every checkpoint in the folder again)") from None
    data.setdefault("published", {})
    return data


def _save_state(state_file: Path, state: dict) -> None:
    tmp = state_file.with_name(f"{state_file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state, indent=2))
    os.replace(tmp, state_file)


def _complete(folder: Path) -> bool:
    from slmops.source import validate_model_dir

    try:
        validate_model_dir(folder)
    except InputError:
        return False
    return True


def watch(folder: str | Path, interval_s: float = 10.0, once: bool = False, api_url: str | None = None,
          state_file: str | Path | None = None, log: Callable[[str], None] = print) -> list[str]:
    """Publish each new complete checkpoint folder in `folder` once; return the paths published.

    Complete: a model folder (validate_model_dir passes) whose files did not change between two polls. What was
    published is kept in `state_file` (default <folder>/.slmops-watch.json), so a restarted watch publishes
    nothing twice. With once: two polls `interval_s` apart, then return; a failed publish raises. Without it, a
    failed publish is reported and tried again at the next poll.
    """
    folder = Path(folder).expanduser().resolve()
    if not folder.is_dir():
        raise InputError(f"watch: {folder} is not a folder")
    check_inside_roots(folder)  # when SLMOPS_ALLOWED_MODEL_ROOTS is set here: a watch that could never be swept
    if interval_s <= 0:
        raise InputError(f"watch: --interval must be above 0 seconds, got {interval_s}")
    state_path = Path(state_file).resolve() if state_file else folder / STATE_FILE
    state = _load_state(state_path)
    url = resolve_api_url(api_url)
    if once:
        check_server(url)  # a one-shot run fails at once rather than after its polls
    published: list[str] = []
    previous: dict[str, list] = {}
    refused: set[str] = set()
    polls = 0
    while True:
        polls += 1
        current: dict[str, list] = {}
        for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            key = str(sub)
            if key in state["published"] or key in refused or not _complete(sub):
                continue
            try:
                check_inside_roots(sub)  # a subfolder may be a symlink out of the allowed roots
            except InputError as err:
                refused.add(key)
                log(f"not published: {err}")
                continue
            current[key] = folder_fingerprint(sub)
            if previous.get(key) != current[key]:
                continue  # new, or still being written: wait for one more poll
            try:
                sent = publish_checkpoint(sub, api_url=url, check=False)
            except SlmopsError as err:
                if once:
                    raise
                log(f"not published yet, trying again in {interval_s:g} s: {err}")
                continue
            state["published"][key] = {"event_id": sent["event_id"],
                                       "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            _save_state(state_path, state)
            published.append(key)
            log(f"published {key} (event {sent['event_id']})")
        previous = current
        if once and polls >= 2:
            return published
        time.sleep(interval_s)


def cmd_publish(args: argparse.Namespace) -> int:
    sent = publish_checkpoint(args.path, api_url=args.api_url, check=not args.no_check)
    print(f"published {EVENT} for {sent['path']} to {sent['api_url']} (event {sent['event_id']})")
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        watch(args.dir, interval_s=args.interval, once=args.once, api_url=args.api_url, state_file=args.state)
    except KeyboardInterrupt:
        print("watch stopped", file=sys.stderr)
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add `publish PATH` and `watch DIR` to slmops's command line."""
    p = subparsers.add_parser("publish", help="announce a checkpoint: the stack sweeps it")
    p.add_argument("path", help="the checkpoint: a Hugging Face model folder")
    p.add_argument("--api-url", help="Prefect API (default: $PREFECT_API_URL)")
    p.add_argument("--no-check", action="store_true",
                   help="publish without checking the folder here (it exists only where the workers run)")
    p.set_defaults(func=cmd_publish)
    p = subparsers.add_parser("watch", help="publish each new complete checkpoint in DIR")
    p.add_argument("dir", help="folder the checkpoints appear in, one subfolder each")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between polls (default 10)")
    p.add_argument("--once", action="store_true", help="two polls, publish what is complete, exit")
    p.add_argument("--state", help=f"what was published (default: DIR/{STATE_FILE})")
    p.add_argument("--api-url", help="Prefect API (default: $PREFECT_API_URL)")
    p.set_defaults(func=cmd_watch)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ops.events", description=__doc__.split("\n")[0])
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except SlmopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


if __name__ == "__main__":
    sys.exit(main())
