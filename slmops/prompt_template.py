"""Derive Foundry Local's ``inference_model.json`` from a model folder's own chat template.

    slmops sweep configs/demo.yaml --out out/demo     (written into every variant's folder)
    slmops foundry export --to DIR                    (written into every exported model's folder)

The Foundry Local CLI (Windows, macOS) reads ``inference_model.json``: a ``Name``, a ``PromptTemplate`` whose
``system``/``user``/``assistant``/``prompt`` strings hold a ``{Content}`` placeholder, and generation defaults. The
parts are found by *rendering* the model's chat template with sentinel contents and diffing the renders, never
from a table of known families, so a fine-tuned model with its own template gets its own parts.

What the parts mean (the composition :meth:`ChatFormat.render` implements and the tests check against the
template's own renders, for ChatML, Phi-3, Llama 3, Mistral and Gemma):

* ``prompt`` is the whole text for a conversation of one user message, generation prompt included: exactly what
  ``apply_chat_template([user], add_generation_prompt=True)`` renders, as Microsoft's recipe for Foundry Local
  builds it. So it keeps a template's leading BOS token and any default system prompt it injects (Qwen2's "You are a
  helpful assistant."), and the newline after the assistant header: the model was trained on those.
  For ChatML without a default system prompt this is the user turn followed by the generation prompt. (The
  tutorial's and Foundry's catalog's ChatML parts drop the newlines between turns and after ``assistant``; these
  parts keep exactly what the template renders.)
* ``user`` and ``assistant`` are one turn each as rendered later in a conversation, separators included, so
  turns concatenate.
* ``system``, when the template renders a system turn of its own (ChatML, Phi-3, Llama 3): the text that opens a
  conversation with a system message, BOS included; a conversation with a system message is
  ``system + user + generation prompt``, the generation prompt being what ``prompt`` adds after the user turn.
* ``system``, when the template folds the system message into the first user turn (Mistral, Llama 2): the prefix
  it puts before the user's text (``"{Content}\\n\\n"`` for Mistral); the conversation is ``prompt`` filled with that
  prefix plus the user's text.
* ``system`` when the template refuses a system message (Gemma 1 and 2 raise "System role not supported"):
  ``"{Content}\\n\\n"`` folded the same way, which is Google's advice for Gemma and what Gemma 3's template does.

BOS: kept where the template puts it. Verified on this stack: onnxruntime-genai 0.14.1's ``Tokenizer.encode`` and
Foundry Local 2.2.1's ``ChatSession`` add no BOS of their own (a Llama 3 prompt is counted with exactly the template's
one BOS; the same template without ``bos_token`` gives one token fewer), so dropping it would lose it.

Foundry Local 2.2.1's in-process runtime ignores ``inference_model.json`` and applies the folder's chat template
itself (verified: a deliberately wrong PromptTemplate changes nothing); the file is for the CLI's cache.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from slmops.adapters.genai import genai_config
from slmops.errors import InputError
from slmops.files import write_json

CONTENT = "{Content}"
INFERENCE_MODEL_JSON = "inference_model.json"

# Sentinel message contents: plain ASCII words without whitespace, so templates that `trim` contents keep them,
# and unlike anything a template emits on its own.
_SYSTEM = "SLMOPSxSYSTEMx5c1"
_USER_1 = "SLMOPSxUSERxONEx5c1"
_ASSISTANT_1 = "SLMOPSxASSISTANTxONEx5c1"
_USER_2 = "SLMOPSxUSERxTWOx5c1"

# What slmops writes when the template has no system role at all (see the module docstring).
_FOLDED_SYSTEM_FALLBACK = CONTENT + "\n\n"

# Generation defaults written when neither the argument nor the folder says otherwise (transformers' defaults).
_DEFAULT_MODEL_CONFIG = {"temperature": 1.0, "top_p": 1.0, "repetition_penalty": 1.0}

SystemStyle = Literal["turn", "folded", "unsupported"]


@dataclass(frozen=True)
class ChatFormat:
    """The per-role parts of a chat template, and how they compose back into what the template renders."""

    system: str
    user: str
    assistant: str
    prompt: str
    generation: str
    system_style: SystemStyle
    bos: str
    default_system: str

    def prompt_template(self) -> dict[str, str]:
        """The ``PromptTemplate`` object of ``inference_model.json``."""
        return {"system": self.system, "user": self.user, "assistant": self.assistant, "prompt": self.prompt}

    def render(self, user: str, system: str | None = None) -> str:
        """The text of a one-message conversation (with an optional system message), built from the parts."""
        if system is None:
            return _fill(self.prompt, user)
        if self.system_style == "turn":
            return _fill(self.system, system) + _fill(self.user, user) + self.generation
        return _fill(self.prompt, _fill(self.system, system) + user)


def _fill(template: str, content: str) -> str:
    return template.replace(CONTENT, content, 1)


# What a tokenizer is read from (config.json too: AutoTokenizer picks the tokenizer class by model_type)
_TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json", "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt",
                    "tokenizer.model")
# Loaded tokenizers by the content of those files: the variants of a sweep share one tokenizer, and loading it
# costs about 0.6 s a time on the demo model
_LOADED: dict[str, Any] = {}


def _tokenizer_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for name in _TOKENIZER_FILES:
        file = path / name
        if file.is_file():
            digest.update(name.encode() + b"\0" + hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer as the runtime reads it: tokenizer.json, with tokenizer_config.json's special tokens and
    chat template (PreTrainedTokenizerFast); AutoTokenizer only for a folder without tokenizer.json.

    AutoTokenizer picks its class through transformers' config classes, which import torch: 1.6 s on the demo model
    against 0.7 s, paid by a sweep that converts nothing (a warm re-run) at registration, by every measuring process
    and by the one that teacher-forces the baseline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub look-up here only waits: nothing can be downloaded
    if (Path(folder) / "tokenizer.json").is_file():
        from transformers import PreTrainedTokenizerFast  # not AutoTokenizer's module: importing it imports torch

        return PreTrainedTokenizerFast.from_pretrained(str(folder))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder))


def prompt_ids(tokenizer: Any, prompt: str) -> list[int]:
    """The token ids the runtime is given for one user message: the chat template rendered with its generation
    prompt, then tokenized as one string (its special tokens are in the text already)."""
    text = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                         tokenize=False)
    return tokenizer.encode(text, add_special_tokens=False)


def _load_tokenizer(tokenizer_or_dir: Any) -> tuple[Any, str]:
    """The tokenizer and a name for messages: load it when given a folder (once per content, per process)."""
    if isinstance(tokenizer_or_dir, (str, os.PathLike)):
        path = Path(tokenizer_or_dir)
        if not path.is_dir():
            raise InputError(f"{path}: no such model folder; need a folder with tokenizer files and a chat template")
        key = _tokenizer_digest(path)
        if key in _LOADED:
            return _LOADED[key], str(path)
        try:
            _LOADED[key] = load_tokenizer(path)
        except (OSError, ValueError) as exc:
            raise InputError(
                f"{path}: cannot load its tokenizer ({exc}); need tokenizer.json and tokenizer_config.json"
            ) from exc
        return _LOADED[key], str(path)
    return tokenizer_or_dir, str(getattr(tokenizer_or_dir, "name_or_path", "") or type(tokenizer_or_dir).__name__)


def _special_strings(tokenizer: Any) -> list[str]:
    """Every special or added token's text: a boundary between parts never falls inside one."""
    texts = set(getattr(tokenizer, "all_special_tokens", []) or [])
    for added in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        texts.add(str(getattr(added, "content", added)))
    return sorted((t for t in texts if len(t) > 1), key=len, reverse=True)


