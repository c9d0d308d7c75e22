"""Any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs) over HTTP.

Any endpoint the remote serves passes through (a model's ``endpoints:`` lists them); what a
few need beyond JSON in and out (an input file sent as a form, audio and images kept as files)
is :mod:`genspool.providers.endpoints`. One HTTP call per request of the batch, all in flight
together on one pooled client (aiohttp's, else httpx's: :mod:`genspool.providers._http`); the
batch is what the remote server batches. A chat request someone listens to (``Request.stream``)
is streamed from the remote: each text delta goes to the request's token sink as it arrives,
and the chunks are merged into the same ``chat.completion`` body a plain call returns. Errors
are translated at this boundary: 429, 5xx, timeouts and connection errors (a stream cut off
midway too) are retryable (``Retry-After`` is passed on), other 4xx are not. Its plugin
(``provider: openai``) is remote: the breaker and in-call retries are on by default, and a
model card counts no tokens (the remote's tokenizer is unknown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
from pydantic import Field

from genspool._storable import Unstorable, UnstorableResult, loads
from genspool.exceptions import ConfigError, ModelError, ModelTimeout
from genspool.providers import endpoints
from genspool.providers._http import Reply, wire
from genspool.providers.base import CHAT, EMBEDDINGS, Provider, Request, Response, TokenSink
from genspool.providers.plugins import ModelSpec, ProviderOptions, ProviderPlugin, options_of

__all__ = ["OpenAIOptions", "OpenAIProvider", "plugin", "retry_after_s"]

RETRYABLE = frozenset({408, 409, 429}) | frozenset(range(500, 600))
#: Keys the route may have passed on that only the streamed call sets.
_STREAM_KEYS = ("stream", "stream_options")


def retry_after_s(value: str | None) -> float | None:
    """``Retry-After`` as seconds, from either of its two forms."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        import time

        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class OpenAIProvider(Provider):
    endpoints = frozenset({CHAT, EMBEDDINGS})

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str | None = None,
        remote_model: str | None = None,
        endpoints: Sequence[str] | None = None,
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        super().__init__(model)
        self.remote_model = remote_model or model
        if endpoints:
            self.endpoints = frozenset(endpoints)
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._wire = wire(base_url.rstrip("/"), headers, timeout_s, transport)

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        if len(batch) == 1:  # the common interactive case: no gather, no extra task
            return [await self._one(batch[0])]
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    async def _one(self, request: Request) -> Response | ModelError:
        body = {k: v for k, v in request.body.items() if k not in _STREAM_KEYS}
        body["model"] = self.remote_model
        path = request.url.removeprefix("/v1")
        try:
            if request.stream and request.on_token is not None and request.url == CHAT:
                return await self._streamed(path, body, _Relay.of(request))
            sent = await endpoints.encode(request, body)
            if isinstance(sent, ModelError):
                return sent
            async with self._wire.post(path, *sent) as reply:
                content = await reply.read()
                if reply.status < 400 and not endpoints.is_json(reply.content_type):
                    return await endpoints.kept(request, content, reply.content_type, self.model)
                answer = self._parse(reply.status, reply, content)
            if isinstance(answer, ModelError):
                return answer
            return await endpoints.images_kept(request, answer)
        except self._wire.timeouts:
            return ModelTimeout(f"{self.model}: {self._wire.base_url} did not answer in time")
        except self._wire.errors as exc:
            return ModelError(f"{self.model}: cannot reach {self._wire.base_url}: {exc!r}")

    async def _streamed(
        self, path: str, body: dict[str, Any], sink: TokenSink
    ) -> Response | ModelError:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        merged = _Merged()
        async with self._wire.post(path, orjson.dumps(body)) as reply:
            if reply.status >= 400 or not reply.content_type.startswith("text/event-stream"):
                # An error, or a remote that does not stream: one body.
                return self._parse(reply.status, reply, await reply.read())
            async for line in reply.lines:
                if not line.startswith(b"data:"):
                    continue  # SSE comments, event names, blank separators
                data = line[5:].strip()
                if data == b"[DONE]":
                    break
                if error := self._chunk(merged, data, sink):
                    return error
        if not merged.finished:
            return ModelError(f"{self.model}: the remote's stream ended before the answer did")
        return merged.body(self.model)

    def _chunk(self, merged: _Merged, data: bytes, sink: TokenSink) -> ModelError | None:
        try:
            chunk = loads(data)
        except Unstorable as exc:
            return UnstorableResult(f"{self.model}: a chunk the remote streamed {exc}")
        except ValueError:
            return ModelError(f"{self.model}: the remote streamed malformed JSON: {data[:200]!r}")
        if not isinstance(chunk, dict):
            return ModelError(f"{self.model}: the remote streamed a non-object chunk")
        if "error" in chunk:  # a failure after the 200 was sent: the remote's, so retryable
            return ModelError(f"{self.model}: the remote failed mid-stream: {chunk['error']!r}")
        if text := merged.add(chunk):
            sink(text)
        return None

    def _parse(self, status: int, reply: Reply, content: bytes) -> Response | ModelError:
        if status >= 400:
            text = content[:300].decode(errors="replace")
            return ModelError(
                f"{self.model}: remote answered {status}: {text}",
                retryable=status in RETRYABLE,
                retry_after=retry_after_s(reply.retry_after),
            )
        try:
            data: Any = loads(content)
        except Unstorable as exc:
            return UnstorableResult(f"{self.model}: the remote's answer {exc}")
        except ValueError:
            return ModelError(
                f"{self.model}: remote answered {status} with malformed JSON: {content[:200]!r}"
            )
        if not isinstance(data, dict):
            return ModelError(f"{self.model}: remote answered {status} with a non-object body")
        data["model"] = self.model
        return data

    async def aclose(self) -> None:
        await self._wire.aclose()


