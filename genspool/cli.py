"""The ``genspool`` command: run the server parts, and talk to a running server.

``serve`` / ``api`` / ``worker`` run genspool; ``submit``, ``jobs`` and ``dlq`` are clients of
the HTTP API (``--api``, default ``http://127.0.0.1:8000``; ``--api-key``); ``keys`` manages API
keys straight on the database, so the first one exists before any server runs. Errors print
one line to stderr and exit non-zero.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from genspool.backends import open_storage, shown_url
from genspool.config import load_models
from genspool.core.keys import KeyStore, SecretsFilter, parse_scopes
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.core.worker import Worker
from genspool.exceptions import APIConnectionError, ConfigError, GenspoolError
from genspool.resilience.shared import Shared
from genspool.runtime import ModelCatalog, ModelRegistry
from genspool.settings import Settings

if TYPE_CHECKING:
    from genspool.client import Client, Job

__all__ = ["app", "main"]

app = typer.Typer(
    help="Buffer, fan out and batch generative-AI work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Inspect and cancel jobs.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list and replay.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys: create, list, revoke (on the database, no server needed).",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
T = TypeVar("T")


def _console(stderr: bool) -> Console:
    # Piped output is for programs and logs: never wrap a line or cut a table column there.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 10_000)


out = _console(stderr=False)
err = _console(stderr=True)

Host = Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")]
Port = Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")]
Db = Annotated[str | None, typer.Option("--db", help="Queue/store URL (GENSPOOL_DATABASE_URL).")]
QueueOpt = Annotated[
    str | None,
    typer.Option("--queue", help="Queue URL, when not the store's (GENSPOOL_QUEUE_URL)."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Models YAML (GENSPOOL_CONFIG).")]
Api = Annotated[str, typer.Option("--api", envvar="GENSPOOL_API_URL", help="genspool API URL.")]
Key = Annotated[
    str | None,
    typer.Option("--api-key", envvar="GENSPOOL_API_KEY", help="API key (GENSPOOL_API_KEY)."),
]
DEFAULT_API = "http://127.0.0.1:8000"


def _where(settings: Settings) -> str:
    store = f"store {shown_url(settings.database_url)}"
    return store if not settings.queue_url else f"queue {shown_url(settings.queue_url)}, {store}"


def _settings(db: str | None, config: Path | None, **more: Any) -> Settings:
    values = {"database_url": db, "config": config, **more}
    return Settings(**{k: v for k, v in values.items() if v is not None})


def _parts(settings: Settings) -> tuple[Queue, ModelRegistry]:
    """The queue and the models, checked before anything starts so that a wrong URL, a missing
    extra or a bad models file is one clear line rather than a traceback from a server; every
    provider is built (weights load when the worker starts)."""
    queue = _queue(settings)
    shared = Shared(queue.storage.coordination, queue.storage.kv)
    registry = ModelRegistry(load_models(settings.config), env=dict(os.environ), backend=shared)
    for cfg in registry:
        registry.provider(cfg.name)
    asyncio.run(_check(queue))
    return queue, registry


def _api_parts(settings: Settings) -> tuple[Queue, ModelCatalog]:
    """Like :func:`_parts` for a process without a worker: the models as cards only, so the
    API builds no provider and loads no weights."""
    queue = _queue(settings)
    shared = Shared(queue.storage.coordination, queue.storage.kv)
    catalog = ModelCatalog(load_models(settings.config), shared=shared)
    for cfg in catalog:
        catalog.card(cfg.name)
    asyncio.run(_check(queue))
    return queue, catalog


def _queue(settings: Settings) -> Queue:
    retry = RetryPolicy(base_s=settings.retry_base_s, cap_s=settings.retry_cap_s)
    return Queue(
        open_storage(settings.database_url, queue_url=settings.queue_url),
        retry=retry,
        lease_s=settings.lease_s,
        result_ttl_s=settings.result_ttl_s,
    )


async def _check(queue: Queue) -> None:
    # The backend only: the queue's event relays are for the process that runs it.
    await queue.storage.connect()
    await queue.storage.close()


def _serve(settings: Settings, *, with_worker: bool) -> None:
    import uvicorn

    from genspool.api.app import create_app
    from genspool.api.deps import build_services

    worker: Worker | None = None
    registry: ModelCatalog  # with a worker, a ModelRegistry; an API alone has the cards only
    if with_worker:
        queue, registry = _parts(settings)
        worker = Worker(queue, registry)
    else:
        queue, registry = _api_parts(settings)
    services = build_services(
        queue,
        registry,
        key_cache_s=settings.key_cache_s,
        max_body_bytes=settings.max_body_bytes,
        wait_timeout_s=settings.wait_timeout_s,
    )
    auth = _auth_line(settings.host, *asyncio.run(_key_counts(queue, services.keys)))
    config = uvicorn.Config(
        create_app(services, worker=worker),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    _redact_logs()
    server = uvicorn.Server(config)
    where = f"http://{settings.host}:{settings.port}"
    role = "API and worker" if with_worker else "API"
    out.print(
        f"genspool {role} on [bold]{where}[/] (OpenAPI at {where}/docs), "
        f"{_where(settings)}, models: {', '.join(registry.configs)}"
    )
    out.print(auth, markup=False, highlight=False)
    server.run()


async def _key_counts(queue: Queue, keys: KeyStore) -> tuple[int, int]:
    """How many API keys exist (revoked ones included), and how many are live."""
    await queue.storage.connect()  # not queue.connect(): no event relay for a look at the keys
    try:
        records = await keys.list_keys()
    finally:
        await queue.storage.close()
    return len(records), sum(not k.revoked for k in records)


def _auth_line(host: str, existing: int, live: int) -> str:
    """What the server prints about auth; refuses a non-loopback host while the API is open."""
    if existing:
        return f"auth: on, {live} live API key(s); every route but /healthz needs one"
    if not _loopback(host):
        raise ConfigError(
            f"refusing to listen on {host}: no API key exists, so anyone who can reach it could"
            " use the API; create one first (genspool keys create --tenant <name> --scopes admin)"
            " or listen on 127.0.0.1"
        )
    return "auth: off (no API keys yet), so listening on loopback only; see genspool keys create"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _redact_logs() -> None:
    """Keep API keys out of every log line, whatever logs it: uvicorn logs a WebSocket's path
    with its query string (``?token=``) even with the access log off."""
    secrets_filter = SecretsFilter()
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(secrets_filter)
    if logging.lastResort is not None:
        logging.lastResort.addFilter(secrets_filter)


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    db: Db = None,
    queue_url: QueueOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the API and a worker in one process (the embedded default)."""
    _serve(_settings(db, config, host=host, port=port, queue_url=queue_url), with_worker=True)


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    db: Db = None,
    queue_url: QueueOpt = None,
    config: ConfigOpt = None,
) -> None:
    """Run the HTTP API only; workers run elsewhere on the same database."""
    _serve(_settings(db, config, host=host, port=port, queue_url=queue_url), with_worker=False)


