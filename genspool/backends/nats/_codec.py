"""How genspool's values are held in NATS: a job record as orjson, any name as a key or subject
token, and the subject of a job's lane."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re

import orjson

from genspool.core.job import Job, JobStatus

__all__ = [
    "Rec",
    "decode",
    "encode",
    "idem_key",
    "name_token",
    "priority_token",
    "token",
    "untoken",
    "work_subject",
]

_FIELDS = tuple(f.name for f in dataclasses.fields(Job))


@dataclasses.dataclass(frozen=True, slots=True)
class Rec:
    """A job record and the revision it was read at (what a compare-and-set replaces)."""

    job: Job
    rev: int


def encode(job: Job) -> bytes:
    return orjson.dumps({name: getattr(job, name) for name in _FIELDS})


def decode(data: bytes) -> Job:
    fields = orjson.loads(data)
    fields["status"] = JobStatus(fields["status"])
    return Job(**fields)


def token(text: str) -> str:
    """Any string as one key/subject token (KV keys allow ``[-/_=.A-Za-z0-9]``)."""
    return "k" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def untoken(tok: str) -> str:
    raw = tok[1:]
    return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()


def name_token(name: str) -> str:
    """A model or tenant name as a subject token and consumer-name part: readable, and told
    apart by a hash."""
    readable = re.sub(r"[^A-Za-z0-9_-]", "_", name)[:32]
    return f"{readable}-{hashlib.blake2b(name.encode(), digest_size=5).hexdigest()}"


def priority_token(priority: int) -> str:
    return f"p{priority}" if priority >= 0 else f"n{-priority}"


def idem_key(tenant: str, key: str) -> str:
    return f"{token(tenant)}.{token(key)}"


def work_subject(prefix: str, job: Job) -> str:
    """The lane of a waiting job: ``<prefix>.work.<model>.<priority>.<tenant>``."""
    lane = (name_token(job.model), priority_token(job.priority), name_token(job.tenant))
    return f"{prefix}.work.{'.'.join(lane)}"
