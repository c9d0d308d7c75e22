"""The tracing observer and the process's providers: imported only while tracing is on.

Spans are started and ended by the queue's observer hooks (:mod:`genspool.core.observe`), so
the core knows nothing of OpenTelemetry: ``submitting`` wraps the write of new jobs (a producer
span each, whose context is stored in the job), ``started`` opens a batch span and a model span
per job, ``settled`` ends them with the outcome, and ``written`` ends any span of a job handed
back or cancelled without an outcome reaching the worker (so none is left open). The agent
provider opens ``invoke_agent`` and ``execute_tool`` spans through :func:`genspool.tracing.
invoke_agent`, which finds :meth:`TracingObserver.invoke_agent` on the queue.

This runs on the queue's hot path, once or twice per job: what is the same for every job of a
model and endpoint (span names, attribute dicts, the metrics' attribute sets) is made once
(:class:`_Kind`) and shared, attributes are given when a span starts or set together when it
ends, and the stored ``traceparent`` is written and read without splitting or copying more
than the job's metadata (see ``bench/tracing.py`` for what is left: mostly the SDK's own work
per span, starting, ending and encoding it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, TraceFlags, TracerProvider
from opentelemetry.trace.status import Status, StatusCode

from genspool.config import WEBHOOK_MODEL
from genspool.core.job import Job
from genspool.core.models import PROMPT_TOKENS, TRACEPARENT
from genspool.core.observe import Observer, Timed
from genspool.tracing import AGENT_RUN, AgentSpan, JobLike, ToolSpan

__all__ = ["SCHEMA_URL", "TracingObserver", "default_providers", "parse_traceparent"]

#: The semantic-conventions version the span and metric names follow.
SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
SYSTEM = "genspool"
#: A job's url to its ``gen_ai.operation.name``.
_OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "text_completion",
    "/v1/embeddings": "embeddings",
    "/v1/responses": "chat",
}
_WEBHOOKS = str(WEBHOOK_MODEL["name"])
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_UNSAMPLED = TraceFlags(TraceFlags.DEFAULT)


def traceparent(ctx: SpanContext) -> str:
    """The W3C ``traceparent`` header of a span context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{ctx.trace_flags:02x}"


