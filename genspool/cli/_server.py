"""``serve``, ``api`` and ``worker``: running genspool, after checking its URLs and models
file so that a mistake is one clear line rather than a traceback from a server."""

from __future__ import annotations

import asyncio
import errno
import gc
import ipaddress
import logging
import math
import os
import socket
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from genspool.backends import open_storage
from genspool.config import DEFAULT_MODELS, ModelConfig, read_models_file
from genspool.core.keys import KeyStore, SecretsFilter, redact_every_record
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.core.worker import Worker
from genspool.exceptions import ConfigError
from genspool.resilience.shared import Shared
from genspool.runtime import ModelCatalog, ModelRegistry
from genspool.settings import Settings

if TYPE_CHECKING:
    from genspool.files import Files

from genspool.cli._common import (
    ConfigOpt,
    Db,
    Host,
    Port,
    QueueOpt,
    _settings,
    _where,
    app,
    err,
    out,
)


class LogFormats(StrEnum):
    """``--log-format``: an enum, so that a wrong value is a usage error naming the choices."""

    text = "text"
    json = "json"


LogFormat = Annotated[
    LogFormats | None,
    typer.Option(
        help="Log lines as text, or as JSON lines (with job and trace ids)"
        " [env: GENSPOOL_LOG_FORMAT]",
    ),
]


def _parts(settings: Settings) -> tuple[Queue, ModelRegistry]:
    """The queue and the models, checked before anything starts so that a wrong URL, a missing
    extra or a bad models file is one clear line rather than a traceback from a server; every
    provider is built (weights load when the worker starts)."""
    queue = _queue(settings)
    shared = Shared(queue.storage.coordination, queue.storage.kv)
    # Shared limits and slots count in the backend's time, as leases do (queue.clock).
    registry = ModelRegistry(
        _models(settings), env=dict(os.environ), backend=shared, clock=queue.clock
    )
    for cfg in registry:
        registry.provider(cfg.name)
    asyncio.run(_check(queue))
    return queue, registry


def _api_parts(settings: Settings) -> tuple[Queue, ModelCatalog]:
    """Like :func:`_parts` for a process without a worker: the models as cards only, so the
    API builds no provider and loads no weights."""
    queue = _queue(settings)
    shared = Shared(queue.storage.coordination, queue.storage.kv)
    catalog = ModelCatalog(_models(settings), shared=shared)
    for cfg in catalog:
        catalog.card(cfg.name)
    asyncio.run(_check(queue))
    return queue, catalog


def _models(settings: Settings) -> list[ModelConfig]:
    """The file's models, and its agents as models of their own."""
    found = read_models_file(settings.config)
    if not found.agents and not found.tools:
        return found.models
    from genspool.agents.config import agent_models

    return [*found.models, *agent_models(found)]


def _routes(settings: Settings) -> list[Any]:
    """The models file's fan-out routes, checked (an invalid pattern names its path)."""
    from genspool.fanout.routes import load_routes

    found = read_models_file(settings.config)
    return load_routes(found.routes, found.source)


def _pipelines(settings: Settings) -> dict[str, Any]:
    """The models file's pipelines, checked (an error names the pipeline, path and line)."""
    found = read_models_file(settings.config)
    if not found.pipelines:
        return {}
    from genspool.pipelines.spec import load_pipelines

    return load_pipelines(found.pipelines, found.source, found.base or Path.cwd())


def _bundled_note(settings: Settings) -> None:
    """Say it when a models file leaves the bundled models out without saying so."""
    if settings.config is None or read_models_file(settings.config).bundled is not None:
        return
    bundled = " and ".join(m["name"] for m in DEFAULT_MODELS)
    note = (
        f"note: {settings.config} serves only its own models; add 'bundled: true' (top level)"
        f" to serve the bundled {bundled} too, or 'bundled: false' to say you mean it"
    )
    if settings.log_format == "json":  # stderr carries JSON lines only
        logging.getLogger("genspool.cli").warning("%s", note)
        return
    err.print(note, markup=False, highlight=False)


