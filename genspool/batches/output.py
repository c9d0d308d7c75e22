"""A batch's output: one line per ``custom_id``, in OpenAI's shape, written in segments.

Each line's job becomes a line of the output file (it succeeded) or of the error file (it
failed, or was cancelled or expired before it ran). Lines are written in input order as their
jobs end, a segment at a time: each segment is a blob committed whole (``<batch>_o<n>``,
``<batch>_e<n>``) and counted in the batch's record only after that, so a process that dies
anywhere leaves either a whole segment the record counts, or one the next runner writes again
under the same key. When every line is written the segments are joined, a chunk at a time,
into the two files the batch names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from genspool.core.job import Job, JobStatus
from genspool.files.blobs import blob_key

__all__ = ["STOPPED", "Segment", "line_job_id", "segment_key", "usage_json"]

#: The error code of a line that never ran, by why its batch stopped.
STOPPED = {
    "cancel": ("batch_cancelled", "the batch was cancelled before this request ran"),
    "expire": ("batch_expired", "the batch expired before this request ran"),
}
_USAGE = ("input_tokens", "output_tokens", "total_tokens", "cached_tokens", "reasoning_tokens")


def line_job_id(batch_id: str, line: int) -> str:
    """The job of line ``line`` (1-based): a name any process can compute, so the record
    keeps cursors rather than ids; it sorts with the batch's creation."""
    return f"job_{batch_id.removeprefix('batch_')}_{line}"


def segment_key(tenant: str, batch_id: str, kind: str, n: int) -> str:
    """The blob of segment ``n`` of the output (``kind`` ``o``) or the error output (``e``)."""
    return blob_key(tenant, f"{batch_id}_{kind}{n:06d}")


def _line_usage(body: Any) -> dict[str, int]:
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return {}
    prompt = int(usage.get("prompt_tokens") or usage.get("input_tokens") or 0)
    output = int(usage.get("completion_tokens") or usage.get("output_tokens") or 0)
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    reasoning = (usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0
    total = int(usage.get("total_tokens") or prompt + output)
    return {"input_tokens": prompt, "output_tokens": output, "total_tokens": total,
            "cached_tokens": int(cached), "reasoning_tokens": int(reasoning)}  # fmt: skip


def usage_json(usage: Mapping[str, int]) -> dict[str, Any]:
    """A batch's summed usage as OpenAI shows it."""
    return {
        "input_tokens": usage.get("input_tokens", 0),
        "input_tokens_details": {"cached_tokens": usage.get("cached_tokens", 0)},
        "output_tokens": usage.get("output_tokens", 0),
        "output_tokens_details": {"reasoning_tokens": usage.get("reasoning_tokens", 0)},
        "total_tokens": usage.get("total_tokens", 0),
    }


@dataclass
class Segment:
    """The lines of one segment as they are gathered, and what they add to the counts."""

    out: bytearray = field(default_factory=bytearray)
    err: bytearray = field(default_factory=bytearray)
    lines: int = 0
    completed: int = 0
    failed: int = 0
    out_lines: int = 0
    err_lines: int = 0
    usage: dict[str, int] = field(default_factory=dict)

    def add_job(self, job: Job, stop: str | None) -> None:
        """The line of an ended job: its answer, or its error."""
        custom_id = str(job.metadata.get("custom_id", ""))
        line_id = f"batch_req_{job.id.removeprefix('job_')}"
        if job.status is JobStatus.SUCCEEDED and job.result is not None:
            body = job.result.get("body")
            status = int(job.result.get("status_code", 200))
            self._out(line_id, custom_id, {"status_code": status, "request_id": job.id,
                                            "body": body})  # fmt: skip
            for key, value in _line_usage(body).items():
                self.usage[key] = self.usage.get(key, 0) + value
            return
        if job.status is JobStatus.FAILED:
            error = dict(job.error or {"code": "failed", "message": "the request failed"})
            status = int(error.pop("status_code", 500))
            response = {"status_code": status, "request_id": job.id, "body": {"error": error}}
            self._err(line_id, custom_id, response, None)
            return
        why = "expire" if job.status is JobStatus.EXPIRED else (stop or "cancel")
        self.add_stopped(custom_id, why, line_id)

    def add_stopped(self, custom_id: str, why: str, line_id: str) -> None:
        """The line of a request that never ran (its batch was cancelled or expired)."""
        code, message = STOPPED[why]
        self._err(line_id, custom_id, None, {"code": code, "message": message})

    def add_lost(self, job_id: str) -> None:
        """The line of a job that is gone (purged past its result TTL before it was written:
        a batch resumed more than a day after its lines ended); its custom_id went with it."""
        error = {"code": "line_lost", "message": f"the job {job_id} of this line is gone"}
        self._err(f"batch_req_{job_id.removeprefix('job_')}", "", None, error)

    def _out(self, line_id: str, custom_id: str, response: dict[str, Any]) -> None:
        self.out += _line(line_id, custom_id, response, None)
        self.lines, self.completed, self.out_lines = (
            self.lines + 1, self.completed + 1, self.out_lines + 1
        )  # fmt: skip

    def _err(
        self, line_id: str, custom_id: str, response: dict[str, Any] | None,
        error: dict[str, Any] | None,
    ) -> None:  # fmt: skip
        self.err += _line(line_id, custom_id, response, error)
        self.lines, self.failed, self.err_lines = (
            self.lines + 1,
            self.failed + 1,
            self.err_lines + 1,
        )


def _line(
    line_id: str, custom_id: str, response: dict[str, Any] | None, error: dict[str, Any] | None
) -> bytes:
    doc = {"id": line_id, "custom_id": custom_id, "response": response, "error": error}
    return orjson.dumps(doc) + b"\n"