class _Relay:
    """A request's token sink across the in-call retries of one call: a stream cut off midway
    and tried again relays only the text its listener has not had yet."""

    def __init__(self, sink: TokenSink) -> None:
        self.sink, self.sent, self.seen = sink, "", ""

    @classmethod
    def of(cls, request: Request) -> _Relay:
        relay = request.on_token
        if not isinstance(relay, _Relay):
            assert relay is not None
            relay = request.on_token = cls(relay)
        relay.seen = ""  # a new attempt streams from the start
        return relay

    def __call__(self, text: str) -> None:
        self.seen += text
        if len(self.seen) > len(self.sent):
            self.sink(self.seen[len(self.sent) :])
            self.sent = self.seen


class _Merged:
    """``chat.completion.chunk`` objects merged into the ``chat.completion`` they stream."""

    def __init__(self) -> None:
        self.head: dict[str, Any] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.usage: Any = None

    @property
    def finished(self) -> bool:
        return bool(self.choices) and all(c["finish_reason"] for c in self.choices.values())

    def add(self, chunk: dict[str, Any]) -> str:
        """Merge one chunk; the text it adds to the first choice (what the sink relays)."""
        for key in ("id", "created", "system_fingerprint", "service_tier"):
            if key in chunk and key not in self.head:
                self.head[key] = chunk[key]
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        text = ""
        for part in chunk.get("choices") or ():
            added = self._choice(part)
            text += added if part.get("index", 0) == 0 else ""
        return text

    def _choice(self, part: dict[str, Any]) -> str:
        choice = self.choices.setdefault(
            part.get("index", 0),
            {"role": "assistant", "content": None, "tool_calls": {}, "logprobs": None,
             "finish_reason": None, "extra": {}},
        )  # fmt: skip
        delta = part.get("delta") or {}
        text = delta.get("content") or ""
        if text:
            choice["content"] = (choice["content"] or "") + text
        for key, value in delta.items():
            if key == "role" and value:
                choice["role"] = value
            elif key == "tool_calls":
                _merge_tool_calls(choice["tool_calls"], value or [])
            elif key not in ("content", "role") and isinstance(value, str):
                choice["extra"][key] = choice["extra"].get(key, "") + value  # refusal, reasoning
        if part.get("logprobs"):
            _merge_logprobs(choice, part["logprobs"])
        if part.get("finish_reason"):
            choice["finish_reason"] = part["finish_reason"]
        return text

    def body(self, model: str) -> Response:
        return {
            "id": self.head.get("id", ""),
            "object": "chat.completion",
            "created": self.head.get("created", 0),
            "model": model,
            "choices": [_message(i, c) for i, c in sorted(self.choices.items())],
            "usage": self.usage,
            **{k: v for k, v in self.head.items() if k not in ("id", "created")},
        }


def _message(index: int, choice: dict[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": choice["role"], "content": choice["content"]}
    message.update(choice["extra"])
    if choice["tool_calls"]:
        message["tool_calls"] = [choice["tool_calls"][i] for i in sorted(choice["tool_calls"])]
    elif message["content"] is None:
        message["content"] = ""
    return {
        "index": index,
        "message": message,
        "logprobs": choice["logprobs"],
        "finish_reason": choice["finish_reason"],
    }


def _merge_tool_calls(calls: dict[int, dict[str, Any]], deltas: list[dict[str, Any]]) -> None:
    """A tool call streams as its id, type and name first, then its arguments in pieces."""
    for delta in deltas:
        call = calls.setdefault(
            delta.get("index", len(calls)),
            {"id": "", "type": "function", "function": {"name": "", "arguments": ""}},
        )
        call["id"] = delta.get("id") or call["id"]
        call["type"] = delta.get("type") or call["type"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def _merge_logprobs(choice: dict[str, Any], logprobs: dict[str, Any]) -> None:
    merged = choice["logprobs"] or {}
    for key, items in logprobs.items():
        if isinstance(items, list):
            merged[key] = (merged.get(key) or []) + items
    choice["logprobs"] = merged


class OpenAIOptions(ProviderOptions):
    base_url: str = Field(min_length=1, description="Root of the OpenAI-compatible API.")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    remote_model: str | None = Field(None, description="Model name at the remote; default name.")


def _create(config: ModelSpec, env: Mapping[str, str]) -> OpenAIProvider:
    opts = options_of(config, OpenAIOptions)
    key = env.get(opts.api_key_env) if opts.api_key_env else None
    if opts.api_key_env and key is None:
        raise ConfigError(
            f"model {config.name!r}: environment variable {opts.api_key_env} is not set"
        )
    return OpenAIProvider(
        config.name,
        base_url=opts.base_url,
        api_key=key,
        remote_model=opts.remote_model,
        endpoints=config.endpoints,
        timeout_s=config.limits.call_timeout,
    )


plugin = ProviderPlugin(
    name="openai",
    options=OpenAIOptions,
    endpoints=OpenAIProvider.endpoints,
    create=_create,
    remote=True,
)
