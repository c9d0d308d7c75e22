"""genspool.Client and AsyncClient against a fake API (an ``httpx.MockTransport``): error
mapping, cursor pagination, request building, event streams and ``wait()``'s fallback."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

import genspool
from genspool import exceptions as exc_
from genspool.client import AsyncClient, Client, Job, JobEvent, JobStatus

Handler = Callable[[httpx.Request], httpx.Response]
BASE = "http://genspool.test"


def job(job_id: str, status: str = "succeeded", **more: Any) -> dict[str, Any]:
    """A job as the API shows it."""
    return {
        "id": job_id,
        "object": "job",
        "tenant": "default",
        "status": status,
        "url": "/v1/chat/completions",
        "model": "echo",
        "priority": 0,
        "attempts": 1,
        "max_attempts": 3,
        "metadata": {},
        "idempotency_key": None,
        "expires_at": None,
        "created_at": 1.0,
        "timestamps": {"queued": 1.0},
        **more,
    }


def error(status: int, code: str, message: str = "boom", **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": "x", "code": code, "param": None}}
    return httpx.Response(status, json=body, headers=headers)


def fake_api(handler: Handler, **options: Any) -> Client:
    return Client(BASE, transport=httpx.MockTransport(handler), **options)


def fake_async_api(handler: Handler) -> AsyncClient:
    return AsyncClient(BASE, transport=httpx.MockTransport(handler))


# -- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (error(404, "not_found"), exc_.NotFound),
        (error(404, "model_not_found"), exc_.UnknownModel),
        (error(409, "conflict"), exc_.Conflict),
        (error(400, "invalid_request_error"), exc_.InvalidRequest),
        (error(400, "context_length_exceeded"), exc_.ContextWindowExceeded),
        (error(401, "invalid_api_key"), exc_.Unauthorized),
        (error(403, "insufficient_scope"), exc_.Forbidden),
        (error(413, "payload_too_large"), exc_.PayloadTooLarge),
        (error(503, "backend_unavailable"), exc_.BackendError),
        (httpx.Response(404, text="<html>nope</html>"), exc_.NotFound),  # a proxy's answer
        (httpx.Response(409, json={"detail": "x"}), exc_.Conflict),
    ],
)
def test_an_error_answer_raises_the_class_of_the_tree(
    answer: httpx.Response, expected: type[exc_.GenspoolError]
) -> None:
    with fake_api(lambda _: answer) as client, pytest.raises(exc_.GenspoolError) as caught:
        client.get("job_1")
    assert type(caught.value) is expected
    assert caught.value.response is not None
    assert caught.value.response.status_code == answer.status_code


def test_the_servers_message_and_param_are_kept() -> None:
    answer = httpx.Response(
        400,
        json={
            "error": {
                "message": "body.model: required",
                "code": "invalid_request_error",
                "param": "model",
            }
        },
    )
    with fake_api(lambda _: answer) as client, pytest.raises(exc_.InvalidRequest) as caught:
        client.submit("/v1/chat/completions", {})
    assert caught.value.message == "body.model: required"
    assert caught.value.param == "model"


def test_429_carries_retry_after() -> None:
    answer = error(429, "rate_limit_exceeded", "slow down", **{"Retry-After": "7"})
    with fake_api(lambda _: answer) as client, pytest.raises(exc_.RateLimited) as caught:
        client.submit_chat("echo", [{"role": "user", "content": "hi"}])
    assert caught.value.retry_after == 7.0


@pytest.mark.parametrize(
    ("answer", "code"),
    [(error(500, "internal_error"), "internal_error"), (httpx.Response(502), "http_502")],
)
def test_an_unknown_error_is_an_api_status_error(answer: httpx.Response, code: str) -> None:
    with fake_api(lambda _: answer) as client, pytest.raises(exc_.APIStatusError) as caught:
        client.get("job_1")
    assert (caught.value.status_code, caught.value.code) == (answer.status_code, code)


@pytest.mark.parametrize(
    ("failure", "expected"),
    [
        (httpx.ConnectError("refused"), exc_.APIConnectionError),
        (httpx.ReadTimeout("slow"), exc_.APITimeoutError),
    ],
)
def test_transport_failures(failure: Exception, expected: type[Exception]) -> None:
    def fail(_: httpx.Request) -> httpx.Response:
        raise failure

    with fake_api(fail) as client, pytest.raises(expected) as caught:
        client.get("job_1")
    assert BASE in caught.value.message
    assert caught.value.__cause__ is failure


async def test_async_errors_map_alike() -> None:
    async with fake_async_api(lambda _: error(409, "conflict", "not dead")) as client:
        with pytest.raises(exc_.Conflict, match="not dead"):
            await client.replay("job_1")


# -- requests ------------------------------------------------------------------------------------


def test_submit_sends_only_the_options_given_and_the_key() -> None:
    seen: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(202, json=job("job_1", "queued"))

    with Client(BASE + "/", "gsk_x", transport=httpx.MockTransport(answer)) as client:
        created = client.submit_chat(
            "echo", [{"role": "user", "content": "hi"}], priority=5, max_tokens=3
        )
    assert created.status is JobStatus.QUEUED
    assert str(seen[0].url) == BASE + "/v1/jobs"
    assert seen[0].headers["authorization"] == "Bearer gsk_x"
    assert json.loads(seen[0].content) == {
        "url": "/v1/chat/completions",
        "body": {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        "priority": 5,
    }


def test_a_given_http_client_is_left_open() -> None:
    http = httpx.Client(transport=httpx.MockTransport(lambda _: httpx.Response(200, json=job("a"))))
    with Client(BASE, http_client=http) as client:
        assert client.get("a").id == "a"
    assert not http.is_closed
    http.close()


def test_ids_stay_one_path_segment() -> None:
    paths: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.raw_path.decode())
        return error(404, "not_found")

    with fake_api(answer) as client, pytest.raises(exc_.NotFound):
        client.cancel("../keys")
    assert paths == ["/v1/jobs/..%2Fkeys/cancel"]


# -- pagination ----------------------------------------------------------------------------------


def paged_api(total: int, requests: list[httpx.Request]) -> Handler:
    """``GET /v1/jobs``: ``total`` jobs, newest first, paged like the API (``?after=``)."""
    ids = [f"job_{i:04d}" for i in range(total, 0, -1)]

    def answer(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        after, limit = request.url.params.get("after"), int(request.url.params["limit"])
        start = ids.index(after) + 1 if after else 0
        data = [job(i) for i in ids[start : start + limit]]
        more = start + limit < len(ids)
        page = {"object": "list", "data": data, "has_more": more}
        page["next_cursor"] = data[-1]["id"] if more else None
        return httpx.Response(200, json=page)

    return answer


def test_list_follows_the_cursor_lazily() -> None:
    requests: list[httpx.Request] = []
    with fake_api(paged_api(250, requests)) as client:
        jobs = client.list(status=JobStatus.SUCCEEDED, model="echo", limit=100)
        assert requests == [], "nothing is fetched before the iteration starts"
        ids = [j.id for j in jobs]
    assert ids == [f"job_{i:04d}" for i in range(250, 0, -1)]
    assert [r.url.params.get("after") for r in requests] == [None, "job_0151", "job_0051"]
    assert requests[0].url.params["status"] == "succeeded"
    assert requests[0].url.params["model"] == "echo"
    assert "tenant" not in requests[0].url.params


def test_list_stops_after_an_exact_last_page() -> None:
    requests: list[httpx.Request] = []
    with fake_api(paged_api(200, requests)) as client:
        assert len(list(client.dead_letters(limit=100))) == 200
    assert len(requests) == 2
    assert requests[0].url.path == "/v1/dlq"


async def test_async_list_follows_the_cursor() -> None:
    requests: list[httpx.Request] = []
    async with fake_async_api(paged_api(30, requests)) as client:
        ids = [j.id async for j in client.list(limit=7)]
    assert len(ids) == len(set(ids)) == 30
    assert len(requests) == 5


# -- events and wait -----------------------------------------------------------------------------


class Lines(httpx.SyncByteStream, httpx.AsyncByteStream):
    """A response body of SSE events that, if ``breaks``, fails after them like a lost
    connection."""

    def __init__(self, events: list[dict[str, Any]], *, breaks: bool = False) -> None:
        self.chunks = [b"data: " + json.dumps(e).encode() + b"\n\n" for e in events]
        self.breaks = breaks

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.breaks:
            raise httpx.ReadError("connection reset")

    async def __aiter__(self) -> Any:
        for chunk in self.chunks:
            yield chunk
        if self.breaks:
            raise httpx.ReadError("connection reset")


def job_api(events: Lines, states: list[str]) -> tuple[Handler, list[str]]:
    """A job's SSE stream, and ``GET`` answers that go through ``states`` (the last repeats)."""
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if request.url.path.endswith("/events"):
            return httpx.Response(200, stream=events, headers={"content-type": "text/event-stream"})
        state = states.pop(0) if len(states) > 1 else states[0]
        return httpx.Response(200, json=job("job_1", state))

    return answer, calls


