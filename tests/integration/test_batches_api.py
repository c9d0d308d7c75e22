"""The Batch API end to end: a real ``genspool serve`` process (API, batch runner and worker) on
a SQLite file, driven by the official ``openai`` SDK (``files.create``,
``batches.create/retrieve/list/cancel``, ``files.content``), with two tenants' keys made by
the real ``genspool keys`` CLI. Echo models stand in for real ones (they compute nothing; a
``latency_ms`` makes one slow enough to cancel a batch halfway and to let one expire).

Checked: a 1,000-line round trip (every ``custom_id`` exactly once across the output and error
files, ``request_counts`` and ``usage`` agreeing with the lines, ``batches.list()`` paging
through every batch); each kind of malformed line reported with its line number while the
create answers at once; a cancel at about half (``cancelling``, then ``cancelled``, finished
lines kept, the rest ``batch_cancelled``); an expiry (``batch_expired``); another tenant's
batch 404 on every route; outputs listed in their owner's files as ``batch_output``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, Literal

import openai
import pytest
from openai.types import Batch

from tests.helpers.processes import Server, Spawner
from tests.integration.test_files_api import create_key

CHAT: Final[Literal["/v1/chat/completions"]] = "/v1/chat/completions"
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo", "context_window": 64},
    {
        "name": "slow",
        "provider": "echo",
        "options": {"latency_ms": 40},
        "batching": {"max_batch_size": 4, "max_wait_ms": 1, "max_concurrency": 1},
    },
]
ENDED = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def db(module_spawner: Spawner) -> Path:
    path: Path = module_spawner.root / "batches.db"
    return path


@pytest.fixture(scope="module")
def keys(module_spawner: Spawner, db: Path) -> dict[str, str]:
    return {
        "a": create_key(module_spawner, db, "acme", "submit,read"),
        "b": create_key(module_spawner, db, "beta", "submit,read"),
    }


@pytest.fixture(scope="module")
def server(module_spawner: Spawner, db: Path, keys: dict[str, str]) -> Server:
    return module_spawner.server(MODELS, command="serve", db=db)


def sdk(server: Server, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=60)


def line(custom_id: str, text: str, *, model: str = "echo", **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": text}], **extra}
    return {"custom_id": custom_id, "method": "POST", "url": CHAT, "body": body}


def jsonl(lines: Iterable[dict[str, Any] | str]) -> bytes:
    return b"".join(
        (raw if isinstance(raw, str) else json.dumps(raw)).encode() + b"\n" for raw in lines
    )


def start(client: openai.OpenAI, data: bytes, window: str = "24h") -> Batch:
    source = client.files.create(file=("input.jsonl", data), purpose="batch")
    return client.batches.create(
        input_file_id=source.id, endpoint=CHAT, completion_window=window,  # type: ignore[arg-type]
        metadata={"run": "test"},
    )  # fmt: skip


def wait(client: openai.OpenAI, batch_id: str, timeout: float = 90.0) -> Batch:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ENDED:
            return batch
        assert time.monotonic() < deadline, f"batch still {batch.status} after {timeout} s"
        time.sleep(0.1)


def read_lines(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(raw) for raw in client.files.content(file_id).content.splitlines()]


def test_a_thousand_line_round_trip(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    sent = [line(f"req-{i}", f"say {'word ' * (i % 5)}{i}") for i in range(1000)]
    made = start(a, jsonl(sent))
    assert (made.object, made.status, made.endpoint) == ("batch", "validating", CHAT)
    done = wait(a, made.id)
    assert done.status == "completed", done
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed) == (1000, 1000)
    assert done.request_counts.failed == 0 and done.error_file_id is None
    out = read_lines(a, done.output_file_id)
    assert Counter(o["custom_id"] for o in out) == Counter(s["custom_id"] for s in sent)
    by_id = {o["custom_id"]: o for o in out}
    for s in sent:
        got = by_id[s["custom_id"]]
        assert got["error"] is None and got["response"]["status_code"] == 200
        answer = got["response"]["body"]["choices"][0]["message"]["content"]
        assert answer == s["body"]["messages"][-1]["content"]
    usage = Counter[str]()
    for o in out:
        usage.update(o["response"]["body"]["usage"])
    assert done.usage is not None
    assert (done.usage.input_tokens, done.usage.output_tokens, done.usage.total_tokens) == (
        usage["prompt_tokens"], usage["completion_tokens"], usage["total_tokens"]
    )  # fmt: skip
    assert done.metadata == {"run": "test"}
    owned = [f.id for f in a.files.list(purpose="batch_output")]
    assert done.output_file_id in owned


def test_list_pages_through_every_batch(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    made = [start(a, jsonl([line(f"x{i}", "hi")])).id for i in range(5)]
    listed = [b.id for b in a.batches.list(limit=2)]  # the SDK follows has_more and after
    assert listed[:5] == made[::-1]
    assert len(listed) == len(set(listed))
    page = a.batches.list(limit=2)
    assert [b.id for b in page.data] == made[:-3:-1] and page.has_more
    for batch_id in made:
        assert wait(a, batch_id).status == "completed"


def test_each_malformed_line_is_reported_with_its_number(
    server: Server, keys: dict[str, str]
) -> None:
    a = sdk(server, keys["a"])
    lines: list[dict[str, Any] | str] = [
        line("ok", "fine"),
        '{"custom_id": "broken", ',
        line("ok", "the same custom_id again"),
        {**line("elsewhere", "hi"), "url": "/v1/embeddings"},
        line("nobody", "hi", model="no-such-model"),
        line("streamed", "hi", stream=True),
        line("huge", "word " * 500),
        line("fine-too", "fine"),
    ]
    started = time.monotonic()
    made = start(a, jsonl(lines))
    assert time.monotonic() - started < 5.0  # the API does not read the file before answering
    done = wait(a, made.id)
    assert done.status == "failed" and done.failed_at is not None
    assert done.errors is not None and done.errors.data
    by_line = {e.line or 0: e for e in done.errors.data}
    assert sorted(by_line) == [2, 3, 4, 5, 6, 7]
    assert by_line[2].code == "invalid_json_line"
    assert by_line[3].code == "duplicate_custom_id"
    assert by_line[4].code == "mismatched_endpoint"
    assert by_line[5].code == "model_not_found"
    assert by_line[6].param == "body.stream"
    assert by_line[7].code == "context_length_exceeded"
    for number, error in by_line.items():
        assert error.message is not None and error.message.startswith(f"line {number}: ")
    assert done.output_file_id is None and done.request_counts is not None
    assert done.request_counts.completed == 0


def test_cancel_at_about_half_keeps_finished_lines(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    sent = [line(f"c{i}", f"line {i}", model="slow") for i in range(400)]
    made = start(a, jsonl(sent))
    deadline = time.monotonic() + 60
    while True:
        now = a.batches.retrieve(made.id)
        assert now.request_counts is not None
        if now.request_counts.completed >= 150:
            break
        assert now.status not in ENDED and time.monotonic() < deadline
        time.sleep(0.05)
    cancelling = a.batches.cancel(made.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = wait(a, made.id, timeout=30)
    assert done.status == "cancelled" and done.cancelled_at is not None
    out, err = read_lines(a, done.output_file_id), read_lines(a, done.error_file_id)
    assert len(out) >= 150 and err, "finished lines kept, the rest listed as cancelled"
    ids = Counter(o["custom_id"] for o in out + err)
    assert ids == Counter(s["custom_id"] for s in sent)
    assert {e["error"]["code"] for e in err} == {"batch_cancelled"}
    assert all(e["response"] is None for e in err)
    assert done.request_counts is not None
    assert (done.request_counts.completed, done.request_counts.failed) == (len(out), len(err))
    assert a.batches.cancel(made.id).status == "cancelled"  # cancelling again: no error


def test_expiry_lists_the_lines_not_run(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    sent = [line(f"e{i}", f"line {i}", model="slow") for i in range(400)]
    made = start(a, jsonl(sent), window="2s")
    assert made.expires_at is not None and made.expires_at - made.created_at == 2
    done = wait(a, made.id, timeout=30)
    assert done.status == "expired" and done.expired_at is not None
    out, err = read_lines(a, done.output_file_id), read_lines(a, done.error_file_id)
    assert err and {e["error"]["code"] for e in err} == {"batch_expired"}
    assert Counter(o["custom_id"] for o in out + err) == Counter(s["custom_id"] for s in sent)


def test_another_tenants_batch_is_404_everywhere(server: Server, keys: dict[str, str]) -> None:
    a, b = sdk(server, keys["a"]), sdk(server, keys["b"])
    source = a.files.create(file=("in.jsonl", jsonl([line("t1", "mine")])), purpose="batch")
    with pytest.raises(openai.NotFoundError):  # a's file, named by b
        b.batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h")
    made = a.batches.create(input_file_id=source.id, endpoint=CHAT, completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        b.batches.retrieve(made.id)
    with pytest.raises(openai.NotFoundError):
        b.batches.cancel(made.id)
    assert made.id not in [x.id for x in b.batches.list()]
    done = wait(a, made.id)
    assert done.output_file_id is not None
    with pytest.raises(openai.NotFoundError):
        b.files.retrieve(done.output_file_id)
    with pytest.raises(openai.NotFoundError):
        b.files.content(done.output_file_id)
    assert done.output_file_id not in [f.id for f in b.files.list(purpose="batch_output")]
    assert done.output_file_id in [f.id for f in a.files.list(purpose="batch_output")]


def test_bad_creates_are_refused_at_once(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    source = a.files.create(file=("in.jsonl", jsonl([line("z", "hi")])), purpose="batch")
    other = a.files.create(file=("notes.txt", b"hi"), purpose="user_data")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"completion_window": "forever"}, "completion_window"),
        ({"completion_window": "31d"}, "completion_window"),
        ({"endpoint": "/v1/nowhere"}, "endpoint"),
        ({"input_file_id": other.id}, "input_file_id"),
    ]
    for change, param in cases:
        args = {"input_file_id": source.id, "endpoint": CHAT, "completion_window": "24h", **change}
        with pytest.raises(openai.BadRequestError) as caught:
            a.batches.create(**args)
        assert param in str(caught.value)


@pytest.mark.slow
def test_ten_thousand_lines(server: Server, keys: dict[str, str]) -> None:
    a = sdk(server, keys["a"])
    sent = [line(f"big-{i}", f"n {i}") for i in range(10_000)]
    done = wait(a, start(a, jsonl(sent)).id, timeout=110)
    assert done.status == "completed" and done.request_counts is not None
    assert done.request_counts.completed == 10_000
    out = read_lines(a, done.output_file_id)
    assert Counter(o["custom_id"] for o in out) == Counter(s["custom_id"] for s in sent)


def test_a_batch_killed_halfway_completes_with_each_line_once(
    module_spawner: Spawner, server: Server, keys: dict[str, str], db: Path
) -> None:
    """A second process on the same file (API, batch runner and worker) takes a batch and is
    SIGKILLed while its lines run: the module's process takes the batch over once its lease
    runs out (30 s) and finishes it from its cursors, with every line exactly once."""
    first = module_spawner.server(MODELS, command="serve", db=db)
    a = sdk(first, keys["a"])
    sent = [line(f"k{i}", f"line {i}", model="slow") for i in range(300)]
    made = start(a, jsonl(sent))  # driven by ``first``: its runner is woken by the create
    deadline = time.monotonic() + 60
    while (counts := a.batches.retrieve(made.id).request_counts) is None or counts.completed < 60:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    first.proc.kill()
    survivor = sdk(server, keys["a"])
    done = wait(survivor, made.id, timeout=120)
    assert done.status == "completed", done
    out = read_lines(survivor, done.output_file_id)
    assert Counter(o["custom_id"] for o in out) == Counter(s["custom_id"] for s in sent)
    assert done.request_counts is not None and done.request_counts.completed == 300
