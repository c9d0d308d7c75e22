"""What the sync and the async client share, without doing any I/O.

Each operation is a :class:`Call` (method, path, query, body, and how to read the answer);
the clients only send it. Cursor pagination (:class:`Pager`), Server-Sent Events decoding
(:class:`SSEDecoder`) and the clock of ``wait()`` (:class:`Deadline`) live here too, so the
two clients differ only in ``await``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

import httpx
import orjson

from genspool.client._types import ApiKey, CreatedApiKey, Job, JobEvent, Model
from genspool.exceptions import WaitTimeout

__all__ = [
    "CHAT",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "Call",
    "Config",
    "Deadline",
    "Pager",
    "SSEDecoder",
    "TimeoutTypes",
    "chat_body",
    "job_payload",
]

T = TypeVar("T")

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
#: Long enough for a submission to a busy server; streams wait without a read timeout.
DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=5.0)
TimeoutTypes = float | httpx.Timeout | None


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request of the API and how to read its JSON answer."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    body: Any = None
    #: A multipart form instead of a JSON body: ``files`` maps a field to ``(filename, open
    #: binary file, content type)``, read in chunks as the request is sent (never whole).
    files: Mapping[str, Any] | None = None
    data: Mapping[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """Where the server is and how to talk to it."""

    base_url: str
    api_key: str | None
    timeout: httpx.Timeout

    @classmethod
    def make(cls, base_url: str, api_key: str | None, timeout: TimeoutTypes) -> Config:
        t = timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout)
        return cls(str(base_url).rstrip("/"), api_key, t)

    @property
    def headers(self) -> dict[str, str]:
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"Accept": "application/json", **auth}

    @property
    def ws_url(self) -> str:
        """The WebSocket endpoint: ``http(s)://host/...`` → ``ws(s)://host/.../v1/ws``."""
        return "ws" + self.base_url.removeprefix("http") + "/v1/ws"

    def stream_timeout(self, read: float | None) -> httpx.Timeout:
        """The client's timeouts, but ``read`` for the gaps between events of a stream."""
        t = self.timeout
        return httpx.Timeout(connect=t.connect, read=read, write=t.write, pool=t.pool)

    def request(
        self, http: httpx.Client | httpx.AsyncClient, call: Call[Any], timeout: httpx.Timeout
    ) -> httpx.Request:
        params = {k: v for k, v in (call.params or {}).items() if v is not None}
        if call.files is not None:  # httpx sets the multipart Content-Type and its length
            return http.build_request(
                call.method,
                self.base_url + call.path,
                params=params,
                files=call.files,
                data=call.data,
                headers=self.headers,
                timeout=timeout,
            )
        body = None if call.body is None else orjson.dumps(call.body)
        headers = self.headers if body is None else {**self.headers, "Content-Type": _JSON}
        return http.build_request(
            call.method,
            self.base_url + call.path,
            params=params,
            content=body,
            headers=headers,
            timeout=timeout,
        )


_JSON = "application/json"


# -- operations --------------------------------------------------------------------------------

CHAT = "/v1/chat/completions"


def chat_body(
    model: str, messages: Iterable[Mapping[str, Any]], params: Mapping[str, Any]
) -> dict[str, Any]:
    return {"model": model, "messages": [dict(m) for m in messages], **params}


