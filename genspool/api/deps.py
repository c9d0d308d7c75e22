"""What the routes depend on: the :class:`Services` of one app and the FastAPI dependencies
that hand them out.

:func:`build_services` makes every part from a queue and a model catalog, so no field is ever
missing; :func:`genspool.api.app.create_app` installs the result on the app and route modules
ask for it with :data:`Svc` (or :func:`services` on a connection they already hold). Route
modules import this module, never :mod:`genspool.api.app`, which imports them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from genspool.api.admission import Admission
from genspool.api.jsonbody import DEFAULT_MAX_DEPTH as DEFAULT_MAX_JSON_DEPTH
from genspool.api.validation import validate_request
from genspool.batches import Batches
from genspool.config import INTERNAL_MODELS
from genspool.core.events import PushLimits
from genspool.core.keys import KeyStore
from genspool.core.prompts import Prompts
from genspool.core.queue import Queue
from genspool.drift.sampler import drift_sampler_of
from genspool.fanout.routes import Route, RouteBook
from genspool.files import DEFAULT_MAX_FILE_BYTES, Files, open_files
from genspool.pipelines.service import Pipelines
from genspool.pipelines.spec import Pipeline
from genspool.providers.base import EMBEDDINGS
from genspool.rag.service import VectorStores
from genspool.rag.tokenizers import tokenizer_of
from genspool.runtime.catalog import ModelCatalog
from genspool.webhooks.dispatch import Webhooks, webhooks_of

__all__ = ["DEFAULT_MAX_BODY_BYTES", "Services", "Svc", "build_services", "services"]

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
#: The embedding model of a new vector store, when served and the create names none.
DEFAULT_EMBEDDER = "all-minilm-l6-v2"


@dataclass(frozen=True, slots=True)
class Services:
    """Everything a route reaches: built once per app, complete from the start."""

    queue: Queue
    #: The served models as cards (no provider built); a ModelRegistry when a worker runs here.
    catalog: ModelCatalog
    keys: KeyStore
    admission: Admission
    max_body_bytes: int
    #: How long the OpenAI-compatible routes wait for a job's result.
    wait_timeout_s: float
    #: How deep a request body's JSON may nest (genspool.api.jsonbody).
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    #: The bounds of WebSocket and SSE connections (genspool.api.routes_push).
    push: PushLimits = field(default_factory=PushLimits)
    #: The fan-out routes: the models file's and those stored by ``PUT /v1/routes/{name}``.
    routes: RouteBook = field(default_factory=lambda: RouteBook(None))
    #: The Files API's files; None when the store keeps none (a Redis or NATS server alone).
    files: Files | None = None
    #: The Batch API's batches; None when the store keeps none (as for files).
    batches: Batches | None = None
    #: Webhook subscriptions and deliveries; None when the store keeps none (as for files).
    webhooks: Webhooks | None = None
    #: The models file's pipelines and their runs; None when the store keeps no runs.
    pipelines: Pipelines | None = None
    #: Vector stores (OpenAI's), their ingestion and search; None when the store keeps none.
    vector_stores: VectorStores | None = None
    #: The prompt registry (genspool.core.prompts); None when the store keeps no prompts.
    prompts: Prompts | None = None


def build_services(
    queue: Queue,
    catalog: ModelCatalog,
    *,
    key_cache_s: float = 5.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    wait_timeout_s: float = 600.0,
    admission_refresh_s: float = 0.5,
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH,
    push: PushLimits | None = None,
    routes: list[Route] | None = None,
    files_url: str | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
    pipelines: dict[str, Pipeline] | None = None,
    prompt_label_cache_s: float = 2.0,
) -> Services:
    """The services of an app over ``queue``: API keys in the queue's key-value store, load
    shedding by the models' own limits, on the queue's clock."""
    storage = queue.storage
    files = _files(queue, files_url, max_file_bytes)
    prompts = (
        None
        if storage.prompts is None
        else Prompts(storage.prompts, label_ttl_s=prompt_label_cache_s, clock=queue.clock)
    )
    batches = _batches(queue, files, catalog, max_body_bytes, prompts)
    webhooks = webhooks_of(queue)
    drift_sampler_of(queue, catalog)  # samples the chat jobs ended here (a worker's, with serve)
    runs = _pipelines(queue, files, catalog, pipelines or {}, prompts)
    if batches is not None:
        batches.runner.on_end.extend(
            hook
            for hook in (
                webhooks.batch_ended if webhooks else None,
                runs.batch_ended if runs and runs.triggers.listens else None,
            )
            if hook is not None
        )
    if runs is not None and webhooks is not None:
        runs.runner.on_end.append(webhooks.run_ended)
    return Services(
        queue=queue,
        catalog=catalog,
        keys=KeyStore(storage.kv, storage.coordination, ttl_s=key_cache_s),
        admission=Admission(queue, list(catalog), refresh_s=admission_refresh_s, clock=queue.clock),
        max_body_bytes=max_body_bytes,
        wait_timeout_s=wait_timeout_s,
        max_json_depth=max_json_depth,
        push=push or PushLimits(),
        routes=RouteBook(storage.routes, routes),
        files=files,
        batches=batches,
        webhooks=webhooks,
        pipelines=runs,
        vector_stores=_vector_stores(queue, files, catalog),
        prompts=prompts,
    )


def _files(queue: Queue, url: str | None, max_bytes: int) -> Files | None:
    """The files of the store, on the queue's clock; None when the store keeps none."""
    store = queue.storage.files
    if store is None:
        return None
    return open_files(store, url=url, max_bytes=max_bytes, clock=queue.clock)


