"""OpenTelemetry traces of jobs, from submit through the queue to the model call (``otel`` extra).

**Off by default, and free when off**: this module imports nothing from OpenTelemetry; only
:func:`install`, when tracing is on, imports :mod:`genspool.tracing._otel` (the SDK and the
OTLP/HTTP exporter). A queue with tracing off keeps its plain observer.

**On** when any of these is set (and ``OTEL_SDK_DISABLED`` is not ``true``, nor
``GENSPOOL_OTEL`` ``0``): ``GENSPOOL_OTEL=1``, ``OTEL_TRACES_EXPORTER`` (other than ``none``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``. The exporter is
configured by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, is
OTLP/HTTP protobuf; ``console``; ``none``), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers,
timeout), ``OTEL_SERVICE_NAME`` (default ``genspool``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``; metrics likewise by ``OTEL_METRICS_EXPORTER`` (``otlp`` or ``none``).

**What is recorded** (semantic conventions 1.37.0, the schema URL on every span: the GenAI
names since ``gen_ai.provider.name`` replaced ``gen_ai.system``):

* ``send {model}``, a PRODUCER span per job submitted, child of whatever span is current (or,
  for a job genspool makes on behalf of another, such as a webhook delivery, of that job's
  context); its W3C ``traceparent`` is stored in the job's metadata (``genspool.traceparent``,
  a reserved key a client cannot set), so the trace crosses processes with the job. It carries
  the job's id (``messaging.message.id``; a job submitted untraced has it on its model span);
* ``process {model}``, a CONSUMER span per batch a worker starts, with
  ``messaging.batch.message_count`` and a **link** to each job's stored context;
* ``{gen_ai.operation.name} {model}`` (``chat {model}``, ``embeddings {model}``), a CLIENT
  span per job in the batch, a child of the job's producer span and linked to its batch span,
  with ``gen_ai.operation.name``, ``gen_ai.provider.name``, ``gen_ai.request.model``,
  ``gen_ai.response.model``, ``gen_ai.response.id``, ``gen_ai.usage.input_tokens`` /
  ``output_tokens`` and ``error.type`` on failure; plus the histograms
  ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``;
* ``invoke_agent {agent}``, a CLIENT span around an agent's run (a child of the agent job's
  model span), with ``gen_ai.operation.name`` ``invoke_agent``, ``gen_ai.agent.name``,
  ``gen_ai.provider.name`` and ``gen_ai.request.model`` of the agent's model, the run's summed
  ``gen_ai.usage.*`` and ``error.type`` (``agent_step_limit``, ``agent_deadline``, ...) when it
  fails. It is the current span while the agent runs, so the producer spans of its model calls
  (child jobs) are its children;
* ``execute_tool {tool}``, an INTERNAL span per tool call of an agent, a child of its
  ``invoke_agent`` span, with ``gen_ai.operation.name`` ``execute_tool``, ``gen_ai.tool.name``,
  ``gen_ai.tool.call.id``, ``gen_ai.tool.type`` (``function``), ``gen_ai.tool.description``
  and ``error.type`` (``refused``, ``error`` or ``timeout``) for a call that did not succeed;
* ``deliver webhook``, a CLIENT span per delivery attempt of a webhook, in the trace of the job
  whose event it pushes (its producer span is a child of that job's), instead of a model span:
  ``messaging.operation.name`` ``deliver``, ``messaging.destination.name`` (the subscription),
  ``messaging.message.id`` (the event), ``http.response.status_code``, ``server.address`` and
  ``error.type``; no GenAI attribute nor metric.

The process's providers become OpenTelemetry's global ones (other instrumentation joins the
same traces). A caller's W3C ``traceparent`` is the parent of the producer spans of the jobs it
submits (:class:`TraceContext`). FastAPI 0.165+ would also trace and meter every request once
the global providers are the SDK's; that is off unless ``GENSPOOL_OTEL_HTTP=1`` (then its HTTP
server span, parent of the producer spans, and ``http.server.*`` metrics), as it costs about
as much CPU again as the queue's own spans (:func:`fastapi_telemetry`; ``bench/tracing.py``
measures what tracing costs).

Prompt and output content (``gen_ai.input.messages``, ``gen_ai.output.messages`` and, names
from semantic conventions 1.38, ``gen_ai.tool.call.arguments`` / ``gen_ai.tool.call.result``)
only when ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; otherwise no attribute
holds any text of a request, a tool call or an answer.

**Agents** call :func:`invoke_agent` and :func:`execute_tool` whatever the switch: with
tracing off (no tracing observer on the queue, no agent run in the context) each returns a
shared no-op, and nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from genspool.exceptions import ConfigError

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from genspool.core.queue import Queue

__all__ = [
    "AgentSpan",
    "JobLike",
    "ToolSpan",
    "TraceContext",
    "capture_content",
    "enabled",
    "execute_tool",
    "fastapi_telemetry",
    "http_spans",
    "install",
    "invoke_agent",
]

_TRUE = frozenset({"1", "true", "yes", "on"})


class JobLike(Protocol):
    """What the agent hooks read of a job (a :class:`~genspool.core.job.Job` or the
    provider's ``JobRef``)."""

    @property
    def id(self) -> str: ...

    @property
    def metadata(self) -> Mapping[str, Any]: ...


class AgentSpan(Protocol):
    """An agent's run, while it lasts."""

    def answered(self, answer: Mapping[str, Any]) -> None:
        """The run's final answer (its summed ``usage`` goes on the span)."""

    def execute_tool(
        self, name: str, call_id: str, description: str = ""
    ) -> contextlib.AbstractContextManager[ToolSpan]:
        """A span around one tool call (:func:`execute_tool` finds this run)."""


class ToolSpan(Protocol):
    """One tool call of an agent, while it lasts."""

    def ended(self, outcome: str, arguments: Any = None, result: Any = None) -> None:
        """How it ended: ``ok``, else the error type; ``arguments`` and ``result`` are recorded
        only when content capture is on."""


class _Off:
    """The span of a run or a tool call while tracing is off: every method does nothing."""

    def answered(self, answer: Mapping[str, Any]) -> None:
        return None

    def execute_tool(
        self, name: str, call_id: str, description: str = ""
    ) -> contextlib.AbstractContextManager[ToolSpan]:
        return _OFF

    def ended(self, outcome: str, arguments: Any = None, result: Any = None) -> None:
        return None


_OFF = contextlib.nullcontext(_Off())
#: The agent run in progress in this task (set by the tracing observer while tracing is on).
AGENT_RUN: contextvars.ContextVar[AgentSpan | None] = contextvars.ContextVar(
    "genspool_agent_run", default=None
)


def invoke_agent(
    queue: Queue, job: JobLike, agent: str, model: str
) -> contextlib.AbstractContextManager[AgentSpan]:
    """Around the run of ``agent`` (whose model is ``model``) for ``job``: an ``invoke_agent``
    span in the job's trace, current while the run lasts; a shared no-op when ``queue`` has no
    tracing observer."""
    observer: Any = queue.observer
    while observer is not None:
        start = getattr(observer, "invoke_agent", None)
        if start is not None:
            return start(job, agent, model)  # type: ignore[no-any-return]
        observer = getattr(observer, "inner", None)
    return _OFF


def execute_tool(
    name: str, call_id: str, description: str = ""
) -> contextlib.AbstractContextManager[ToolSpan]:
    """Around one tool call: an ``execute_tool`` span, a child of the agent run's span; a
    shared no-op outside a traced run (one context-variable read)."""
    run = AGENT_RUN.get()
    return _OFF if run is None else run.execute_tool(name, call_id, description)


def http_spans(env: Mapping[str, str] | None = None) -> bool:
    """Whether FastAPI's own telemetry is wanted too (``GENSPOOL_OTEL_HTTP=1``): an HTTP
    server span per request and the ``http.server.*`` metrics (see :func:`fastapi_telemetry`)."""
    env = os.environ if env is None else env
    return env.get("GENSPOOL_OTEL_HTTP", "").strip().lower() in _TRUE


def fastapi_telemetry(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Keyword arguments for ``FastAPI()``. FastAPI 0.165+ traces and meters every request
    itself once the process's global providers are the SDK's, as :func:`install` makes them:
    a server span and two operation spans per request, each costing about what a job's own
    spans do, and three metric records. While genspool's tracing is on, that is off unless
    ``GENSPOOL_OTEL_HTTP=1`` asks for the server span and metrics (never the operation spans);
    :class:`TraceContext` still joins a caller's trace. Nothing for an older FastAPI, which has
    no such option, nor while tracing is off (FastAPI's defaults stand for whoever sets up
    OpenTelemetry otherwise)."""
    if not enabled(env):
        return {}
    import inspect

    from fastapi import FastAPI

    if "telemetry" not in inspect.signature(FastAPI.__init__).parameters:
        return {}
    if http_spans(env):
        return {"telemetry": {"operation_spans": False}}
    return {"telemetry": {"tracing": False, "metrics": False}}


_CARRIED = frozenset({b"traceparent", b"tracestate", b"baggage"})


class TraceContext:
    """ASGI middleware, added while tracing is on: a request's W3C trace context
    (``traceparent``, ``tracestate``, ``baggage``, read by the propagators of
    ``OTEL_PROPAGATORS``) is the current context while it is handled, so the producer span of
    a job it submits joins the caller's trace. A request without one costs a scan of its
    header names. Passes everything through when FastAPI's own server spans are on
    (:func:`http_spans`): they do this, and are the producer spans' parents."""

    def __init__(self, app: ASGIApp, env: Mapping[str, str] | None = None) -> None:
        self.app = app
        self.on = not http_spans(env)
        if self.on:
            from opentelemetry import context, propagate

            self._attach, self._detach, self._extract = (
                context.attach,
                context.detach,
                propagate.extract,
            )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.on and scope["type"] in ("http", "websocket"):
            carrier = {
                name.decode("latin-1"): value.decode("latin-1")
                for name, value in scope["headers"]
                if name in _CARRIED
            }
            if carrier:
                token = self._attach(self._extract(carrier))
                try:
                    await self.app(scope, receive, send)
                finally:
                    self._detach(token)
                return
        await self.app(scope, receive, send)


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    own = env.get("GENSPOOL_OTEL", "").strip().lower()
    if own:
        return own in _TRUE
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def capture_content(env: Mapping[str, str] | None = None) -> bool:
    """Whether prompts and outputs may go into spans (off unless explicitly enabled)."""
    env = os.environ if env is None else env
    value = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() == "true"


def install(
    queue: Queue,
    providers: Mapping[str, str],
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Trace every submit, batch and model call made through ``queue`` in this process, if
    tracing is on (or a ``tracer_provider`` is given: tests pass one with an in-memory
    exporter); whether it was installed. ``providers`` maps model names to their provider
    (``gen_ai.provider.name``). Call it after anything that replaces ``queue.observer``
    (metrics): the tracing observer wraps the one it finds and passes every hook on."""
    if tracer_provider is None and not enabled(env):
        return False
    try:
        from genspool.tracing._otel import TracingObserver, default_providers
    except ImportError as exc:
        raise ConfigError(
            f"tracing is on (GENSPOOL_OTEL or OTEL_* is set) but {exc.name or 'OpenTelemetry'}"
            " is not installed: pip install 'genspool[otel]'"
        ) from exc

    if tracer_provider is None:
        tracer_provider, default_meter = default_providers(env)
        meter_provider = meter_provider or default_meter
    queue.observer = TracingObserver(
        queue.observer,
        tracer_provider,
        meter_provider,
        providers,
        content=capture_content(env),
    )
    return True
