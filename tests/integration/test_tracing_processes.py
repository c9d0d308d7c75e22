"""Traces across processes: ``genspool api`` and ``genspool worker``, configured only by the
standard ``OTEL_*`` variables, export OTLP/HTTP to a receiver on loopback; the job's producer
span (API process, a child of the caller's span named by its ``traceparent`` header) and its
model span (worker process) share one trace id, the worker's batch span links the producer
span, and no prompt text is in any span.

The receiver is a real HTTP server on 127.0.0.1 that keeps each ``/v1/traces`` body; bodies
are decoded with OpenTelemetry's own protobuf classes."""

from __future__ import annotations

import gzip
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.helpers.processes import Spawner, wait_until

CHAT = "/v1/chat/completions"
SECRET = "PROMPT-SECRET-0c77"
MODELS = [{"name": "echo", "provider": "echo"}]
CALLER = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Collector(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.bodies: list[bytes] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def spans(self) -> list[dict[str, Any]]:
        """Every span received: its service, name, ids, links, attributes."""
        found = []
        for body in list(self.bodies):
            request = ExportTraceServiceRequest.FromString(body)
            for rs in request.resource_spans:
                service = next(
                    a.value.string_value for a in rs.resource.attributes if a.key == "service.name"
                )
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        found.append({
                            "service": service,
                            "name": s.name,
                            "trace": s.trace_id.hex(),
                            "span": s.span_id.hex(),
                            "parent": s.parent_span_id.hex(),
                            "links": {(x.trace_id.hex(), x.span_id.hex()) for x in s.links},
                            "attributes": {a.key: str(a.value) for a in s.attributes},
                        })  # fmt: skip
        return found


class _Handler(BaseHTTPRequestHandler):
    server: Collector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        if self.path == "/v1/traces":
            self.server.bodies.append(body)
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[Collector]:
    server = Collector()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_api_and_worker_share_one_trace_id(
    spawner: Spawner, tmp_path: Path, collector: Collector
) -> None:
    otel = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
    }
    db = tmp_path / "g.db"
    api = spawner.server(MODELS, command="api", db=db, env={**otel, "OTEL_SERVICE_NAME": "gs-api"})
    worker = spawner.start(
        "worker", "--db", spawner.sqlite_url(db), "--config", str(api.config),
        env={**otel, "OTEL_SERVICE_NAME": "gs-worker"}, name="worker",
    )  # fmt: skip
    body = {"model": "echo", "messages": [{"role": "user", "content": SECRET}]}
    with httpx.Client(base_url=api.url, timeout=10) as client:  # a caller with a trace of its own
        answer = client.post(
            "/v1/jobs", json={"url": CHAT, "body": body}, headers={"traceparent": CALLER}
        )
        assert answer.status_code == 202, answer.text
    job_id = answer.json()["id"]
    assert api.wait(job_id, timeout=30)["status"] == "succeeded"

    def exported() -> list[dict[str, Any]] | None:
        spans = collector.spans()
        names = {(s["service"], s["name"]) for s in spans}
        wanted = {
            ("gs-api", "send echo"),
            ("gs-worker", "process echo"),
            ("gs-worker", "chat echo"),
        }
        return spans if wanted <= names else None

    spans = wait_until(exported, 20, what="the producer, batch and model spans")
    (producer,) = [s for s in spans if s["name"] == "send echo"]
    (batch,) = [s for s in spans if s["name"] == "process echo"]
    (model,) = [s for s in spans if s["name"] == "chat echo"]
    assert job_id in producer["attributes"]["messaging.message.id"]
    # The caller's trace, continued: its span is the producer span's parent.
    assert (producer["trace"], producer["parent"]) == tuple(CALLER.split("-")[1:3])
    assert model["trace"] == producer["trace"]  # one trace, across the two processes
    assert model["parent"] == producer["span"]
    assert (producer["trace"], producer["span"]) in batch["links"]
    assert "1" in batch["attributes"]["messaging.batch.message_count"]
    assert "chat" in model["attributes"]["gen_ai.operation.name"]
    assert "echo" in model["attributes"]["gen_ai.request.model"]
    assert "gen_ai.usage.output_tokens" in model["attributes"]
    assert not any(SECRET in str(s) for s in spans)
    for proc in (worker, api.proc):
        proc.signal(signal.SIGTERM)
        assert proc.wait(30) == 0
