"""``genspool pipeline`` against a real ``genspool serve`` (API, pipeline runner, scheduler and
worker on a SQLite file) with echo models, and the Python clients' pipeline methods (blocking
and asyncio) against the same server.

Checked: ``list`` (triggers, inputs, steps, sinks); ``run --wait`` (the progress bar's counts on
stderr, the JSONL and CSV outputs downloaded into ``--output`` with the right rows, their paths
on stdout); ``-i`` values read as JSON when they parse and over ``--input-json``; ``runs``,
``get``, ``items``, ``ticks``; a run with a failed item (non-zero, the error file downloaded
and named) and a run whose source is missing (non-zero, why); ``cancel`` of a slow run (the
items done kept, the rest not run); bad input as one line on stderr and a non-zero exit. The
clients page through runs and items, and ``wait_run`` follows the events (and, with the events
route broken by a fake transport, polls).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from genspool.client import AsyncClient, Client, PipelineRun
from genspool.exceptions import NotFound, WaitTimeout
from tests.helpers.processes import Server, Spawner
from tests.integration.test_cli import one_line_error

RUN_ID = re.compile(r"^run_[0-9a-f]+$")
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo", "context_window": 64},
    {
        "name": "slow",
        "provider": "echo",
        "options": {"latency_ms": 200},
        "batching": {"max_batch_size": 1, "max_concurrency": 1},
    },
]
ITEMS = [{"id": f"r{i}", "text": f"review {i}"} for i in range(20)]
SAID = {"id": "{{item.id}}", "said": "{{steps.say}}"}


def _pipeline(name: str, source: Any, model: str = "echo", **extra: Any) -> dict[str, Any]:
    step = {"id": "say", "model": model, "prompt": "{{item.text}}{{inputs.suffix}}"}
    return {
        "name": name, "inputs": {"suffix": {"default": "!"}}, "source": source,
        "key": "{{item.id}}", "steps": [step], "sink": [{"jsonl": {"fields": SAID}}], **extra,
    }  # fmt: skip


def _models_file(root: Path) -> Path:
    (root / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in ITEMS))
    flaky = [*ITEMS[:4], {"id": "long", "text": "word " * 400}]  # over echo's 64-token window
    (root / "flaky.jsonl").write_text("".join(json.dumps(i) + "\n" for i in flaky))
    slow = [{"id": f"s{i}", "text": f"t{i}"} for i in range(40)]
    pipelines = [
        _pipeline(
            "shout", {"jsonl": "items.jsonl"}, description="Echo every review.",
            sink=[{"jsonl": {"fields": SAID}}, {"csv": {"fields": SAID}}],
        ),
        _pipeline("flaky", {"jsonl": "flaky.jsonl"}),
        _pipeline("broken", {"jsonl": "missing.jsonl"}),
        _pipeline("slow", {"items": slow}, model="slow", concurrency=4),
        _pipeline(
            "tick", {"items": [{"id": "one", "text": "t"}]},
            on={"http": False, "schedule": [{"cron": "* * * * * *"}]},
        ),
    ]  # fmt: skip
    path = root / "pipelines.yaml"
    path.write_text(yaml.safe_dump({"models": MODELS, "pipelines": pipelines}, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    config = _models_file(module_spawner.root)
    return module_spawner.server(config, db=module_spawner.root / "cli-pipelines.db")


@pytest.fixture
def cli(module_spawner: Spawner, server: Server) -> Any:
    def run(*args: str, timeout: float = 60) -> Any:
        return module_spawner.run(*args, env={"GENSPOOL_API_URL": server.url}, timeout=timeout)

    return run


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    with Client(server.url) as c:
        yield c


def records(text: str) -> list[dict[str, Any]]:
    return [json.loads(raw) for raw in text.splitlines() if raw.strip()]


def started(result: Any) -> str:
    assert result.returncode == 0, result.stderr
    run_id = str(result.stdout.strip())
    assert RUN_ID.match(run_id), result.stdout
    return run_id


# -- the CLI -----------------------------------------------------------------------------------


def test_list_shows_triggers_inputs_steps_and_sinks(cli: Any) -> None:
    table = cli("pipeline", "list")
    assert table.returncode == 0, table.stderr
    for words in ("shout", "flaky", "slow", 'suffix="!"', "say (model)", "jsonl, csv"):
        assert words in table.stdout, (words, table.stdout)
    assert "cron * * * * * *" in table.stdout
    listed = {p["name"]: p for p in json.loads(cli("pipeline", "list", "--json").stdout)["data"]}
    assert set(listed) == {"shout", "flaky", "broken", "slow", "tick"}
    assert listed["shout"]["sinks"] == ["jsonl", "csv"]
    assert listed["shout"]["description"] == "Echo every review."


def test_run_wait_downloads_the_outputs(cli: Any, tmp_path: Path) -> None:
    target = tmp_path / "out"
    result = cli(
        "pipeline", "run", "shout", "-i", "suffix=?", "--force", "--wait", "-o", str(target)
    )
    assert result.returncode == 0, result.stderr
    assert re.search(r"run_[0-9a-f]+: queued", result.stderr), result.stderr
    assert "completed" in result.stderr and "20/20" in result.stderr, result.stderr
    assert "0 failed" in result.stderr and "items/s" in result.stderr, result.stderr

    paths = [Path(p) for p in result.stdout.split()]
    assert [p.suffix for p in paths] == [".jsonl", ".csv"]
    assert all(p.parent == target for p in paths)
    expected = [{"id": i["id"], "said": f"{i['text']}?"} for i in ITEMS]
    assert records(paths[0].read_text()) == expected
    assert list(csv.DictReader(io.StringIO(paths[1].read_text()))) == expected
    assert not list(target.glob("*.part"))

    run_id = paths[0].name.split("_0_")[0]
    listed = cli("pipeline", "runs", "shout", "--limit", "1", "--json")
    assert [r["id"] for r in json.loads(listed.stdout)["data"]] == [run_id]
    table = cli("pipeline", "runs", "shout")
    assert run_id in table.stdout and "20/20" in table.stdout, table.stdout

    summary = cli("pipeline", "get", "shout", run_id)
    assert summary.returncode == 0, summary.stderr
    assert "completed" in summary.stdout and "20 succeeded, 0 failed" in summary.stdout
    shown = json.loads(cli("pipeline", "get", "shout", run_id, "--json").stdout)
    assert shown["inputs"] == {"suffix": "?"} and len(shown["output_file_ids"]) == 2

    items = records(cli("pipeline", "items", "shout", run_id, "--json").stdout)
    assert [(i["seq"], i["key"], i["status"]) for i in items] == [
        (n + 1, f"r{n}", "done") for n in range(20)
    ]
    assert items[3]["steps"] == {"say": "review 3?"}
    table = cli("pipeline", "items", "shout", run_id)
    assert "r19" in table.stdout and "done" in table.stdout
    assert cli("pipeline", "items", "shout", run_id, "--status", "failed", "--json").stdout == ""


def test_inputs_parse_as_json_and_override_input_json(cli: Any, client: Client) -> None:
    cases = [
        (("-i", "suffix=5"), 5),
        (("-i", 'suffix={"a": [1]}'), {"a": [1]}),
        (("-i", "suffix=not json"), "not json"),
        (("--input-json", '{"suffix": true}'), True),
        (("--input-json", '{"suffix": "x"}', "-i", "suffix=y"), "y"),
    ]
    for args, value in cases:
        run_id = started(cli("pipeline", "run", "shout", *args))
        assert client.run("shout", run_id).inputs == {"suffix": value}, args


def test_failed_items_exit_non_zero_naming_the_error_file(cli: Any, tmp_path: Path) -> None:
    result = cli("pipeline", "run", "flaky", "--wait", "--output", str(tmp_path))
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "1 of 5 items failed" in last, result.stderr
    error_file = Path(last.rsplit("errors: ", 1)[1])
    assert error_file.parent == tmp_path and error_file.exists(), last
    failed = records(error_file.read_text())
    assert [f["key"] for f in failed] == ["long"]
    outputs = [Path(p) for p in result.stdout.split()]
    assert [r["id"] for r in records(outputs[0].read_text())] == ["r0", "r1", "r2", "r3"]

    run_id = error_file.name.split("_errors")[0]
    table = cli("pipeline", "items", "flaky", run_id, "--status", "failed")
    assert "long" in table.stdout and "say" in table.stdout and "r0" not in table.stdout


def test_a_run_that_fails_says_why(cli: Any) -> None:
    result = cli("pipeline", "run", "broken", "--wait")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: run run_") and "failed" in last, result.stderr
    assert "missing.jsonl: no such file" in re.sub(r"\s+", " ", result.stderr), result.stderr
    assert result.stdout == ""


def test_cancel_keeps_the_items_done(cli: Any, client: Client) -> None:
    run_id = started(cli("pipeline", "run", "slow", "--force"))
    Spawner.wait_until(lambda: client.run("slow", run_id).counts.succeeded >= 2, timeout=20)
    cancelled = cli("pipeline", "cancel", "slow", run_id)
    assert (cancelled.returncode, cancelled.stdout.strip()) == (0, "cancelling"), cancelled.stderr
    done = client.wait_run("slow", run_id, timeout=30)
    assert done.status == "cancelled" and 2 <= done.counts.succeeded < 40
    again = cli("pipeline", "cancel", "slow", run_id)
    assert again.stdout.strip() == "cancelled"
    summary = cli("pipeline", "get", "slow", run_id).stdout
    assert "status    cancelled" in summary and f"{done.counts.succeeded} succeeded" in summary
    finished = client.start_run("shout", force=True)
    client.wait_run("shout", finished.id, timeout=30)
    one_line_error(cli("pipeline", "cancel", "shout", finished.id), "HTTP 409", "completed")


def test_ticks_of_a_schedule(cli: Any, client: Client) -> None:
    Spawner.wait_until(lambda: client.ticks("tick"), timeout=15, what="a tick")
    ticks = json.loads(cli("pipeline", "ticks", "tick", "--json").stdout)["data"]
    assert ticks and ticks[0]["outcome"] in ("fired", "skipped", "missed")
    fired = next(t for t in ticks if t["outcome"] == "fired")
    assert RUN_ID.match(fired["run_id"])
    table = cli("pipeline", "ticks", "tick")
    assert fired["run_id"] in table.stdout and "fired" in table.stdout
    empty = cli("pipeline", "ticks", "shout")
    assert empty.returncode == 0 and "outcome" in empty.stdout


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("run", "nope"), ("HTTP 404", "no pipeline 'nope'")),
        (("runs", "nope"), ("HTTP 404", "no pipeline 'nope'")),
        (("ticks", "nope"), ("HTTP 404", "no pipeline 'nope'")),
        (("get", "shout", "run_0000"), ("HTTP 404", "run_0000")),
        (("items", "shout", "run_0000"), ("HTTP 404", "run_0000")),
        (("run", "shout", "-i", "suffix"), ("-i suffix: give KEY=VALUE",)),
        (("run", "shout", "-i", "=x"), ("-i =x: give KEY=VALUE",)),
        (("run", "shout", "-i", "color=red"), ("HTTP 400", "unknown color", "takes suffix")),
        (("run", "shout", "--input-json", "[1]"), ("--input-json must be a JSON object",)),
        (("run", "shout", "--input-json", "{"), ("--input-json is not valid JSON",)),
        (("run", "shout", "--output", "x"), ("--output needs --wait",)),
        (("run", "tick"), ("HTTP 409", "not started by HTTP")),
        (("runs", "shout", "--limit", "0"), ("--limit 0",)),
    ],
)
def test_bad_input_is_one_line_and_a_non_zero_exit(
    cli: Any, args: tuple[str, ...], expected: tuple[str, ...]
) -> None:
    one_line_error(cli("pipeline", *args), *expected)


def test_an_unreachable_server_is_one_line(module_spawner: Spawner, tmp_path: Path) -> None:
    port = Spawner.free_port()
    result = module_spawner.run("--api", f"http://127.0.0.1:{port}", "pipeline", "list")
    one_line_error(result, "cannot reach genspool", str(port))
    file = tmp_path / "file"
    file.write_text("")
    one_line_error(
        module_spawner.run("pipeline", "run", "shout", "--wait", "-o", str(file)),
        "not a directory",
    )


# -- the clients -------------------------------------------------------------------------------


def test_the_client_pages_through_runs_and_items(client: Client) -> None:
    made = [client.start_run("shout", idempotency_key=f"page-{n}").id for n in range(5)]
    again = client.start_run("shout", idempotency_key="page-4")
    assert again.id == made[-1]
    every = [r.id for r in client.runs("shout", limit=100)]
    paged = [r.id for r in client.runs("shout", limit=2)]
    assert paged == every and every[:5] == made[::-1]
    assert all(isinstance(r, PipelineRun) for r in client.runs("shout", limit=3))

    run = client.start_run("shout", force=True, inputs={"suffix": "."})
    client.wait_run("shout", run.id, timeout=30)
    items = list(client.run_items("shout", run.id, limit=7))
    assert [i.seq for i in items] == list(range(1, 21))
    assert [i.key for i in items] == [i["id"] for i in ITEMS]
    assert items[0].steps == {"say": "review 0."}
    assert list(client.run_items("shout", run.id, status="failed", limit=3)) == []
    with pytest.raises(NotFound):
        client.run("shout", "run_0000")
    assert [p.name for p in client.pipelines()] == ["shout", "flaky", "broken", "slow", "tick"]
    assert client.pipeline("slow").steps[0]["kind"] == "model"


def _check_states(states: list[PipelineRun], done: PipelineRun) -> None:
    assert states[-1] == done and done.status == "completed"
    assert not any(s.terminal for s in states[:-1]) and len(states) >= 2
    counts = [s.counts.done for s in states]
    assert counts == sorted(counts) and done.counts.succeeded == 40


def test_wait_run_follows_the_events(client: Client) -> None:
    run = client.start_run("slow", force=True)
    states: list[PipelineRun] = []
    done = client.wait_run("slow", run.id, timeout=60, on_update=states.append)
    _check_states(states, done)
    assert len(states) > 3  # a state per change, not one per poll


async def test_wait_run_follows_the_events_async(server: Server) -> None:
    async with AsyncClient(server.url) as client:
        run = await client.start_run("slow", force=True)
        states: list[PipelineRun] = []
        done = await client.wait_run("slow", run.id, timeout=60, on_update=states.append)
        _check_states(states, done)
        with pytest.raises(WaitTimeout):
            run = await client.start_run("slow", force=True)
            await client.wait_run("slow", run.id, timeout=0.5)
        await client.cancel_run("slow", run.id)
        pages = [r.id async for r in client.runs("slow", limit=1)]
        assert pages[0] == run.id and len(pages) == len(set(pages)) >= 3
        items = [i.key async for i in client.run_items("slow", done.id, limit=9)]
        assert len(items) == 40


class _NoEvents(httpx.BaseTransport):
    """A fake: the real server, except that a run's event stream breaks at once (as behind a
    proxy that cuts long responses), which the real server never does on its own."""

    def __init__(self) -> None:
        self.real = httpx.HTTPTransport()
        self.broken = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/events"):
            self.broken += 1
            raise httpx.RemoteProtocolError("peer closed connection", request=request)
        return self.real.handle_request(request)


def test_wait_run_polls_when_the_events_break(server: Server) -> None:
    transport = _NoEvents()
    with Client(server.url, transport=transport) as client:
        run = client.start_run("slow", force=True)
        states: list[PipelineRun] = []
        done = client.wait_run("slow", run.id, timeout=60, poll_s=0.2, on_update=states.append)
    assert transport.broken == 1
    _check_states(states, done)
