"""Chat LMs that stream their answer token by token, with cancellation.

Three backends share one method, ``stream(history, cancel) -> Iterator[str]`` (text pieces as they
arrive); each prepends its own system prompt to the ``{"role", "content"}`` history:

- :class:`TransformersChat`: any transformers causal LM, GGUF included (offline default
  SmolLM2-135M-Instruct through :func:`e2e_voice.text.llm.load_causal_lm`), generating in a thread
  behind a ``TextIteratorStreamer``;
- :class:`OpenAIChat`: an OpenAI-compatible ``/chat/completions`` endpoint with ``stream: true`` (SSE);
- :class:`AnthropicChat`: Anthropic's ``/v1/messages`` with ``stream: true`` (SSE), key from the env.

Setting ``cancel`` stops the generation within one token (local) or one SSE event (HTTP).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from e2e_voice.assets.registry import ModelNotAvailableError
from e2e_voice.text.llm import DEFAULT_SYSTEM_PROMPT, last_whole_sentences, load_causal_lm


class LLMBackendError(RuntimeError):
    """A chat backend is missing, misconfigured or failed; the message names the setting to change."""


class StreamingChat(Protocol):
    """What the cascade needs from a chat model."""

    system_prompt: str

    def stream(self, history: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield the answer to ``history`` (ending with a user message) piece by piece."""
        ...


def _messages(system_prompt: str, history: list[dict[str, str]]) -> list[dict[str, str]]:
    if not history or history[-1].get("role") != "user":
        raise ValueError("history must end with a user message")
    return [{"role": "system", "content": system_prompt}, *history]


@dataclass
class TransformersChat:
    """A local transformers causal LM that streams tokens from a generation thread.

    Args:
        model: registry name (GGUF or HF directory in the bundle).
        model_path: explicit GGUF file or HF directory; wins over ``model``.
        max_new_tokens: cap on generated tokens.
        temperature: 0 for greedy decoding.
        dtype: ``float32`` or ``bfloat16`` (bf16 roughly halves time to first token on AVX512-BF16 CPUs).
        system_prompt: instruction given before the conversation.
        warmup: run one short generation at load so the first real turn is not slowed by lazy init.
        token_timeout_s: give up when no token arrives for this long (a stuck generation thread).
    """

    model: str = "smollm2-135m-instruct"
    model_path: str | None = None
    max_new_tokens: int = 64
    temperature: float = 0.0
    dtype: str = "float32"
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    warmup: bool = False
    token_timeout_s: float = 60.0
    _lm: Any = field(init=False, repr=False, default=None)
    _tok: Any = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        import torch

        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"cascade.llm.dtype must be float32, bfloat16 or float16, got '{self.dtype}'")
        try:
            self._lm, self._tok = load_causal_lm(self.model, self.model_path, getattr(torch, self.dtype))
        except (ModelNotAvailableError, OSError) as e:
            raise LLMBackendError(
                f"cannot load the chat LM '{self.model}' (path {self.model_path}): {e}; set"
                " cascade.llm.model_path to a GGUF file or HF directory, or run `e2e-voice models install`"
            ) from e
        self._lm.eval()
        if self.warmup:
            for _ in self.stream([{"role": "user", "content": "Hi"}], max_new_tokens=4):
                pass

    def stream(
        self,
        history: list[dict[str, str]],
        cancel: threading.Event | None = None,
        max_new_tokens: int | None = None,
        seed: int = 0,
        gate: threading.Event | None = None,
    ) -> Iterator[str]:
        """Yield decoded text pieces as the model generates them.

        Args:
            history: ``{"role", "content"}`` messages ending with the user's.
            cancel: set it to stop generating (checked after every token).
            max_new_tokens: overrides the instance's cap for this call.
            seed: sampling seed.
            gate: while this event is clear, generation pauses before its next token. On a small CPU
                the cascade clears it while the first phrase is synthesized, so the LM does not halve the
                TTS's cores exactly when the user is waiting for the first audio.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        # The caller's event is only read: setting it here would cancel the caller's whole turn.
        stop = threading.Event()

        def stopped() -> bool:
            return stop.is_set() or (cancel is not None and cancel.is_set())

        enc = self._tok.apply_chat_template(
            _messages(self.system_prompt, history),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
        streamer = TextIteratorStreamer(
            self._tok, skip_prompt=True, skip_special_tokens=True, timeout=self.token_timeout_s
        )

        class _Cancelled(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                while gate is not None and not gate.wait(0.02) and not stopped():
                    pass
                return torch.full((input_ids.shape[0],), stopped(), dtype=torch.bool)

        errors: list[BaseException] = []

        def generate() -> None:
            try:
                torch.manual_seed(seed)
                with torch.inference_mode():
                    self._lm.generate(
                        **enc,
                        streamer=streamer,
                        max_new_tokens=max_new_tokens or self.max_new_tokens,
                        do_sample=self.temperature > 0,
                        temperature=self.temperature if self.temperature > 0 else None,
                        top_p=None,
                        top_k=None,
                        pad_token_id=self._tok.eos_token_id,
                        stopping_criteria=StoppingCriteriaList([_Cancelled()]),
                    )
            except BaseException as e:  # surfaced to the consumer below
                errors.append(e)
                streamer.end()

        worker = threading.Thread(target=generate, name="llm-generate", daemon=True)
        worker.start()
        try:
            for piece in streamer:
                if stopped():
                    break
                if piece:
                    yield piece
        finally:
            stop.set()  # stop the thread if the consumer stopped early
            worker.join()
        if errors:
            raise LLMBackendError(f"local LM generation failed: {errors[0]}") from errors[0]

    def reply(self, user_text: str, history: list[dict[str, str]] | None = None, seed: int = 0) -> str:
        """Whole answer to ``user_text`` (the :class:`e2e_voice.text.llm.ChatLM` surface the demo uses)."""
        msgs = [*(history or []), {"role": "user", "content": user_text}]
        text = "".join(self.stream(msgs, seed=seed)).strip()
        return last_whole_sentences(text)


def _sse_data(lines: Iterator[str], cancel: threading.Event) -> Iterator[str]:
    """The ``data:`` payloads of a server-sent-event stream, stopping at ``[DONE]`` or on cancel."""
    for line in lines:
        if cancel.is_set():
            return
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield data


@dataclass
class _HTTPChat:
    base_url: str
    model: str
    api_key_env: str
    max_tokens: int = 128
    temperature: float = 0.0
    timeout_s: float = 30.0
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    setting: str = "cascade.llm"  # prefix named in error messages

    def _post(self, url: str, headers: dict[str, str], body: dict[str, Any], cancel: threading.Event) -> Any:
        import httpx

        try:
            with (
                httpx.Client(timeout=httpx.Timeout(self.timeout_s)) as client,
                client.stream("POST", url, headers=headers, json=body) as resp,
            ):
                if resp.status_code != 200:
                    detail = resp.read().decode(errors="replace")[:300]
                    raise LLMBackendError(
                        f"{url} answered HTTP {resp.status_code}: {detail}; check {self.setting}.base_url,"
                        f" {self.setting}.model and the key in ${self.api_key_env}"
                    )
                for data in _sse_data(resp.iter_lines(), cancel):
                    yield json.loads(data)
        except httpx.TimeoutException as e:
            raise LLMBackendError(
                f"{url} did not answer within {self.timeout_s} s; raise {self.setting}.timeout_s or check"
                f" {self.setting}.base_url"
            ) from e
        except httpx.HTTPError as e:
            raise LLMBackendError(f"cannot reach {url} ({e}); check {self.setting}.base_url") from e

    def _key(self, required: bool) -> str | None:
        key = os.environ.get(self.api_key_env) if self.api_key_env else None
        if required and not key:
            raise LLMBackendError(
                f"no API key: set the environment variable {self.api_key_env} (or {self.setting}.api_key_env)"
            )
        return key


@dataclass
class OpenAIChat(_HTTPChat):
    """An OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama...) streamed over SSE.

    Args:
        base_url: API root, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8000/v1``.
        model: model name sent in the request.
        api_key_env: environment variable holding the key (optional for local servers).
        max_tokens: cap on generated tokens.
        temperature: sampling temperature.
        timeout_s: connect/read timeout.
        system_prompt: instruction given before the conversation.
    """

    base_url: str = "http://127.0.0.1:8000/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "OPENAI_API_KEY"

    def stream(self, history: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield ``choices[0].delta.content`` pieces of a streamed chat completion."""
        cancel = cancel or threading.Event()
        headers = {"Content-Type": "application/json"}
        key = self._key(required=False)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        body = {
            "model": self.model,
            "messages": _messages(self.system_prompt, history),
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
        }
        for event in self._post(f"{self.base_url.rstrip('/')}/chat/completions", headers, body, cancel):
            if "error" in event:
                raise LLMBackendError(f"OpenAI-compatible endpoint error: {event['error']}")
            for choice in event.get("choices", []):
                piece = (choice.get("delta") or {}).get("content")
                if piece:
                    yield piece


