"""docker-compose.yml, Dockerfile, .env.example and deployments/ agree with each other and with the code.

No Docker engine runs here, so the compose file is read, its ${VARIABLES} filled in from .env.example (plus a
value for each credential, which .env.example leaves empty) the way compose does, and every name, port, URL and
command is checked against the service it points at and against ops.stack, ops.events, flows/ and
deployments/prefect.yaml; and that compose refuses to start without the credentials, each service gets only the
ones it needs, and nothing but the two UIs is published (on loopback by default).

    .venv/bin/python -m pytest tests/stack/test_compose.py
"""

from __future__ import annotations

import configparser
import importlib.metadata
import inspect
import re
import shlex
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from flows.scaleout import VARIANT_DEPLOYMENT
from ops import events, stack

ROOT = Path(__file__).resolve().parents[2]
WORKERS = ("sweep-worker", "variant-worker")
# what .env must set: the process stack's credentials, and the two it generates for itself
CREDENTIALS = (*stack.SECRET_VARS, "POSTGRES_PASSWORD", "SLMOPS_MLFLOW_SECRET_KEY")
# a distinct value per credential, to see where each one goes
SECRETS = {name: f"secret-of-{name.lower()}" for name in CREDENTIALS}
_VAR = re.compile(r"\$\{(\w+)(?::?([-?])([^}]*))?\}")


def env_example() -> dict[str, str]:
    pairs = [line.split("=", 1) for line in (ROOT / ".env.example").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#")]
    return {k.strip(): v.strip() for k, v in pairs}


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error}, recursively; $$ is a literal $."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match) -> str:
        name, kind, rest = match.groups()
        if env.get(name):
            return env[name]
        if kind == "?":
            raise AssertionError(f"${{{name}}} is required ({rest}) and not in .env.example")
        return rest if kind == "-" else ""

    return _VAR.sub(one, value).replace("$$", "$")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def compose(raw) -> dict:
    return interpolate(raw, {**env_example(), **SECRETS})


@pytest.fixture(scope="module")
def defaults_only(raw) -> dict:
    """The file as compose reads it with no .env but the required credentials."""
    return interpolate(raw, SECRETS)


@pytest.fixture(scope="module")
def prefect_yaml() -> dict:
    return yaml.safe_load(stack.PREFECT_FILE.read_text())


def command(service: dict) -> list[str]:
    cmd = service["command"]
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd]


def option(cmd: list[str], flag: str) -> str:
    assert flag in cmd, f"{flag} missing from {cmd}"
    return cmd[cmd.index(flag) + 1]


def options(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, c in enumerate(cmd) if c == flag]


def published(service: dict) -> list[tuple[str, str, str]]:
    """(host address, host port, container port) of each ports entry."""
    rows = []
    for entry in service.get("ports", []):
        parts = str(entry).split(":")
        assert len(parts) == 3, f"{entry}: name the host address, so nothing is exposed by accident"
        rows.append(tuple(parts))
    return rows


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    return dict(item.split("=", 1) for item in env) if isinstance(env, list) else {k: str(v) for k, v in env.items()}


def init_databases() -> set[str]:
    sql = (ROOT / "deployments" / "postgres" / "init-databases.sql").read_text()
    return set(re.findall(r"CREATE DATABASE (\w+);", sql))


def test_every_service_of_the_stack_is_there_with_a_health_check_and_pinned_images(compose):
    services = compose["services"]
    assert {"postgres", "prefect-server", "mlflow-server", "deploy", *WORKERS} <= set(services)
    for name in ("postgres", "prefect-server", "mlflow-server", *WORKERS):
        assert services[name].get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert re.fullmatch(r"postgres:15\.\d+", services["postgres"]["image"])
    prefect_version = importlib.metadata.version("prefect")
    assert services["prefect-server"]["image"] == f"prefecthq/prefect:{prefect_version}-python3.11"
    local_prefect = (ROOT / "deployments/prefect/Dockerfile").read_text()
    assert f'"prefect=={prefect_version}"' in local_prefect, "the local build of the server: the same Prefect"
    mlflow_build = (ROOT / services["mlflow-server"]["build"]["context"] / "Dockerfile").read_text()
    mlflow_version = importlib.metadata.version("mlflow")
    assert f'"mlflow[auth]=={mlflow_version}"' in mlflow_build
    assert services["mlflow-server"]["image"] == f"slmops-mlflow:{mlflow_version}"
    assert "psycopg[binary]" in mlflow_build, "MLflow's PostgreSQL backend needs psycopg 3"


