"""What ``bench/fanout.py`` reads from the fault server's stats: each branch's call, how the
losing calls of a ``first`` ended, where a fan-out's time went, and a map's throughput and
concurrency. Pure functions of the stats (``GET /_faults/stats``) and of the harness's clock."""

from __future__ import annotations

from typing import Any

__all__ = ["abort_figures", "branch_calls", "lat_name", "map_figures", "pct", "phases"]


def lat_name(ms: int) -> str:
    """The model that answers after ``ms`` milliseconds."""
    return f"lat-{ms:03d}"


def branch_calls(stats: dict[str, Any], tag: str, latencies: list[int]) -> list[dict[str, Any]]:
    """Each branch's call as the fault server saw it (peers that send one ``user`` for all
    calls are told apart by arrival order: the ``k``-th arrival is not known to be lat[k], so
    only counts and abort times are read from them)."""
    calls = []
    for ms in latencies:
        seen = stats["requests"].get(f"{tag}-{lat_name(ms)}")
        if seen is not None:
            calls.append({"latency_ms": ms, **seen})
    if not calls and tag in stats["requests"]:
        seen = stats["requests"][tag]
        for i, arrival in enumerate(seen["arrivals"]):
            aborted = seen["aborted_after_s"]
            calls.append(
                {"latency_ms": None, "arrivals": [arrival], "aborted_after_s": aborted[i : i + 1]}
            )
    return calls


def abort_figures(calls: list[dict[str, Any]], fastest_ms: int) -> dict[str, Any]:
    """How the losing calls of a ``first`` ended: aborted (and how long after their arrival)
    or answered anyway."""
    known = all(c["latency_ms"] is not None for c in calls)
    losers = [c for c in calls if c["latency_ms"] != fastest_ms] if known else calls
    after = [c["aborted_after_s"][0] for c in losers if c["aborted_after_s"]]
    answered = [c["latency_ms"] / 1000 for c in losers if not c["aborted_after_s"] and known]
    # How long the longest losing call lasted: aborted, or answered before the abort came.
    longest = max(after + answered, default=0.0) if known else None
    return {
        "losers": len(losers) - (not known),
        "aborted": len(after),
        "after_s": after,
        "longest_s": longest,
    }


def phases(calls: list[dict[str, Any]], t0: float, seconds: float, strategy: str) -> dict[str, Any]:
    """Where a fan-out's time went, from the fault server's arrival times (wall clock, as
    ``t0``, taken just before the fan-out began): until the first call arrived, until the
    last did, and from the answer that decided it (the slowest for ``all``, the fastest for
    ``first``; unknown when the calls cannot be told apart) to the user seeing the result."""
    arrivals = [c["arrivals"][0] for c in calls]
    if not arrivals:
        return {}
    out = {
        "first_call_ms": (min(arrivals) - t0) * 1000,
        "last_call_ms": (max(arrivals) - t0) * 1000,
    }
    ends = [c["arrivals"][0] + c["latency_ms"] / 1000 for c in calls if c["latency_ms"]]
    if len(ends) == len(calls):
        decided = max(ends) if strategy == "all" else min(ends)
        out["after_answer_ms"] = (t0 + seconds - decided) * 1000
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def map_figures(
    stats: dict[str, Any], model: str, prefix: str, n: int, latency_s: float
) -> dict[str, Any]:
    """Throughput and concurrency at the fault server, from the map calls' arrivals."""
    arrivals = sorted(
        a
        for key, seen in stats["requests"].items()
        if key.startswith(prefix)
        for a in seen["arrivals"]
    )
    span = arrivals[-1] + latency_s - arrivals[0]
    edges = sorted([(a, 1) for a in arrivals] + [(a + latency_s, -1) for a in arrivals])
    level, at, full = 0, arrivals[0], 0.0
    for when, step in edges:
        if level >= 4:
            full += when - at
        level, at = level + step, when
    return {
        "calls": len(arrivals),
        "rate": len(arrivals) / span,
        "avg_in_flight": len(arrivals) * latency_s / span,
        "share_at_4": full / span,
        "max_in_flight": stats["by_model"].get(model, {}).get("max_in_flight"),
        "complete": len(arrivals) == n,
    }