def _common_prefix(a: str, b: str, specials: list[str]) -> int:
    """Length of the longest common prefix of a and b, backed off so that it does not end inside a special token."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    # Phi-3 ends a finished conversation with <|endoftext|> where a generation prompt starts <|assistant|>: the
    # shared "<|" is not a boundary.
    while True:
        starts = [
            start
            for text in (a, b)
            for token in specials
            if -1 < (start := text.find(token, max(0, n - len(token) + 1))) < n
        ]
        if not starts:
            return n
        n = min(starts)


def derive_chat_format(tokenizer_or_dir: Any) -> ChatFormat:
    """Split the model's chat template into per-role parts by rendering it with sentinel messages."""
    tokenizer, where = _load_tokenizer(tokenizer_or_dir)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(
            f"{where}: the tokenizer has no chat template; Foundry Local needs one to build prompts: add the template "
            "the model was fine-tuned with (tokenizer_config.json 'chat_template' or chat_template.jinja)"
        )
    from jinja2 import TemplateError

    def render(messages: list[tuple[str, str]], generation: bool) -> str:
        conversation = [{"role": role, "content": content} for role, content in messages]
        return tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=generation)

    def fail(reason: str) -> InputError:
        return InputError(
            f"{where}: the chat template cannot be split into per-role parts ({reason}); slmops needs a template "
            "that renders each message as a turn of its own, like ChatML, Phi-3, Llama 3, Mistral or Gemma"
        )

    one = [("user", _USER_1)]
    three = [("user", _USER_1), ("assistant", _ASSISTANT_1), ("user", _USER_2)]
    try:
        prompt_1 = render(one, True)
        closed_1 = render(one, False)
        closed_2 = render(one[:1] + [("assistant", _ASSISTANT_1)], False)
        closed_3 = render(three, False)
        prompt_3 = render(three, True)
    except TemplateError as exc:
        raise fail(f"rendering a user/assistant conversation raised: {exc}") from exc
    if prompt_1.count(_USER_1) != 1:
        raise fail("a user message does not appear exactly once in the prompt")

    specials = _special_strings(tokenizer)
    # A conversation rendered without a generation prompt may end with a closing marker (Phi-3's eos); with one it
    # ends with the assistant header. What they share is the conversation so far.
    cut = _common_prefix(closed_1, prompt_1, specials)
    base_1, closing, generation = closed_1[:cut], closed_1[cut:], prompt_1[cut:]
    if not (closed_2.endswith(closing) and closed_3.endswith(closing)):
        raise fail("conversations of different lengths do not end alike")
    base_2 = closed_2[: len(closed_2) - len(closing)]
    base_3 = closed_3[: len(closed_3) - len(closing)]
    if not (base_2.startswith(base_1) and base_3.startswith(base_2)):
        raise fail("adding a message changes how earlier messages render")
    if prompt_3 != base_3 + generation:
        raise fail("the generation prompt differs between conversations")
    assistant_turn, user_turn = base_2[len(base_1) :], base_3[len(base_2) :]
    if assistant_turn.count(_ASSISTANT_1) != 1 or user_turn.count(_USER_2) != 1:
        raise fail("an assistant or user message does not render as one turn")
    assistant, user = assistant_turn.replace(_ASSISTANT_1, CONTENT), user_turn.replace(_USER_2, CONTENT)

    first_user = _fill(user, _USER_1)
    if not base_1.endswith(first_user):
        raise fail("the first user turn renders differently from later ones")
    opener = base_1[: len(base_1) - len(first_user)]
    bos_token = getattr(tokenizer, "bos_token", None) or ""
    bos = bos_token if bos_token and opener.startswith(bos_token) else ""
    prompt = prompt_1.replace(_USER_1, CONTENT)

    system, style = _derive_system(render, prompt_1, opener, bos, first_user + generation, fail)
    return ChatFormat(
        system=system,
        user=user,
        assistant=assistant,
        prompt=prompt,
        generation=generation,
        system_style=style,
        bos=bos,
        default_system=opener[len(bos) :],
    )