def test_depends_on_waits_for_health_or_completion_of_services_that_can_report_it(compose):
    services = compose["services"]
    for name, service in services.items():
        for dependency, rule in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert services[dependency].get("healthcheck"), f"{name} waits for {dependency}'s missing check"
            else:
                assert condition == "service_completed_successfully" and services[dependency]["restart"] == "no"
    for worker in WORKERS:
        assert services[worker]["depends_on"]["deploy"]["condition"] == "service_completed_successfully"


def test_uis_are_published_on_loopback_by_default_at_the_ports_their_servers_listen_on(compose, defaults_only):
    for name, port in (("prefect-server", "4200"), ("mlflow-server", "5000")):
        [(address, host_port, container_port)] = published(defaults_only["services"][name])
        assert (address, host_port) == ("127.0.0.1", port)
        assert container_port == option(command(compose["services"][name]), "--port") == port
    for name, service in compose["services"].items():
        if name not in ("prefect-server", "mlflow-server"):
            assert not service.get("ports"), f"{name} needs no published port"
    ui_api = urlparse(env_of(compose["services"]["prefect-server"])["PREFECT_UI_API_URL"])
    assert (ui_api.hostname, str(ui_api.port), ui_api.path) == (
        "127.0.0.1", published(compose["services"]["prefect-server"])[0][1], "/api")


def test_workers_and_deploy_reach_the_prefect_and_mlflow_services_at_their_ports(compose):
    services = compose["services"]
    prefect_port = option(command(services["prefect-server"]), "--port")
    mlflow_port = option(command(services["mlflow-server"]), "--port")
    for name in (*WORKERS, "checkpoint-watcher"):
        env = env_of(services[name])
        assert env["PREFECT_API_URL"] == f"http://prefect-server:{prefect_port}/api"
        if name in WORKERS:
            assert env["MLFLOW_TRACKING_URI"] == f"http://mlflow-server:{mlflow_port}"
    assert option(command(services["deploy"]), "--api-url") == f"http://prefect-server:{prefect_port}/api"
    assert option(command(services["deploy"]), "--mlflow-url") == f"http://mlflow-server:{mlflow_port}"
    allowed = env_of(services["mlflow-server"])["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert f"mlflow-server:{mlflow_port}" in allowed, "MLflow would refuse the workers' Host header"


def test_the_servers_use_the_databases_the_init_script_creates_on_the_postgres_service(compose):
    services = compose["services"]
    pg = env_of(services["postgres"])
    prefect_db = urlparse(env_of(services["prefect-server"])["PREFECT_SERVER_DATABASE_CONNECTION_URL"])
    mlflow_db = urlparse(option(command(services["mlflow-server"]), "--backend-store-uri"))
    assert (prefect_db.scheme, mlflow_db.scheme) == ("postgresql+asyncpg", "postgresql+psycopg")
    for url, database in ((prefect_db, stack.PREFECT_DB), (mlflow_db, stack.MLFLOW_DB)):
        assert (url.hostname, url.port, url.path) == ("postgres", 5432, f"/{database}")
        assert (url.username, url.password) == (pg["POSTGRES_USER"], None), "the password comes as PGPASSWORD"
    for name in ("prefect-server", "mlflow-server"):
        assert env_of(services[name])["PGPASSWORD"] == pg["POSTGRES_PASSWORD"]
    assert init_databases() == {stack.PREFECT_DB, stack.MLFLOW_DB, stack.MLFLOW_AUTH_DB}
    mounts = services["postgres"]["volumes"]
    assert any(m.startswith("./deployments/postgres/init-databases.sql:/docker-entrypoint-initdb.d/")
               for m in mounts)
    check = " ".join(services["postgres"]["healthcheck"]["test"])
    assert "-d $db" in check and all(re.search(rf"for db in .*\b{db}\b", check) for db in init_databases()), \
        "healthy only once every database exists"


def test_mlflow_serves_artifacts_from_a_named_volume(compose):
    service = compose["services"]["mlflow-server"]
    cmd = command(service)
    assert "--serve-artifacts" in cmd
    destination = option(cmd, "--artifacts-destination")
    assert any(v.split(":")[1] == destination and v.split(":")[0] in compose["volumes"] for v in service["volumes"])


def test_named_volumes_are_declared_and_used(compose):
    used = {str(v).split(":")[0] for s in compose["services"].values() for v in s.get("volumes", [])}
    named = {v for v in used if not v.startswith((".", "/"))}
    assert named == set(compose["volumes"])


def test_workers_poll_the_pool_and_queues_of_the_deployments(compose, prefect_yaml):
    queues = {d["name"]: d["work_pool"]["work_queue_name"] for d in prefect_yaml["deployments"]}
    assert {d["work_pool"]["name"] for d in prefect_yaml["deployments"]} == {stack.WORK_POOL}
    polled = set()
    for name in WORKERS:
        cmd = command(compose["services"][name])
        assert cmd[:3] == ["prefect", "worker", "start"]
        assert option(cmd, "--pool") == stack.WORK_POOL and option(cmd, "--type") == "process"
        assert "--with-healthcheck" in cmd and "8080/health" in " ".join(compose["services"][name]["healthcheck"]
                                                                        ["test"])
        assert int(option(cmd, "--limit")) >= 1
        polled |= set(options(cmd, "--work-queue"))
    assert polled == set(queues.values()) == {stack.SWEEP_QUEUE, stack.VARIANT_QUEUE}
    assert queues[VARIANT_DEPLOYMENT.split("/")[1]] == stack.VARIANT_QUEUE
    assert options(command(compose["services"]["variant-worker"]), "--work-queue") == [stack.VARIANT_QUEUE], \
        "a sweep waiting for its variants must not hold a variant worker's slot"


def test_the_workers_share_one_work_folder_and_the_image_holds_the_code_where_the_pull_step_looks(compose,
                                                                                               prefect_yaml):
    dockerfile = (ROOT / "Dockerfile").read_text()
    workdir = re.search(r"^WORKDIR (\S+)", dockerfile, re.M).group(1)
    [pull] = prefect_yaml["pull"]
    assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $SLMOPS_REPO }}"
    for name in WORKERS:
        service = compose["services"][name]
        env = env_of(service)
        assert env["SLMOPS_REPO"] == workdir
        home = env["SLMOPS_HOME"]
        assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"].startswith(home)
        assert any(v.endswith(f":{home}") and v.split(":")[0] in compose["volumes"] for v in service["volumes"])
    for folder in ("slmops", "ops", "flows", "tasks", "configs", "deployments"):
        assert re.search(rf"^COPY {folder}/ {folder}/$", dockerfile, re.M), f"the image lacks {folder}/"


