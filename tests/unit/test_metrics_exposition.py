"""genspool's exposition writes exactly what prometheus_client's ``generate_latest`` writes,
for every kind of metric, escaped label values, timestamps and ``_created`` samples."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    Info,
    Summary,
    generate_latest,
)
from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

from genspool.metrics.exposition import Exposition


class _Custom:
    def collect(self):  # type: ignore[no-untyped-def]
        g = GaugeMetricFamily("custom_gauge", "A gauge\\with a \nnewline.", labels=["a", "b"])
        g.add_metric(["x", 'quote " and \\ back\nslash'], 1.5, timestamp=1700000000.25)
        g.add_metric(["", "ünïcode"], float("inf"))
        yield g
        gh = GaugeHistogramMetricFamily("custom_gh", "A gauge histogram.", labels=["m"])
        gh.add_metric(["m1"], [("1.0", 2.0), ("+Inf", 3.0)], gsum_value=4.0)
        yield gh


def _registry() -> CollectorRegistry:
    r = CollectorRegistry(auto_describe=False)
    c = Counter("jobs", "Jobs.", ["model", "status"], registry=r)
    c.labels("m0", "completed").inc(3)
    c.labels('we"ird\\', "failed").inc()
    h = Histogram("wait_seconds", "Wait.", ["model"], buckets=(0.1, 1, 10), registry=r)
    h.labels("m0").observe(0.5)
    Gauge("plain", "No labels.", registry=r).set(-0.0)
    Summary("took_seconds", "Took.", registry=r).observe(2)
    Info("build", "Build.", registry=r).info({"version": "1.2"})
    Enum("state", "State.", states=["a", "b"], registry=r).state("b")
    r.register(_Custom())
    return r


def test_the_text_equals_generate_latest() -> None:
    r = _registry()
    ours = Exposition(r)
    assert ours.render() == generate_latest(r)
    Counter("late", "Added after a render.", registry=r).inc()
    assert ours.render() == generate_latest(r)  # the cache does not hide new series
    families = {f.name for f in text_string_to_metric_families(ours.render().decode())}
    assert {"jobs", "wait_seconds", "custom_gauge", "late"} <= families


def test_changed_values_are_rendered_not_cached() -> None:
    r = CollectorRegistry(auto_describe=False)
    g = Gauge("depth", "Depth.", ["model"], registry=r)
    ours = Exposition(r)
    g.labels("m").set(1)
    assert b'depth{model="m"} 1.0\n' in ours.render()
    g.labels("m").set(7)
    assert b'depth{model="m"} 7.0\n' in ours.render()
