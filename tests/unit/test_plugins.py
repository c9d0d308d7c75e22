"""Providers and backends found by entry point, and the nested models file they configure."""

from __future__ import annotations

from collections.abc import Iterator
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

import genspool.backends
from genspool.api.validation import validate_request
from genspool.config import DEFAULT_MODELS, ModelConfig, load_models
from genspool.exceptions import ConfigError
from genspool.providers import plugins
from genspool.providers.base import CHAT, EMBEDDINGS
from genspool.providers.echo import EchoOptions
from genspool.providers.openai_http import OpenAIOptions
from genspool.runtime import ModelCatalog, ModelRegistry, build_provider


@pytest.fixture
def fresh_plugins() -> Iterator[None]:
    plugins.get_plugin.cache_clear()
    yield
    plugins.get_plugin.cache_clear()


def models_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "models.yaml"
    path.write_text("models:\n" + text)
    return path


# -- discovery ---------------------------------------------------------------------------------


def test_the_built_in_providers_are_found_by_their_entry_points() -> None:
    assert {"echo", "llama_cpp", "onnx_embedding", "openai"} <= set(plugins.known_providers())
    echo = plugins.get_plugin("echo")
    assert echo.name == "echo" and echo.options is EchoOptions and not echo.remote
    assert plugins.get_plugin("openai").remote


def test_an_unknown_provider_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="unknown provider 'vllm'; known providers: echo, "):
        plugins.get_plugin("vllm")


def test_an_entry_point_that_is_not_a_plugin_is_refused(
    monkeypatch: pytest.MonkeyPatch, fresh_plugins: None
) -> None:
    odd = EntryPoint("odd", "genspool.providers.echo:EchoOptions", plugins.GROUP)
    gone = EntryPoint("gone", "genspool_no_such_module:plugin", plugins.GROUP)
    monkeypatch.setattr(plugins, "_entry_points", lambda: {"odd": odd, "gone": gone})
    with pytest.raises(ConfigError, match="is not a ProviderPlugin"):
        plugins.get_plugin("odd")
    with pytest.raises(ConfigError, match="cannot be imported"):
        plugins.get_plugin("gone")


def test_backends_are_found_by_url_scheme_and_name_their_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    schemes = genspool.backends.schemes()
    assert {"sqlite", "postgres", "postgresql", "redis", "nats", "memory"} <= set(schemes)
    assert schemes["postgresql"].extras == ["postgres"]
    with pytest.raises(ConfigError, match=r"scheme must be one of .*sqlite://"):
        genspool.backends.backend_from_url("mysql://localhost/x")
    missing = EntryPoint("fake", "genspool_no_driver:Backend [redis]", genspool.backends.GROUP)
    monkeypatch.setattr(genspool.backends, "schemes", lambda: {"fake": missing})
    with pytest.raises(ConfigError, match=r'needs genspool_no_driver; .*"genspool\[redis\]"'):
        genspool.backends.backend_from_url("fake://x")


# -- the models file ---------------------------------------------------------------------------


def test_errors_name_the_nested_path(tmp_path: Path) -> None:
    path = models_file(tmp_path, "  - {name: a, provider: echo, breaker: {cooldown_s: 0}}\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.breaker\.cooldown_s: .*greater than 0"):
        load_models(path)
    path = models_file(tmp_path, "  - {name: a, provider: echo, options: {latency: 3}}\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.options\.latency: Extra inputs"):
        load_models(path)
    path = models_file(tmp_path, "  - {name: a, provider: openai}\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.options\.base_url: Field required"):
        load_models(path)
    path = models_file(tmp_path, "  - {name: a, provider: echo, limits: {timeout_s: 1, rpm: 0}}\n")
    with pytest.raises(ConfigError, match=r"models\[0\]\.limits\.rpm"):
        load_models(path)


def test_old_flat_keys_say_where_they_moved(tmp_path: Path) -> None:
    flat = "  - {name: a, provider: openai, base_url: 'http://x', breaker_cooldown_s: 5, rpm: 9}\n"
    with pytest.raises(ConfigError, match=r"models\[0\]: the flat form") as caught:
        load_models(models_file(tmp_path, flat))
    for move in ("base_url -> options.base_url", "breaker_cooldown_s -> breaker.cooldown_s"):
        assert move in caught.value.message
    assert "rpm -> limits.rpm" in caught.value.message


def test_sections_parse_into_their_models() -> None:
    cfg = ModelConfig.model_validate(
        {
            "name": "r",
            "provider": "openai",
            "options": {"base_url": "http://x/v1", "api_key_env": "K"},
            "batching": {"max_batch_size": 4},
            "limits": {"timeout_s": 10},
            "breaker": True,  # the earlier shorthand still works
        }
    )
    assert isinstance(cfg.options, OpenAIOptions) and cfg.options.api_key_env == "K"
    assert cfg.batching.max_batch_size == 4 and cfg.batching.max_wait_ms == 5.0
    assert cfg.limits.call_timeout == 10 and cfg.breaker.enabled is True and cfg.remote
    with pytest.raises(ValueError, match="serves /v1/chat/completions, /v1/embeddings, not"):
        ModelConfig(name="e", provider="echo", endpoints=["/v1/images"])
    assert [m["name"] for m in DEFAULT_MODELS] == [m.name for m in load_models(None)]


def test_a_missing_api_key_is_named_when_the_provider_is_built() -> None:
    cfg = ModelConfig(
        name="r", provider="openai", options={"base_url": "http://x", "api_key_env": "K"}
    )
    with pytest.raises(ConfigError, match="environment variable K is not set"):
        build_provider(cfg, {})
    assert build_provider(cfg, {"K": "secret"}).endpoints == {CHAT, EMBEDDINGS}


# -- model cards ------------------------------------------------------------------------------


async def test_the_api_validates_with_cards_and_counts_once() -> None:
    catalog = ModelCatalog(
        [
            ModelConfig(name="echo", provider="echo", context_window=20),
            ModelConfig(name="far", provider="openai", options={"base_url": "http://x"}),
        ]
    )
    body = {"model": "echo", "messages": [{"role": "user", "content": "one two three"}]}
    assert validate_request(catalog, CHAT, body).prompt_tokens == 3
    far = {"model": "far", "messages": [{"role": "user", "content": "hi"}]}
    assert validate_request(catalog, CHAT, far).prompt_tokens is None  # no tokenizer to count
    embed = {"model": "echo", "input": ["a b", "c"], "dimensions": 8}
    assert validate_request(catalog, EMBEDDINGS, embed).prompt_tokens == 3
    assert not hasattr(catalog, "provider")  # the API process cannot build a stack
    await catalog.aclose()


async def test_the_registry_is_a_catalog_that_also_builds_stacks() -> None:
    registry = ModelRegistry([ModelConfig(name="e", provider="echo")])
    assert registry.card("e").endpoints == registry.provider("e").endpoints
    await registry.aclose()
