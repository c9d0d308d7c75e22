"""JSON-lines logs (``--log-format json``, ``GENSPOOL_LOG_FORMAT=json``): one object a line.

Each line has ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message``, then the ids the log call carries, as ``extra`` fields (``job_id``, ``batch_id``,
``model``, ``tenant``) or bound for a block of code with :func:`bound`: ``trace_id`` and
``span_id`` come from a stored W3C ``traceparent`` passed as ``extra`` or from the current
OpenTelemetry span (read only when tracing has loaded OpenTelemetry), so a line can be joined to
its trace. An exception adds ``exc_type`` and ``exc`` (the traceback).

**Never a secret**: the message and the traceback pass :func:`genspool.core.keys.redact` (API
keys, bearer tokens, passwords in URLs) here again, after the record factory's own redaction.
**No prompt**: only the fields named above are copied from a record, never its arguments or
any other attribute, and genspool's own lines name jobs and models, not their content.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import orjson

from genspool.core.keys import SecretsFilter, redact

__all__ = ["JsonFormatter", "bound", "use_json"]

#: The ``extra`` fields copied onto a line when a record carries them.
FIELDS = ("job_id", "batch_id", "model", "tenant", "trace_id", "span_id")
_bound: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "genspool_log_ids", default=None
)


@contextlib.contextmanager
def bound(**ids: str) -> Iterator[None]:
    """Add ``ids`` (e.g. ``job_id=...``) to every line logged in this block (and the tasks it
    starts, which copy the context)."""
    token = _bound.set({**(_bound.get() or {}), **ids})
    try:
        yield
    finally:
        _bound.reset(token)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object (see the module's docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        line.update(_bound.get() or {})
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = str(value)
        if "trace_id" not in line:
            line.update(_trace_ids(record.__dict__.get("traceparent")))
        if record.exc_info and record.exc_info[0] is not None:
            line["exc_type"] = record.exc_info[0].__name__
            line["exc"] = redact(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = redact(record.stack_info)
        return orjson.dumps(line, default=str).decode()


def _trace_ids(traceparent: object) -> dict[str, str]:
    """The ids of a stored ``traceparent``, else of the current span when OpenTelemetry is
    loaded (it is imported only by tracing: a process without it pays nothing here)."""
    if isinstance(traceparent, str):
        parts = traceparent.split("-")
        if len(parts) == 4 and len(parts[1]) == 32 and len(parts[2]) == 16:
            return {"trace_id": parts[1], "span_id": parts[2]}
    trace = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return {}
    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def use_json(level: int | str = logging.INFO, stream: Any = None) -> logging.Handler:
    """Make the root logger write JSON lines to ``stream`` (stderr) at ``level``, replacing its
    handlers; uvicorn's loggers, left unconfigured (``log_config=None``), propagate here."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(SecretsFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    return handler
