"""OpenTelemetry traces of jobs, from submit through the queue to the model call (``otel`` extra).

**Off by default, and free when off**: this module imports nothing from OpenTelemetry; only
:func:`install`, when tracing is on, imports :mod:`genspool.tracing._otel` (the SDK and the
OTLP/HTTP exporter). A queue with tracing off keeps its plain observer.

**On** when any of these is set (and ``OTEL_SDK_DISABLED`` is not ``true``, nor
``GENSPOOL_OTEL`` ``0``): ``GENSPOOL_OTEL=1``, ``OTEL_TRACES_EXPORTER`` (other than ``none``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``. The exporter is
configured by the standard variables: ``OTEL_TRACES_EXPORTER`` (``otlp``, the default, is
OTLP/HTTP protobuf; ``console``; ``none``), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers,
timeout), ``OTEL_SERVICE_NAME`` (default ``genspool``), ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER``; metrics likewise by ``OTEL_METRICS_EXPORTER`` (``otlp`` or ``none``).

**What is recorded** (semantic conventions 1.37.0, the schema URL on every span: the GenAI
names since ``gen_ai.provider.name`` replaced ``gen_ai.system``):

* ``send {model}``, a PRODUCER span per job submitted, child of whatever span is current; its
  W3C ``traceparent`` is stored in the job's metadata (``genspool.traceparent``, a reserved key
  a client cannot set), so the trace crosses processes with the job;
* ``process {model}``, a CONSUMER span per batch a worker starts, with
  ``messaging.batch.message_count`` and a **link** to each job's stored context;
* ``{gen_ai.operation.name} {model}`` (``chat {model}``, ``embeddings {model}``), a CLIENT
  span per job in the batch, child of the batch span, with ``gen_ai.operation.name``,
  ``gen_ai.provider.name``, ``gen_ai.request.model``, ``gen_ai.response.model``,
  ``gen_ai.usage.input_tokens`` / ``output_tokens`` and ``error.type`` on failure; plus the
  histograms ``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``.

The process's providers become OpenTelemetry's global ones, so FastAPI's own request spans
(it records them through the global provider) are the parents of the producer spans.

Prompt and output content (``gen_ai.input.messages``, ``gen_ai.output.messages``) only when
``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true``; otherwise no attribute holds any
text of a request or an answer.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from genspool.core.queue import Queue
from genspool.exceptions import ConfigError

__all__ = ["capture_content", "enabled", "install"]

_TRUE = frozenset({"1", "true", "yes", "on"})


def enabled(env: Mapping[str, str] | None = None) -> bool:
    """Whether the environment asks for traces (see the module's docstring)."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    own = env.get("GENSPOOL_OTEL", "").strip().lower()
    if own:
        return own in _TRUE
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter:
        return exporter != "none"
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def capture_content(env: Mapping[str, str] | None = None) -> bool:
    """Whether prompts and outputs may go into spans (off unless explicitly enabled)."""
    env = os.environ if env is None else env
    value = env.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "")
    return value.strip().lower() == "true"


def install(
    queue: Queue,
    providers: Mapping[str, str],
    *,
    tracer_provider: Any = None,
    meter_provider: Any = None,
    env: Mapping[str, str] | None = None,
) -> bool:
    """Trace every submit, batch and model call made through ``queue`` in this process, if
    tracing is on (or a ``tracer_provider`` is given: tests pass one with an in-memory
    exporter); whether it was installed. ``providers`` maps model names to their provider
    (``gen_ai.provider.name``). Call it after anything that replaces ``queue.observer``
    (metrics): the tracing observer wraps the one it finds and passes every hook on."""
    if tracer_provider is None and not enabled(env):
        return False
    try:
        from genspool.tracing._otel import TracingObserver, default_providers
    except ImportError as exc:
        raise ConfigError(
            f"tracing is on (GENSPOOL_OTEL or OTEL_* is set) but {exc.name or 'OpenTelemetry'}"
            " is not installed: pip install 'genspool[otel]'"
        ) from exc

    if tracer_provider is None:
        tracer_provider, default_meter = default_providers(env)
        meter_provider = meter_provider or default_meter
    queue.observer = TracingObserver(
        queue.observer,
        tracer_provider,
        meter_provider,
        providers,
        content=capture_content(env),
    )
    return True
