"""The decisions of a NATS lease that need no server: which lanes to fetch how much from, and
what to do with a work message given the job's record.

JetStream has no priorities or ranks. Waiting work lies in *lanes*, one subject per model,
priority and tenant (``<prefix>.work.<model>.<priority>.<tenant>``), each a FIFO. A lease reads
how many messages each lane of the model holds and the rank at the head of each lane; from
those :func:`shares` picks the ``want`` best jobs by ``(-priority, rank)``, counting a lane's
later messages as the ranks after its head (which is what the fair-share ranks of one tenant
are). The IO around it is in :mod:`genspool.backends.nats._work`.

A message only *announces* a job; the record decides (:func:`work_verdict`), so a duplicate,
a stale message or one whose record write is still in flight is harmless.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal

from genspool.backends.nats._codec import Rec
from genspool.core.job import Job

__all__ = [
    "INFLIGHT_GRACE_S",
    "INFLIGHT_RETRY_S",
    "Lane",
    "Verdict",
    "contenders",
    "inflight",
    "ready",
    "shares",
    "work_verdict",
]

#: How long a notice whose record write has not landed yet is kept before it is dropped.
INFLIGHT_GRACE_S = 30.0
#: When a notice's record write is in flight, look again after this long.
INFLIGHT_RETRY_S = 0.05

#: "take": lease the job; "drop": ack the message away; a float: look again after that long.
Verdict = Literal["take", "drop"] | float


def _priority(tok: str) -> int:
    return int(tok[1:]) if tok[0] == "p" else -int(tok[1:])


@dataclass(frozen=True, slots=True, order=True)
class Lane:
    """One FIFO of waiting work: a model's jobs of one priority and one tenant."""

    subject: str
    priority: int

    @classmethod
    def parse(cls, subject: str) -> Lane:
        return cls(subject, _priority(subject.split(".")[-2]))


def contenders(counts: Mapping[str, int], want: int) -> dict[Lane, int]:
    """The lanes (subject -> messages held) that can hold the ``want`` best jobs: the highest
    priorities, down to and including the first priority at which there are enough."""
    lanes = sorted(
        ((Lane.parse(s), n) for s, n in counts.items() if n), key=lambda ln: -ln[0].priority
    )
    out: dict[Lane, int] = {}
    for lane, n in lanes:
        if want <= 0 or (sum(out.values()) >= want and lane.priority < min_priority(out)):
            break
        out[lane] = n
    return out


def min_priority(lanes: Mapping[Lane, int]) -> int:
    return min(lane.priority for lane in lanes)


def _virtual_ranks(lane: Lane, head: float, n: int) -> Iterator[tuple[int, float, Lane]]:
    return ((-lane.priority, head + i, lane) for i in range(n))


def shares(
    lanes: Mapping[Lane, int], heads: Mapping[Lane, float | None], want: int
) -> dict[Lane, int]:
    """How many messages to fetch from each lane: the ``want`` lowest ``(-priority, rank)``.
    ``heads`` holds the rank at the head of each lane (None: the lane emptied meanwhile); it
    is only needed when there are several lanes."""
    if len(lanes) <= 1:
        return {lane: min(n, want) for lane, n in lanes.items() if want > 0}
    candidates = heapq.merge(
        *(
            _virtual_ranks(lane, head, min(n, want))
            for lane, n in lanes.items()
            if (head := heads.get(lane)) is not None
        )
    )
    out: dict[Lane, int] = {}
    for _, _, lane in itertools.islice(candidates, max(want, 0)):
        out[lane] = out.get(lane, 0) + 1
    return out


def inflight(rec: Rec | None, superseded: int, age: float) -> Verdict | None:
    """The verdict on a notice whose record write has not landed yet, else None. A notice
    carries the revision its write replaces (0: the record is being created)."""
    if rec is None and superseded != 0:
        return "drop"  # the record existed and is gone (purged)
    if rec is not None and rec.rev != superseded:
        return None
    return INFLIGHT_RETRY_S if age < INFLIGHT_GRACE_S else "drop"


def ready(job: Job, now: float, waiting: Container[str]) -> bool:
    """Whether a lease may take the job now: waiting, due, and not past ``expires_at``."""
    alive = job.expires_at is None or job.expires_at > now
    return job.status in waiting and job.available_at <= now and alive


def work_verdict(
    rec: Rec | None, superseded: int, age: float, now: float, waiting: Container[str]
) -> Verdict:
    """What a lease does with a work message (``age`` seconds old), given the job's record."""
    pending = inflight(rec, superseded, age)
    if pending is not None:
        return pending
    assert rec is not None
    job = rec.job
    if job.status not in waiting or (job.expires_at is not None and job.expires_at <= now):
        return "drop"  # a stale duplicate, or a job that the facade will expire
    if job.available_at > now:
        return job.available_at - now
    return "take"