def _queue(settings: Settings) -> Queue:
    retry = RetryPolicy(
        base_s=settings.retry_base_s,
        cap_s=settings.retry_cap_s,
        max_retry_after_s=settings.max_retry_after_s,
    )
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
    from uvicorn.config import LOGGING_CONFIG

    from genspool.api.app import create_app
    from genspool.api.deps import build_services
    from genspool.api.origin import allowed_hosts
    from genspool.cli._http import protocol
    from genspool.cli._uvicorn import Server

    _log_to_stderr(settings)
    sock = _bind(settings.host, settings.port)  # before the models: a busy port fails at once
    worker: Worker | None = None
    registry: ModelCatalog  # with a worker, a ModelRegistry; an API alone has the cards only
    if with_worker:
        queue, registry = _parts(settings)
        worker = Worker(queue, registry, drain_timeout_s=settings.drain_timeout_s)
    else:
        queue, registry = _api_parts(settings)
    services = build_services(
        queue,
        registry,
        key_cache_s=settings.key_cache_s,
        prompt_label_cache_s=settings.prompt_label_cache_s,
        max_body_bytes=settings.max_body_bytes,
        wait_timeout_s=settings.wait_timeout_s,
        max_json_depth=settings.max_json_depth,
        push=settings.push_limits(),
        routes=_routes(settings),
        pipelines=_pipelines(settings),
        files_url=settings.files_url,
        max_file_bytes=settings.max_file_bytes,
    )
    if worker is not None:
        worker.files = services.files  # the same files, connected while the app runs
    auth = _auth_line(settings.host, *asyncio.run(_key_counts(queue, services.keys)))
    hosts = allowed_hosts(settings.host, settings.allowed_hosts)
    app_ = create_app(
        services, worker=worker, allowed_hosts=hosts, allowed_origins=settings.allowed_origins
    )
    config = uvicorn.Config(
        app_,
        host=settings.host,
        port=sock.getsockname()[1],
        log_level=settings.log_level.lower(),
        # JSON lines: uvicorn's loggers keep no handlers of their own and reach the root's.
        log_config=None if settings.log_format == "json" else LOGGING_CONFIG,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        # Events are small JSON documents sent one by one: deflating each cost more CPU than
        # the bytes it saved on a LAN, and a compressor's state per connection costs memory.
        ws_per_message_deflate=False,
        # A request's head is bounded before any key is checked: uvicorn's httptools protocol
        # has no bound of its own (genspool.cli._http); h11's is set too, were it chosen.
        http=protocol(settings.max_head_bytes, settings.max_headers, settings.head_timeout_s),
        h11_max_incomplete_event_size=settings.max_head_bytes,
        timeout_keep_alive=settings.keep_alive_s,
        limit_concurrency=settings.max_connections,
    )
    _redact_logs()
    server = Server(config, app_.state.shutdown, settings.drain_timeout_s)
    where = f"http://{settings.host}:{config.port}"
    role = "API and worker" if with_worker else "API"
    out.print(
        f"genspool {role} on [bold]{where}[/] (OpenAPI at {where}/docs), "
        f"{_where(settings)}, models: {', '.join(registry.configs)}"
    )
    out.print(auth, markup=False, highlight=False)
    _bundled_note(settings)
    draining = "in-flight jobs" if with_worker else "open requests"
    out.print(
        f"Ctrl-C stops: {draining} get up to {settings.drain_timeout_s:g} s "
        "(GENSPOOL_DRAIN_TIMEOUT_S); a second Ctrl-C exits at once",
        markup=False,
        highlight=False,
    )
    # Each open push connection keeps objects alive, and a full collection scans them all: while
    # 2,000 clients connected, one ran every second, 120-320 ms each, the event loop stalled
    # meanwhile (bench/floods.py). Start-up objects are frozen, collections made rarer.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    server.run(sockets=[sock])


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now so that a port in use is one line before models load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} is in use on {host}: pass --port N (or set GENSPOOL_PORT)"
            ) from exc
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _log_to_stderr(settings: Settings) -> None:
    """genspool's own log lines (model loading, shutdown) on stderr, at GENSPOOL_LOG_LEVEL."""
    logging.addLevelName(5, "TRACE")  # uvicorn's level, named here before its Config names it
    if settings.log_format == "json":
        from genspool.logjson import use_json

        use_json(settings.log_level.upper())
        logging.captureWarnings(True)  # a warning is a JSON line too, not raw stderr text
        return
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )


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
    """Keep API keys out of every log line, whatever logs it and at whatever level: uvicorn
    logs a WebSocket's path with its query string (``?token=``, or ``?tok%65n=``, which is the
    same parameter) even with the access log off. Every record is blanked as it is made; the
    handler filters stay for records made elsewhere (e.g. unpickled from another process)."""
    redact_every_record()
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
    log_format: LogFormat = None,
) -> None:
    """Run the API and a worker in one process (the embedded default)."""
    settings = _settings(
        db, config, host=host, port=port, queue_url=queue_url, log_format=_value(log_format)
    )
    _serve(settings, with_worker=True)


