"""The text exposition of a registry, as :func:`prometheus_client.generate_latest` writes it, at
a fraction of its cost per line.

``generate_latest`` validates and escapes every label name and value of every sample at every
scrape: with 100 models and their histograms (~8,000 lines) that is most of a scrape's time.
Here each series' ``name{labels}`` prefix is made once and kept (series are bounded: see
:mod:`genspool.metrics.series`), so a line costs a dict lookup and a float's formatting. The
output is byte for byte that of ``generate_latest`` (tests/unit/test_metrics_exposition.py).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.openmetrics.exposition import UNDERSCORES, escape_label_name
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _untyped_float

__all__ = ["Exposition"]

_float: Callable[[float], str] = _untyped_float

_TYPES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
#: Prefixes kept at most; past it the cache starts again (it never should: series are bounded).
MAX_PREFIXES = 200_000


def _value(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _doc(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


class Exposition:
    """Renders ``registry`` in the Prometheus text format (0.0.4), caching series prefixes."""

    def __init__(self, registry: Collector) -> None:
        self.registry = registry
        self._prefixes: dict[tuple[str, tuple[tuple[str, str], ...]], str] = {}

    def _prefix(self, name: str, labels: dict[str, str]) -> str:
        key = (name, tuple(labels.items()))
        prefix = self._prefixes.get(key)
        if prefix is None:
            if len(self._prefixes) >= MAX_PREFIXES:
                self._prefixes.clear()
            pairs = ",".join(
                f'{escape_label_name(k, UNDERSCORES)}="{_value(v)}"'
                for k, v in sorted(labels.items())
            )
            prefix = self._prefixes[key] = f"{name}{{{pairs}}} " if pairs else f"{name} "
        return prefix

    def render(self) -> bytes:
        out: list[str] = []
        for metric in self.registry.collect():
            name, kind = metric.name, metric.type
            if kind == "counter":
                name += "_total"
            elif kind == "info":
                name += "_info"
            kind = _TYPES.get(kind, kind)
            doc = _doc(metric.documentation)
            out.append(f"# HELP {name} {doc}\n# TYPE {name} {kind}\n")
            extra: dict[str, list[str]] = {}
            for s in metric.samples:
                line = f"{self._prefix(s.name, s.labels)}{_float(s.value)}"
                if s.timestamp is not None:
                    line += f" {int(float(s.timestamp) * 1000):d}"
                for suffix in _OM_SUFFIXES:
                    if s.name == metric.name + suffix:
                        extra.setdefault(suffix, []).append(line + "\n")
                        break
                else:
                    out.append(line + "\n")
            for suffix, lines in sorted(extra.items()):
                full = metric.name + suffix
                out.append(f"# HELP {full} {doc}\n# TYPE {full} gauge\n")
                out.extend(lines)
        return "".join(out).encode("utf-8")