def test_events_are_typed() -> None:
    stream = Lines(
        [
            {"id": "job_1", "status": "running", "attempts": 1},
            {"id": "job_1", "status": "running", "delta": "hi "},
            {"id": "job_1", "status": "succeeded", "attempts": 1, "result": {"body": {"x": 1}}},
        ]
    )
    handler, _ = job_api(stream, ["succeeded"])
    with fake_api(handler) as client, client.events("job_1") as events:
        got = list(events)
    assert [e.status for e in got] == ["running", "running", "succeeded"]
    assert [e.ends for e in got] == [False, False, True]
    assert got[1].delta == "hi "
    assert got[2].result is not None and got[2].result.body == {"x": 1}


def test_wait_follows_the_stream_then_reads_the_job() -> None:
    handler, calls = job_api(Lines([{"id": "job_1", "status": "succeeded"}]), ["succeeded"])
    with fake_api(handler) as client:
        assert client.wait("job_1").status is JobStatus.SUCCEEDED
    assert calls == ["/v1/jobs/job_1/events", "/v1/jobs/job_1"]


def test_wait_polls_when_the_stream_breaks() -> None:
    broken = Lines([{"id": "job_1", "status": "running"}], breaks=True)
    handler, calls = job_api(broken, ["running", "running", "failed"])
    with fake_api(handler) as client:
        done = client.wait("job_1", timeout=5, poll_s=0.01)
    assert done.status is JobStatus.FAILED
    assert calls.count("/v1/jobs/job_1") == 3


