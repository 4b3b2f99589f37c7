"""`slmops publish` and `slmops watch`: the checkpoint event reaches the server, or the command says why not (a
folder outside SLMOPS_ALLOWED_MODEL_ROOTS, when set, among the reasons).

    .venv/bin/python -m pytest tests/stack/test_events.py     # against this session's test Prefect server
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ops.events import EVENT, PATH_LABEL, RESOURCE_PREFIX, STATE_FILE, publish_checkpoint, watch
from ops.stack import free_port
from slmops.checkpoints import ALLOWED_ROOTS_VAR
from slmops.errors import InputError, SlmopsError


def _cli_module() -> str:
    """slmops's own CLI once it has the commands (slmops.cli calls ops.events.add_cli), else ops.events."""
    from slmops.cli import build_parser

    commands = build_parser()._subparsers._group_actions[0].choices
    return "slmops.cli" if "publish" in commands else "ops.events"


@pytest.fixture
def dead_api() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


@pytest.fixture
def test_server() -> str:
    """This session's test Prefect server (tests/conftest.py)."""
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def server_events(api_url: str, event_id: str, timeout_s: float = 20) -> list:
    """The event with this id as the server stored it (the server writes events in batches: poll)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            found = client.read_events(filter=EventFilter(id=EventIDFilter(id=[event_id])), limit=10).events
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def test_publish_returns_once_the_server_has_the_event_with_the_absolute_path(tiny_model, test_server, tmp_path,
                                                                              monkeypatch):
    monkeypatch.chdir(tiny_model.parent)
    sent = publish_checkpoint(Path(tiny_model.name), api_url=test_server)
    assert sent["path"] == str(tiny_model)
    [event] = server_events(test_server, sent["event_id"])
    assert event.event == EVENT
    assert event.payload["path"] == str(tiny_model)
    assert event.resource[PATH_LABEL] == str(tiny_model)
    assert event.resource.id.startswith(RESOURCE_PREFIX)


def test_publish_fails_with_the_address_when_the_prefect_server_is_unreachable(tiny_model, dead_api):
    started = time.monotonic()
    with pytest.raises(SlmopsError, match=r"the Prefect server at .* \(PREFECT_API_URL\) is unreachable"):
        publish_checkpoint(tiny_model, api_url=dead_api)
    assert time.monotonic() - started < 15


def test_publish_command_exits_non_zero_with_one_line_when_the_server_is_unreachable(tiny_model, dead_api):
    env = {**os.environ, "PREFECT_API_URL": dead_api}
    done = subprocess.run([sys.executable, "-m", _cli_module(), "publish", str(tiny_model)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"error: the Prefect server at {dead_api} (PREFECT_API_URL) is unreachable ([Errno 111] Connection refused); "
        "start it (python -m ops.stack up) or point PREFECT_API_URL at its /api address"]


def test_publish_without_prefect_api_url_names_the_variable(tiny_model, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_HOME"] = str(tmp_path / "empty-prefect-home")  # no profile that names a server either
    done = subprocess.run([sys.executable, "-m", _cli_module(), "publish", str(tiny_model)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1
    assert "PREFECT_API_URL is not set" in done.stderr


def test_publish_refuses_a_folder_that_is_not_a_model_before_contacting_anything(tmp_path, dead_api):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InputError, match="no weights found"):
        publish_checkpoint(tmp_path, api_url=dead_api)


def test_deploy_fails_with_the_address_when_the_prefect_server_is_unreachable(dead_api):
    done = subprocess.run([sys.executable, "-m", "ops.stack", "deploy", "--api-url", dead_api],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip() == (f"error: the Prefect server at {dead_api} is unreachable; start it (python -m "
                                   "ops.stack up) or set PREFECT_API_URL to its /api address")


def _checkpoints(root: Path, tiny_model: Path, *names: str) -> list[Path]:
    for name in names:
        shutil.copytree(tiny_model, root / name)
    return [root / n for n in names]


def test_watch_publishes_each_complete_checkpoint_once_even_across_restarts(tiny_model, test_server, tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    first, second = _checkpoints(folder, tiny_model, "step-100", "step-200")
    (folder / "step-300").mkdir()  # a checkpoint whose copy has only begun: not a model folder yet
    (folder / "step-300" / "config.json").write_text((tiny_model / "config.json").read_text())

    assert watch(folder, interval_s=0.2, once=True, api_url=test_server) == [str(first), str(second)]
    assert watch(folder, interval_s=0.2, once=True, api_url=test_server) == [], "the state file remembers"
    assert (folder / STATE_FILE).is_file()

    for item in tiny_model.iterdir():  # the copy of step-300 completes
        shutil.copy2(item, folder / "step-300" / item.name)
    assert watch(folder, interval_s=0.2, once=True, api_url=test_server) == [str(folder / "step-300")]


def test_watch_waits_while_a_checkpoint_is_still_being_written(tiny_model, test_server, tmp_path):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    [busy] = _checkpoints(folder, tiny_model, "step-100")
    stop = threading.Event()

    def keep_writing() -> None:
        with open(busy / "trainer_state.json", "a") as f:
            while not stop.is_set():
                f.write("{}\n")
                f.flush()
                time.sleep(0.05)

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        assert watch(folder, interval_s=1.0, once=True, api_url=test_server) == []
    finally:
        stop.set()
        writer.join()
    assert watch(folder, interval_s=0.2, once=True, api_url=test_server) == [str(busy)]


def test_watch_once_fails_clearly_when_the_server_is_unreachable(tiny_model, tmp_path, dead_api):
    _checkpoints(tmp_path, tiny_model, "step-100")
    with pytest.raises(SlmopsError, match="is unreachable"):
        watch(tmp_path, interval_s=0.2, once=True, api_url=dead_api)
    assert not (tmp_path / STATE_FILE).exists(), "nothing is recorded as published"


def test_publish_refuses_a_folder_outside_the_allowed_roots_before_contacting_anything(tiny_model, tmp_path,
                                                                                     dead_api, monkeypatch):
    monkeypatch.setenv(ALLOWED_ROOTS_VAR, str(tmp_path))
    link = tmp_path / "step-1"
    link.symlink_to(tiny_model, target_is_directory=True)  # inside by its name, outside by what it points at
    with pytest.raises(InputError, match=f"{tiny_model} is outside the folders checkpoints may come from"):
        publish_checkpoint(link, api_url=dead_api)


def test_watch_refuses_a_folder_outside_the_allowed_roots_and_skips_a_symlink_out(tiny_model, test_server,
                                                                                tmp_path, monkeypatch):
    folder = tmp_path / "ckpts"
    folder.mkdir()
    monkeypatch.setenv(ALLOWED_ROOTS_VAR, str(folder))
    with pytest.raises(InputError, match="is outside the folders checkpoints may come from"):
        watch(tmp_path, interval_s=0.2, once=True, api_url=test_server)
    [inside] = _checkpoints(folder, tiny_model, "step-100")
    (folder / "step-200").symlink_to(tiny_model, target_is_directory=True)
    said: list[str] = []
    assert watch(folder, interval_s=0.2, once=True, api_url=test_server, log=said.append) == [str(inside)]
    assert [line for line in said if line.startswith("not published")] == [
        f"not published: {folder / 'step-200'} (resolves to {tiny_model}) is outside the folders checkpoints may "
        f"come from ({ALLOWED_ROOTS_VAR}={folder}): refused before any work"]
