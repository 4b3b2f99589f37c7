"""The command of the stack: python -m ops.stack up|deploy|env|status|down (the package's docstring shows them)."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path

from ops.stack.credentials import SECRET_VARS, SecretsError, check_credentials, credentials_from
from ops.stack.deploy import deploy_to
from ops.stack.mlflow_auth import ensure_mlflow_user
from ops.stack.services import Stack
from ops.stack.topology import DEFAULT_CRON, DEFAULT_PORTS, DEFAULT_SPEC, StackError
from slmops.checkpoints import ALLOWED_ROOTS_VAR
from slmops.errors import SlmopsError


def default_state_dir() -> Path:
    return Path(os.environ.get("SLMOPS_HOME", ".slmops")).resolve() / "stack"


def _print_env(stack: Stack, with_secrets: bool = False) -> None:
    """Export lines for a shell (eval "$(...)"); the credentials only with_secrets, else sourced from client.env."""
    for key, value in stack.client_env(with_secrets).items():
        print(f"export {key}={shlex.quote(value)}")
    if not with_secrets:
        print("# PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_PASSWORD, from the stack's 0600 file (env --with-secrets "
              "prints them):")
        print(f"set -a; . {shlex.quote(str(stack.client_file))}; set +a")


def _deploy_command(args: argparse.Namespace, state_dir: Path) -> None:
    """`deploy`: to this stack, or to a server named by --api-url (the compose `deploy` service, which also
    creates the pipeline's MLflow user with --mlflow-url, from the SLMOPS_* credentials of its environment)."""
    if args.api_url or not (state_dir / "state.json").is_file():
        api_url = args.api_url or os.environ.get("PREFECT_API_URL")
        if not api_url:
            raise StackError(f"no stack in {state_dir} and no PREFECT_API_URL; pass --api-url")
        auth_string = os.environ.get("PREFECT_API_AUTH_STRING")
        if args.mlflow_url:
            found = check_credentials(credentials_from(os.environ), "the environment")
            auth_string = auth_string or found["SLMOPS_PREFECT_AUTH_STRING"]
            outcome = ensure_mlflow_user(
                args.mlflow_url, (found["SLMOPS_MLFLOW_ADMIN_USER"], found["SLMOPS_MLFLOW_ADMIN_PASSWORD"]),
                (found["SLMOPS_MLFLOW_USER"], found["SLMOPS_MLFLOW_PASSWORD"]))
            print(f"MLflow user {found['SLMOPS_MLFLOW_USER']} {outcome}")
        deploy_to(api_url, args.cron, args.spec,
                  auth_string=auth_string or os.environ.get("SLMOPS_PREFECT_AUTH_STRING"))
    else:
        Stack(state_dir).deploy(args.cron, args.spec)
    print("deployed: work pool, deployments/prefect.yaml, deployments/automations.yaml")


def main(argv: list[str] | None = None) -> int:
    import ops.stack  # the package's docstring describes the command

    parser = argparse.ArgumentParser(prog="python -m ops.stack", description=ops.stack.__doc__.split("\n")[0])
    parser.add_argument("--dir", help="state folder (default: $SLMOPS_HOME/stack)")
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start PostgreSQL, the Prefect and MLflow servers and the workers; deploy")
    up.add_argument("--work-dir", help="the workers' SLMOPS_HOME: caches, sweep outputs (default: $SLMOPS_HOME or "
                                       "./.slmops)")
    up.add_argument("--env-file", help=f"credentials ({', '.join(SECRET_VARS)}) as KEY=VALUE lines; the "
                                       "environment wins (default: ./.env when it exists)")
    up.add_argument("--model-roots", help=f"colon-separated folders checkpoints may come from ({ALLOWED_ROOTS_VAR} "
                                          "of the workers; default: $SLMOPS_ALLOWED_MODEL_ROOTS, else the last up's, "
                                          "else <work dir>/checkpoints)")
    for name, default in DEFAULT_PORTS.items():
        flag = "--pg-port" if name == "postgres" else f"--{name}-port"
        up.add_argument(flag, type=int, dest=f"{name}_port", help=f"default {default}; 0 = any free port")
    up.add_argument("--variant-workers", type=int, default=1, help="workers on the variants queue (default 1)")
    up.add_argument("--variant-limit", type=int, default=1,
                    help="conversions one variant worker runs at once: what this machine's memory allows (default 1)")
    up.add_argument("--sweep-limit", type=int, default=2, help="sweeps the sweep worker runs at once (default 2)")
    up.add_argument("--no-deploy", action="store_true", help="start the processes only")
    up.add_argument("--cron", help=f"nightly sweep's schedule (default $SLMOPS_SWEEP_CRON or {DEFAULT_CRON!r})")
    up.add_argument("--spec", help=f"spec of the deployed sweeps (default $SLMOPS_SWEEP_SPEC or {DEFAULT_SPEC})")
    deploy = sub.add_parser("deploy", help="create the work pool, deployments and automations")
    deploy.add_argument("--api-url", help="a Prefect server's API (default: this stack's, else $PREFECT_API_URL); "
                                          "its auth string from $PREFECT_API_AUTH_STRING or "
                                          "$SLMOPS_PREFECT_AUTH_STRING")
    deploy.add_argument("--mlflow-url", help="with --api-url: an MLflow server with basic auth, where the pipeline's "
                                             "user is created from $SLMOPS_MLFLOW_* (the compose stack)")
    deploy.add_argument("--cron", help=f"nightly sweep's schedule (default $SLMOPS_SWEEP_CRON or {DEFAULT_CRON!r})")
    deploy.add_argument("--spec", help=f"spec of the deployed sweeps (default $SLMOPS_SWEEP_SPEC or {DEFAULT_SPEC})")
    env = sub.add_parser("env", help="print export lines: the URLs, and where the credentials are")
    env.add_argument("--with-secrets", action="store_true",
                     help="print PREFECT_API_AUTH_STRING and MLFLOW_TRACKING_PASSWORD too")
    sub.add_parser("status", help="what runs, and whether the servers answer")
    down = sub.add_parser("down", help="stop everything this state folder started")
    down.add_argument("--purge", action="store_true", help="also delete the database files, artifacts, logs and "
                                                           "secrets")
    args = parser.parse_args(argv)

    state_dir = Path(args.dir) if args.dir else default_state_dir()
    try:
        if args.command == "up":
            env_file = Path(args.env_file) if args.env_file else Path(".env")
            if args.env_file and not env_file.is_file():
                raise SecretsError(f"--env-file {env_file}: no such file")
            credentials = credentials_from(os.environ, env_file)  # checked by up(), before anything starts
            roots = args.model_roots or os.environ.get(ALLOWED_ROOTS_VAR)
            stack = Stack(state_dir, args.work_dir)
            ports = {n: getattr(args, f"{n}_port") for n in DEFAULT_PORTS}
            stack.up(args.variant_workers, args.variant_limit, args.sweep_limit, ports, deploy=not args.no_deploy,
                     cron=args.cron, spec=args.spec, credentials=credentials,
                     model_roots=[r for r in roots.split(":") if r] if roots else None,
                     credentials_from_where=f"the environment or {env_file}")
            print(f"Prefect UI  {stack.prefect_ui_url}\nMLflow UI   {stack.mlflow_url}\nstate       {stack.dir}\n"
                  f"checkpoints only from {':'.join(stack.model_roots)}\n")
            _print_env(stack)
        elif args.command == "deploy":
            _deploy_command(args, state_dir)
        elif args.command == "env":
            _print_env(_existing(state_dir), args.with_secrets)
        elif args.command == "status":
            for name, row in _existing(state_dir).status().items():
                print(f"{name:<20} {row}")
        else:
            _existing(state_dir).down(purge=args.purge)
            print(f"stopped{' and purged' if args.purge else ''}: {state_dir}")
    except SlmopsError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    return 0


def _existing(state_dir: Path) -> Stack:
    if not (state_dir / "state.json").is_file():
        raise StackError(f"no stack in {state_dir}; start one with `python -m ops.stack up`")
    return Stack(state_dir)
