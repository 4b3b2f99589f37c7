"""Foundry Local, in process: register variants in its local catalog, smoke-test, chat, list and remove them.

    slmops foundry list | slmops foundry chat ID PROMPT | slmops foundry remove ID
    slmops sweep configs/demo.yaml --out out/demo      (registers and smoke-tests every succeeded variant)

The only module that imports ``foundry_local_sdk`` (2.2.1, which runs the real Foundry Local runtime in this
process). What was verified about it, and designed around here:

* ``FoundryLocalManager.initialize`` is a process-wide singleton: a second call raises, even for the same folder;
  after ``close()`` a new one may open another folder. So one cache folder per process: :class:`FoundryLocal`
  objects for the same folder share the manager, a different folder raises :class:`ToolchainError`.
* ``Catalog(LOCAL).register_model(path, "<name>:<version>", ModelInfoBuilder)`` needs a folder holding
  ``genai_config.json`` and the ``task`` property; a taken id raises ("model_id is already registered").
  Registrations persist in ``<cache>/foundry.local.modelinfo.json`` (guarded by Foundry's own lock file), are seen
  by a new process and by managers already open in other processes, and the folder is never copied or deleted.
* ``unregister_model(x)`` takes an id *or an alias*: an alias unregisters every version. slmops only ever passes
  full ids. A loaded model cannot be unregistered (unload first); a registration whose folder was deleted is still
  listed (``is_cached`` False), fails to load, and unregisters fine.
* Extra string properties set on the ``ModelInfoBuilder`` are kept (``precision``, ``quantization``,
  ``slmops_content_hash`` here); ``device_type``/``execution_provider`` fill ``info.runtime``.
* ``ChatSession`` applies the folder's own chat template (not ``inference_model.json``), is stateful across turns
  (one session per request here), and ``Request.cancel()`` from another thread stops a request in flight.
* At interpreter exit the SDK shuts its native manager down (an ``atexit`` hook): about 1 s here, whether a model
  was loaded or not. It runs no process of its own, so a process that is done can leave without it
  (:func:`exit_now`).

slmops keeps its own index of what it registered (foundry_index.py).
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

# Load order matters: Foundry Local's genai-core 0.18 library exports the same Oga* symbols as onnxruntime-genai
# 0.14.1 (the builder Olive needs). Loaded first, it makes a later `import onnxruntime_genai` fail with "undefined
# symbol: OgaRequestGetUnseenToken" (seen: a resumed sweep registered cached variants, then Olive failed). Loading
# 0.14.1 first lets both live in one process.
from slmops.adapters import genai

genai.preload_runtime()

from foundry_local_sdk import (  # noqa: E402
    CatalogType,
    ChatSession,
    Configuration,
    FinishReason,
    FoundryLocalException,
    FoundryLocalManager,
    IModel,
    MessageItem,
    ModelInfoBuilder,
    Request,
    RequestOptions,
    SearchOptions,
    TextItem,
)

from slmops.adapters.foundry_index import INDEX_NAME, RegistrationIndex  # noqa: F401 (INDEX_NAME: the file's name)
from slmops.adapters.foundry_stream import ChatStream
from slmops.adapters.watchdog import Watchdog
from slmops.errors import InputError, SpecError, ToolchainError, VariantError
from slmops.files import folder_size
from slmops.names import NAME_RULE, is_valid_name

TASK = "chat-completion"
DEVICE_TYPE = "CPU"
EXECUTION_PROVIDER = "CPUExecutionProvider"

_ID_RE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*):(?P<version>0|[1-9][0-9]*)$")
# registration properties set from fixed values or typed setters; every other metadata key is passed on as a string
_SET_ABOVE = ("task", "display_name", "device_type", "execution_provider", "context_length")
# guards the process-wide manager: Prefect runs tasks in threads
_MANAGER_LOCK = threading.Lock()


def _open_manager(cache_dir: Path, app_name: str) -> FoundryLocalManager:
    """The process's Foundry Local manager for cache_dir: opened on first use, refused for a second folder."""
    with _MANAGER_LOCK:
        manager = FoundryLocalManager.instance
        if manager is None:
            config = Configuration(
                app_name=app_name,
                model_cache_dir=str(cache_dir),
                # keep Foundry's logs and app data with the cache, not in ~/.<app_name>
                logs_dir=str(cache_dir / "logs"),
                app_data_dir=str(cache_dir / "app-data"),
            )
            try:
                FoundryLocalManager.initialize(config)
            except FoundryLocalException as exc:
                raise ToolchainError(f"Foundry Local did not start on {cache_dir}: {exc}") from exc
            return FoundryLocalManager.instance
        opened = Path(manager.config.model_cache_dir).resolve() if manager.config.model_cache_dir else None
        if opened != cache_dir:
            raise ToolchainError(
                f"Foundry Local runs one model cache per process: this process already uses "
                f"{opened or 'its default folder'}, so it cannot also open {cache_dir}; use one cache folder per "
                "process (or close the first with FoundryLocal.close())"
            )
        return manager


