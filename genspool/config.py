"""The models file: which models are served, by which provider, under which limits.

A YAML file with a top-level ``models:`` list (``--config`` / ``GENSPOOL_CONFIG``). With no
file, the two bundled local models are served.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from genspool.exceptions import ConfigError

__all__ = ["DEFAULT_MODELS", "ModelConfig", "check_fallbacks", "load_models"]

ProviderName = Literal["llama_cpp", "onnx_embedding", "openai", "echo"]


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="The model id clients ask for.")
    provider: ProviderName
    base_url: str | None = Field(None, description="Root of an OpenAI-compatible API (openai).")
    api_key_env: str | None = Field(None, description="Environment variable holding the key.")
    remote_model: str | None = Field(None, description="Model name at the remote; default name.")
    endpoints: list[str] | None = Field(None, description="Endpoints served; default by provider.")
    model_path: str | None = Field(None, description="Weights file; default the bundled one.")
    context_window: int = Field(2048, gt=0)
    max_batch_size: int = Field(8, gt=0)
    max_wait_ms: float = Field(5.0, ge=0)
    max_concurrency: int = Field(1, gt=0)
    timeout_s: float = Field(120.0, gt=0)
    max_attempts: int = Field(3, gt=0)
    threads: int | None = Field(None, gt=0, description="CPU threads for local models.")
    latency_ms: float = Field(0.0, ge=0, description="echo only: simulated time per batch.")
    # Resilience around each model call (genspool.resilience; the layers are composed there).
    rpm: int | None = Field(None, gt=0, description="Requests per minute, across processes.")
    tpm: int | None = Field(
        None, gt=0, description="Tokens per minute (prompt + max_tokens), across processes."
    )
    call_timeout_s: float | None = Field(
        None,
        gt=0,
        description="Longest one model call may take, in-call retries included; default "
        "timeout_s. timeout_s bounds the whole attempt (rate-limit wait, fallbacks, calls).",
    )
    call_retries: int = Field(
        2, ge=0, le=10, description="openai only: retries inside one call (job retries aside)."
    )
    breaker: bool | None = Field(
        None, description="Circuit breaker; default on for remote endpoints (openai), else off."
    )
    breaker_failures: int = Field(5, gt=0, description="Consecutive failures that open it.")
    breaker_failure_ratio: float | None = Field(
        0.5, gt=0, le=1, description="Failure share in breaker_window_s that opens it; null: off."
    )
    breaker_min_calls: int = Field(20, gt=0, description="Calls in the window before the ratio.")
    breaker_window_s: float = Field(60.0, gt=0, description="Window of the failure ratio.")
    breaker_cooldown_s: float = Field(30.0, gt=0, description="Open this long, then half-open.")
    breaker_probes: int = Field(1, gt=0, description="Calls let through while half-open.")
    fallbacks: list[str] = Field(
        default_factory=list,
        description="Models tried in order when this one's breaker is open or a call fails "
        "retryably (the first whose breaker is closed).",
    )
    # Admission (load shedding) when jobs are submitted.
    max_queue_depth: int | None = Field(
        None, gt=0, description="Shed load: refuse new jobs while this many wait for the model."
    )
    max_queue_age_s: float | None = Field(
        None, gt=0, description="Shed load: refuse new jobs while the oldest waiting is this old."
    )

    @model_validator(mode="after")
    def _remote_needs_url(self) -> ModelConfig:
        if self.provider == "openai" and not self.base_url:
            raise ValueError(f"model {self.name!r}: provider openai needs base_url")
        if self.call_timeout_s is not None and self.call_timeout_s > self.timeout_s:
            raise ValueError(
                f"model {self.name!r}: call_timeout_s ({self.call_timeout_s}) is above "
                f"timeout_s ({self.timeout_s}), which bounds every attempt"
            )
        if self.name in self.fallbacks:
            raise ValueError(f"model {self.name!r}: a model cannot be its own fallback")
        return self


DEFAULT_MODELS: tuple[ModelConfig, ...] = (
    ModelConfig(
        name="smollm2-135m-instruct",
        provider="llama_cpp",
        context_window=2048,
        max_batch_size=16,
        max_wait_ms=20,
        max_concurrency=1,
        timeout_s=300,
    ),
    ModelConfig(
        name="all-minilm-l6-v2",
        provider="onnx_embedding",
        context_window=256,
        max_batch_size=256,
        max_wait_ms=5,
        max_concurrency=1,
        timeout_s=120,
    ),
)


def load_models(path: str | Path | None) -> list[ModelConfig]:
    if path is None:
        return list(DEFAULT_MODELS)
    try:
        raw = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read models file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"models file {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict) or not isinstance(raw.get("models"), list):
        raise ConfigError(f"models file {path} must have a top-level 'models:' list")
    models = []
    for i, entry in enumerate(raw["models"]):
        try:
            models.append(ModelConfig.model_validate(entry))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "entry"
            raise ConfigError(f"models file {path}, models[{i}].{where}: {first['msg']}") from exc
    names = [m.name for m in models]
    if dupes := {n for n in names if names.count(n) > 1}:
        raise ConfigError(f"models file {path} declares {sorted(dupes)} more than once")
    check_fallbacks(models, where=f"models file {path}: ")
    return models


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
