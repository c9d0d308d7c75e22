"""Python clients of a genspool server: :class:`Client` (blocking) and :class:`AsyncClient`.

Both speak the public HTTP API only (jobs, dead letters, keys, models, files, batches,
pipelines, vector stores, prompts, Server-Sent Events and the WebSocket), return the typed
results of ``_types``, ``_batch_base``, ``_pipeline_base``, ``_prompt_base`` and ``_store_base``
and raise the classes of
:mod:`genspool.exceptions`; nothing here imports the server's packages.

    with genspool.Client("http://127.0.0.1:8000", api_key="gsk_...") as client:
        job = client.submit_chat("smollm2-135m-instruct", [{"role": "user", "content": "hi"}])
        print(client.wait(job.id).result.text)
"""

from genspool.client._async import AsyncClient, AsyncEventStream, AsyncKeys
from genspool.client._batch_base import Batch, BatchCounts, FileObject, Page
from genspool.client._batches import AsyncBatches, AsyncFiles, Batches, Files
from genspool.client._pipeline_base import Pipeline, PipelineRun, RunCounts, RunItem, Tick
from genspool.client._prompt_base import Prompt, PromptChange, PromptLabelMove
from genspool.client._prompts import AsyncPrompts, Prompts
from genspool.client._store_base import IngestOutcome, SearchHit, StoreFile, VectorStore
from genspool.client._sync import Client, EventStream, Keys
from genspool.client._types import (
    ApiKey,
    Attempt,
    CreatedApiKey,
    Job,
    JobError,
    JobEvent,
    JobRequest,
    JobResult,
    JobStatus,
    Model,
)

__all__ = [
    "ApiKey",
    "AsyncBatches",
    "AsyncClient",
    "AsyncEventStream",
    "AsyncFiles",
    "AsyncKeys",
    "AsyncPrompts",
    "Attempt",
    "Batch",
    "BatchCounts",
    "Batches",
    "Client",
    "CreatedApiKey",
    "EventStream",
    "FileObject",
    "Files",
    "IngestOutcome",
    "Job",
    "JobError",
    "JobEvent",
    "JobRequest",
    "JobResult",
    "JobStatus",
    "Keys",
    "Model",
    "Page",
    "Pipeline",
    "PipelineRun",
    "Prompt",
    "PromptChange",
    "PromptLabelMove",
    "Prompts",
    "RunCounts",
    "RunItem",
    "SearchHit",
    "StoreFile",
    "Tick",
    "VectorStore",
]
