"""Any OpenAI-compatible server (vLLM, llama.cpp server, Ollama, hosted APIs) over HTTP.

One HTTP call per request of the batch, all in flight together on one pooled httpx client;
the batch is what the remote server batches. Errors are translated at this boundary: 429,
5xx, timeouts and connection errors are retryable (``Retry-After`` is passed on), other 4xx
are not. Its plugin (``provider: openai``) is remote: the breaker and in-call retries are on by
default, and a model card counts no tokens (the remote's tokenizer is unknown).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
from pydantic import Field

from genspool.exceptions import ConfigError, ModelError, ModelTimeout
from genspool.providers.base import CHAT, EMBEDDINGS, Provider, Request, Response
from genspool.providers.plugins import ModelSpec, ProviderOptions, ProviderPlugin, options_of

__all__ = ["OpenAIOptions", "OpenAIProvider", "plugin", "retry_after_s"]

RETRYABLE = frozenset({408, 409, 429}) | frozenset(range(500, 600))


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
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=timeout_s,
            transport=transport,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
        )

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    async def _one(self, request: Request) -> Response | ModelError:
        body = {**request.body, "model": self.remote_model}
        path = request.url.removeprefix("/v1")
        try:
            response = await self._client.post(path, json=body)
        except httpx.TimeoutException:
            return ModelTimeout(f"{self.model}: {self._client.base_url} did not answer in time")
        except httpx.HTTPError as exc:
            return ModelError(f"{self.model}: cannot reach {self._client.base_url}: {exc!r}")
        return self._parse(response)

    def _parse(self, response: httpx.Response) -> Response | ModelError:
        status = response.status_code
        if status >= 400:
            return ModelError(
                f"{self.model}: remote answered {status}: {response.text[:300]}",
                retryable=status in RETRYABLE,
                retry_after=retry_after_s(response.headers.get("retry-after")),
            )
        try:
            data: Any = response.json()
        except ValueError:
            return ModelError(f"{self.model}: remote answered {status} with malformed JSON")
        if not isinstance(data, dict):
            return ModelError(f"{self.model}: remote answered {status} with a non-object body")
        data["model"] = self.model
        return data

    async def aclose(self) -> None:
        await self._client.aclose()


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