def parse_traceparent(value: object) -> SpanContext | None:
    """The remote span context of a stored ``traceparent``; None for anything malformed."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    found = _TRACEPARENT.fullmatch(value)
    if found is None:
        return None
    trace_id, span_id = int(found[1], 16), int(found[2], 16)
    if not trace_id or not span_id:
        return None
    flags = _SAMPLED if int(found[3], 16) & 0x01 else _UNSAMPLED
    return SpanContext(trace_id, span_id, True, flags)


def _parent(ctx: SpanContext | None) -> otel_context.Context | None:
    """A context whose span is the stored one (None: the current context)."""
    return None if ctx is None else trace.set_span_in_context(trace.NonRecordingSpan(ctx))


@dataclass(slots=True)
class _Batch:
    span: Span
    left: int


@dataclass(slots=True, frozen=True)
class _Kind:
    """What is the same for every call of one model at one endpoint, made once and shared (the
    SDK copies what it is given): the span's name and start attributes, the metrics' attribute
    sets. A webhook delivery is a ``deliver webhook`` span with no metric."""

    name: str
    attributes: dict[str, Any]
    metric: dict[str, Any]
    tokens: tuple[tuple[str, dict[str, Any]], ...]
    webhook: bool = False


@dataclass(slots=True)
class _Call:
    span: Span
    batch: _Batch
    kind: _Kind
    started: float


class TracingObserver(Observer):
    """Spans of submits, batches and model calls; every hook is passed on to ``inner``."""

    def __init__(
        self,
        inner: Observer,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider | None,
        providers: Mapping[str, str],
        *,
        content: bool = False,
    ) -> None:
        self.inner = inner
        self.providers = dict(providers)
        self.content = content
        version = _version()
        self.tracer = tracer_provider.get_tracer("genspool", version, schema_url=SCHEMA_URL)
        self.tokens = self.duration = None
        if meter_provider is not None:
            meter = meter_provider.get_meter("genspool", version, schema_url=SCHEMA_URL)
            self.tokens = meter.create_histogram(
                "gen_ai.client.token.usage",
                unit="{token}",
                description="Tokens used by a model call, by gen_ai.token.type",
                explicit_bucket_boundaries_advisory=_TOKEN_BUCKETS,
            )
            self.duration = meter.create_histogram(
                "gen_ai.client.operation.duration",
                unit="s",
                description="Duration of a model call",
                explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
            )
        self._calls: dict[str, _Call] = {}
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._send: dict[str, tuple[str, dict[str, Any]]] = {}

    # -- producer ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def submitting(self, jobs: Sequence[Job]) -> Iterator[object]:
        spans = []
        start = self.tracer.start_span
        for job in jobs:
            name, attributes = self._send.get(job.model) or self._sender(job.model)
            # A job made on behalf of another (a webhook delivery of its event) carries that
            # job's context: its producer span joins that trace rather than the current one.
            given = job.metadata.get(TRACEPARENT)
            span = start(
                name,
                context=None if given is None else _parent(parse_traceparent(given)),
                kind=SpanKind.PRODUCER,
                attributes={**attributes, "messaging.message.id": job.id},
            )
            ctx = span.get_span_context()
            if ctx.is_valid:  # a copy: jobs submitted together may share one metadata dict
                job.metadata = {**job.metadata, TRACEPARENT: traceparent(ctx)}
            spans.append(span)
        try:
            with self.inner.submitting(jobs):
                yield None
        except BaseException as exc:
            for span in spans:
                _failed(span, _error_type(exc))
            raise
        finally:
            for span in spans:
                span.end()

    def _sender(self, model: str) -> tuple[str, dict[str, Any]]:
        made = self._send[model] = (
            f"send {model}",
            {
                "messaging.system": SYSTEM,
                "messaging.operation.type": "send",
                "messaging.operation.name": "submit",
                "messaging.destination.name": model,
            },
        )
        return made

    def submitted(self, jobs: Sequence[Job]) -> None:
        self.inner.submitted(jobs)

    def leased(self, jobs: Sequence[Job]) -> None:
        self.inner.leased(jobs)

    # -- consumer ------------------------------------------------------------------------------

    def started(self, model: str, jobs: Sequence[Job]) -> None:
        self.inner.started(model, jobs)
        stored = [parse_traceparent(j.metadata.get(TRACEPARENT)) for j in jobs]
        start = self.tracer.start_span
        batch = start(
            f"process {model}",
            kind=SpanKind.CONSUMER,
            links=[Link(ctx) for ctx in stored if ctx is not None],
            attributes={
                "messaging.system": SYSTEM,
                "messaging.operation.type": "process",
                "messaging.operation.name": "process",
                "messaging.destination.name": model,
                "messaging.batch.message_count": len(jobs),
            },
        )
        state = _Batch(batch, len(jobs))
        batch_link = [Link(batch.get_span_context())]
        in_batch = trace.set_span_in_context(batch)
        now = time.perf_counter()
        for job, ctx in zip(jobs, stored, strict=True):
            kind = self._kinds.get((model, job.url)) or self._kind(model, job.url)
            attributes = kind.attributes
            if kind.webhook:
                attributes = {**attributes, **_delivery(job)}
            elif ctx is None:  # no producer span (submitted untraced) to carry the job's id
                attributes = {**attributes, "messaging.message.id": job.id}
            # In the job's own trace (submit to model call, across processes), linked to the
            # batch it ran in; a job without a stored context is a child of its batch span.
            span = start(
                kind.name,
                context=in_batch if ctx is None else _parent(ctx),
                kind=SpanKind.CLIENT,
                links=batch_link,
                attributes=attributes,
            )
            if self.content and not kind.webhook and span.is_recording():
                span.set_attribute("gen_ai.input.messages", _dumps(_inputs(job.body)))
            self._calls[job.id] = _Call(span, state, kind, now)

    def _kind(self, model: str, url: str) -> _Kind:
        if model == _WEBHOOKS:
            kind = _Kind(
                "deliver webhook",
                {
                    "messaging.system": SYSTEM,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "deliver",
                },
                {},
                (),
                webhook=True,
            )
        else:
            operation = _OPERATIONS.get(url, "chat")
            metric = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": self.providers.get(model, SYSTEM),
                "gen_ai.request.model": model,
            }
            tokens = tuple((t, {**metric, "gen_ai.token.type": t}) for t in ("input", "output"))
            kind = _Kind(f"{operation} {model}", metric, metric, tokens)
        self._kinds[model, url] = kind
        return kind

    def settled(
        self,
        model: str,
        outcomes: Sequence[tuple[Job, Any]],
        runs: Mapping[str, Timed],
        now: float,
    ) -> None:
        self.inner.settled(model, outcomes, runs, now)
        if not self._calls:
            return
        for job, outcome in outcomes:
            call = self._calls.pop(job.id, None)
            if call is None:
                continue
            if not isinstance(outcome, dict):
                self._end(call, _error_type(outcome))
            elif call.kind.webhook:
                call.span.set_attributes(_delivered(outcome))
                self._end(call, None)
            else:
                self._answered(call, job, outcome)

    def written(self, jobs: Sequence[Job]) -> None:
        self.inner.written(jobs)
        if not self._calls:
            return
        for job in jobs:  # handed back, cancelled or expired before its worker saw an outcome
            call = self._calls.pop(job.id, None)
            if call is not None:
                self._end(call, job.status.value)

    # -- ending --------------------------------------------------------------------------------

    def _answered(self, call: _Call, job: Job, result: dict[str, Any]) -> None:
        usage = result.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        inputs = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
        if inputs is None:
            inputs = _count(job.metadata.get(PROMPT_TOKENS))
        outputs = _count(usage.get("completion_tokens", usage.get("output_tokens")))
        found: dict[str, Any] = {}
        if isinstance(value := result.get("model"), str):
            found["gen_ai.response.model"] = value
        if isinstance(value := result.get("id"), str):
            found["gen_ai.response.id"] = value
        if inputs is not None:
            found["gen_ai.usage.input_tokens"] = inputs
        if outputs is not None:
            found["gen_ai.usage.output_tokens"] = outputs
        span = call.span
        if found:
            span.set_attributes(found)
        if self.content and span.is_recording():
            span.set_attribute("gen_ai.output.messages", _dumps(_outputs(result)))
        if self.tokens is not None:
            (_, counted_in), (_, counted_out) = call.kind.tokens
            if inputs is not None:
                self.tokens.record(inputs, counted_in)
            if outputs is not None:
                self.tokens.record(outputs, counted_out)
        self._end(call, None)

    def _end(self, call: _Call, error: str | None) -> None:
        if error is not None:
            _failed(call.span, error)
        call.span.end()
        if self.duration is not None and not call.kind.webhook:
            attributes = call.kind.metric
            if error is not None:
                attributes = {**attributes, "error.type": error}
            self.duration.record(time.perf_counter() - call.started, attributes)
        call.batch.left -= 1
        if call.batch.left <= 0:
            call.batch.span.end()

    # -- agents --------------------------------------------------------------------------------

    @contextlib.contextmanager
    def invoke_agent(self, job: JobLike, agent: str, model: str) -> Iterator[AgentSpan]:
        """An ``invoke_agent`` span around an agent's run for ``job``: a child of the job's
        model span (else of its stored context), current while the run lasts, so that the
        producer spans of its model calls and the spans of its tool calls are its children."""
        call = self._calls.get(job.id)
        parent: otel_context.Context | None
        if call is not None:
            parent = trace.set_span_in_context(call.span)
        else:
            parent = _parent(parse_traceparent(job.metadata.get(TRACEPARENT)))
        span = self.tracer.start_span(
            f"invoke_agent {agent}",
            context=parent,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": agent,
                "gen_ai.provider.name": self.providers.get(model, SYSTEM),
                "gen_ai.request.model": model,
            },
        )
        run = _AgentRun(self, span)
        attached = otel_context.attach(trace.set_span_in_context(span, parent))
        current = AGENT_RUN.set(run)
        try:
            yield run
        except BaseException as exc:
            _failed(span, _error_type(exc))
            raise
        finally:
            AGENT_RUN.reset(current)
            otel_context.detach(attached)
            span.end()


class _AgentRun:
    """The span of one agent run, and the spans of its tool calls."""

    def __init__(self, observer: TracingObserver, span: Span) -> None:
        self.observer, self.span = observer, span

    def answered(self, answer: Mapping[str, Any]) -> None:
        usage = answer.get("usage")
        if not isinstance(usage, dict):
            return
        inputs = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
        outputs = _count(usage.get("completion_tokens", usage.get("output_tokens")))
        if inputs is not None:
            self.span.set_attribute("gen_ai.usage.input_tokens", inputs)
        if outputs is not None:
            self.span.set_attribute("gen_ai.usage.output_tokens", outputs)

    @contextlib.contextmanager
    def execute_tool(self, name: str, call_id: str, description: str = "") -> Iterator[ToolSpan]:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
        if description:
            attributes["gen_ai.tool.description"] = description
        # A child of the run's span whichever task the call runs in (they run concurrently).
        parent = trace.set_span_in_context(self.span)
        span = self.observer.tracer.start_span(
            f"execute_tool {name}", context=parent, kind=SpanKind.INTERNAL, attributes=attributes
        )
        attached = otel_context.attach(trace.set_span_in_context(span, parent))
        try:
            yield _ToolCall(span, self.observer.content)
        except BaseException as exc:
            _failed(span, _error_type(exc))
            raise
        finally:
            otel_context.detach(attached)
            span.end()


class _ToolCall:
    def __init__(self, span: Span, content: bool) -> None:
        self.span, self.content = span, content

    def ended(self, outcome: str, arguments: Any = None, result: Any = None) -> None:
        if outcome != "ok":
            _failed(self.span, outcome)
        if self.content and self.span.is_recording():
            self.span.set_attribute("gen_ai.tool.call.arguments", _dumps(arguments))
            if outcome == "ok":
                self.span.set_attribute("gen_ai.tool.call.result", _dumps(result))


def _delivery(job: Job) -> dict[str, Any]:
    """A webhook delivery's subscription and event (never its payload nor URL)."""
    found = {}
    if isinstance(hook := job.metadata.get("webhook_id"), str):
        found["messaging.destination.name"] = hook
    if isinstance(event := job.metadata.get("event_id"), str):
        found["messaging.message.id"] = event
    return found


