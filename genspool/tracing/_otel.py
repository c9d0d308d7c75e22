"""The tracing observer and the process's providers: imported only while tracing is on.

Spans are started and ended by the queue's observer hooks (:mod:`genspool.core.observe`), so
the core knows nothing of OpenTelemetry: ``submitting`` wraps the write of new jobs (a producer
span each, whose context is stored in the job), ``started`` opens a batch span and a model span
per job, ``settled`` ends them with the outcome, and ``written`` ends any span of a job handed
back or cancelled without an outcome reaching the worker (so none is left open).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Link, Span, SpanContext, SpanKind, TraceFlags, TracerProvider
from opentelemetry.trace.status import Status, StatusCode

from genspool.core.job import Job
from genspool.core.models import PROMPT_TOKENS, TRACEPARENT
from genspool.core.observe import Observer, Timed

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
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)
_DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48)


def traceparent(ctx: SpanContext) -> str:
    """The W3C ``traceparent`` header of a span context."""
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: object) -> SpanContext | None:
    """The remote span context of a stored ``traceparent``; None for anything malformed."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    version, trace_id, span_id, flags = [*value.split("-"), "", "", ""][:4]
    try:
        ctx = SpanContext(
            int(trace_id, 16), int(span_id, 16), True, TraceFlags(int(flags, 16) & 0x01)
        )
    except ValueError:
        return None
    return ctx if version == "00" and ctx.is_valid else None


@dataclass(slots=True)
class _Batch:
    span: Span
    left: int


@dataclass(slots=True)
class _Call:
    span: Span
    batch: _Batch
    attributes: dict[str, Any]
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

    # -- producer ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def submitting(self, jobs: Sequence[Job]) -> Iterator[object]:
        spans = []
        for job in jobs:
            span = self.tracer.start_span(
                f"send {job.model}",
                kind=SpanKind.PRODUCER,
                attributes={
                    "messaging.system": SYSTEM,
                    "messaging.operation.type": "send",
                    "messaging.operation.name": "submit",
                    "messaging.destination.name": job.model,
                    "messaging.message.id": job.id,
                },
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

    def submitted(self, jobs: Sequence[Job]) -> None:
        self.inner.submitted(jobs)

    def leased(self, jobs: Sequence[Job]) -> None:
        self.inner.leased(jobs)

    # -- consumer ------------------------------------------------------------------------------

    def started(self, model: str, jobs: Sequence[Job]) -> None:
        self.inner.started(model, jobs)
        stored = [parse_traceparent(j.metadata.get(TRACEPARENT)) for j in jobs]
        batch = self.tracer.start_span(
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
        provider = self.providers.get(model, SYSTEM)
        now = time.perf_counter()
        for job, ctx in zip(jobs, stored, strict=True):
            # In the job's own trace (submit to model call, across processes), linked to the
            # batch it ran in; a job without a stored context is a child of its batch span.
            parent = trace.set_span_in_context(
                trace.NonRecordingSpan(ctx) if ctx is not None else batch
            )
            operation = _OPERATIONS.get(job.url, "chat")
            attributes: dict[str, Any] = {
                "gen_ai.operation.name": operation,
                "gen_ai.provider.name": provider,
                "gen_ai.request.model": model,
            }
            span = self.tracer.start_span(
                f"{operation} {model}",
                context=parent,
                kind=SpanKind.CLIENT,
                links=batch_link,
                attributes={**attributes, "messaging.message.id": job.id},
            )
            if self.content and span.is_recording():
                span.set_attribute("gen_ai.input.messages", _dumps(_inputs(job.body)))
            self._calls[job.id] = _Call(span, state, attributes, now)

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
            if isinstance(outcome, dict):
                self._answered(call, job, outcome)
            else:
                self._end(call, _error_type(outcome))

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
        span = call.span
        if isinstance(result.get("model"), str):
            span.set_attribute("gen_ai.response.model", result["model"])
        if isinstance(result.get("id"), str):
            span.set_attribute("gen_ai.response.id", result["id"])
        if inputs is not None:
            span.set_attribute("gen_ai.usage.input_tokens", inputs)
        if outputs is not None:
            span.set_attribute("gen_ai.usage.output_tokens", outputs)
        if self.content and span.is_recording():
            span.set_attribute("gen_ai.output.messages", _dumps(_outputs(result)))
        if self.tokens is not None:
            for kind, count in (("input", inputs), ("output", outputs)):
                if count is not None:
                    self.tokens.record(count, {**call.attributes, "gen_ai.token.type": kind})
        self._end(call, None)

    def _end(self, call: _Call, error: str | None) -> None:
        if error is not None:
            _failed(call.span, error)
        call.span.end()
        if self.duration is not None:
            attributes = call.attributes if error is None else {**call.attributes}
            if error is not None:
                attributes["error.type"] = error
            self.duration.record(time.perf_counter() - call.started, attributes)
        call.batch.left -= 1
        if call.batch.left <= 0:
            call.batch.span.end()


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

    env = os.environ
    named = {} if env.get("OTEL_SERVICE_NAME") else {"service.name": "genspool"}
    resource = Resource.create(named)  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES read here
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