@app.command()
def api(
    host: Host = None,
    port: Port = None,
    db: Db = None,
    queue_url: QueueOpt = None,
    config: ConfigOpt = None,
    log_format: LogFormat = None,
) -> None:
    """Run the HTTP API only; workers run elsewhere on the same database."""
    settings = _settings(
        db, config, host=host, port=port, queue_url=queue_url, log_format=_value(log_format)
    )
    _serve(settings, with_worker=False)


@app.command()
def worker(
    db: Db = None,
    queue_url: QueueOpt = None,
    config: ConfigOpt = None,
    model: Annotated[list[str] | None, typer.Option(help="Serve only these models.")] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve this worker's Prometheus metrics on this port.")
    ] = None,
    metrics_host: Annotated[str, typer.Option(help="The address of --metrics-port.")] = (
        "127.0.0.1"
    ),
    log_format: LogFormat = None,
) -> None:
    """Run a worker only (no HTTP): lease batches, call models, store results."""
    settings = _settings(db, config, queue_url=queue_url, log_format=_value(log_format))
    _log_to_stderr(settings)
    _redact_logs()
    queue, registry = _parts(settings)
    files = _files(settings, queue)
    _sample_drift(queue, registry)
    runner = Worker(
        queue, registry, models=model, drain_timeout_s=settings.drain_timeout_s, files=files
    )
    out.print(
        f"genspool worker on {_where(settings)}, models: {', '.join(c.name for c in runner.models)}"
    )
    _bundled_note(settings)
    if metrics_port is not None:
        from genspool.metrics import serve_worker_metrics

        bound = serve_worker_metrics(queue, runner, metrics_port, metrics_host)
        out.print(f"metrics on http://{metrics_host}:{bound}/metrics")
    _trace(queue, registry)
    asyncio.run(_run_worker(queue, runner, files))


def _value(choice: LogFormats | None) -> str | None:
    return None if choice is None else choice.value


def _trace(queue: Queue, registry: ModelRegistry) -> None:
    """Traces of this worker's batches and model calls, when OTEL_* asks for them (after the
    metrics: the tracing observer wraps theirs)."""
    from genspool.tracing import install

    install(queue, {cfg.name: cfg.provider for cfg in registry})


def _sample_drift(queue: Queue, registry: ModelRegistry) -> None:
    """Drift samples of the jobs this worker ends (its process may run no API)."""
    from genspool.drift.sampler import drift_sampler_of

    drift_sampler_of(queue, registry)


def _files(settings: Settings, queue: Queue) -> Files | None:
    """The files a worker reads inputs from and keeps binary answers in (speech, images);
    None when its store keeps none."""
    from genspool.files import open_files

    store = queue.storage.files
    if store is None:
        return None
    return open_files(
        store, url=settings.files_url, max_bytes=settings.max_file_bytes, clock=queue.clock
    )


async def _run_worker(queue: Queue, runner: Worker, files: Files | None = None) -> None:
    from genspool.cli._shutdown import Signals, hand_back

    async def stop() -> None:
        runner.stop()

    signals = Signals(runner.drain_timeout_s, stop, lambda: hand_back(runner))
    with signals.installed(asyncio.get_running_loop()):
        async with queue:
            if files is not None:
                await files.connect()
            try:
                await runner.run()
            finally:
                if files is not None:
                    await files.close()
