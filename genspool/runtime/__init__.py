"""Serving configured models: providers found by plugin and wrapped in their resilience layers.

The one place that joins :mod:`genspool.providers` and :mod:`genspool.resilience`: neither
imports the other's composition, and :mod:`genspool.core` depends only on the small protocol in
:mod:`genspool.core.models`, which :class:`ModelRegistry` satisfies. The API process uses a
:class:`ModelCatalog` (model cards only: no stack built, no weights loaded).
"""

from genspool.runtime.catalog import ModelCatalog
from genspool.runtime.registry import ModelRegistry, build_provider

__all__ = ["ModelCatalog", "ModelRegistry", "build_provider"]
