"""Event-pattern matching throughput: events/s matched against 100 compiled fan-out routes, and
the ratio against a naive interpreter that walks each pattern's JSON for every event.

    python bench/matcher.py [--events 20000] [--rounds 3] [--seed 7]

The routes look like fan-out rules: a source (exact or prefix), a detail-type, and detail
fields tested with exact values, prefixes, numeric ranges and anything-but; no wildcards. The
event stream is drawn so that each event matches 0 to 3 routes. Each round times every event
against all 100 routes on this one core three ways, interleaved: a ``PatternIndex`` of the
compiled matchers (what fan-out uses: routes filed by their exact ``source``/``detail-type``),
the compiled matchers called one after another, and the naive interpreter. Prints the median
events/s of each, the ratios against the naive one, and the target (>= 20,000 events/s).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from genspool.core.patterns import PatternIndex, compile_pattern

TARGET = 20_000
SOURCES = [f"app.svc{i}" for i in range(12)]
TYPES = ["job.finished", "job.failed", "job.queued", "batch.done", "model.loaded"]
MODELS = ["llama-3-8b", "llama-3-70b", "qwen2-7b", "mistral-7b", "phi-3"]
REGIONS = ["us-east-1", "us-west-2", "eu-west-1", "ap-south-1"]
TIERS = ["free", "pro", "team", "enterprise"]


def make_routes(rng: random.Random, n: int = 100) -> list[dict[str, Any]]:
    routes = []
    for i in range(n):
        source: list[Any] = [rng.choice(SOURCES)] if i % 5 else [{"prefix": "app.svc1"}]
        detail: dict[str, Any] = {}
        if rng.random() < 0.7:
            detail["tier"] = rng.sample(TIERS, 2)
        if rng.random() < 0.6:
            low = rng.choice([0, 100, 1000])
            detail["tokens"] = [{"numeric": [">", low, "<=", low * 10 + 500]}]
        if rng.random() < 0.5:
            detail["model"] = [{"prefix": rng.choice(["llama", "qwen", "mistral"])}]
        if rng.random() < 0.4:
            detail["region"] = [{"anything-but": rng.sample(REGIONS, 1)}]
        route: dict[str, Any] = {"source": source, "detail-type": [rng.choice(TYPES)]}
        if detail:
            route["detail"] = detail
        routes.append(route)
    return routes


def make_event(rng: random.Random) -> dict[str, Any]:
    return {
        "version": "0",
        "id": f"{rng.getrandbits(64):016x}",
        "source": rng.choice(SOURCES),
        "detail-type": rng.choice(TYPES),
        "time": "2026-01-02T03:04:05Z",
        "resources": [f"job/{rng.getrandbits(32):08x}"],
        "detail": {
            "tier": rng.choice(TIERS),
            "tokens": rng.choice([3, 50, 150, 700, 1200, 4000, 20000]),
            "model": rng.choice(MODELS),
            "region": rng.choice(REGIONS),
            "job_id": f"{rng.getrandbits(48):012x}",
        },
    }


def naive_match(pattern: dict[str, Any], event: Any) -> bool:
    """The same semantics (for the operators routes use here), reading the pattern every time."""
    for key, want in pattern.items():
        value = event.get(key) if isinstance(event, dict) else None
        if isinstance(want, dict):
            if not naive_match(want, value if isinstance(value, dict) else {}):
                return False
        elif not any(_naive_value(cond, value) for cond in want):
            return False
    return True


def _naive_value(cond: Any, value: Any) -> bool:
    if value is None:
        return False
    if not isinstance(cond, dict):
        return type(cond) is type(value) and cond == value
    op, arg = next(iter(cond.items()))
    if op == "prefix":
        return isinstance(value, str) and value.startswith(arg)
    if op == "anything-but":
        return value not in (arg if isinstance(arg, list) else [arg])
    if op == "numeric":
        if type(value) not in (int, float):
            return False
        checks = {">": value.__gt__, ">=": value.__ge__, "<": value.__lt__, "<=": value.__le__}
        return all(checks[arg[i]](arg[i + 1]) for i in range(0, len(arg), 2))
    raise ValueError(f"naive_match does not know {op}")


def make_stream(rng: random.Random, matchers: list[Callable[[Any], bool]], n: int) -> list[Any]:
    """Events that match 0 to 3 routes, in roughly equal shares of each count."""
    wanted, buckets = n // 4 + 1, Counter[int]()
    stream: list[Any] = []
    while len(stream) < n:
        event = make_event(rng)
        hits = sum(1 for m in matchers if m(event))
        if hits <= 3 and buckets[hits] < wanted:
            buckets[hits] += 1
            stream.append(event)
        elif buckets[0] < wanted and (hits > 3 or all(buckets[k] >= wanted for k in (1, 2, 3))):
            buckets[0] += 1  # a zero-match event: no route names this source
            stream.append(event | {"source": "app.other"})
    return stream


def rate(matchers: list[Callable[[Any], bool]], events: list[Any]) -> tuple[float, int]:
    hits = 0
    start = time.perf_counter()
    for event in events:
        for match in matchers:
            if match(event):
                hits += 1
    return len(events) / (time.perf_counter() - start), hits


def index_rate(index: PatternIndex[int], events: list[Any]) -> tuple[float, int]:
    hits = 0
    start = time.perf_counter()
    for event in events:
        hits += len(index.match(event))
    return len(events) / (time.perf_counter() - start), hits


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    routes = make_routes(rng)
    matchers = [compile_pattern(r) for r in routes]
    compiled: list[Callable[[Any], bool]] = list(matchers)
    index = PatternIndex[int]()
    for i, matcher in enumerate(matchers):
        index.add(i, matcher)
    naive: list[Callable[[Any], bool]] = [lambda e, r=r: naive_match(r, e) for r in routes]
    events = make_stream(rng, compiled, args.events)
    for event in events:  # both implementations must agree before either is timed
        expected = [m(event) for m in naive]
        assert [m(event) for m in compiled] == expected, event
        assert index.match(event) == [i for i, hit in enumerate(expected) if hit], event
    shares = Counter(sum(1 for m in compiled if m(e)) for e in events)
    print(f"{len(routes)} routes, {len(events)} events; routes matched per event: "
          + ", ".join(f"{k}: {shares[k]}" for k in sorted(shares)))  # fmt: skip
    indexed, loop, old = [], [], []
    for _ in range(args.rounds):
        index_events, index_hits = index_rate(index, events)
        loop_events, loop_hits = rate(compiled, events)
        old_events, old_hits = rate(naive, events)
        assert index_hits == loop_hits == old_hits
        indexed.append(index_events)
        loop.append(loop_events)
        old.append(old_events)
    n, c, o = statistics.median(indexed), statistics.median(loop), statistics.median(old)
    print(f"{'':>28} {'events/s':>10} {'vs naive':>9}")
    print(f"{'compiled, PatternIndex':>28} {n:>10,.0f} {n / o:>8.1f}x")
    print(f"{'compiled, each in turn':>28} {c:>10,.0f} {c / o:>8.1f}x")
    print(f"{'naive interpreter':>28} {o:>10,.0f} {1:>8.1f}x")
    load = os.getloadavg()[0]  # events/s are per core: other work on the machine lowers them
    print(f"(1-minute load average {load:.1f} on {os.cpu_count()} cores)")
    verdict = "met" if n >= TARGET else "NOT met"
    print(f"target >= {TARGET:,} events/s against all {len(routes)} routes on one core: {verdict}")


if __name__ == "__main__":
    main()
