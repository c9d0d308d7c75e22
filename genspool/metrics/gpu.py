"""GPU utilisation and memory through NVML, when ``pynvml`` imports and a GPU answers.

Otherwise :func:`gpu_collector` gives None and no GPU series exist at all (not zeros: a
machine without a GPU has nothing to report). NVML is read at scrape, one call per GPU.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["GpuCollector", "gpu_collector"]

log = logging.getLogger("genspool.metrics")


class GpuCollector(Collector):
    def __init__(self, nvml: Any, count: int) -> None:
        self.nvml, self.count = nvml, count

    def collect(self) -> Iterator[Metric]:
        util = GaugeMetricFamily(
            "genspool_gpu_utilization_ratio", "GPU busy share (0-1).", labels=["gpu"]
        )
        used = GaugeMetricFamily(
            "genspool_gpu_memory_used_bytes", "GPU memory used.", labels=["gpu"]
        )
        total = GaugeMetricFamily("genspool_gpu_memory_total_bytes", "GPU memory.", labels=["gpu"])
        for i in range(self.count):
            try:
                handle = self.nvml.nvmlDeviceGetHandleByIndex(i)
                rates = self.nvml.nvmlDeviceGetUtilizationRates(handle)
                memory = self.nvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as exc:  # a GPU that stops answering: skip it this scrape
                log.debug("NVML could not read GPU %d: %s", i, exc)
                continue
            util.add_metric([str(i)], rates.gpu / 100)
            used.add_metric([str(i)], memory.used)
            total.add_metric([str(i)], memory.total)
        yield from (util, used, total)


def gpu_collector() -> GpuCollector | None:
    """The collector of this machine's GPUs; None without pynvml, NVML or a GPU."""
    try:
        nvml = importlib.import_module("pynvml")
        nvml.nvmlInit()
        count = int(nvml.nvmlDeviceGetCount())
    except Exception:  # not installed, no driver, no GPU: no series
        return None
    return GpuCollector(nvml, count) if count else None
