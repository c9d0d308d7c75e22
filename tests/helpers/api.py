"""The API in process, as this suite's tests use it: echo models, one key per scope and
tenant, the API as one key sees it, and the checks every error answer must pass.

The app itself comes from :mod:`genspool.testing.inprocess` (``memory://`` storage, the echo
provider, a worker in the same event loop); nothing here starts a process or opens a port.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx

from genspool.core.job import Job
from genspool.core.keys import KeyStore, Scope
from genspool.core.retry import RetryPolicy
from genspool.testing.inprocess import InProcess

__all__ = [
    "CHAT",
    "DOOMED_AT_ONCE",
    "EMBEDDINGS",
    "FAST_RETRY",
    "MODELS",
    "TERMINAL",
    "UNKNOWN_KEY",
    "As",
    "Keys",
    "assert_error",
    "bearer",
    "chat_body",
    "make_keys",
    "operations",
    "slow_model",
]

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
FAST_RETRY = RetryPolicy(base_s=0.01, cap_s=0.02)
UNKNOWN_KEY = "gsk_ffffffffffff_" + "x" * 43

#: Echo models (they compute nothing); ``doomed`` always times out, a real way to fail.
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    {"name": "pager", "provider": "echo"},
    {"name": "tiny", "provider": "echo", "context_window": 16},
    {
        "name": "doomed",
        "provider": "echo",
        "max_attempts": 2,
        "limits": {"timeout_s": 0.02},
        "options": {"latency_ms": 200},
    },
]


#: Always times out on its only attempt (the batch takes 300 ms, the model allows 50 ms).
DOOMED_AT_ONCE: dict[str, Any] = {
    "name": "doomed",
    "provider": "echo",
    "max_attempts": 1,
    "limits": {"timeout_s": 0.05},
    "options": {"latency_ms": 300},
}


def slow_model(latency_ms: int) -> dict[str, Any]:
    """An echo model that answers after ``latency_ms``, one job at a time (time to cancel)."""
    return {
        "name": "slow",
        "provider": "echo",
        "options": {"latency_ms": latency_ms},
        "batching": {"max_batch_size": 1},
    }


def chat_body(model: str, content: str = "hi") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}]}


def bearer(key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"} if key else {}


@dataclass(frozen=True, slots=True)
class Keys:
    """One key per role: tenant ``acme`` (``a``: submit+read, ``a_read``, ``a_submit``,
    ``limited``: 3 per minute), tenant ``beta`` (``b``), ``admin`` (tenant ``ops``), and a
    revoked key that held every scope."""

    admin: str
    a: str
    a_read: str
    a_submit: str
    b: str
    revoked: str
    limited: str

    def all(self) -> list[str]:
        return [getattr(self, name) for name in self.__dataclass_fields__]


async def make_keys(store: KeyStore) -> Keys:
    async def key(tenant: str, *scopes: Scope, rpm: int | None = None) -> str:
        return (await store.create(tenant, scopes, rpm=rpm))[1]

    revoked = await key("acme", Scope.SUBMIT, Scope.READ, Scope.ADMIN)
    await store.revoke(key_id(revoked))
    return Keys(
        admin=await key("ops", Scope.ADMIN),
        a=await key("acme", Scope.SUBMIT, Scope.READ),
        a_read=await key("acme", Scope.READ),
        a_submit=await key("acme", Scope.SUBMIT),
        b=await key("beta", Scope.SUBMIT, Scope.READ),
        revoked=revoked,
        limited=await key("acme", Scope.SUBMIT, Scope.READ, rpm=3),
    )


def key_id(key: str) -> str:
    return key.split("_")[1]


def secret(key: str) -> str:
    return key.split("_", 2)[2]


class As:
    """The API as one key sees it (``None``: no key at all)."""

    def __init__(self, gs: InProcess, key: str | None) -> None:
        self.gs, self.key = gs, key
        self.headers = bearer(key)

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.gs.client.request(method, path, headers=headers, **kwargs)

    async def chat(self, model: str, content: str = "hi", expect: int = 202) -> dict[str, Any]:
        body = {"url": CHAT, "body": chat_body(model, content)}
        response = await self.request("POST", "/v1/jobs", json=body)
        assert response.status_code == expect, response.text
        out: dict[str, Any] = response.json()
        return out

    async def get(self, job_id: str) -> httpx.Response:
        return await self.request("GET", f"/v1/jobs/{job_id}")

    async def wait(self, job_id: str, timeout: float = 10.0) -> Job:
        """The job once it ended (read from the queue: the test's own event loop)."""
        return await self.gs.queue.wait(job_id, timeout)

    async def ids(self, path: str = "/v1/jobs", **params: Any) -> set[str]:
        response = await self.request("GET", path, params={"limit": 1000, **params})
        assert response.status_code == 200, response.text
        return {j["id"] for j in response.json()["data"]}


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> str:
    """An OpenAI-shaped error (``{"error": {...}}`` and nothing else) with this status and
    code; returns its message."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    if code is not None:
        assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"] and error["type"]
    message: str = error["message"]
    return message


def operations(schema: dict[str, Any]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """``(method, path template, concrete path, operation)`` for every route of the schema."""
    fill = {"job_id": "job_00000000000000000000", "key_id": "ffffffffffff"}
    for template, item in schema["paths"].items():
        path = re.sub(r"\{(\w+)\}", lambda m: fill.get(m[1], "x"), template)
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method.upper(), template, path, op