def test_deploy_gets_the_schedule_and_spec_prefect_yaml_reads(compose, prefect_yaml):
    text = stack.PREFECT_FILE.read_text()
    wanted = set(re.findall(r"\{\{ \$(\w+) \}\}", text)) - {"SLMOPS_REPO"}
    assert wanted == {"SLMOPS_SWEEP_CRON", "SLMOPS_SWEEP_SPEC"}
    env = env_of(compose["services"]["deploy"])
    assert wanted <= set(env)
    assert (ROOT / env["SLMOPS_SWEEP_SPEC"]).is_file()
    from prefect.client.schemas.schedules import CronSchedule

    CronSchedule(cron=env["SLMOPS_SWEEP_CRON"])  # raises on a bad cron
    assert command(compose["services"]["deploy"])[:4] == ["python", "-m", "ops.stack", "deploy"]


def test_every_variable_of_the_compose_file_is_in_env_example_and_none_is_unused(raw):
    text = (ROOT / "docker-compose.yml").read_text()
    used = {m.group(1) for m in _VAR.finditer(text)}
    assert used == set(env_example()), f"only in compose: {used - set(env_example())}; " \
                                       f"only in .env.example: {set(env_example()) - used}"


def test_prefect_yaml_entrypoints_import_and_name_the_flows_the_code_expects(prefect_yaml):
    from prefect.flows import load_flow_from_entrypoint

    names = {}
    for deployment in prefect_yaml["deployments"]:
        path, func = deployment["entrypoint"].split(":")
        assert (ROOT / path).is_file()
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        names[f"{flow.name}/{deployment['name']}"] = (flow, deployment)
    assert VARIANT_DEPLOYMENT in names, "flows/scaleout.py submits to a deployment prefect.yaml does not make"
    for full_name, (flow, deployment) in names.items():
        params = set(inspect.signature(flow.fn).parameters)
        given = set(deployment.get("parameters", {}))
        for trigger in deployment.get("triggers", []):
            given |= set(trigger.get("parameters", {}))
        assert given <= params, f"{full_name}: unknown parameters {given - params}"
        required = {n for n, p in inspect.signature(flow.fn).parameters.items() if p.default is p.empty}
        if full_name != VARIANT_DEPLOYMENT:  # its parameters come from each run_deployment call
            assert required <= given, f"{full_name}: nothing sets {required - given}"