def _check_writable(cache_dir: Path) -> None:
    """Fail early, naming the folder, when the cache folder cannot be created or written."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".slmops-write-test-{os.getpid()}-{threading.get_ident()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(
            f"Foundry Local cache folder {cache_dir} is not writable ({exc.strerror or exc}); "
            "choose a folder you can write to"
        ) from exc


class FoundryLocal:
    """Variants registered with Foundry Local's local catalog in one cache folder, and what slmops knows of them."""

    def __init__(self, cache_dir: Path | str, app_name: str = "slmops") -> None:
        self.cache_dir = Path(cache_dir).expanduser().resolve()
        _check_writable(self.cache_dir)
        self._manager = _open_manager(self.cache_dir, app_name)
        self._catalog = self._manager.get_catalog(CatalogType.LOCAL)
        self._index = RegistrationIndex(self.cache_dir)

    # -- registration ----------------------------------------------------------------------------------------------

    def register(self, variant_dir: Path | str, name: str, content_hash: str, metadata: dict[str, Any]) -> str:
        """Register variant_dir as ``<name>:<version>``; same content re-uses its id, new content gets version + 1."""
        if not is_valid_name(name):
            raise SpecError(f"Foundry Local model name {name!r} is not allowed; allowed: {NAME_RULE}")
        variant_dir = Path(variant_dir).expanduser().resolve()
        if not (variant_dir / "genai_config.json").is_file():
            raise VariantError(f"{variant_dir} has no genai_config.json: not an onnxruntime-genai model folder")
        context_length = genai.context_length(variant_dir)
        record = {
            "display_name": metadata.get("display_name") or name,
            "task": TASK,
            "device_type": DEVICE_TYPE,
            "execution_provider": EXECUTION_PROVIDER,
            "context_length": context_length,
            **{k: v for k, v in metadata.items() if k not in ("task", "device_type", "execution_provider")},
        }

        with self._index.locked(exclusive=True) as index:
            entries = index.setdefault(name, [])
            for entry in entries:
                if entry["content_hash"] == content_hash:
                    return self._ensure_registered(f"{name}:{entry['version']}", entries, entry, variant_dir, record,
                                                   content_hash)

            version = max((e["version"] for e in entries), default=0) + 1
            model_id = f"{name}:{version}"
            taken = self._catalog.get_model_variant(model_id)
            if taken is not None and taken.get_string_property("slmops_content_hash") == content_hash:
                # registered by slmops with this content but missing from the index (index deleted): adopt it
                entries.append(RegistrationIndex.entry(version, content_hash, Path(taken.get_path()), record))
                return model_id
            if taken is not None:
                raise VariantError(
                    f"Foundry Local id {model_id} is already registered for {taken.get_path()}, with content slmops "
                    f"did not register (hash {taken.get_string_property('slmops_content_hash') or 'unknown'}); "
                    f"nothing was changed: remove it (slmops foundry remove {model_id}) or use another model name"
                )
            self._foundry_register(variant_dir, model_id, record, content_hash)
            entries.append(RegistrationIndex.entry(version, content_hash, variant_dir, record))
            return model_id

    def _ensure_registered(self, model_id: str, entries: list[dict[str, Any]], entry: dict[str, Any],
                           variant_dir: Path, record: dict[str, Any], content_hash: str) -> str:
        """Same content again: keep its registration, re-creating it if Foundry lost it; when its folder is gone but
        the content is now elsewhere, register that folder under the next version (Foundry Local 2.2.1 gives an empty
        path for a registration whose folder is gone, and does not persist a new path for an id unregistered and
        registered again in one process: seen, other processes kept the old path)."""
        registered = self._catalog.get_model_variant(model_id)
        path = registered.get_path() if registered is not None else ""  # "" once its folder is gone
        if registered is not None and ((path and Path(path).is_dir()) or not variant_dir.is_dir()):
            return model_id
        if registered is None:
            self._foundry_register(variant_dir, model_id, record, content_hash)
            entry["path"] = str(variant_dir)
            return model_id
        self._unload_if_loaded(registered)
        self._catalog.unregister_model(model_id)
        entries.remove(entry)
        name = model_id.rsplit(":", 1)[0]
        version = max((e["version"] for e in entries), default=entry["version"]) + 1
        version = max(version, entry["version"] + 1)
        self._foundry_register(variant_dir, f"{name}:{version}", record, content_hash)
        entries.append(RegistrationIndex.entry(version, content_hash, variant_dir, record))
        return f"{name}:{version}"

    def _foundry_register(self, variant_dir: Path, model_id: str, record: dict[str, Any], content_hash: str) -> None:
        with ModelInfoBuilder() as info:
            info.set_string_property("task", TASK)
            info.set_string_property("display_name", str(record["display_name"]))
            info.set_string_property("device_type", DEVICE_TYPE)
            info.set_string_property("execution_provider", EXECUTION_PROVIDER)
            info.set_string_property("slmops_content_hash", content_hash)
            if record.get("context_length"):
                info.set_int_property("context_length", int(record["context_length"]))
            for key, value in record.items():
                if value is None or key in _SET_ABOVE:
                    continue
                # Foundry keeps arbitrary string properties: structured settings go in as JSON
                text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
                info.set_string_property(key, text)
            try:
                self._catalog.register_model(model_path=str(variant_dir), model_id=model_id, metadata=info)
            except FoundryLocalException as exc:
                raise VariantError(f"Foundry Local refused to register {variant_dir} as {model_id}: {exc}") from exc

    # -- use -------------------------------------------------------------------------------------------------------

    def _model(self, model_id: str) -> IModel:
        """The registered model with this id, or an InputError that says how to find the right one."""
        model = self._catalog.get_model_variant(model_id) if _ID_RE.match(model_id) else None
        if model is None:
            raise InputError(
                f"no Foundry Local model {model_id!r} in {self.cache_dir}; ids look like name:version: "
                "`slmops foundry list` shows them"
            )
        return model

    @staticmethod
    def _unload_if_loaded(model: IModel) -> None:
        if model.is_loaded:
            model.unload()

    def load(self, model_id: str) -> float:
        """Load the model into the runtime (if not loaded); return the seconds it took."""
        model = self._model(model_id)
        started = time.perf_counter()
        if not model.is_loaded:
            model.load()
        return time.perf_counter() - started

    def unload(self, model_id: str) -> None:
        """Unload the model if it is loaded."""
        self._unload_if_loaded(self._model(model_id))

    def smoke_test(self, model_id: str, prompt: str, max_tokens: int = 32, timeout_s: float = 120.0) -> dict[str, Any]:
        """Load the model, send one chat request at temperature 0, unload; passed when an answer arrived within
        timeout_s."""
        model = self._model(model_id)
        result: dict[str, Any] = {
            "passed": False,
            "answer": "",
            "seconds": 0.0,
            "load_seconds": 0.0,
            "error": None,
            "finish_reason": None,
            "prompt_tokens": 0,
            "completion_tokens": 0,
        }
        loaded_here = False
        watchdog: Watchdog | None = None
        started = time.perf_counter()
        try:
            if not model.is_loaded:
                model.load()
                loaded_here = True
            result["load_seconds"] = round(time.perf_counter() - started, 3)
            options = RequestOptions(search=SearchOptions(temperature=0.0, max_output_tokens=max_tokens))
            with ChatSession(model) as session:
                session.set_options(options)
                with Request().add_item(MessageItem.user(prompt)) as request:
                    asked = time.perf_counter()
                    with Watchdog(request, timeout_s) as watchdog:
                        with session.process_request(request) as response:
                            result["answer"] = "".join(_texts(response))
                            finish, usage = response.finish_reason, response.get_usage()
                    took = time.perf_counter() - asked
                    result["seconds"] = round(took, 3)
            result["finish_reason"] = finish.name
            result["prompt_tokens"], result["completion_tokens"] = usage.prompt_tokens, usage.completion_tokens
            if took > timeout_s:  # over the limit, though done before the watchdog's cancel reached it (a tiny model)
                result["error"] = f"timed out after {timeout_s:g} s"
            elif usage.completion_tokens > 0 and finish in (FinishReason.STOP, FinishReason.LENGTH):
                result["passed"] = True
            else:
                result["error"] = f"no answer: finish reason {finish.name}, {usage.completion_tokens} tokens"
        except FoundryLocalException as exc:
            timed_out = watchdog is not None and watchdog.fired
            result["error"] = f"timed out after {timeout_s:g} s" if timed_out else f"{type(exc).__name__}: {exc}"
            result["seconds"] = round(time.perf_counter() - started, 3)
        finally:
            if loaded_here:
                model.unload()
        return result

    def chat_stream(
        self, model_id: str, prompt: str, max_tokens: int = 256, temperature: float | None = None
    ) -> ChatStream:
        """Stream the answer to one user message: one text piece per generated token that has text of its own; once
        drained, the stream says how many tokens were generated and why it stopped."""
        model = self._model(model_id)  # here, so that an unknown id fails before the first piece is asked for
        return ChatStream(model, model_id, prompt, max_tokens, temperature)

    # -- inventory -------------------------------------------------------------------------------------------------

    def list(self) -> list[dict[str, Any]]:
        """Every variant slmops registered here, like ``foundry cache ls``, with whether its folder still exists."""
        with self._index.locked(exclusive=False) as index:
            entries = [(name, dict(e)) for name, versions in index.items() for e in versions]
        rows = []
        for name, entry in sorted(entries, key=lambda ne: (ne[0], ne[1]["version"])):
            path = Path(entry["path"])
            model_id = f"{name}:{entry['version']}"
            rows.append(
                {
                    "id": model_id,
                    "name": name,
                    "version": entry["version"],
                    "display_name": entry["metadata"].get("display_name"),
                    "precision": entry["metadata"].get("precision"),
                    "size_bytes": folder_size(path),
                    "path": str(path),
                    "registered_at": entry["registered_at"],
                    "path_exists": path.is_dir(),
                    "in_catalog": self._catalog.get_model_variant(model_id) is not None,
                    "content_hash": entry["content_hash"],
                }
            )
        return rows

    def remove(self, model_id: str) -> None:
        """Unload, unregister from Foundry Local and forget; works when the folder is gone."""
        if not _ID_RE.match(model_id):
            raise InputError(f"{model_id!r} is not a Foundry Local id (name:version); `slmops foundry list` shows them")
        name, version = model_id.rsplit(":", 1)
        with self._index.locked(exclusive=True) as index:
            versions = index.get(name, [])
            kept = [e for e in versions if e["version"] != int(version)]
            registered = self._catalog.get_model_variant(model_id)
            if registered is None and len(kept) == len(versions):
                raise InputError(
                    f"no Foundry Local model {model_id!r} in {self.cache_dir}; `slmops foundry list` shows the ids"
                )
            if registered is not None:
                try:
                    self._unload_if_loaded(registered)
                    # the full id, never the bare name: unregister_model(alias) drops every version
                    self._catalog.unregister_model(model_id)
                except FoundryLocalException as exc:
                    raise ToolchainError(f"Foundry Local did not unregister {model_id}: {exc}") from exc
            if kept:
                index[name] = kept
            else:
                index.pop(name, None)

    def close(self) -> None:
        """Shut the process's Foundry Local manager down, so that another cache folder can be opened."""
        with _MANAGER_LOCK:
            if FoundryLocalManager.instance is self._manager:
                self._manager.close()


def _texts(response: Any) -> Iterator[str]:
    """The text parts of a non-streaming response (a MessageItem holding TextItems)."""
    for item in response:
        if isinstance(item, TextItem):
            yield item.text
        elif isinstance(item, MessageItem):
            for part in item.parts:
                if isinstance(part, TextItem):
                    yield part.text


def exit_now(code: int) -> NoReturn:
    """End this process at once, without the SDK's shutdown hook (about 1 s): for a process whose work is written
    and whose models are unloaded (the measuring processes). The system frees what the native manager holds."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
