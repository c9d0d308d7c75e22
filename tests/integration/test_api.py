"""The HTTP API end to end: a real ``genspool serve`` process on loopback, a real SQLite file,
the real bundled embedding model, and echo models (named as such: they compute nothing) where a
test needs exact timings. Separate processes for ``genspool api`` + ``genspool worker``.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from websockets.sync.client import connect

from tests.helpers.processes import Server, Spawner, ws_until_terminal

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})
EMBED = "all-minilm-l6-v2"
CHAT_MODEL = "smollm2-135m-instruct"


def slow(name: str, latency_ms: float, **more: Any) -> dict[str, Any]:
    """An echo model that takes ``latency_ms`` per batch of one, one batch at a time."""
    return {
        "name": name,
        "provider": "echo",
        "options": {"latency_ms": latency_ms},
        "batching": {"max_batch_size": 1, "max_concurrency": 1},
        **more,
    }


MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    {"name": EMBED, "provider": "onnx_embedding", "context_window": 256},
    {"name": "pager", "provider": "echo"},
    {"name": "tiny", "provider": "echo", "context_window": 16},
    # Always times out (the batch takes 300 ms, the model allows 50 ms): a real way to fail.
    {
        "name": "doomed",
        "provider": "echo",
        "max_attempts": 2,
        "limits": {"timeout_s": 0.05},
        "options": {"latency_ms": 300},
    },
    slow("slow-prio", 600),
    slow("slow-cancel", 500),
    slow("slow-expire", 1000),
    slow("slow-sse", 400),
    slow("slow-ws", 400),
    slow("slow-bad", 150),
]
MAX_BODY = 65_536
ENV = {
    "GENSPOOL_RETRY_BASE_S": "0.05",
    "GENSPOOL_RETRY_CAP_S": "0.2",
    "GENSPOOL_MAX_BODY_BYTES": str(MAX_BODY),
}


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS, env=ENV)


# -- helpers ---------------------------------------------------------------------------------


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def sse(server: Server, job_id: str, timeout: float = 15.0) -> list[dict[str, Any]]:
    """Every event of ``GET /v1/jobs/{id}/events`` until the server ends the stream; checks the
    wire format (``data: {json}`` lines separated by blank lines)."""
    events: list[dict[str, Any]] = []
    with server.client.stream(
        "GET", f"/v1/jobs/{job_id}/events", timeout=httpx.Timeout(timeout)
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if not line:
                continue
            assert line.startswith("data: "), f"not an SSE data line: {line!r}"
            events.append(json.loads(line[len("data: ") :]))
    return events


def states(events: list[dict[str, Any]]) -> list[str]:
    """The state changes among events (token deltas left out)."""
    return [e["status"] for e in events if "delta" not in e]


def list_all(server: Server, **params: Any) -> list[dict[str, Any]]:
    """Every job matching ``params``, following the cursor."""
    out: list[dict[str, Any]] = []
    after = None
    while True:
        query = {**params, **({"after": after} if after else {})}
        page = server.client.get("/v1/jobs", params=query).json()
        out += page["data"]
        if not page["has_more"]:
            return out
        after = page["next_cursor"]


def start_blocker(server: Server, model: str) -> dict[str, Any]:
    """Occupy a slow model's only slot: submit a job and wait until it runs."""
    blocker = server.chat(model, "blocker")
    server.wait(blocker["id"], until={"running"}, timeout=10)
    return blocker


# -- submit, poll, results -------------------------------------------------------------------


