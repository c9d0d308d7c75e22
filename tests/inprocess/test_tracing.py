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
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from genspool.agents.config import agent_models
from genspool.config import ModelConfig, read_models_file
from genspool.core.models import TRACEPARENT
from genspool.testing.faults import FaultServer
from genspool.testing.inprocess import BASE_URL, InProcess, serve
from genspool.tracing import TraceContext, enabled, fastapi_telemetry, install
from genspool.tracing._otel import SCHEMA_URL, parse_traceparent
from tests.helpers.api import CHAT, EMBEDDINGS, FAST_RETRY, MODELS, As, chat_body, make_keys
from tests.helpers.receiver import Receiver

SECRET = "PROMPT-SECRET-5d1c"  # never in an attribute unless content capture is on


@dataclass
class Traced:
    gs: InProcess
    spans: InMemorySpanExporter
    metrics: InMemoryMetricReader

    def finished(self) -> list[ReadableSpan]:
        return list(self.spans.get_finished_spans())


async def traced(
    env: dict[str, str] | None = None, models: Sequence[ModelConfig | dict[str, Any]] = MODELS
) -> AsyncIterator[Traced]:
    exporter, reader = InMemorySpanExporter(), InMemoryMetricReader()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    meters = MeterProvider(metric_readers=[reader])
    async with serve(models, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as gs:
        providers = {cfg.name: cfg.provider for cfg in gs.services.catalog}
        assert install(
            gs.queue, providers, tracer_provider=provider, meter_provider=meters, env=env or {}
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


# -- agents, tools and pushes ----------------------------------------------------------------


def lookup(q: str) -> dict[str, str]:
    """A tool (entry point ``tests.inprocess.test_tracing:lookup``): echoes what it is asked."""
    return {"found": q}


def _tool_call(call_id: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    function = {"name": name, "arguments": orjson.dumps(arguments).decode()}
    return {"id": call_id, "type": "function", "function": function}


#: The agent's model on the fault server (a scripted fake of an OpenAI server, named as such):
#: first two tool calls at once, an allowed one and one the agent may not make, then an answer.
REPLIES = [
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            _tool_call("call_1", "lookup", {"q": SECRET}),
            _tool_call("call_2", "wipe", {}),
        ],
    },
    {"role": "assistant", "content": "Found it."},
]


@pytest.fixture
def agent_models_file(tmp_path: Path) -> Iterator[list[ModelConfig]]:
    faults = FaultServer()
    faults.start()
    faults.script([{"model": "planner", "replies": REPLIES}])
    try:
        path = tmp_path / "models.yaml"
        path.write_text(
            f"""
models:
  - name: planner
    provider: openai
    options: {{base_url: "{faults.url}/v1"}}
    max_attempts: 1
    limits: {{call_retries: 0}}
tools:
  - name: lookup
    description: Looks a thing up.
    parameters: {{type: object, properties: {{q: {{type: string}}}}, required: [q]}}
    entry_point: "tests.inprocess.test_tracing:lookup"
  - name: wipe
    entry_point: "tests.inprocess.test_tracing:lookup"
agents:
  - name: helper
    model: planner
    tools: [lookup]
    max_steps: 4
"""
        )
        found = read_models_file(path)
        yield [*found.models, *agent_models(found)]
    finally:
        faults.stop()


AGENT_JOB = {"model": "helper", "messages": [{"role": "user", "content": f"find {SECRET}"}]}


async def test_an_agent_run_and_its_tool_calls_are_spans_in_the_jobs_trace(
    agent_models_file: list[ModelConfig],
) -> None:
    async for tr in traced(models=[*MODELS, *agent_models_file]):
        job = await run(tr, AGENT_JOB)
        assert job["status"] == "succeeded", job
        spans = tr.finished()
        (producer,) = named(spans, "send helper")
        (model,) = named(spans, "chat helper")
        (agent,) = named(spans, "invoke_agent helper")
        (allowed,) = named(spans, "execute_tool lookup")
        (refused,) = named(spans, "execute_tool wipe")
        assert producer.context is not None and model.context is not None
        assert agent.context is not None and agent.parent is not None
        trace_id = producer.context.trace_id

        # The run is a child of the agent job's model span; the tool calls, its children.
        assert agent.kind is SpanKind.CLIENT
        assert (agent.context.trace_id, agent.parent.span_id) == (trace_id, model.context.span_id)
        attrs = dict(agent.attributes or {})
        assert attrs["gen_ai.operation.name"] == "invoke_agent"
        assert attrs["gen_ai.agent.name"] == "helper"
        assert attrs["gen_ai.provider.name"] == "openai"
        assert attrs["gen_ai.request.model"] == "planner"
        assert attrs["gen_ai.usage.input_tokens"] > 0
        assert attrs["gen_ai.usage.output_tokens"] > 0
        assert "error.type" not in attrs
        for tool, call_id in ((allowed, "call_1"), (refused, "call_2")):
            assert tool.kind is SpanKind.INTERNAL
            assert tool.context is not None and tool.parent is not None
            assert (tool.context.trace_id, tool.parent.span_id) == (
                trace_id,
                agent.context.span_id,
            )
            tattrs = dict(tool.attributes or {})
            assert tattrs["gen_ai.operation.name"] == "execute_tool"
            assert tattrs["gen_ai.tool.call.id"] == call_id
            assert tattrs["gen_ai.tool.type"] == "function"
        assert (allowed.attributes or {})["gen_ai.tool.name"] == "lookup"
        assert (allowed.attributes or {})["gen_ai.tool.description"] == "Looks a thing up."
        assert "error.type" not in (allowed.attributes or {})
        assert allowed.status.status_code is not StatusCode.ERROR
        assert (refused.attributes or {})["error.type"] == "refused"  # not allowed for helper
        assert refused.status.status_code is StatusCode.ERROR

        # The agent's two model calls are child jobs: their producer spans are the run's
        # children, and their model spans follow them, all in the one trace.
        calls = named(spans, "send planner")
        assert len(calls) == 2
        assert all(
            c.parent is not None and c.parent.span_id == agent.context.span_id for c in calls
        )
        planner = named(spans, "chat planner")
        assert len(planner) == 2
        assert {s.context.trace_id for s in [*calls, *planner] if s.context} == {trace_id}

        # No prompt, tool argument nor tool result in any attribute.
        assert SECRET not in texts(spans)


async def test_agent_and_tool_content_only_when_enabled(
    agent_models_file: list[ModelConfig],
) -> None:
    env = {"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "true"}
    async for tr in traced(env, models=[*MODELS, *agent_models_file]):
        job = await run(tr, AGENT_JOB)
        assert job["status"] == "succeeded", job
        spans = tr.finished()
        (allowed,) = named(spans, "execute_tool lookup")
        attrs = allowed.attributes or {}
        assert orjson.loads(str(attrs["gen_ai.tool.call.arguments"])) == {"q": SECRET}
        assert orjson.loads(str(attrs["gen_ai.tool.call.result"])) == {"found": SECRET}
        (refused,) = named(spans, "execute_tool wipe")
        assert "gen_ai.tool.call.result" not in (refused.attributes or {})


async def test_a_webhook_push_is_a_span_in_the_trace_of_its_job(tr: Traced) -> None:
    receiver = Receiver()
    await receiver.start()
    try:
        api = As(tr.gs, (await make_keys(tr.gs.services.keys)).a)
        answer = await api.request(
            "POST", "/v1/webhooks", json={"url": receiver.url, "events": ["job.succeeded"]}
        )
        assert answer.status_code == 201, answer.text
        hook = answer.json()["id"]
        job_id = (await api.chat("echo", f"say {SECRET}"))["id"]
        async with asyncio.timeout(10):
            while not named(tr.finished(), "deliver webhook"):
                await asyncio.sleep(0.02)
    finally:
        await receiver.stop()
    spans = tr.finished()
    (producer,) = [
        s
        for s in named(spans, "send echo")
        if (s.attributes or {}).get("messaging.message.id") == job_id
    ]
    (queued,) = named(spans, "send genspool-webhooks")
    (push,) = named(spans, "deliver webhook")
    assert producer.context is not None and queued.parent is not None
    assert queued.context is not None and push.context is not None and push.parent is not None
    # The delivery is enqueued in the job's trace, and its attempt is a child of that.
    assert queued.parent.span_id == producer.context.span_id
    assert queued.context.trace_id == push.context.trace_id == producer.context.trace_id
    assert push.parent.span_id == queued.context.span_id
    assert push.kind is SpanKind.CLIENT
    attrs = dict(push.attributes or {})
    assert attrs["messaging.operation.name"] == "deliver"
    assert attrs["messaging.destination.name"] == hook
    assert str(attrs["messaging.message.id"]).startswith(f"evt_{job_id}_")
    assert attrs["http.response.status_code"] == 200
    assert attrs["server.address"] == "127.0.0.1"
    assert not [k for k in attrs if k.startswith("gen_ai.")]
    assert SECRET not in texts(spans)


async def test_a_callers_traceparent_is_the_parent_of_the_producer_span(tr: Traced) -> None:
    caller = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    # The middleware create_app adds while tracing is on, around the same app.
    transport = httpx.ASGITransport(app=TraceContext(tr.gs.app, env={}))
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        body = {"url": CHAT, "body": chat_body("echo")}
        joined = await client.post("/v1/jobs", json=body, headers={"traceparent": caller})
        alone = await client.post("/v1/jobs", json=body)
    assert joined.status_code == alone.status_code == 202
    producers = {
        (s.attributes or {}).get("messaging.message.id"): s
        for s in named(tr.finished(), "send echo")
    }
    mine, other = producers[joined.json()["id"]], producers[alone.json()["id"]]
    assert mine.context is not None and mine.parent is not None
    assert (mine.context.trace_id, mine.parent.span_id) == (
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
    )
    assert other.parent is None  # no caller context: a trace of its own


def test_fastapis_own_telemetry_is_off_while_tracing_unless_asked() -> None:
    assert fastapi_telemetry({}) == {}  # tracing off: FastAPI's defaults stand
    on = {"GENSPOOL_OTEL": "1"}
    assert fastapi_telemetry(on) == {"telemetry": {"tracing": False, "metrics": False}}
    both = {**on, "GENSPOOL_OTEL_HTTP": "1"}
    assert fastapi_telemetry(both) == {"telemetry": {"operation_spans": False}}
    assert TraceContext(_never_called, env=on).on
    assert not TraceContext(_never_called, env=both).on  # FastAPI's span propagates


async def _never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


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
