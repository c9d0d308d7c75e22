"""Python steps: a ``transform:`` function the user wrote, and a ``filter:`` event pattern.

A transform is named by an entry point, ``"package.module:function"``; :func:`load` imports it
once per process, and :func:`call` runs it with the item's context (``item``, ``key``,
``steps``, …): an ``async def`` is awaited, a plain function runs in a thread so that a slow
one does not stall the event loop. What it returns is stored with the item, so it must be
JSON (through orjson); it comes back as the JSON value it stores as (a tuple as a list).

A filter is an EventBridge-style pattern (:mod:`genspool.core.patterns`) matched against the
same context: the item goes on when it matches, and is skipped when it does not.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator

from genspool.core.patterns import PatternError, compile_pattern
from genspool.exceptions import ConfigError

__all__ = [
    "FilterStep",
    "PatternError",
    "TransformError",
    "TransformStep",
    "call",
    "compile_filter",
    "load",
]

_REF: Final = r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$"


class TransformError(ValueError):
    """A transform that raised, or returned something that is not JSON; names the function."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TransformStep(_Strict):
    kind: ClassVar[str] = "transform"
    transform: str = Field(pattern=_REF, description='The function, as "package.module:function".')


class FilterStep(_Strict):
    kind: ClassVar[str] = "filter"
    filter: dict[str, Any] = Field(
        description="An event pattern over the item's context, e.g. {item: {lang: [en]}}."
    )

    @field_validator("filter")
    @classmethod
    def _compiles(cls, value: dict[str, Any]) -> dict[str, Any]:
        compile_pattern(value)  # a PatternError (a ValueError) names the path
        return value


@functools.cache
def load(ref: str, base: Path | None = None) -> Callable[..., Any]:
    """The function ``ref`` names, imported once; a ConfigError names what is missing. A
    module that is not importable is looked for as a file under ``base`` (the pipeline's
    directory: ``tools:shout`` is ``base/tools.py``), as a user keeps a pipeline's helpers
    beside its YAML."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise ConfigError(f'transform {ref!r}: expected "package.module:function"')
    try:
        found: Any = _import(module_name, base)
    except Exception as exc:  # ImportError, or any error the module raises on import
        raise ConfigError(f"transform {ref!r}: cannot import {module_name} ({exc})") from exc
    for part in attr.split("."):
        if not hasattr(found, part):
            raise ConfigError(f"transform {ref!r}: {module_name} has no {attr}")
        found = getattr(found, part)
    if not callable(found):
        raise ConfigError(f"transform {ref!r}: {attr} is not a function")
    return found  # type: ignore[no-any-return]


def _import(name: str, base: Path | None) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        path = None if base is None else base.joinpath(*name.split(".")).with_suffix(".py")
        if path is None or exc.name != name.partition(".")[0] or not path.is_file():
            raise
    key = f"genspool_pipeline_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[key]
        raise
    return module


async def call(fn: Callable[..., Any], context: dict[str, Any]) -> Any:
    """``fn(context)``, awaited or in a thread, as the JSON value it returned."""
    try:
        if inspect.iscoroutinefunction(fn):
            result = await fn(context)
        else:
            result = await asyncio.to_thread(fn, context)
            if inspect.isawaitable(result):  # e.g. a partial of an async function
                result = await result
    except Exception as exc:
        raise TransformError(f"transform {_name(fn)} raised {type(exc).__name__}: {exc}") from exc
    try:
        return orjson.loads(orjson.dumps(result))
    except TypeError as exc:
        raise TransformError(
            f"transform {_name(fn)} returned {type(result).__name__}, which is not JSON ({exc})"
        ) from None


def compile_filter(spec: FilterStep | dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    """The predicate of a filter step: whether an item's context matches its pattern."""
    pattern = spec.filter if isinstance(spec, FilterStep) else spec
    return compile_pattern(pattern)


def _name(fn: Callable[..., Any]) -> str:
    target = fn.func if isinstance(fn, functools.partial) else fn
    module = getattr(target, "__module__", None) or "?"
    return f"{module}:{getattr(target, '__qualname__', repr(target))}"
