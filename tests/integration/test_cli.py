"""The ``genspool`` command against a real server process: client commands, and the server
commands' refusals (one clear line on stderr, a non-zero exit, no traceback)."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

import pytest

from tests.helpers.api import DOOMED_AT_ONCE, slow_model
from tests.helpers.processes import Server, Spawner

EMBED = "all-minilm-l6-v2"
MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    {"name": EMBED, "provider": "onnx_embedding", "context_window": 256},
    slow_model(1000),
    DOOMED_AT_ONCE,
]
JOB_ID = re.compile(r"^job_[0-9a-f]+$")


@pytest.fixture(scope="module")
def server(module_spawner: Spawner) -> Server:
    return module_spawner.server(MODELS, env={"GENSPOOL_RETRY_BASE_S": "0.05"})


@pytest.fixture
def cli(module_spawner: Spawner, server: Server) -> Any:
    """Run ``genspool <args>`` against the server (by GENSPOOL_API_URL unless --api is given)."""

    def run(*args: str, timeout: float = 30, columns: int | None = None) -> Any:
        env = {"GENSPOOL_API_URL": server.url}
        if columns is not None:
            env["COLUMNS"] = str(columns)
        return module_spawner.run(*args, env=env, timeout=timeout)

    return run


def one_line_error(result: Any, *expected: str) -> str:
    """Assert a clean failure: non-zero exit, no traceback, the ``expected`` text, and all of
    it on one line of stderr; return that line."""
    assert result.returncode != 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    flat = re.sub(r"\s+", " ", result.stderr).strip()
    assert flat.startswith("error: "), result.stderr
    for text in expected:
        assert text in flat, f"{text!r} not in the error: {result.stderr}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{result.stderr}"
    return lines[0]


def test_submit_wait_prints_the_answer(cli: Any) -> None:
    result = cli("submit", "hi", "--model", "echo", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "hi\n"


def test_submit_wait_prints_a_long_answer_unchanged(cli: Any) -> None:
    prompt = " ".join(f"word{i}" for i in range(40))  # longer than a terminal line
    result = cli("submit", prompt, "--model", "echo", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == prompt + "\n", "the answer was re-wrapped"


def test_submit_prints_the_id_and_jobs_get_shows_the_job(cli: Any, server: Server) -> None:
    result = cli("submit", "by id", "--model", "echo", "--max-tokens", "5")
    assert result.returncode == 0, result.stderr
    job_id = result.stdout.strip()
    assert JOB_ID.match(job_id), result.stdout
    server.wait(job_id)

    shown = cli("jobs", "get", job_id)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["id"] == job_id
    assert job["status"] == "succeeded"
    assert job["result"]["body"]["choices"][0]["message"]["content"] == "by id"
    assert job["request"]["url"] == "/v1/chat/completions" and job["error"] is None
    assert job["request"]["body"]["messages"][-1]["content"] == "by id"
    assert [a["outcome"] for a in job["history"]] == ["succeeded"] and job["history"][0]["worker"]


def test_submit_json_request(cli: Any, server: Server) -> None:
    spec = {
        "url": "/v1/chat/completions",
        "priority": 5,
        "body": {"model": "echo", "messages": [{"role": "user", "content": "from json"}]},
    }
    result = cli("submit", "--json", json.dumps(spec), "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from json\n"
    one_line_error(cli("submit", "--json", "{not json"), "--json", "not valid JSON")


def test_submit_embed(cli: Any) -> None:
    result = cli("submit", "--embed", "A man is eating food.", "--model", EMBED, "--wait")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["object"] == "list"
    vector = body["data"][0]["embedding"]
    assert len(vector) == 384
    assert abs(sum(x * x for x in vector) - 1.0) < 1e-3
    assert body["usage"]["prompt_tokens"] > 0


def test_jobs_list_filters(cli: Any, server: Server) -> None:
    job = server.chat("echo", "listed")
    server.wait(job["id"])
    result = cli("jobs", "list", "--status", "succeeded", "--model", "echo", "--limit", "5")
    assert result.returncode == 0, result.stderr
    assert job["id"] in result.stdout
    assert "succeeded" in result.stdout
    empty = cli("jobs", "list", "--model", "slow", "--status", "failed")
    assert empty.returncode == 0, empty.stderr
    assert "job_" not in empty.stdout


def test_jobs_cancel(cli: Any, server: Server) -> None:
    blocker = server.chat("slow", "blocker")
    server.wait(blocker["id"], until={"running"})
    queued = server.chat("slow", "to cancel")
    result = cli("jobs", "cancel", queued["id"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "cancelled"
    assert server.get(queued["id"])["status"] == "cancelled"
    one_line_error(cli("jobs", "cancel", queued["id"]), "409", queued["id"])
    replayed = cli("jobs", "replay", queued["id"])  # a cancelled job can be run after all
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == "queued"
    assert server.wait(queued["id"])["status"] == "succeeded"


def test_dlq_list_and_replay(cli: Any, server: Server) -> None:
    job = server.chat("doomed", "dead letter")
    assert server.wait(job["id"])["status"] == "failed"
    listed = cli("dlq", "list", columns=250)  # wide enough for every column
    assert listed.returncode == 0, listed.stderr
    assert job["id"] in listed.stdout
    assert "model_timeout" in listed.stdout or "did not answer" in listed.stdout
    replayed = cli("dlq", "replay", job["id"])
    assert replayed.returncode == 0, replayed.stderr
    assert replayed.stdout.strip() == "queued"
    assert server.wait(job["id"])["status"] == "failed"  # and it fails again: it was re-run
    again = cli("jobs", "replay", job["id"])  # the same, under jobs
    assert (again.returncode, again.stdout.strip()) == (0, "queued"), again.stderr
    assert len(server.wait(job["id"])["history"]) == 3  # one attempt in each of three runs
    ok = server.chat("echo", "not dead")
    server.wait(ok["id"])
    one_line_error(cli("dlq", "replay", ok["id"]), "409", ok["id"])


def test_tables_show_whole_ids_when_output_is_piped(cli: Any, server: Server) -> None:
    """Piped output has no terminal width (80 columns are assumed): an id is what the next
    command needs, so it must never be wrapped or cut, even next to a long error."""
    job = server.chat("doomed", "another dead letter")
    assert server.wait(job["id"])["status"] == "failed"
    for args in (("dlq", "list"), ("jobs", "list", "--status", "failed")):
        listed = cli(*args)
        assert listed.returncode == 0, listed.stderr
        assert job["id"] in listed.stdout, listed.stdout


def test_jobs_get_unknown_is_one_line(cli: Any) -> None:
    one_line_error(cli("jobs", "get", "job_nope"), "job_nope", "404")


def test_client_without_a_server_is_one_line(spawner: Spawner) -> None:
    port = spawner.free_port()
    result = spawner.run("jobs", "list", "--api", f"http://127.0.0.1:{port}")
    one_line_error(result, "cannot reach", str(port))


def test_serve_with_a_database_in_a_missing_directory(spawner: Spawner) -> None:
    result = spawner.run(
        "serve", "--port", str(spawner.free_port()), "--db", "sqlite:////nonexistent/dir/x.db"
    )
    one_line_error(result, "/nonexistent/dir", "does not exist")


def test_serve_with_an_invalid_models_file_names_the_field(spawner: Spawner) -> None:
    bad = spawner.models(
        [
            {"name": "ok", "provider": "echo"},
            {"name": "broken", "provider": "echo", "batching": {"max_batch_size": 0}},
        ],
        "bad.yaml",
    )
    result = spawner.run(
        "serve",
        "--port",
        str(spawner.free_port()),
        "--config",
        str(bad),
        "--db",
        spawner.sqlite_url(spawner.root / "x.db"),
    )
    one_line_error(result, "models[1].batching.max_batch_size", "greater than 0")

    unknown = spawner.models([{"name": "x", "provider": "echo", "bacth_size": 4}], "typo.yaml")
    result = spawner.run(
        "serve",
        "--port",
        str(spawner.free_port()),
        "--config",
        str(unknown),
        "--db",
        spawner.sqlite_url(spawner.root / "x.db"),
    )
    one_line_error(result, "bacth_size")

    provider = spawner.models([{"name": "x", "provider": "vllm"}], "provider.yaml")
    result = spawner.run(
        "worker", "--config", str(provider), "--db", spawner.sqlite_url(spawner.root / "x.db")
    )
    one_line_error(result, "models[0].provider", "unknown provider 'vllm'", "echo, llama_cpp")

    flat = spawner.models([{"name": "x", "provider": "echo", "max_batch_size": 4}], "flat.yaml")
    result = spawner.run(
        "worker", "--config", str(flat), "--db", spawner.sqlite_url(spawner.root / "x.db")
    )
    one_line_error(result, "models[0]", "max_batch_size -> batching.max_batch_size")


def test_serve_with_a_missing_api_key_names_the_variable(spawner: Spawner) -> None:
    missing = spawner.models(
        [
            {
                "name": "remote",
                "provider": "openai",
                "options": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "NOPE_KEY"},
            }
        ],
        "key.yaml",
    )
    result = spawner.run(
        "serve",
        "--port",
        str(spawner.free_port()),
        "--config",
        str(missing),
        "--db",
        spawner.sqlite_url(spawner.root / "x.db"),
    )
    one_line_error(result, "NOPE_KEY")


def test_error_messages_are_printed_verbatim(cli: Any) -> None:
    """Text in square brackets (a model name, a ``pip install "genspool[local]"`` hint) must
    not be taken for console markup and dropped."""
    one_line_error(
        cli("submit", "hi", "--model", "mistral[beta]", columns=250),
        "unknown model",
        "mistral[beta]",
    )


# -- CLI polish: model choice, global options, paging, progress, start-up checks ---------------


def test_submit_embed_without_a_model_picks_the_embedding_model(cli: Any) -> None:
    result = cli("submit", "--embed", "A man is eating food.", "--wait")
    assert result.returncode == 0, result.stderr
    body = json.loads(result.stdout)
    assert body["model"] == EMBED, "echo serves embeddings too, but is not an embedding model"
    assert len(body["data"][0]["embedding"]) == 384


def test_api_and_api_key_are_global_options_too(module_spawner: Spawner, server: Server) -> None:
    dead = f"http://127.0.0.1:{module_spawner.free_port()}"
    before = module_spawner.run("--api", server.url, "jobs", "list")
    assert before.returncode == 0, before.stderr
    # After the command it wins over the global option and over GENSPOOL_API_URL.
    after = module_spawner.run(
        "--api", dead, "jobs", "list", "--api", server.url, env={"GENSPOOL_API_URL": dead}
    )
    assert after.returncode == 0, after.stderr
    one_line_error(module_spawner.run("--api", dead, "jobs", "list"), "cannot reach", dead)
    shown = module_spawner.run("--help", env={"COLUMNS": "200"})
    assert "GENSPOOL_API_URL" in shown.stdout and "GENSPOOL_API_KEY" in shown.stdout


def test_version(spawner: Spawner) -> None:
    import genspool

    result = spawner.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"genspool {genspool.__version__}\n"


def test_jobs_list_json_pages_with_after(cli: Any, server: Server) -> None:
    ids = [server.chat("echo", f"page {i}")["id"] for i in range(5)]
    server.wait_all(ids)
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(10):
        args = ["jobs", "list", "--model", "echo", "--limit", "2", "--json"]
        result = cli(*args, *(["--after", cursor] if cursor else []))
        assert result.returncode == 0, result.stderr
        page = json.loads(result.stdout)  # one JSON document
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        assert page["has_more"] == (cursor is not None)
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "a job was listed twice"
    assert set(ids) <= set(seen)
    table = cli("jobs", "list", "--model", "echo", "--limit", "2")
    assert table.returncode == 0, table.stderr
    assert re.search(r"next page: --after job_[0-9a-f]+", table.stdout), table.stdout
    one_line_error(cli("jobs", "list", "--json", "--limit", "0"), "400", "limit")


def test_submit_wait_is_a_flag_and_reports_progress_on_stderr(cli: Any) -> None:
    result = cli("submit", "progress", "--model", "slow", "--wait")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "progress\n"
    lines = result.stderr.splitlines()
    assert any(re.fullmatch(r"job_[0-9a-f]+: queued", line) for line in lines), lines
    assert any(re.fullmatch(r"job_[0-9a-f]+: running \(attempt 1\)", line) for line in lines)
    assert re.fullmatch(r"job_[0-9a-f]+: succeeded after \d+\.\d s", lines[-1]), lines
    shown = cli("submit", "--help", columns=200)
    wait_line = next(line for line in shown.stdout.splitlines() if "--wait" in line)
    assert "<bool>" not in wait_line and "BOOL" not in wait_line.upper(), wait_line


def test_serve_checks_the_port_before_loading_models(spawner: Spawner) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        # No --config: the bundled models, whose loading would take seconds.
        result = spawner.run("serve", "--port", str(port), "--db", "memory://port")
        took = time.monotonic() - started
        api = spawner.run("api", "--port", str(port), "--db", "memory://port")
    one_line_error(result, f"port {port} is in use", "pass --port N")
    assert took < 10
    assert "loading model" not in result.stderr
    one_line_error(api, f"port {port} is in use")


def test_serve_logs_model_loading_and_notes_dropped_bundled_models(server: Server) -> None:
    logs = server.proc.stderr()
    assert f"loading model {EMBED} (provider onnx_embedding)" in logs
    assert re.search(rf"loaded model {EMBED} in \d+\.\d s", logs), logs
    assert "serves only its own models; add 'bundled: true'" in logs


def test_a_models_file_error_names_the_file_and_line(spawner: Spawner) -> None:
    dup = spawner.root / "dup.yaml"
    dup.write_text("models:\n  - name: a\n    provider: echo\n    provider: echo\n")
    db = spawner.sqlite_url(spawner.root / "x.db")
    result = spawner.run("worker", "--config", str(dup), "--db", db)
    one_line_error(result, f"models file {dup}, line 4", "duplicate key 'provider'")
    said = spawner.root / "said.yaml"
    said.write_text("bundled: false\nmodels:\n  - {name: a, provider: echo}\n")
    worker = spawner.start("worker", "--config", str(said), "--db", db)
    spawner.wait_until(lambda: "worker serving" in worker.stderr(), what="the worker to start")
    assert "bundled: true" not in worker.stderr() + worker.stdout()