def _batches(
    queue: Queue,
    files: Files | None,
    catalog: ModelCatalog,
    max_line_bytes: int,
    prompts: Prompts | None,
) -> Batches | None:
    """The batches of the store, their lines each at most a request body's size (and their
    stored prompts from ``prompts``)."""
    store = queue.storage.batches
    if store is None or files is None:
        return None
    check = functools.partial(validate_request, catalog)
    return Batches(
        store, files, queue, catalog, check, max_line_bytes=max_line_bytes, prompts=prompts
    )


def _pipelines(
    queue: Queue,
    files: Files | None,
    catalog: ModelCatalog,
    pipelines: dict[str, Pipeline],
    prompts: Prompts | None,
) -> Pipelines | None:
    """The runs of the store's pipelines; None when the store keeps no runs."""
    store = queue.storage.pipelines
    if store is None:
        return None
    check = functools.partial(validate_request, catalog)
    return Pipelines(store, queue, files, pipelines, check, prompts)


def _vector_stores(queue: Queue, files: Files | None, catalog: ModelCatalog) -> VectorStores | None:
    """The vector stores of the store, their vectors made by a served embedding model (the
    bundled MiniLM when it is served); None when the store keeps none."""
    records, chunks = queue.storage.vectors, queue.storage.chunks
    if records is None or chunks is None or files is None:
        return None

    def embedders() -> set[str]:
        return {
            c.name
            for c in catalog
            if c.name not in INTERNAL_MODELS and EMBEDDINGS in catalog.card(c.name).endpoints
        }

    served = embedders()
    default = DEFAULT_EMBEDDER if DEFAULT_EMBEDDER in served else min(served, default="")
    return VectorStores(
        records, chunks, files, queue, model=default, known_models=embedders,
        tokenizer=functools.partial(tokenizer_of, catalog),
        # A model reads its window less its special tokens ([CLS], [SEP]: a margin of 4).
        window=lambda name: catalog.config(name).context_window - 4,
        dimensions=lambda name: catalog.card(name).dimensions,
    )  # fmt: skip


def services(conn: HTTPConnection) -> Services:
    """The services of the app that received ``conn`` (a request or a WebSocket)."""
    svc: Services = conn.app.state.services
    return svc


async def _services(conn: HTTPConnection) -> Services:
    # async on purpose: FastAPI runs a plain ``def`` dependency on its thread pool, a thread hop
    # per request (measured: it took POST /v1/jobs from 1.4 ms to over 500 ms p50 at 500/s).
    return services(conn)


#: A route parameter: ``svc: Svc``.
Svc = Annotated[Services, Depends(_services)]
