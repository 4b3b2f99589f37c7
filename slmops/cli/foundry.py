"""The commands on what is registered with Foundry Local: the manual route's `foundry cache ls` and `foundry model
run`, and more.

    slmops foundry list                        # every registered variant
    slmops foundry chat ID PROMPT              # stream an answer
    slmops foundry remove ID                   # unload and unregister
    slmops foundry export --to DIR [ID ...]    # lay variants out for the Foundry Local CLI's cache (Windows/macOS)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from slmops.cli.common import add_work_dir, print_table, work_dir
from slmops.errors import InputError


def _foundry(args: argparse.Namespace):
    from slmops.adapters.foundry import FoundryLocal
    from slmops.workspace import Workspace

    work = work_dir(args)
    return FoundryLocal(Path(args.cache).resolve() if args.cache else Workspace(work, work).foundry_cache)


def cmd_list(args: argparse.Namespace) -> int:
    from slmops.report import human_size

    rows = _foundry(args).list()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    table = [("id", "precision", "size", "registered at", "folder")]
    for r in rows:
        folder = r["path"] if r["path_exists"] else f"{r['path']} (MISSING)"
        table.append((r["id"], r["precision"] or "-", human_size(r["size_bytes"]), r["registered_at"], folder))
    print_table(table)
    if not rows:
        print("(no variant registered yet: run `slmops demo` or `slmops sweep`)")
    return 0


def cmd_chat(args: argparse.Namespace) -> int:
    for piece in _foundry(args).chat_stream(args.id, args.prompt, max_tokens=args.max_tokens,
                                            temperature=args.temperature):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    _foundry(args).remove(args.id)
    print(f"removed {args.id}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from slmops.foundry_export import export_for_foundry_cli

    rows = {r["id"]: r for r in _foundry(args).list()}
    if args.ids:
        unknown = [i for i in args.ids if i not in rows]
        if unknown:
            raise InputError(f"not registered: {', '.join(unknown)}; `slmops foundry list` shows the ids")
        chosen = [rows[i] for i in args.ids]
    else:  # the newest version of each registered name
        newest: dict[str, dict] = {}
        for r in rows.values():
            if r["path_exists"] and r["version"] > newest.get(r["name"], {}).get("version", -1):
                newest[r["name"]] = r
        chosen = list(newest.values())
    names = [r["name"] for r in chosen]
    if len(set(names)) != len(names):
        raise InputError("two versions of one model were chosen; the Foundry Local CLI lists a model by name once")
    missing = [r["id"] for r in chosen if not r["path_exists"]]
    if missing:
        raise InputError(f"the folders of {', '.join(missing)} no longer exist; rebuild or remove them")
    written = export_for_foundry_cli({r["name"]: Path(r["path"]) for r in chosen}, Path(args.to))
    for path in written:
        print(path)
    print(f"\n{len(written)} model(s) in {args.to}; on Windows or macOS: foundry cache cd {args.to} && "
          "foundry cache ls")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    foundry = sub.add_parser("foundry", help="list, chat with, remove, export registered variants").add_subparsers(
        dest="foundry_command", required=True)
    for name, func, help_ in (("list", cmd_list, "list registered variants (like `foundry cache ls`)"),
                              ("chat", cmd_chat, "stream an answer (like `foundry model run`)"),
                              ("remove", cmd_remove, "unload and unregister a variant"),
                              ("export", cmd_export, "lay variants out for the Foundry Local CLI cache")):
        p = foundry.add_parser(name, help=help_)
        add_work_dir(p)
        p.add_argument("--cache", help="Foundry Local cache folder (default: $SLMOPS_FOUNDRY_CACHE or "
                                       "<work dir>/foundry)")
        p.set_defaults(func=func)
        if name == "list":
            p.add_argument("--json", action="store_true", help="print JSON")
        elif name == "chat":
            p.add_argument("id", help="Foundry Local id, name:version")
            p.add_argument("prompt")
            p.add_argument("--max-tokens", type=int, default=256)
            p.add_argument("--temperature", type=float, default=0.0)
        elif name == "remove":
            p.add_argument("id", help="Foundry Local id, name:version")
        else:
            p.add_argument("--to", required=True, help="folder to lay the models out in")
            p.add_argument("ids", nargs="*", help="ids to export (default: the newest version of each)")
