"""What the client returns: typed, immutable views of the API's JSON.

Each type is read from the wire by its ``from_wire`` and ignores fields it does not know, so a
newer server does not break an older client. :class:`Job` and :class:`Model` keep the JSON they
were read from (``to_dict()``) for callers that print or forward it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

__all__ = [
    "ApiKey",
    "Attempt",
    "CreatedApiKey",
    "Job",
    "JobError",
    "JobEvent",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "Model",
]

Json = Mapping[str, Any]


class JobStatus(StrEnum):
    """A job's state; the last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"

    @property
    def terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.EXPIRED}
)


@dataclass(frozen=True, slots=True)
class JobResult:
    """A succeeded job's answer: the OpenAI response ``body`` and its HTTP ``status_code``."""

    body: Json
    status_code: int = 200

    @classmethod
    def from_wire(cls, data: Json | None) -> JobResult | None:
        if data is None:
            return None
        return cls(body=data.get("body") or {}, status_code=int(data.get("status_code", 200)))

    @property
    def text(self) -> str | None:
        """A chat completion's answer, or None for any other body."""
        if self.body.get("object") != "chat.completion":
            return None
        content = self.body["choices"][0]["message"].get("content")
        return None if content is None else str(content)


@dataclass(frozen=True, slots=True)
class JobError:
    """Why the last attempt failed (kept on a retrying job, final on a failed one)."""

    code: str
    message: str

    @classmethod
    def from_wire(cls, data: Json | None) -> JobError | None:
        if data is None:
            return None
        return cls(code=str(data.get("code", "")), message=str(data.get("message", "")))


@dataclass(frozen=True, slots=True)
class JobRequest:
    """What was submitted: the OpenAI endpoint and the request body, as sent."""

    url: str
    body: Json

    @classmethod
    def from_wire(cls, data: Json | None) -> JobRequest | None:
        if data is None:
            return None
        return cls(url=str(data.get("url", "")), body=data.get("body") or {})


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt at a job: who ran it, when, and how it ended (``outcome`` is succeeded,
    failed, released or cancelled; None, with ``ended_at``, while it runs)."""

    attempt: int
    worker: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    outcome: str | None = None
    #: This attempt's own error (a job's ``error`` is only its last one).
    error: JobError | None = None

    @classmethod
    def from_wire(cls, data: Json) -> Attempt:
        return cls(
            attempt=int(data.get("attempt", 0)),
            worker=data.get("worker"),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            outcome=data.get("outcome"),
            error=JobError.from_wire(data.get("error")),
        )


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    status: JobStatus
    url: str
    model: str
    tenant: str = "default"
    priority: int = 0
    attempts: int = 0
    max_attempts: int = 0
    metadata: Json = field(default_factory=dict)
    idempotency_key: str | None = None
    expires_at: float | None = None
    created_at: float = 0.0
    #: When the job last entered each state it has been in (``{"queued": t, ...}``).
    timestamps: Mapping[str, float] = field(default_factory=dict)
    result: JobResult | None = None
    #: The error of the last attempt while the job retries or after it failed; None once it
    #: succeeded (every attempt's error is in ``history``).
    error: JobError | None = None
    #: The submitted request: in one job the API returns, in a list only with
    #: ``include=request``.
    request: JobRequest | None = None
    #: Every attempt, oldest first (the last 50), the running one last: in one job the API
    #: returns, in a list only with ``include=history``; empty when not sent.
    history: tuple[Attempt, ...] = ()
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status.terminal

    @classmethod
    def from_wire(cls, data: Json) -> Job:
        return cls(
            id=data["id"],
            status=JobStatus(data["status"]),
            url=data.get("url", ""),
            model=data.get("model", ""),
            tenant=data.get("tenant", "default"),
            priority=int(data.get("priority", 0)),
            attempts=int(data.get("attempts", 0)),
            max_attempts=int(data.get("max_attempts", 0)),
            metadata=data.get("metadata") or {},
            idempotency_key=data.get("idempotency_key"),
            expires_at=data.get("expires_at"),
            created_at=float(data.get("created_at", 0.0)),
            timestamps=data.get("timestamps") or {},
            result=JobResult.from_wire(data.get("result")),
            error=JobError.from_wire(data.get("error")),
            request=JobRequest.from_wire(data.get("request")),
            history=tuple(Attempt.from_wire(a) for a in data.get("history") or ()),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The job as the API sent it."""
        return dict(self.raw)


#: The kinds of progress a job's events may carry.
PROGRESS = ("branch", "step")


@dataclass(frozen=True, slots=True)
class JobEvent:
    """One push event: a state change (the final one with ``result`` or ``error``), a token
    ``delta`` of a running chat job, or ``not_found`` for a job the caller cannot see."""

    id: str
    status: JobStatus | Literal["not_found"]
    attempts: int = 0
    delta: str | None = None
    result: JobResult | None = None
    error: JobError | None = None
    #: A part of the running job that ended: ``("branch", {...})`` for a fan-out's branch,
    #: ``("step", {...})`` for an agent's model or tool call.
    progress: tuple[str, dict[str, Any]] | None = None

    @property
    def ends(self) -> bool:
        """Whether this is the job's last event (a token delta or progress never is)."""
        if self.delta is not None or self.progress is not None:
            return False
        return self.status == "not_found" or JobStatus(self.status).terminal

    @classmethod
    def from_wire(cls, data: Json) -> JobEvent:
        status = data["status"]
        return cls(
            id=data["id"],
            status="not_found" if status == "not_found" else JobStatus(status),
            attempts=int(data.get("attempts", 0)),
            delta=data.get("delta"),
            result=JobResult.from_wire(data.get("result")),
            error=JobError.from_wire(data.get("error")),
            progress=next(((k, data[k]) for k in PROGRESS if isinstance(data.get(k), dict)), None),
        )


@dataclass(frozen=True, slots=True)
class ApiKey:
    """An API key's record; never its secret."""

    id: str
    tenant: str
    scopes: frozenset[str]
    name: str | None = None
    rpm: int | None = None
    created_at: float = 0.0
    revoked: bool = False
    revoked_at: float | None = None

    @classmethod
    def fields_from_wire(cls, data: Json) -> dict[str, Any]:
        return {
            "id": data["id"],
            "tenant": data["tenant"],
            "scopes": frozenset(data.get("scopes") or ()),
            "name": data.get("name"),
            "rpm": data.get("rpm"),
            "created_at": float(data.get("created_at", 0.0)),
            "revoked": bool(data.get("revoked", False)),
            "revoked_at": data.get("revoked_at"),
        }

    @classmethod
    def from_wire(cls, data: Json) -> ApiKey:
        return cls(**cls.fields_from_wire(data))


@dataclass(frozen=True, slots=True)
class CreatedApiKey(ApiKey):
    """A key just created, with its secret: the only time the server shows it."""

    key: str = field(default="", repr=False)

    @classmethod
    def from_wire(cls, data: Json) -> CreatedApiKey:
        return cls(**cls.fields_from_wire(data), key=data["key"])


@dataclass(frozen=True, slots=True)
class Model:
    """A served model, as ``GET /v1/models`` lists it."""

    id: str
    provider: str = ""
    context_window: int = 0
    endpoints: tuple[str, ...] = ()
    #: The model's circuit breaker (``{"state": "closed", ...}``; ``disabled`` without one).
    breaker: Json = field(default_factory=dict)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> Model:
        return cls(
            id=data["id"],
            provider=data.get("provider", ""),
            context_window=int(data.get("context_window", 0)),
            endpoints=tuple(data.get("endpoints") or ()),
            breaker=data.get("breaker") or {},
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(self.raw)