def test_the_checkpoint_trigger_matches_the_event_slmops_publish_emits(prefect_yaml, tiny_model):
    from prefect.server.events.schemas.automations import EventTrigger
    from prefect.server.events.schemas.events import ReceivedEvent

    [triggered] = [d for d in prefect_yaml["deployments"] if d.get("triggers")]
    [trigger] = triggered["triggers"]
    assert trigger["parameters"] == {"checkpoint_path": "{{ event.payload.path }}"}
    server_trigger = EventTrigger(match=trigger["match"], expect=set(trigger["expect"]), posture="Reactive",
                                  threshold=1)
    event = events.checkpoint_event(tiny_model)
    assert server_trigger.covers(ReceivedEvent(**event.model_dump()))
    assert event.payload["path"] == str(tiny_model)
    other = events.checkpoint_event(tiny_model).model_copy(update={"event": "checkpoint.deleted"})
    assert not server_trigger.covers(ReceivedEvent(**other.model_dump()))


def test_the_crash_automation_acts_on_the_heartbeats_the_workers_send(compose):
    automations = yaml.safe_load(stack.AUTOMATIONS_FILE.read_text())["automations"]
    from prefect.events.schemas.automations import AutomationCore

    [crash] = [AutomationCore.model_validate(a) for a in automations]
    beat = int(env_of(compose["services"]["sweep-worker"])["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"])
    assert beat == stack.HEARTBEAT_S
    assert crash.trigger.within.total_seconds() >= 3 * beat, "a slow heartbeat must not crash a live run"
    assert "prefect.flow-run.heartbeat" in crash.trigger.after


def test_compose_refuses_to_start_while_a_credential_is_unset_or_left_as_in_env_example(raw):
    text = (ROOT / "docker-compose.yml").read_text()
    example = env_example()
    for name in CREDENTIALS:
        assert example[name] == "", f".env.example must leave {name} empty: compose accepts any value it shows"
        uses = re.findall(rf"\$\{{{name}(:?[-?]?)[^}}]*\}}", text)
        assert uses and set(uses) == {":?"}, f"every use of {name} must be ${{{name}:?...}}: {uses}"
        with pytest.raises(AssertionError, match=rf"\${{{name}}} is required \(set {name} in .env"):
            interpolate(raw, {**example, **{k: v for k, v in SECRETS.items() if k != name}})
    with pytest.raises(AssertionError, match="is required"):
        interpolate(raw, example)  # .env copied from .env.example and not edited


def test_each_service_gets_only_the_credentials_it_needs(compose):
    """The workers hold the pipeline's MLflow password, never the admin's; the watcher only Prefect's string."""
    holders = {name: {k for k, v in SECRETS.items() if v in " ".join(env_of(service).values())}
               for name, service in compose["services"].items()}
    auth, admin, pipeline = ("SLMOPS_PREFECT_AUTH_STRING", "SLMOPS_MLFLOW_ADMIN_PASSWORD", "SLMOPS_MLFLOW_PASSWORD")
    assert holders == {
        "postgres": {"POSTGRES_PASSWORD"},
        "prefect-server": {"POSTGRES_PASSWORD", auth},
        "mlflow-server": {"POSTGRES_PASSWORD", admin, "SLMOPS_MLFLOW_SECRET_KEY"},
        "deploy": {auth, admin, pipeline},
        "sweep-worker": {auth, pipeline},
        "variant-worker": {auth, pipeline},
        "checkpoint-watcher": {auth},
    }
    for name, service in compose["services"].items():
        cmd = " ".join(command(service)) if service.get("command") else ""
        assert not [k for k, v in SECRETS.items() if v in cmd], f"{name}: a secret on its command line (ps shows it)"


def test_the_prefect_server_requires_the_auth_string_its_clients_send(compose):
    services = compose["services"]
    required = env_of(services["prefect-server"])["PREFECT_SERVER_API_AUTH_STRING"]
    assert required == SECRETS["SLMOPS_PREFECT_AUTH_STRING"]
    for name in (*WORKERS, "checkpoint-watcher"):
        assert env_of(services[name])["PREFECT_API_AUTH_STRING"] == required, f"{name} would get HTTP 401"
    assert env_of(services["deploy"])["SLMOPS_PREFECT_AUTH_STRING"] == required
    health = " ".join(services["prefect-server"]["healthcheck"]["test"])
    assert "/api/health" in health, "the only API path Prefect serves without the auth string"


