"""OpenTelemetry traces (genspool.tracing): a job submitted through the API gives a producer
span whose context is stored with the job, a batch span that links every job of its batch, and
model spans with the GenAI attributes in the job's own trace; no prompt or answer text in any
attribute unless content capture is on; with tracing off, nothing of OpenTelemetry's SDK is
imported and the queue keeps its plain observer.

The SDK's own in-memory exporter and metric reader receive what is recorded (real SDK providers,
a real worker over ``memory://``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from genspool.core.models import TRACEPARENT
from genspool.testing.inprocess import InProcess, serve
from genspool.tracing import enabled, install
from genspool.tracing._otel import SCHEMA_URL, parse_traceparent
from tests.helpers.api import CHAT, EMBEDDINGS, FAST_RETRY, MODELS, chat_body

SECRET = "PROMPT-SECRET-5d1c"  # never in an attribute unless content capture is on


@dataclass
class Traced:
    gs: InProcess
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())


async def traced(env: dict[str, str] | None = None) -> AsyncIterator[Traced]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[reader])
    async with serve(MODELS, worker=True, retry=FAST_RETRY) as gs:
        models = {str(m["name"]): str(m["provider"]) for m in MODELS}
        assert install(
            gs.queue, models, tracer_provider=provider, meter_provider=meters, env=env or {}
        )
        yield Traced(gs, exporter, reader)
    provider.shutdown()
    meters.shutdown()


@pytest.fixture
async def tr() -> AsyncIterator[Traced]:
    async for t in traced():
        yield t


async def run(tr: Traced, body: dict[str, Any], url: str = CHAT) -> dict[str, Any]:
    answer = await tr.gs.client.post("/v1/jobs", json={"url": url, "body": body})
    assert answer.status_code == 202, answer.text
    job = await tr.gs.queue.wait(answer.json()["id"], timeout=10)
    await asyncio.sleep(0.05)  # the model span ends just after the result is stored
    return {"id": job.id, "status": job.status.value, "metadata": job.metadata}


def named(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def texts(spans: list[ReadableSpan]) -> str:
    return "\n".join(f"{k}={v}" for s in spans for k, v in (s.attributes or {}).items())


async def test_one_trace_runs_from_submit_to_the_model_call(tr: Traced) -> None:
    job = await run(tr, chat_body("echo", f"say {SECRET}"))
    assert job["status"] == "succeeded"
    spans = tr.finished()
    (producer,) = named(spans, "send echo")
    assert producer.kind is SpanKind.PRODUCER
    assert producer.attributes is not None
    assert producer.attributes["messaging.message.id"] == job["id"]
    stored = parse_traceparent(job["metadata"][TRACEPARENT])
    assert stored is not None and producer.context is not None
    assert (stored.trace_id, stored.span_id) == (
        producer.context.trace_id,
        producer.context.span_id,
    )

    (batch,) = named(spans, "process echo")
    assert batch.kind is SpanKind.CONSUMER
    assert batch.attributes is not None
    assert batch.attributes["messaging.batch.message_count"] == 1
    linked = {(link.context.trace_id, link.context.span_id) for link in batch.links}
    assert (stored.trace_id, stored.span_id) in linked

    (model,) = named(spans, "chat echo")
    assert model.kind is SpanKind.CLIENT
    assert model.parent is not None and model.context is not None
    assert model.context.trace_id == producer.context.trace_id  # one trace, submit to call
    assert model.parent.span_id == producer.context.span_id
    assert batch.context is not None
    assert [link.context.span_id for link in model.links] == [batch.context.span_id]
    attrs = dict(model.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "echo"
    assert attrs["gen_ai.request.model"] == "echo"
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] == 2
    assert "error.type" not in attrs
    assert model.instrumentation_scope is not None
    assert model.instrumentation_scope.schema_url == SCHEMA_URL
    assert SECRET not in texts(spans)


async def test_a_batch_span_links_every_job_of_its_batch(tr: Traced) -> None:
    bodies = [
        {"url": EMBEDDINGS, "body": {"model": "pager", "input": f"text {i}"}} for i in range(6)
    ]
    # Submitted at once (concurrent submits share one write): the lane leases them together.
    answers = await asyncio.gather(*(tr.gs.client.post("/v1/jobs", json=b) for b in bodies))
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers]
    ids = [a.json()["id"] for a in answers]
    jobs = [await tr.gs.queue.wait(i, timeout=10) for i in ids]
    await asyncio.sleep(0.05)
    contexts = {
        (c.trace_id, c.span_id)
        for j in jobs
        if (c := parse_traceparent(j.metadata[TRACEPARENT])) is not None
    }
    assert len(contexts) == 6
    batches = named(tr.finished(), "process pager")
    sizes = [int((b.attributes or {})["messaging.batch.message_count"]) for b in batches]
    assert sum(sizes) == 6 and max(sizes) > 1, sizes
    linked = {(link.context.trace_id, link.context.span_id) for b in batches for link in b.links}
    assert contexts <= linked
    calls = named(tr.finished(), "embeddings pager")
    assert len(calls) == 6
    assert all((s.attributes or {})["gen_ai.operation.name"] == "embeddings" for s in calls)


async def test_a_failed_call_carries_error_type_and_the_metrics_are_recorded(tr: Traced) -> None:
    job = await run(tr, chat_body("doomed", SECRET))
    assert job["status"] == "failed"
    calls = named(tr.finished(), "chat doomed")
    assert len(calls) == 2  # max_attempts: 2, each attempt a model span in the job's trace
    assert {(s.attributes or {})["error.type"] for s in calls} == {"model_timeout"}
    assert all(s.status.status_code is StatusCode.ERROR for s in calls)
    assert len({s.context.trace_id for s in calls if s.context is not None}) == 1
    await run(tr, chat_body("echo", "two words"))
    data = tr.metrics.get_metrics_data()
    assert data is not None
    points = {
        m.name: list(m.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    usage = {
        (p.attributes or {}).get("gen_ai.token.type"): p
        for p in points["gen_ai.client.token.usage"]
    }
    assert set(usage) == {"input", "output"}
    durations = points["gen_ai.client.operation.duration"]
    assert {(p.attributes or {}).get("error.type") for p in durations} == {None, "model_timeout"}
    assert SECRET not in texts(tr.finished())


async def test_content_is_recorded_only_when_enabled() -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    async for tr in traced(env):
        await run(tr, chat_body("echo", SECRET))
        (model,) = named(tr.finished(), "chat echo")
        attrs = model.attributes or {}
        assert SECRET in str(attrs["gen_ai.input.messages"])
        assert SECRET in str(attrs["gen_ai.output.messages"])


def test_tracing_is_on_only_when_asked() -> None:
    assert not enabled({})
    assert enabled({"GENSPOOL_OTEL": "1"})
    assert enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert enabled({"OTEL_TRACES_EXPORTER": "otlp"})
    assert not enabled({"OTEL_TRACES_EXPORTER": "none"})
    assert not enabled({"GENSPOOL_OTEL": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"})
    assert not enabled({"GENSPOOL_OTEL": "1", "OTEL_SDK_DISABLED": "true"})


OFF = """
import asyncio, sys
from genspool.testing.inprocess import serve
from tests.helpers.api import CHAT, MODELS, chat_body

async def main():
    async with serve(MODELS, worker=True) as gs:
        answer = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("echo")})
        job = await gs.queue.wait(answer.json()["id"], timeout=10)
        assert job.status.value == "succeeded", job.status
        assert "genspool.traceparent" not in job.metadata
        assert type(gs.queue.observer).__name__ != "TracingObserver"
    prefixes = ("opentelemetry.sdk", "genspool.tracing._")
    loaded = sorted(m for m in sys.modules if m.startswith(prefixes))
    print(loaded)

asyncio.run(main())
"""


def test_with_tracing_off_nothing_is_imported_nor_recorded() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": "."}
    done = subprocess.run(
        [sys.executable, "-c", OFF], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