def test_wait_gives_up_after_its_timeout() -> None:
    handler, _ = job_api(Lines([], breaks=True), ["running"])
    with fake_api(handler) as client, pytest.raises(exc_.WaitTimeout) as caught:
        client.wait("job_1", timeout=0.05, poll_s=0.01)
    assert caught.value.job_id == "job_1"


async def test_async_wait_polls_when_the_stream_breaks() -> None:
    broken = Lines([{"id": "job_1", "status": "queued"}], breaks=True)
    handler, _ = job_api(broken, ["running", "cancelled"])
    async with fake_async_api(handler) as client:
        done = await client.wait("job_1", timeout=5, poll_s=0.01)
    assert done.status is JobStatus.CANCELLED


# -- types ---------------------------------------------------------------------------------------


def test_a_job_reads_its_result_and_keeps_its_json() -> None:
    body = {"object": "chat.completion", "choices": [{"message": {"content": "hi"}}]}
    data = job("job_1", result={"status_code": 200, "body": body}, new_field=1)
    read = Job.from_wire(data)
    assert read.result is not None and read.result.text == "hi"
    assert read.terminal and read.error is None
    assert read.to_dict() == data


def test_an_unknown_job_in_a_subscription_ends_it() -> None:
    event = JobEvent.from_wire({"id": "j", "status": "not_found", "error": {"code": "not_found"}})
    assert event.ends and event.error is not None and event.error.code == "not_found"


def test_the_secret_of_a_new_key_is_not_in_its_repr() -> None:
    key = genspool.CreatedApiKey.from_wire(
        {"id": "key_1", "tenant": "t", "scopes": ["read"], "key": "gsk_secret"}
    )
    assert key.key == "gsk_secret" and "gsk_secret" not in repr(key)
