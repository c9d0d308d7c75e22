"""What a webhook says: the event types, the patterns a subscription names, and the body of
each event (``{"id", "type", "timestamp", "data"}``, the Standard Webhooks shape).

Event ids are made from what happened, not drawn at random: the same transition seen twice (a
hook run again after a crash, two processes) yields the same id, so the delivery's idempotency
key ``webhook:{subscription}:{event}`` enqueues it once. A job ended again after a replay is a
new event (its ``finished_at`` differs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from genspool.core.batch import Batch
from genspool.core.job import Job
from genspool.core.models import TRACEPARENT
from genspool.core.pipeline import PipelineRun
from genspool.exceptions import InvalidRequest

__all__ = [
    "EVENT_TYPES",
    "WebhookEvent",
    "batch_event",
    "check_patterns",
    "job_event",
    "matches",
    "run_event",
]

#: Every event a subscription may name (``pipeline_run.*`` are emitted by pipeline runs).
EVENT_TYPES = frozenset(
    {
        "batch.completed", "batch.failed", "batch.expired", "batch.cancelled",
        "job.succeeded", "job.failed", "job.cancelled", "job.expired",
        "pipeline_run.completed", "pipeline_run.failed", "pipeline_run.cancelled",
    }
)  # fmt: skip
_FAMILIES = frozenset(t.partition(".")[0] for t in EVENT_TYPES)
MAX_PATTERNS = 20


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    id: str
    type: str
    tenant: str
    at: float
    data: dict[str, Any]
    #: The batch the event belongs to (a batch's own, or a line's job's), for ``batch_id``.
    batch_id: str | None = None
    #: The W3C ``traceparent`` of the job the event is about (set only while tracing is on):
    #: its deliveries join that job's trace.
    trace: str | None = None

    def payload(self) -> dict[str, Any]:
        stamp = datetime.fromtimestamp(self.at, UTC).isoformat().replace("+00:00", "Z")
        return {"id": self.id, "type": self.type, "timestamp": stamp, "data": self.data}


def check_patterns(patterns: list[str]) -> tuple[str, ...]:
    """The patterns as given, or InvalidRequest naming the first that matches no event."""
    if not patterns or len(patterns) > MAX_PATTERNS:
        raise InvalidRequest(f"events: give 1 to {MAX_PATTERNS} patterns", param="events")
    for i, pattern in enumerate(patterns):
        family, _, rest = pattern.partition(".")
        if pattern == "*" or (rest == "*" and family in _FAMILIES) or pattern in EVENT_TYPES:
            continue
        known = ", ".join(sorted(EVENT_TYPES))
        raise InvalidRequest(
            f"events[{i}]: {pattern!r} matches no event; use '*', 'batch.*', 'job.*',"
            f" 'pipeline_run.*' or one of {known}",
            param=f"events[{i}]",
        )
    return tuple(dict.fromkeys(patterns))


def matches(patterns: tuple[str, ...], event_type: str) -> bool:
    family = event_type.partition(".")[0]
    return any(p in ("*", event_type, f"{family}.*") for p in patterns)


def job_event(job: Job) -> WebhookEvent:
    at = job.finished_at or job.created_at
    batch_id = job.metadata.get("batch_id")
    trace = job.metadata.get(TRACEPARENT)
    return WebhookEvent(
        id=f"evt_{job.id}_{int(at * 1000)}",
        type=f"job.{job.status.value}",
        tenant=job.tenant,
        at=at,
        data=job.public(),
        batch_id=batch_id if isinstance(batch_id, str) else None,
        trace=trace if isinstance(trace, str) else None,
    )


def batch_event(b: Batch) -> WebhookEvent:
    """A batch's end; ``data`` is its summary (``GET /v1/batches/{id}`` has the rest)."""
    at = b.completed_at or b.failed_at or b.expired_at or b.cancelled_at or b.created_at
    data = {
        "id": b.id, "object": "batch", "status": b.status.value, "endpoint": b.endpoint,
        "input_file_id": b.input_file_id, "output_file_id": b.output_file_id,
        "error_file_id": b.error_file_id, "metadata": b.metadata,
        "request_counts": {"total": b.total, "completed": b.completed, "failed": b.failed},
    }  # fmt: skip
    return WebhookEvent(f"evt_{b.id}_{b.status.value}", f"batch.{b.status.value}", b.tenant, at,
                        data, b.id)  # fmt: skip


def run_event(run: PipelineRun) -> WebhookEvent:
    """A pipeline run's end; ``data`` is its summary (``GET /v1/pipelines/{name}/runs/{id}``
    has the rest)."""
    data = {
        "id": run.id, "object": "pipeline.run", "pipeline": run.pipeline,
        "status": run.status.value, "trigger": run.trigger, "metadata": run.metadata,
        "counts": {"total": run.total, "succeeded": run.succeeded, "failed": run.failed,
                   "skipped": run.skipped},
        "output_file_ids": list(run.output_file_ids), "error_file_id": run.error_file_id,
        "error": run.error,
    }  # fmt: skip
    at = run.ended_at or run.created_at
    return WebhookEvent(
        f"evt_{run.id}_{run.status.value}", f"pipeline_run.{run.status.value}", run.tenant, at, data
    )
