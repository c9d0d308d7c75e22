"""``serve``, ``api`` and ``worker``: running genspool, after checking its URLs and models
file so that a mistake is one clear line rather than a traceback from a server."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
from typing import TYPE_CHECKING, Annotated

import typer

from genspool.backends import open_storage
from genspool.config import load_models
from genspool.core.keys import KeyStore, SecretsFilter
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.core.worker import Worker
from genspool.exceptions import ConfigError
from genspool.resilience.shared import Shared
from genspool.runtime import ModelCatalog, ModelRegistry
from genspool.settings import Settings

if TYPE_CHECKING:
    pass

from genspool.cli._common import (
    ConfigOpt,
    Db,
    Host,
    Port,
    QueueOpt,
    _settings,
    _where,
    app,
    out,
)


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
