"""The log lines that explain what happened to a job that did not simply succeed: a retry, a
dead letter, a job handed back to the queue. One line per job, on the ``genspool.queue`` logger.

A line names the job, its model, the attempt and a reason, never the request or the answer: the
reason is the error's ``code`` (plus the HTTP status a remote model answered, when its message
says so), not its message, which may quote what the remote server sent back.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

from genspool.core.job import Job, JobStatus
from genspool.core.models import TRACEPARENT
from genspool.exceptions import GenspoolError, ModelError

__all__ = ["ids_of", "log_failures", "log_released", "reason"]

log = logging.getLogger("genspool.queue")

_HTTP_STATUS = re.compile(r"\banswered (\d{3})\b")


def reason(exc: BaseException) -> str:
    """Why a call failed, in words safe for a log: no prompt, no answer, no key."""
    if isinstance(exc, GenspoolError):
        text = str(getattr(exc, "code", type(exc).__name__))
        if status := _HTTP_STATUS.search(str(exc)):
            text += f" (HTTP {status.group(1)})"
    else:  # our own (a lost lease) or a provider bug: the type and the start of the message
        text = f"{type(exc).__name__}: {str(exc)[:120]}".rstrip(": ")
    if isinstance(exc, ModelError) and exc.retry_after is not None:
        text += f", Retry-After {exc.retry_after:.3g} s"
    return text


def ids_of(job: Job) -> dict[str, str]:
    """A job's ids as a log record's ``extra`` (JSON log lines show them: genspool.logjson);
    never its tenant's data or its content."""
    ids = {"job_id": job.id, "model": job.model}
    traceparent = job.metadata.get(TRACEPARENT)
    if isinstance(traceparent, str):
        ids["traceparent"] = traceparent
    return ids


def log_failures(
    written: Sequence[Job], failed: Sequence[tuple[Job, BaseException]], now: float
) -> None:
    """One line per failed job that was written (a job whose lease was lost changed nothing)."""
    if not written:
        return
    why = {job.id: exc for job, exc in failed}
    for job in written:
        exc = why.get(job.id)
        text = reason(exc) if exc is not None else "unknown"
        head, ids = f"job {job.id} (model {job.model})", ids_of(job)
        if job.status is JobStatus.RETRYING:
            log.info(
                "%s: attempt %d/%d failed (%s); retry in %.2f s",
                head, job.attempts, job.max_attempts, text, job.available_at - now, extra=ids,
            )  # fmt: skip
        elif job.status is JobStatus.FAILED:
            log.warning(
                "%s: attempt %d/%d failed (%s); dead-lettered",
                head, job.attempts, job.max_attempts, text, extra=ids,
            )  # fmt: skip
        elif job.status is JobStatus.QUEUED:
            log.info(
                "%s: not sent to the model (%s); back in the queue in %.2f s, the attempt "
                "does not count",
                head, text, job.available_at - now, extra=ids,
            )  # fmt: skip


def log_released(written: Sequence[Job], why: str) -> None:
    for job in written:
        log.info(
            "job %s (model %s): handed back to the queue unfinished (%s); the attempt does "
            "not count",
            job.id, job.model, why, extra=ids_of(job),
        )  # fmt: skip
