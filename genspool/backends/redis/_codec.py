"""How a job travels to and from the Redis scripts: the hash fields of a record, the arguments
of a decided change, and a job back from a reply.

Floats go out as ``repr`` (the shortest exact form), which Redis and Lua read back bit for bit;
JSON values (body, metadata, result, error, history) as orjson bytes, stored as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from genspool.core.job import Job, JobStatus
from genspool.core.machine import WRITTEN, Change

__all__ = ["FIELDS", "WRITTEN", "changes_arg", "num", "record", "row_to_job"]

#: The order of a job's fields in every script reply (FIELDS in ``lua/_lib.lua``).
FIELDS = (
    "id", "tenant", "url", "model", "body", "status", "priority", "attempts", "max_attempts",
    "idempotency_key", "metadata", "expires_at", "created_at", "available_at", "started_at",
    "retried_at", "finished_at", "lease_token", "lease_expires_at", "result", "error", "rank",
    "worker", "history",
)  # fmt: skip
_OPTIONAL_FLOATS = ("expires_at", "started_at", "retried_at", "finished_at", "lease_expires_at")


def num(x: float) -> str:
    """A float as Redis and Lua read it back bit for bit (repr is the shortest exact form)."""
    return repr(float(x))


def _num_or_none(x: float | None) -> str | None:
    return None if x is None else repr(float(x))


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)


def record(j: Job, *, available_at: float | None = None) -> bytes:
    """A job's hash fields as one JSON object of strings, absent fields left out (one argument
    per job, not one per field: redis-py encodes each argument in Python). ``enqueue`` and
    ``put`` send it."""
    fields = {
        "id": j.id,
        "tenant": j.tenant,
        "url": j.url,
        "model": j.model,
        "body": orjson.dumps(j.body).decode(),
        "status": j.status.value,
        "priority": str(int(j.priority)),
        "attempts": str(int(j.attempts)),
        "max_attempts": str(int(j.max_attempts)),
        "created_at": num(j.created_at),
        "available_at": num(j.available_at if available_at is None else available_at),
        "rank": num(j.rank),
    }
    if j.idempotency_key is not None:
        fields["idempotency_key"] = j.idempotency_key
    if j.metadata:
        fields["metadata"] = orjson.dumps(j.metadata).decode()
    for name in _OPTIONAL_FLOATS:
        value = getattr(j, name)
        if value is not None:
            fields[name] = num(value)
    if j.lease_token is not None:
        fields["lease_token"] = j.lease_token
    if j.result is not None:
        fields["result"] = orjson.dumps(j.result).decode()
    if j.error is not None:
        fields["error"] = orjson.dumps(j.error).decode()
    if j.worker is not None:
        fields["worker"] = j.worker
    if j.history:
        fields["history"] = orjson.dumps(j.history).decode()
    return orjson.dumps(fields)


def _field(j: Job, name: str) -> str | None:
    """A written field of ``j`` as the hash stores it; None for an absent one."""
    value = getattr(j, name)
    if value is None:
        return None
    if name in ("status", "lease_token", "attempts"):
        return str(value.value if name == "status" else value)
    if name in ("result", "error"):
        return orjson.dumps(value).decode()
    if name == "history":
        return orjson.dumps(value).decode() if value else None
    return repr(float(value))


def changes_arg(changes: Sequence[Change]) -> bytes:
    """The one ``apply`` argument of a batch. Per change: its id, the fence (status, lease
    token), the new values the indexes need (status, available_at, finished_at,
    lease_expires_at), how many fields to set and to clear, then the (name, value) pairs of
    ``WRITTEN`` to set and the names to clear, each ended by a NUL byte, which none of them
    holds (JSON escapes it). The script splits the batch with ``struct.unpack`` in C and hands
    the runs to HSET and HDEL as they are: no field-by-field work in Lua, and one argument, not
    one per field (redis-py encodes each argument in Python, ~0.9 µs each, measured)."""
    parts: list[str] = []
    for c in changes:
        j = c.job
        sets: list[str] = []
        clears: list[str] = []
        for name in c.fields or WRITTEN:  # only what the transition changed
            value = _field(j, name)
            if value is None:
                clears.append(name)
            else:
                sets += (name, value)
        parts += (j.id, c.status.value, c.lease_token or "", j.status.value, num(j.available_at))
        parts += (_num_or_none(j.finished_at) or "", _num_or_none(j.lease_expires_at) or "")
        parts += (str(len(sets)), str(len(clears)))
        parts += sets
        parts += clears
    return ("\0".join(parts) + "\0").encode()


def row_to_job(v: Sequence[Any]) -> Job:
    """A job from the field values of a script reply or HMGET, in ``FIELDS`` order."""
    return Job(
        id=v[0].decode(),
        tenant=v[1].decode(),
        url=v[2].decode(),
        model=v[3].decode(),
        body=orjson.loads(v[4]),
        status=JobStatus(v[5].decode()),
        priority=int(v[6]),
        attempts=int(v[7]),
        max_attempts=int(v[8]),
        idempotency_key=None if v[9] is None else v[9].decode(),
        metadata=orjson.loads(v[10]) if v[10] else {},
        expires_at=_opt(v[11]),
        created_at=float(v[12]),
        available_at=float(v[13]),
        started_at=_opt(v[14]),
        retried_at=_opt(v[15]),
        finished_at=_opt(v[16]),
        lease_token=None if v[17] is None else v[17].decode(),
        lease_expires_at=_opt(v[18]),
        result=None if v[19] is None else orjson.loads(v[19]),
        error=None if v[20] is None else orjson.loads(v[20]),
        rank=float(v[21]),
        worker=None if v[22] is None else v[22].decode(),
        history=orjson.loads(v[23]) if v[23] else [],
    )