def _derive_system(render, prompt_1: str, opener: str, bos: str, user_and_generation: str, fail):
    """The system part and how the template places a system message: a turn, folded into the user turn, or none."""
    from jinja2 import TemplateError

    try:
        with_system = render([("system", _SYSTEM), ("user", _USER_1)], True)
    except TemplateError:
        # Gemma 1/2 raise "System role not supported"
        return _FOLDED_SYSTEM_FALLBACK, "unsupported"
    if _SYSTEM not in with_system:
        # a template that drops system messages: folding keeps the instructions in front of the model
        return _FOLDED_SYSTEM_FALLBACK, "unsupported"
    if with_system.count(_SYSTEM) != 1:
        raise fail("a system message appears more than once")

    head = with_system[: len(with_system) - len(user_and_generation)]
    if with_system.endswith(user_and_generation) and head.startswith(bos) and _SYSTEM in head:
        return bos + head[len(bos) :].replace(_SYSTEM, CONTENT), "turn"

    before, after = prompt_1.split(_USER_1)
    if with_system.startswith(before) and with_system.endswith(after):
        middle = with_system[len(before) : len(with_system) - len(after)]
        if middle.endswith(_USER_1) and _SYSTEM in middle[: -len(_USER_1)]:
            return middle[: -len(_USER_1)].replace(_SYSTEM, CONTENT), "folded"
    raise fail("a system message is neither a turn of its own nor a prefix of the first user message")


def derive_prompt_template(tokenizer_or_dir: Any) -> dict[str, str]:
    """The ``PromptTemplate`` (system, user, assistant, prompt with ``{Content}``) of a model's own chat template."""
    return derive_chat_format(tokenizer_or_dir).prompt_template()


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: unreadable JSON ({exc}); need a valid file or none") from exc
    return data if isinstance(data, dict) else {}


def model_config_from_folder(model_dir: Path) -> dict[str, Any]:
    """Generation defaults from generation_config.json and genai_config.json, with transformers' defaults."""
    generation = _read_json(model_dir / "generation_config.json")
    genai = genai_config(model_dir)
    search = genai.get("search", {}) if isinstance(genai.get("search"), dict) else {}
    context_length = (genai.get("model") or {}).get("context_length")

    config: dict[str, Any] = {}
    # max_length: the runtime's own limit first; generation_config.json often carries transformers' default of 20
    for value in (search.get("max_length"), generation.get("max_length"), context_length):
        if isinstance(value, int) and value > 0:
            config["max_length"] = value
            break
    # sampling: the fine-tuner's generation_config.json first; ModelBuilder 0.14.1 does not copy
    # repetition_penalty into genai_config.json (seen: 1.05 became 1.0)
    for key, default in _DEFAULT_MODEL_CONFIG.items():
        value = generation.get(key, search.get(key, default))
        config[key] = float(value) if isinstance(value, (int, float)) else default
    return config


def write_inference_model_json(model_dir: Path | str, name: str, model_config: dict[str, Any] | None = None) -> Path:
    """Write ``inference_model.json`` (Name, PromptTemplate, ModelConfig) into model_dir, atomically."""
    model_dir = Path(model_dir)
    template = derive_prompt_template(model_dir)
    config = model_config_from_folder(model_dir)
    config.update({k: v for k, v in (model_config or {}).items() if v is not None})
    document = {"Name": name, "PromptTemplate": template, "ModelConfig": config}
    return write_json(model_dir / INFERENCE_MODEL_JSON, document)