@app.command()
def worker(
    db: Db = None,
    queue_url: QueueOpt = None,
    config: ConfigOpt = None,
    model: Annotated[list[str] | None, typer.Option(help="Serve only these models.")] = None,
) -> None:
    """Run a worker only (no HTTP): lease batches, call models, store results."""
    settings = _settings(db, config, queue_url=queue_url)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(name)s %(message)s")
    _redact_logs()
    queue, registry = _parts(settings)
    runner = Worker(queue, registry, models=model)
    out.print(
        f"genspool worker on {_where(settings)}, models: {', '.join(c.name for c in runner.models)}"
    )
    asyncio.run(_run_worker(queue, runner))


async def _run_worker(queue: Queue, runner: Worker) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runner.stop)
    async with queue:
        await runner.run()


# -- client commands -------------------------------------------------------------------------


@contextlib.contextmanager
def _client(api_url: str, api_key: str | None) -> Iterator[Client]:
    """A client of the API whose errors read as one line each: the server's message with its
    status, or that the server cannot be reached."""
    from genspool.client import Client  # client commands only; keeps worker start-up light

    try:
        with Client(api_url, api_key, timeout=60) as client:
            yield client
    except APIConnectionError as exc:
        cause = exc.__cause__ or exc
        message = f"cannot reach genspool at {api_url} ({cause}); is it running?"
        raise GenspoolError(message) from exc
    except GenspoolError as exc:
        if exc.response is None:
            raise
        raise GenspoolError(f"HTTP {exc.response.status_code}: {exc.message}") from exc