def _delivered(result: Mapping[str, Any]) -> dict[str, Any]:
    """A delivery's answer: the receiver's status and host (not its path nor query, which may
    carry a token)."""
    found: dict[str, Any] = {}
    if isinstance(status := result.get("status_code"), int):
        found["http.response.status_code"] = status
    if isinstance(url := result.get("url"), str) and (host := urlsplit(url).hostname):
        found["server.address"] = host
    return found


def _failed(span: Span, error: str) -> None:
    span.set_attribute("error.type", error)
    span.set_status(Status(StatusCode.ERROR))


def _error_type(exc: BaseException) -> str:
    """genspool's error code, else the exception's class: never its message (it may quote
    the prompt)."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) and code else type(exc).__qualname__


def _count(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _inputs(body: Mapping[str, Any]) -> Any:
    for key in ("messages", "input", "prompt"):
        if key in body:
            return body[key]
    return None


def _outputs(result: Mapping[str, Any]) -> Any:
    choices = result.get("choices")
    if isinstance(choices, list):
        return [c.get("message", c.get("text")) for c in choices if isinstance(c, dict)]
    return result.get("output")


def _dumps(value: Any) -> str:
    return orjson.dumps(value, default=str).decode()


def _version() -> str:
    try:
        return importlib.metadata.version("genspool")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _providers() -> tuple[TracerProvider, MeterProvider | None]:
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    class _Resource(Resource):
        """A resource that hashes once: the OTLP encoder hashes the resource of every span it
        encodes, and the SDK's hash JSON-dumps every attribute each time (about a sixth of
        the encoding of a span with a few attributes)."""

        _hash: int | None = None

        def __hash__(self) -> int:
            if self._hash is None:
                self._hash = super().__hash__()
            return self._hash

        def __eq__(self, other: object) -> bool:
            return self is other or super().__eq__(other)

    env = os.environ
    named = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "genspool"}
    found = Resource.create(named)  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES read here
    resource = _Resource(found.attributes, found.schema_url)
    tracer_provider = SdkTracerProvider(resource=resource)  # OTEL_TRACES_SAMPLER read here
    for name in _names(env.get("OTEL_TRACES_EXPORTER", "otlp")):
        if name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        elif name == "console":
            tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    readers: list[MetricReader] = []
    if "otlp" in _names(env.get("OTEL_METRICS_EXPORTER", "otlp")):
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if not readers:
        return tracer_provider, None
    meter_provider = SdkMeterProvider(resource=resource, metric_readers=readers)
    metrics.set_meter_provider(meter_provider)
    return tracer_provider, meter_provider


def _names(value: str) -> list[str]:
    return [n.strip().lower() for n in value.split(",") if n.strip()]


def default_providers(
    env: Mapping[str, str] | None = None,
) -> tuple[TracerProvider, MeterProvider | None]:
    """This process's providers, made once from the standard ``OTEL_*`` variables and set as
    OpenTelemetry's global ones (so other instrumentation joins the same traces); the SDK's
    exporters read ``os.environ`` themselves, so ``env`` is not consulted here."""
    del env
    return _providers()
