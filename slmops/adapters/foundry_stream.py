"""One streamed answer from Foundry Local: its text pieces, then how many tokens it took and why it stopped."""

from __future__ import annotations

from collections.abc import Iterator

from slmops.adapters import genai

genai.preload_runtime()  # before Foundry Local's genai-core: see slmops/adapters/foundry.py

from foundry_local_sdk import (  # noqa: E402
    ChatSession,
    FoundryLocalException,
    IModel,
    MessageItem,
    Request,
    RequestOptions,
    SearchOptions,
    TextItem,
)

from slmops.errors import VariantError  # noqa: E402


class ChatStream:
    """The pieces of one streamed answer, then its usage: ``completion_tokens`` and ``finish_reason``.

    Foundry Local 2.2.1 streams one item per generated token that has text of its own; a token that is one byte of a
    multi-byte character yields none (the tokenizer holds it until the character is whole), so pieces undercount
    tokens (measured on random-weight models: up to 13 of 32 tokens: docs/runtime-overhead.md). The count that
    times a decode is ``completion_tokens``, known once the stream is drained."""

    def __init__(self, model: IModel, model_id: str, prompt: str, max_tokens: int, temperature: float | None) -> None:
        self._args = (model, model_id, prompt, max_tokens, temperature)
        self.completion_tokens: int | None = None
        self.finish_reason: str | None = None

    def __iter__(self) -> Iterator[str]:
        model, model_id, prompt, max_tokens, temperature = self._args
        loaded_here = False
        try:
            if not model.is_loaded:
                model.load()
                loaded_here = True
            options = RequestOptions(search=SearchOptions(temperature=temperature, max_output_tokens=max_tokens))
            with ChatSession(model) as session:
                session.set_options(options)
                session.set_streaming(True)
                with Request().add_item(MessageItem.user(prompt)) as request:
                    # leaving the loop early (the reader stops) cancels the request in the SDK
                    with session.process_streaming_request(request) as stream:
                        for item in stream:
                            if isinstance(item, TextItem) and item.text:
                                yield item.text
                        with stream.final_response as final:
                            self.completion_tokens = final.get_usage().completion_tokens
                            self.finish_reason = final.finish_reason.name
        except (FoundryLocalException, UnicodeEncodeError) as exc:  # a lone surrogate fails in the SDK's encoder
            raise VariantError(f"Foundry Local could not answer with {model_id}: {exc}") from exc
        finally:
            if loaded_here:
                model.unload()