@app.command()
def submit(
    prompt: Annotated[str | None, typer.Argument(help="A prompt, or omit and use --json.")] = None,
    model: Annotated[str, typer.Option(help="Model to use.")] = "smollm2-135m-instruct",
    embed: Annotated[bool, typer.Option("--embed", help="An embeddings job.")] = False,
    request: Annotated[
        str | None,
        typer.Option("--json", help="A job or request as JSON (or @file, or - for stdin)."),
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Chat: most tokens to generate.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait and print the answer.")] = False,
    api_url: Api = DEFAULT_API,
    api_key: Key = None,
) -> None:
    """Submit a job and print its id (or, with --wait, its answer)."""
    spec = _job_spec(prompt, model, embed, request, max_tokens)
    with _client(api_url, api_key) as client:
        # Queue options from --json go through as given; the server says which it rejects.
        options = {k: v for k, v in spec.items() if k not in ("url", "body")}
        created = client.submit(spec["url"], spec.get("body", {}), extra_body=options)
        if not wait:
            out.print(created.id)
            return
        done = client.wait(created.id)
    if done.status != "succeeded" or done.result is None:
        raise GenspoolError(f"job {done.id} {done.status.value}: {done.to_dict().get('error')}")
    body = dict(done.result.body)
    if body.get("object") == "chat.completion":
        out.print(body["choices"][0]["message"]["content"], markup=False)
    else:
        out.print_json(data=body)


def _job_spec(
    prompt: str | None, model: str, embed: bool, request: str | None, max_tokens: int | None
) -> dict[str, Any]:
    if request is not None:
        text = (
            sys.stdin.read()
            if request == "-"
            else (Path(request[1:]).read_text() if request.startswith("@") else request)
        )
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenspoolError(f"--json is not valid JSON: {exc}") from exc
        if not isinstance(spec, dict):
            raise GenspoolError("--json must be a JSON object")
        return spec if "url" in spec else {"url": "/v1/chat/completions", "body": spec}
    if prompt is None:
        raise GenspoolError("give a prompt or --json")
    if embed:
        return {"url": "/v1/embeddings", "body": {"model": model, "input": prompt}}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {"url": "/v1/chat/completions", "body": body}


def _table(jobs: Iterable[Job]) -> Table:
    table = Table("id", "status", "model", "attempts", "error")
    for j in jobs:
        error = j.error.message if j.error is not None else ""
        table.add_row(j.id, j.status.value, j.model, str(j.attempts), error[:60])
    return table


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    api_url: Api = DEFAULT_API,
    api_key: Key = None,
) -> None:
    """List jobs, newest first."""
    with _client(api_url, api_key) as client:
        # One page of ``limit`` jobs: the listing stops before it would fetch another.
        jobs = list(itertools.islice(client.list(status=status, model=model, limit=limit), limit))
    out.print(_table(jobs))


@jobs_app.command("get")
def jobs_get(job_id: str, api_url: Api = DEFAULT_API, api_key: Key = None) -> None:
    """Show one job as JSON."""
    with _client(api_url, api_key) as client:
        out.print_json(data=client.get(job_id).to_dict())


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, api_url: Api = DEFAULT_API, api_key: Key = None) -> None:
    """Cancel a queued or running job."""
    with _client(api_url, api_key) as client:
        out.print(client.cancel(job_id).status.value)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    api_url: Api = DEFAULT_API,
    api_key: Key = None,
) -> None:
    """List dead letters, newest first."""
    with _client(api_url, api_key) as client:
        jobs = list(itertools.islice(client.dead_letters(limit=limit), limit))
    out.print(_table(jobs))


@dlq_app.command("replay")
def dlq_replay(job_id: str, api_url: Api = DEFAULT_API, api_key: Key = None) -> None:
    """Queue a dead-lettered job again."""
    with _client(api_url, api_key) as client:
        out.print(client.replay(job_id).status.value)


# -- API keys (on the database) --------------------------------------------------------------


def _on_keys(db: str | None, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = _settings(db, None)
    storage = open_storage(settings.database_url, queue_url=settings.queue_url)

    async def run() -> T:
        await storage.connect()
        try:
            return await action(KeyStore(storage.kv, storage.coordination))
        finally:
            await storage.close()

    return asyncio.run(run())


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant whose jobs the key submits and sees.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: submit, read, admin.")],
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Most submissions per minute.")] = None,
    db: Db = None,
) -> None:
    """Create an API key and print it, as the last line, once."""
    wanted = parse_scopes(scopes)
    key, token = _on_keys(db, lambda s: s.create(tenant, wanted, name=name, rpm=rpm))
    out.print(
        f"created API key {key.id}: tenant {key.tenant}, scopes {','.join(sorted(key.scopes))}"
        + (f", {key.rpm} submissions/min" if key.rpm else ""),
        markup=False,
        highlight=False,
    )
    out.print("Keep it now; it cannot be shown again:", markup=False, highlight=False)
    out.print(token, markup=False, highlight=False)


@keys_app.command("list")
def keys_list(db: Db = None) -> None:
    """List API keys (never their secrets), oldest first."""
    table = Table("id", "tenant", "scopes", "name", "rpm", "created", "revoked")
    for k in _on_keys(db, lambda s: s.list_keys()):
        table.add_row(
            k.id,
            k.tenant,
            ",".join(sorted(k.scopes)),
            escape(k.name or ""),
            str(k.rpm or ""),
            _when(k.created_at),
            _when(k.revoked_at) or "no",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: Db = None) -> None:
    """Revoke an API key for good; servers stop taking it within GENSPOOL_KEY_CACHE_S."""
    key = _on_keys(db, lambda s: s.revoke(key_id))
    out.print(f"revoked {key.id} (tenant {key.tenant})", markup=False, highlight=False)


def main() -> None:
    try:
        app()
    except GenspoolError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        sys.exit(1)