def test_submit_answers_202_then_the_job_succeeds_with_a_chat_completion(server: Server) -> None:
    response = server.client.post(
        "/v1/jobs",
        json={
            "url": CHAT,
            "custom_id": "c-1",
            "body": {
                "model": "echo",
                "messages": [{"role": "user", "content": "hello integration"}],
            },
        },
    )
    assert response.status_code == 202, response.text
    created = response.json()
    assert created["id"].startswith("job_")
    assert created["status"] == "queued"
    assert created["model"] == "echo"

    done = server.wait(created["id"])
    assert done["status"] == "succeeded", done
    assert done["attempts"] == 1
    assert done["metadata"]["custom_id"] == "c-1"
    result = done["result"]
    assert set(result) == {"status_code", "body"}
    assert result["status_code"] == 200
    body = result["body"]
    assert body["object"] == "chat.completion"
    assert body["model"] == "echo"
    assert body["choices"][0]["message"] == {
        "role": "assistant",
        "content": "hello integration",
        "refusal": None,
    }
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    stamps = done["timestamps"]
    assert set(stamps) == {"queued", "running", "succeeded"}
    assert stamps["queued"] <= stamps["running"] <= stamps["succeeded"] <= time.time()
    assert done["created_at"] == stamps["queued"]


def test_embeddings_job_with_the_bundled_model(server: Server) -> None:
    texts = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A cheetah is running behind its prey.",
    ]
    job = server.submit({"model": EMBED, "input": texts}, url=EMBEDDINGS)
    done = server.wait(job["id"], timeout=30)
    assert done["status"] == "succeeded", done
    body = done["result"]["body"]
    assert body["object"] == "list"
    assert body["model"] == EMBED
    assert body["usage"]["prompt_tokens"] > 0
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    vectors = [d["embedding"] for d in body["data"]]
    assert all(len(v) == 384 for v in vectors)
    assert all(abs(norm(v) - 1.0) < 1e-3 for v in vectors)
    food, bread, cheetah = vectors
    assert cosine(food, bread) > cosine(food, cheetah) + 0.2
    assert cosine(food, bread) > cosine(bread, cheetah) + 0.2


# -- idempotency, priority, cancel, expiry ---------------------------------------------------