def test_the_mlflow_server_runs_basic_auth_and_the_workers_log_in_as_the_pipelines_user(compose):
    service = compose["services"]["mlflow-server"]
    cmd, env = command(service), env_of(service)
    assert option(cmd, "--app-name") == "basic-auth"
    dockerfile = (ROOT / service["build"]["context"] / "Dockerfile").read_text()
    assert 'mlflow[auth]' in dockerfile, "the basic-auth app needs Flask-WTF"
    [mount] = [v for v in service["volumes"] if v.split(":")[1] == env["MLFLOW_AUTH_CONFIG_PATH"]]
    ini = configparser.ConfigParser()
    ini.read(ROOT / mount.split(":")[0])
    config = dict(ini["mlflow"])
    assert config["default_permission"] == stack.MLFLOW_DEFAULT_PERMISSION == "NO_PERMISSIONS"
    assert "admin_password" not in config, "the admin's password comes from the environment, never a file"
    auth_db = urlparse(config["database_uri"])
    assert (auth_db.scheme, auth_db.hostname, auth_db.port, auth_db.path.strip("/")) == (
        "postgresql+psycopg", "postgres", 5432, stack.MLFLOW_AUTH_DB)
    assert auth_db.username is None and auth_db.password is None, "user and password come as PGUSER/PGPASSWORD"
    assert env["PGUSER"] == env_of(compose["services"]["postgres"])["POSTGRES_USER"]
    assert env["MLFLOW_AUTH_ADMIN_USERNAME"] == env_example()["SLMOPS_MLFLOW_ADMIN_USER"]
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == SECRETS["SLMOPS_MLFLOW_ADMIN_PASSWORD"]
    deploy = env_of(compose["services"]["deploy"])
    for name in WORKERS:
        worker = env_of(compose["services"][name])
        assert worker["MLFLOW_TRACKING_USERNAME"] == deploy["SLMOPS_MLFLOW_USER"] != deploy["SLMOPS_MLFLOW_ADMIN_USER"]
        assert worker["MLFLOW_TRACKING_PASSWORD"] == deploy["SLMOPS_MLFLOW_PASSWORD"]
    assert compose["services"]["deploy"]["depends_on"]["mlflow-server"]["condition"] == "service_healthy", \
        "deploy creates the pipeline's user: MLflow must answer first"


def test_workers_take_checkpoints_only_from_the_mounted_checkpoints_folder(compose):
    for name in (*WORKERS, "checkpoint-watcher"):
        service = compose["services"][name]
        root = env_of(service)[events.ALLOWED_ROOTS_VAR]
        assert any(v.split(":")[1] == root for v in service["volumes"]), f"{name}: {root} is not mounted"
    assert command(compose["services"]["checkpoint-watcher"])[2] == root


def test_the_image_holds_no_credential(compose):
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith(("ENV", "ARG", " ")):
            assert not re.search(r"PASSWORD|AUTH_STRING|SECRET", line), f"a credential in the image: {line}"
    copied = re.findall(r"^COPY (.+) \S+$", dockerfile, re.M)
    sources = {src for line in copied for src in line.split()}
    assert not sources & {".", "./", ".env"}, f"the image must not copy the build context whole: {copied}"


def test_the_local_override_builds_every_service_from_the_debootstrap_base(compose):
    """docker-compose.local.yml (python -m ops.compose, tests/ops/test_compose_up.py runs it): every service's
    image built here, FROM the base image ops.compose makes, through a Dockerfile that takes the base as an
    argument whose default is what a team pulls."""
    from ops import compose as local_compose

    local = yaml.safe_load((ROOT / "docker-compose.local.yml").read_text())
    assert set(local["services"]) == set(compose["services"])
    for name, service in local["services"].items():
        assert service["image"].startswith("localhost/"), name
        assert service["build"]["args"]["BASE_IMAGE"] == f"${{SLMOPS_BASE_IMAGE:-{local_compose.BASE_IMAGE}}}"
        dockerfile = (ROOT / service["build"]["context"] / service["build"].get("dockerfile", "Dockerfile"))
        text = dockerfile.read_text()
        default = re.search(r"^ARG BASE_IMAGE=(\S+)", text, re.M)
        assert default and not default.group(1).startswith("localhost/"), f"{dockerfile}: the default is pulled"
        assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M), dockerfile
    assert {b.image for b in local_compose.image_builds()} == {s["image"].replace("${SLMOPS_VERSION:-0.1.0}", "0.1.0")
                                                               for s in local["services"].values()}
