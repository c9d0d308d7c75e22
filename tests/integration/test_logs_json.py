"""JSON-lines logs: ``genspool api`` (``GENSPOOL_LOG_FORMAT=json``) and ``genspool worker
--log-format json`` write nothing but JSON objects on stderr, from start to shutdown; a job's
lines carry its ``job_id``, ``model`` and the trace ids of its stored context; no prompt text
and no API key reaches any line."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx

from tests.helpers.processes import Spawner

CHAT = "/v1/chat/completions"
SECRET = "PROMPT-SECRET-91be"
KEY = "gsk_0123456789ab_" + "k" * 43  # a well-formed key that exists nowhere
MODELS = [
    {"name": "echo", "provider": "echo"},
    {
        "name": "doomed",
        "provider": "echo",
        "max_attempts": 2,
        "limits": {"timeout_s": 0.05},
        "options": {"latency_ms": 400},
    },
]


def json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every stderr line as a JSON object (a line that is not one fails the test)."""
    parsed = []
    for line in stderr.splitlines():
        if line.strip():
            obj = json.loads(line)
            assert isinstance(obj, dict), line
            assert {"time", "level", "logger", "message"} <= obj.keys(), line
            parsed.append(obj)
    return parsed


def test_api_and_worker_log_json_lines_with_job_ids(spawner: Spawner, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    api = spawner.server(MODELS, command="api", db=db, env={"GENSPOOL_LOG_FORMAT": "json"})
    worker = spawner.start(
        "worker", "--db", spawner.sqlite_url(db), "--config", str(api.config),
        "--log-format", "json", name="worker",
    )  # fmt: skip
    body = {"model": "doomed", "messages": [{"role": "user", "content": SECRET}]}
    with httpx.Client(base_url=api.url, timeout=10) as client:
        answer = client.post("/v1/jobs", json={"url": CHAT, "body": body})
        assert answer.status_code == 202, answer.text
        job_id = answer.json()["id"]
        # A key in a query string: refused, and never logged.
        client.get(f"/v1/jobs?token={KEY}", headers={"Authorization": f"Bearer {KEY}"})
    done = api.wait(job_id, timeout=30)
    assert done["status"] == "failed"
    for proc in (worker, api.proc):
        proc.signal(signal.SIGTERM)
        proc.wait(30)

    worker_lines, api_lines = json_lines(worker.stderr()), json_lines(api.proc.stderr())
    assert api_lines and worker_lines
    for_job = [line for line in worker_lines if line.get("job_id") == job_id]
    assert [line["level"] for line in for_job] == ["INFO", "WARNING"]  # a retry, a dead letter
    assert all(line["model"] == "doomed" for line in for_job)
    assert any(line["logger"].startswith("uvicorn") for line in api_lines)  # uvicorn's too
    everything = worker.stderr() + api.proc.stderr()
    assert SECRET not in everything
    assert KEY not in everything
