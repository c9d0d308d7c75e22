"""One job as the API shows it: the request that was submitted, every attempt (its worker,
times, outcome and own error), only the last error; lists leave the large parts out unless
asked; ended jobs (failed, cancelled) are replayed through the API."""

from __future__ import annotations

from typing import Any

from genspool.client import Job as ClientJob
from genspool.client import JobStatus as ClientStatus
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import CHAT, MODELS, assert_error, chat_body


async def submit(gs: InProcess, model: str, **more: Any) -> dict[str, Any]:
    response = await gs.client.post(
        "/v1/jobs", json={"url": CHAT, "body": chat_body(model), **more}
    )
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    assert "request" not in created and "history" not in created  # the caller just sent them
    return created


async def get(gs: InProcess, job_id: str) -> dict[str, Any]:
    await gs.queue.wait(job_id, timeout=10)
    response = await gs.client.get(f"/v1/jobs/{job_id}")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


async def test_a_failed_job_shows_its_request_and_each_attempt(gs: InProcess) -> None:
    job = await submit(gs, "doomed")  # times out on each of its 2 attempts
    done = await get(gs, job["id"])
    assert done["status"] == "failed"
    assert done["request"] == {"url": CHAT, "body": chat_body("doomed")}
    assert gs.worker is not None
    history = done["history"]
    assert [(a["attempt"], a["worker"], a["outcome"]) for a in history] == [
        (1, gs.worker.id, "failed"),
        (2, gs.worker.id, "failed"),
    ]
    assert all(a["error"]["code"] == "model_timeout" for a in history)
    assert all(a["started_at"] <= a["ended_at"] for a in history)
    assert history[0]["ended_at"] <= history[1]["started_at"]
    assert done["error"] == history[1]["error"]  # the job's error is the last attempt's

    typed = ClientJob.from_wire(done)
    assert typed.request is not None and typed.request.body == chat_body("doomed")
    assert [a.outcome for a in typed.history] == ["failed", "failed"]
    assert typed.history[0].error is not None and typed.history[0].error.code == "model_timeout"

    replayed = await gs.client.post(f"/v1/jobs/{job['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    again = replayed.json()
    assert (again["status"], again["attempts"], again["error"]) == ("queued", 0, None)
    assert len(again["history"]) == 2  # what happened before the replay stays on record
    assert len((await get(gs, job["id"]))["history"]) == 4


async def test_a_succeeded_job_has_no_error_and_one_attempt(gs: InProcess) -> None:
    job = await submit(gs, "echo")
    done = await get(gs, job["id"])
    assert done["status"] == "succeeded" and done["error"] is None
    assert [a["outcome"] for a in done["history"]] == ["succeeded"]
    assert done["history"][0]["error"] is None
    typed = ClientJob.from_wire(done)
    assert typed.status is ClientStatus.SUCCEEDED and typed.error is None


async def test_a_cancelled_job_can_be_replayed() -> None:
    async with serve(MODELS) as gs:  # no worker: the job waits until it is cancelled
        await _cancel_and_replay(gs)


async def _cancel_and_replay(gs: InProcess) -> None:
    job = await submit(gs, "echo")
    cancelled = (await gs.client.post(f"/v1/jobs/{job['id']}/cancel")).json()
    assert cancelled["status"] == "cancelled" and cancelled["history"] == []
    replayed = await gs.client.post(f"/v1/dlq/{job['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["status"] == "queued"
    conflict = await gs.client.post(f"/v1/jobs/{job['id']}/replay")
    assert "only failed, cancelled or expired" in assert_error(conflict, 409)


async def test_lists_leave_out_request_and_history_unless_asked(gs: InProcess) -> None:
    job = await submit(gs, "echo")
    await get(gs, job["id"])
    (plain,) = (await gs.client.get("/v1/jobs")).json()["data"]
    assert "request" not in plain and "history" not in plain and plain["error"] is None
    asked = await gs.client.get("/v1/jobs", params={"include": "request,history"})
    (full,) = asked.json()["data"]
    assert full["request"]["body"] == chat_body("echo") and len(full["history"]) == 1
    (some,) = (await gs.client.get("/v1/jobs", params={"include": "history"})).json()["data"]
    assert "request" not in some and len(some["history"]) == 1
    bad = await gs.client.get("/v1/jobs", params={"include": "request,secrets"})
    assert "include" in assert_error(bad, 400) and "secrets" in bad.text
    assert "include" in assert_error(await gs.client.get("/v1/dlq?include=x"), 400)