def job_payload(
    url: str,
    body: Mapping[str, Any],
    *,
    priority: int | None,
    metadata: Mapping[str, Any] | None,
    idempotency_key: str | None,
    max_attempts: int | None,
    expires_at: float | None,
    custom_id: str | None,
    extra_body: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """The ``POST /v1/jobs`` body; options left at None take the server's defaults."""
    options: dict[str, Any] = {
        "priority": priority,
        "metadata": None if metadata is None else dict(metadata),
        "idempotency_key": idempotency_key,
        "max_attempts": max_attempts,
        "expires_at": expires_at,
        "custom_id": custom_id,
    }
    given = {k: v for k, v in options.items() if v is not None}
    return {"url": url, "body": dict(body), **given, **(extra_body or {})}


def submit(payload: Mapping[str, Any]) -> Call[Job]:
    return Call("POST", "/v1/jobs", Job.from_wire, body=payload)


def fanout(payload: Mapping[str, Any]) -> Call[Job]:
    return Call("POST", "/v1/fanouts", Job.from_wire, body=dict(payload))


def routes() -> Call[list[dict[str, Any]]]:
    return Call("GET", "/v1/routes", lambda page: list(page["data"]))


def put_route(name: str, route: Mapping[str, Any]) -> Call[dict[str, Any]]:
    return Call("PUT", f"/v1/routes/{_segment(name)}", dict, body=dict(route))


def delete_route(name: str) -> Call[dict[str, Any]]:
    return Call("DELETE", f"/v1/routes/{_segment(name)}", dict)


def test_route(pattern: Any, event: Any) -> Call[bool]:
    return Call(
        "POST",
        "/v1/routes/test",
        lambda r: bool(r["match"]),
        body={"pattern": pattern, "event": event},
    )


def get(job_id: str) -> Call[Job]:
    return Call("GET", f"/v1/jobs/{_segment(job_id)}", Job.from_wire)


def cancel(job_id: str) -> Call[Job]:
    return Call("POST", f"/v1/jobs/{_segment(job_id)}/cancel", Job.from_wire)


def replay(job_id: str) -> Call[Job]:
    return Call("POST", f"/v1/dlq/{_segment(job_id)}/replay", Job.from_wire)


def events_path(job_id: str) -> str:
    return f"/v1/jobs/{_segment(job_id)}/events"


def models() -> Call[list[Model]]:
    return Call("GET", "/v1/models", lambda page: [Model.from_wire(m) for m in page["data"]])


def list_keys() -> Call[list[ApiKey]]:
    return Call("GET", "/v1/keys", lambda page: [ApiKey.from_wire(k) for k in page["data"]])


def create_key(
    tenant: str, scopes: Iterable[str], name: str | None, rpm: int | None
) -> Call[CreatedApiKey]:
    body = {"tenant": tenant, "scopes": sorted(set(scopes)), "name": name, "rpm": rpm}
    return Call("POST", "/v1/keys", CreatedApiKey.from_wire, body=body)


def revoke_key(key_id: str) -> Call[ApiKey]:
    return Call("POST", f"/v1/keys/{_segment(key_id)}/revoke", ApiKey.from_wire)


def _segment(value: str) -> str:
    """An id as one path segment: a ``/`` or ``?`` in it must not reach another route."""
    return quote(value, safe="")


# -- pagination --------------------------------------------------------------------------------


@dataclass(slots=True)
class Pager:
    """The cursor of one listing: each page asks for the jobs after the last one seen."""

    path: str
    query: dict[str, Any]
    after: str | None = None
    done: bool = False
    pages: int = 0

    @classmethod
    def of(cls, path: str, limit: int, **filters: Any) -> Pager:
        # The server checks the values (``limit`` up to 1000, a known status) and says what is
        # wrong; checking them here too would only let the two drift apart.
        return cls(path, {**filters, "limit": limit})

    def call(self) -> Call[Mapping[str, Any]]:
        return Call("GET", self.path, dict, params={**self.query, "after": self.after})

    def advance(self, page: Mapping[str, Any]) -> list[Job]:
        """The page's jobs; moves the cursor past them, or ends the listing."""
        jobs = [Job.from_wire(j) for j in page.get("data") or ()]
        self.pages += 1
        cursor = page.get("next_cursor") or (jobs[-1].id if jobs else None)
        self.done = not page.get("has_more") or cursor is None or cursor == self.after
        self.after = cursor
        return jobs


# -- Server-Sent Events ------------------------------------------------------------------------


class SSEDecoder:
    """Turns the lines of a ``text/event-stream`` into job events (``data:`` lines up to a
    blank line form one event; comments and other fields are ignored)."""

    def __init__(self) -> None:
        self._data: list[str] = []

    def feed(self, line: str) -> JobEvent | None:
        data = self.feed_json(line)
        return None if data is None else JobEvent.from_wire(data)

    def feed_json(self, line: str) -> Any:
        """The JSON of the event this line completes, else None (a pipeline run's events are
        not job events, but are framed the same way)."""
        if not line:
            return self._flush()
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value.removeprefix(" "))
        return None

    def _flush(self) -> Any:
        if not self._data:
            return None
        text, self._data = "\n".join(self._data), []
        return orjson.loads(text)


# -- waiting -----------------------------------------------------------------------------------


class Deadline:
    """The time left to ``wait()``; None waits for ever."""

    def __init__(self, timeout: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._timeout = timeout
        self._end = None if timeout is None else clock() + timeout

    def remaining(self) -> float | None:
        return None if self._end is None else max(0.0, self._end - self._clock())

    @property
    def expired(self) -> bool:
        return self._end is not None and self._clock() >= self._end

    def pause(self, interval: float) -> float:
        """How long to sleep before the next poll."""
        left = self.remaining()
        return interval if left is None else min(interval, left)

    def error(self, job: Job) -> WaitTimeout:
        return WaitTimeout(
            f"job {job.id} is still {job.status.value} after {self._timeout} s", job_id=job.id
        )