def test_same_idempotency_key_gives_the_same_job(server: Server) -> None:
    key = f"idem-{time.time_ns()}"
    first = server.chat("echo", "once", idempotency_key=key)
    second = server.chat("echo", "once", idempotency_key=key, expect=200)
    assert second["id"] == first["id"]
    # Even with a different body the key wins: the stored job comes back.
    third = server.chat("echo", "something else", idempotency_key=key, expect=200)
    assert third["id"] == first["id"]

    # Concurrent submits with one fresh key: one job.
    key2 = f"{key}-concurrent"
    ids: list[str] = []
    statuses: list[int] = []

    def post() -> None:
        r = httpx.post(
            f"{server.url}/v1/jobs",
            timeout=30,
            json={
                "url": CHAT,
                "idempotency_key": key2,
                "body": {"model": "echo", "messages": [{"role": "user", "content": "race"}]},
            },
        )
        ids.append(r.json()["id"])
        statuses.append(r.status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(set(ids)) == 1 and len(ids) == 8
    assert sorted(statuses) == [200] * 7 + [202]

    server.wait(first["id"])
    stored = [
        j for j in list_all(server, model="echo", limit=1000) if j["idempotency_key"] in (key, key2)
    ]
    assert sorted(j["id"] for j in stored) == sorted({first["id"], ids[0]})


def test_higher_priority_jobs_submitted_later_run_first(server: Server) -> None:
    blocker = start_blocker(server, "slow-prio")
    low = [server.chat("slow-prio", f"low {i}", priority=-5)["id"] for i in range(3)]
    high = [server.chat("slow-prio", f"high {i}", priority=50)["id"] for i in range(3)]
    # The window held: everything above was queued while the blocker still ran.
    assert server.get(blocker["id"])["status"] == "running"

    done = {j["id"]: j for j in server.wait_all([blocker["id"], *low, *high], timeout=20)}
    assert all(j["status"] == "succeeded" for j in done.values()), done
    last_high_end = max(done[i]["timestamps"]["succeeded"] for i in high)
    first_low_start = min(done[i]["timestamps"]["running"] for i in low)
    assert last_high_end <= first_low_start, "a low-priority job ran before a high-priority one"
    # Equal priorities keep their submission order.
    starts = [done[i]["timestamps"]["running"] for i in low]
    assert starts == sorted(starts)


def test_cancel_a_queued_job_and_it_never_runs(server: Server) -> None:
    blocker = start_blocker(server, "slow-cancel")
    victim = server.chat("slow-cancel", "never")
    response = server.client.post(f"/v1/jobs/{victim['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    # DELETE cancels as well.
    other = server.chat("slow-cancel", "never either")
    deleted = server.client.delete(f"/v1/jobs/{other['id']}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled"

    follower = server.chat("slow-cancel", "after")
    assert server.wait(follower["id"])["status"] == "succeeded"
    assert server.wait(blocker["id"])["status"] == "succeeded"
    for job_id in (victim["id"], other["id"]):
        job = server.get(job_id)
        assert job["status"] == "cancelled"
        assert job["attempts"] == 0
        assert "result" not in job
        assert "running" not in job["timestamps"]
        assert "cancelled" in job["timestamps"]

    # An ended job cannot be cancelled: 409, whichever way.
    for response in (
        server.client.post(f"/v1/jobs/{follower['id']}/cancel"),
        server.client.delete(f"/v1/jobs/{victim['id']}"),
    ):
        assert response.status_code == 409, response.text
        assert "already ended" in response.json()["error"]["message"]
    assert server.client.post("/v1/jobs/job_nope/cancel").status_code == 404


def test_cancel_a_running_job_keeps_it_cancelled(server: Server) -> None:
    running = start_blocker(server, "slow-cancel")
    response = server.client.post(f"/v1/jobs/{running['id']}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    follower = server.chat("slow-cancel", "after the cancelled one")
    assert server.wait(follower["id"])["status"] == "succeeded"
    job = server.get(running["id"])
    assert job["status"] == "cancelled"
    assert "result" not in job  # the worker's late result did not overwrite the cancel


def test_a_job_stuck_behind_a_slow_queue_expires(server: Server) -> None:
    blocker = start_blocker(server, "slow-expire")
    job = server.chat("slow-expire", "too late", expires_at=time.time() + 0.3)
    done = server.wait(job["id"], timeout=10)
    assert done["status"] == "expired", done
    assert done["attempts"] == 0
    assert done["error"]["code"] == "expired"
    assert "expired" in done["timestamps"]
    assert server.wait(blocker["id"])["status"] == "succeeded"
    assert server.get(job["id"])["status"] == "expired"


# -- listing ---------------------------------------------------------------------------------


# -- dead letters ----------------------------------------------------------------------------


def test_a_job_that_always_times_out_is_dead_lettered_and_can_be_replayed(
    server: Server,
) -> None:
    job = server.chat("doomed", "no chance")
    done = server.wait(job["id"], timeout=15)
    assert done["status"] == "failed", done
    assert done["attempts"] == done["max_attempts"] == 2
    assert done["error"]["code"] == "model_timeout"
    assert "dead-lettered" in done["error"]["message"]
    assert "result" not in done
    stamps = done["timestamps"]
    assert set(stamps) == {"queued", "running", "retrying", "failed"}
    assert stamps["queued"] <= stamps["retrying"] <= stamps["running"] <= stamps["failed"]

    dlq = server.client.get("/v1/dlq", params={"model": "doomed"}).json()
    letters = {j["id"]: j for j in dlq["data"]}
    assert job["id"] in letters
    assert letters[job["id"]]["error"]["code"] == "model_timeout"
    assert all(j["status"] == "failed" for j in dlq["data"])

    replayed = server.client.post(f"/v1/dlq/{job['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    again = replayed.json()
    assert again["status"] == "queued"
    assert again["attempts"] == 0
    assert again["error"] is None and len(again["history"]) == 2  # the attempts before stay
    final = server.wait(job["id"], timeout=15)
    assert final["status"] == "failed" and final["attempts"] == 2

    ok = server.chat("echo", "fine")
    server.wait(ok["id"])
    refused = server.client.post(f"/v1/dlq/{ok['id']}/replay")
    assert refused.status_code == 409
    assert server.client.post("/v1/dlq/job_nope/replay").status_code == 404


def test_unreachable_openai_model_dead_letters_after_max_attempts(spawner: Spawner) -> None:
    closed = spawner.free_port()  # nothing listens there
    remote = {
        "name": "remote",
        "provider": "openai",
        "options": {"base_url": f"http://127.0.0.1:{closed}/v1"},
        "max_attempts": 2,
        "limits": {"timeout_s": 5},
    }
    server = spawner.server([remote, {"name": "echo", "provider": "echo"}], env=ENV)
    job = server.chat("remote", "hello?")
    events = sse(server, job["id"])
    done = server.get(job["id"])
    assert done["status"] == "failed", done
    assert done["attempts"] == 2
    assert "dead-lettered" in done["error"]["message"]
    assert str(closed) in done["error"]["message"] or "reach" in done["error"]["message"]
    runs = [e["attempts"] for e in events if e["status"] == "running"]
    assert set(runs) <= {1, 2} and max(runs, default=2) <= 2
    assert states(events)[-1] == "failed"

    dlq = server.client.get("/v1/dlq").json()
    assert [j["id"] for j in dlq["data"]] == [job["id"]]
    replayed = server.client.post(f"/v1/dlq/{job['id']}/replay").json()
    assert replayed["status"] == "queued" and replayed["attempts"] == 0
    final = server.wait(job["id"], timeout=15)
    assert final["status"] == "failed" and final["attempts"] == 2


# -- push: SSE and WebSocket -----------------------------------------------------------------


def test_sse_streams_each_state_change_then_the_result(server: Server) -> None:
    blocker = start_blocker(server, "slow-sse")
    job = server.chat("slow-sse", "streamed over sse")
    events = sse(server, job["id"])
    assert all(e["id"] == job["id"] for e in events)
    assert states(events) == ["queued", "running", "succeeded"], events
    last = events[-1]
    assert last["status"] == "succeeded"
    assert last["result"] == server.get(job["id"])["result"]
    assert last["result"]["body"]["choices"][0]["message"]["content"] == "streamed over sse"
    server.wait(blocker["id"])

    # A job that already ended: its final event at once, then the stream ends.
    t0 = time.monotonic()
    again = sse(server, job["id"], timeout=5)
    assert time.monotonic() - t0 < 2
    assert again == [last] or (len(again) == 1 and again[0]["result"] == last["result"])

    missing = server.client.get("/v1/jobs/job_nope/events")
    assert missing.status_code == 404
    assert "job_nope" in missing.json()["error"]["message"]


def test_websocket_delivers_events_of_several_jobs(server: Server) -> None:
    a = server.submit({"model": "slow-ws", "input": "a"}, url=EMBEDDINGS)
    b = server.submit({"model": "slow-ws", "input": "b"}, url=EMBEDDINGS)
    with connect(server.ws_url, open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"subscribe": [a["id"], b["id"]]}))
        events = ws_until_terminal(ws, {a["id"], b["id"]})
        for job in (a, b):
            mine = [e for e in events if e["id"] == job["id"]]
            assert mine[-1]["status"] == "succeeded"
            assert mine[-1]["result"]["body"]["object"] == "list"
            assert mine[-1]["result"] == server.get(job["id"])["result"]
            assert "running" in states(mine)

        # After the end: the final event at once.
        ws.send(json.dumps({"subscribe": [a["id"]]}))
        late = json.loads(ws.recv(timeout=2))
        assert late["id"] == a["id"] and late["status"] == "succeeded" and "result" in late

        # An unknown id is answered, not ignored.
        ws.send(json.dumps({"subscribe": ["job_nope"]}))
        unknown = json.loads(ws.recv(timeout=2))
        assert unknown["id"] == "job_nope" and unknown["status"] == "not_found"


def test_websocket_invalid_messages_get_an_error_and_the_connection_stays_usable(
    server: Server,
) -> None:
    job = server.chat("echo", "after the errors")
    server.wait(job["id"])
    with connect(server.ws_url, open_timeout=5, close_timeout=2) as ws:
        for bad in (
            "not json",
            json.dumps({"subscribe": "job_x"}),
            json.dumps({"hello": 1}),
            json.dumps([1, 2]),
            json.dumps({"subscribe": [1, 2]}),
        ):
            ws.send(bad)
            answer = json.loads(ws.recv(timeout=2))
            assert answer["error"]["code"] == "invalid_message", (bad, answer)
            assert "subscribe" in answer["error"]["message"]
        ws.send(json.dumps({"subscribe": [job["id"]]}))
        event = json.loads(ws.recv(timeout=2))
        assert event["id"] == job["id"] and event["status"] == "succeeded"


def test_websocket_streams_chat_tokens_before_the_terminal_event(server: Server) -> None:
    content = "one two three four five"
    job = server.chat("slow-ws", content)
    with connect(server.ws_url, open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"subscribe": [job["id"]]}))
        events = ws_until_terminal(ws, {job["id"]})
    deltas = [e["delta"] for e in events if "delta" in e]
    assert len(deltas) >= 2, events
    assert "".join(deltas) == content
    assert "delta" not in events[-1] and events[-1]["status"] == "succeeded"
    first_delta = next(i for i, e in enumerate(events) if "delta" in e)
    assert first_delta < len(events) - 1
    assert events[-1]["result"]["body"]["choices"][0]["message"]["content"] == content


# -- OpenAI-compatible surface ---------------------------------------------------------------


def test_models_lists_the_configured_models(server: Server) -> None:
    body = server.client.get("/v1/models").json()
    assert body["object"] == "list"
    listed = {m["id"]: m for m in body["data"]}
    assert set(listed) == {m["name"] for m in MODELS}
    assert EMBEDDINGS in listed[EMBED]["endpoints"]
    assert CHAT not in listed[EMBED]["endpoints"]
    assert all(m["object"] == "model" for m in body["data"])


def test_openai_sdk_chat_and_stream(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
    content = "the quick brown fox jumps over the lazy dog"
    answer = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": content}]
    )
    assert answer.object == "chat.completion"
    assert answer.choices[0].message.content == content
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage is not None and answer.usage.total_tokens > 0

    chunks = list(
        client.chat.completions.create(
            model="echo",
            messages=[{"role": "user", "content": content}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 2
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "stop" and set(finishes[:-1]) == {None}
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0

    with pytest.raises(openai.NotFoundError) as exc:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "echo" in str(exc.value)


def test_openai_sdk_embeddings_base64_and_float(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=30)
    texts = ["A man is eating food.", "A cheetah is running behind its prey."]
    default = client.embeddings.create(model=EMBED, input=texts)  # the SDK asks for base64
    floats = client.embeddings.create(model=EMBED, input=texts, encoding_format="float")
    assert default.model == EMBED
    assert default.usage.prompt_tokens > 0
    for got, want in zip(default.data, floats.data, strict=True):
        assert isinstance(got.embedding, list) and len(got.embedding) == 384
        assert all(isinstance(x, float) for x in got.embedding)
        assert abs(norm(got.embedding) - 1.0) < 1e-3
        assert max(abs(x - y) for x, y in zip(got.embedding, want.embedding, strict=True)) < 1e-6
    single = client.embeddings.create(model=EMBED, input="just one")
    assert len(single.data) == 1 and len(single.data[0].embedding) == 384

    raw = server.client.post(
        "/v1/embeddings", json={"model": EMBED, "input": "x", "encoding_format": "base64"}
    ).json()
    assert isinstance(raw["data"][0]["embedding"], str)


# -- bad input -------------------------------------------------------------------------------


# -- separate API and worker processes -------------------------------------------------------


SPLIT_MODELS: list[dict[str, Any]] = [
    {
        "name": "echo",
        "provider": "echo",
        "options": {"latency_ms": 20},
        "batching": {"max_batch_size": 4},
    },
    {
        "name": "slow",
        "provider": "echo",
        "options": {"latency_ms": 800},
        "batching": {"max_batch_size": 1},
    },
]


@pytest.fixture
def split(spawner: Spawner) -> Iterator[Server]:
    """``genspool api`` plus two ``genspool worker`` processes on one SQLite file."""
    api = spawner.server(SPLIT_MODELS, command="api", env=ENV)
    assert api.config is not None
    for _ in range(2):
        spawner.worker(api.db, api.config, env=ENV)
    yield api


def test_api_with_two_workers_runs_every_job(split: Server) -> None:
    ids = [split.chat("echo", f"split {i}")["id"] for i in range(40)]
    done = split.wait_all(ids, timeout=20)
    assert [j["status"] for j in done] == ["succeeded"] * 40
    for i, job in enumerate(done):
        assert job["result"]["body"]["choices"][0]["message"]["content"] == f"split {i}"
        assert job["attempts"] == 1


def test_sse_on_the_api_process_sees_jobs_run_by_workers(split: Server) -> None:
    job = split.chat("slow", "cross process")
    events = sse(split, job["id"], timeout=15)
    assert states(events)[-1] == "succeeded", events
    assert "running" in states(events), events
    assert events[-1]["result"]["body"]["choices"][0]["message"]["content"] == "cross process"
    seen = [(e["status"], e["attempts"]) for e in events]
    assert len(seen) == len(set(seen)), f"duplicate events: {events}"


def test_websocket_on_the_api_process_sees_jobs_run_by_workers(split: Server) -> None:
    a = split.chat("slow", "first over ws")
    b = split.chat("echo", "second over ws")
    with connect(split.ws_url, open_timeout=5, close_timeout=2) as ws:
        ws.send(json.dumps({"subscribe": [a["id"], b["id"]]}))
        events = ws_until_terminal(ws, {a["id"], b["id"]}, timeout=8)
    for job, content in ((a, "first over ws"), (b, "second over ws")):
        last = [e for e in events if e["id"] == job["id"]][-1]
        assert last["status"] == "succeeded", events
        assert last["result"]["body"]["choices"][0]["message"]["content"] == content


def test_openai_routes_on_the_api_process_wait_for_the_workers(split: Server) -> None:
    client = openai.OpenAI(base_url=f"{split.url}/v1", api_key="x", max_retries=0, timeout=30)
    content = "answered by another process"
    answer = client.chat.completions.create(
        model="echo", messages=[{"role": "user", "content": content}]
    )
    assert answer.choices[0].message.content == content
    # Token events do not cross processes; the stream must still carry the whole answer.
    chunks = list(
        client.chat.completions.create(
            model="echo", messages=[{"role": "user", "content": content}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == content
    assert chunks[-1].choices[0].finish_reason == "stop"


# -- the real bundled chat model -------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled(module_spawner: Spawner) -> Server:
    """``genspool serve`` with no models file: the bundled chat and embedding models."""
    return module_spawner.server(None, db=module_spawner.root / "bundled.db", startup_s=120)


@pytest.mark.slow
def test_real_chat_job_through_the_api(bundled: Server) -> None:
    job = bundled.chat(CHAT_MODEL, "Say hello.", body_extra={"max_tokens": 8, "temperature": 0})
    done = bundled.wait(job["id"], timeout=60)
    assert done["status"] == "succeeded", done
    body = done["result"]["body"]
    assert body["object"] == "chat.completion"
    assert body["model"] == CHAT_MODEL
    content = body["choices"][0]["message"]["content"]
    assert isinstance(content, str) and content.strip()
    assert 0 < body["usage"]["completion_tokens"] <= 8
    assert body["usage"]["prompt_tokens"] > 0
    assert body["choices"][0]["finish_reason"] in {"stop", "length"}


@pytest.mark.slow
def test_real_chat_through_the_openai_sdk(bundled: Server) -> None:
    client = openai.OpenAI(base_url=f"{bundled.url}/v1", api_key="x", max_retries=0, timeout=60)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    answer = client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, max_tokens=8, temperature=0
    )
    assert answer.choices[0].message.content and answer.choices[0].message.content.strip()
    assert answer.usage is not None and 0 < answer.usage.completion_tokens <= 8
    chunks = list(
        client.chat.completions.create(
            model=CHAT_MODEL, messages=messages, max_tokens=8, temperature=0, stream=True
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content  # temperature 0: the same answer
    assert chunks[-1].choices[0].finish_reason in {"stop", "length"}


@pytest.mark.slow
def test_bundled_models_are_listed(bundled: Server) -> None:
    ids = {m["id"] for m in bundled.client.get("/v1/models").json()["data"]}
    assert ids == {CHAT_MODEL, EMBED}