@dataclass
class AnthropicChat(_HTTPChat):
    """Anthropic's messages API streamed over SSE (``content_block_delta`` events carry the text).

    Args:
        base_url: API root (``https://api.anthropic.com``).
        model: model name, e.g. ``claude-3-5-haiku-latest``.
        api_key_env: environment variable holding the key (required).
        max_tokens: cap on generated tokens.
        temperature: sampling temperature.
        timeout_s: connect/read timeout.
        system_prompt: sent as the top-level ``system`` field.
        version: the ``anthropic-version`` header.
    """

    base_url: str = "https://api.anthropic.com"
    model: str = "claude-3-5-haiku-latest"
    api_key_env: str = "ANTHROPIC_API_KEY"
    version: str = "2023-06-01"

    def stream(self, history: list[dict[str, str]], cancel: threading.Event | None = None) -> Iterator[str]:
        """Yield ``text_delta`` pieces of a streamed message."""
        cancel = cancel or threading.Event()
        key = self._key(required=True)
        assert key is not None
        headers = {"Content-Type": "application/json", "x-api-key": key, "anthropic-version": self.version}
        body = {
            "model": self.model,
            "system": self.system_prompt,
            "messages": _messages(self.system_prompt, history)[1:],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "stream": True,
        }
        for event in self._post(f"{self.base_url.rstrip('/')}/v1/messages", headers, body, cancel):
            kind = event.get("type")
            if kind == "error":
                raise LLMBackendError(f"Anthropic API error: {event.get('error')}")
            if kind == "content_block_delta" and event.get("delta", {}).get("type") == "text_delta":
                yield event["delta"]["text"]
            elif kind == "message_stop":
                return
