"""Fan-out: an 8-branch ``all`` and ``first`` as a user waits for them, beside a Celery chord and
LiteLLM's batch helpers; and a 1,000-item map under ``max_concurrency: 4`` beside 4 direct
clients.

    python bench/fanout.py [--parts latency,map] [--rounds 15] [--map-rounds 3] [--quick]
                           [--no-celery] [--no-litellm] [--trace] [--map-items 1000]

``--trace`` adds genspool's own steps (its jobs' timestamps, read after each fan-out). Every
run also prints each system's CPU per fan-out or call (its processes', net of what they burn
idle): on a shared machine wall times move with the load, CPU much less.

Everything calls one fault server (``python -m genspool.testing.faults``, its own process),
scripted so that model ``lat-020`` answers after 20 ms, ``lat-040`` after 40 ms, … ``lat-160``
(``--latencies``). genspool is ``genspool serve`` on SQLite (``NORMAL``), a subprocess, each
model a remote model with ``max_wait_ms: 0``; a fan-out is timed from the start of
``POST /v1/fanouts`` to the parent's terminal event on ``GET /v1/jobs/{id}/events`` (SSE, a new
connection each, as a browser's EventSource would open). Peers, each in its own venv under
``~/.cache/genspool-bench/<peer>`` (made on first run with pip), are long-lived client processes
(``bench/peers/*_fanout.py``) that the harness drives one fan-out at a time:

* Celery 5 chord on Redis (8 header tasks making the same HTTP call, a callback gathering
  them), worker with PEERS.md's settings but ``-P threads -c 8`` so the 8 calls can run at once;
  the client waits on ``AsyncResult.get()``. ``all`` only: Celery has no ``first``.
* LiteLLM's ``batch_completion_models_all_responses`` (``all``) and ``batch_completion_models``
  (``first``, models listed fastest first, its best case).

Rounds interleave the systems, so drift on a shared machine hits all alike; before each fan-out
the fault server is idle and its counts reset. For ``first``, the losing calls' aborts are read
from the fault server (``aborted_after_s``: from the call's arrival to its connection closing).

The map: 1,000 items on ``map-020`` (20 ms, ``batching: {max_batch_size: 1,
max_concurrency: 4}``) reduced by an instant model; beside it, 4 aiohttp clients making the
same 1,000 calls directly. Throughput is calls / (last arrival + latency − first arrival) at the
fault server, for both; in-flight is its ``max_in_flight`` and a time-weighted average rebuilt
from the arrivals (each call in flight for the scripted latency: the server's ``/_faults/stats``
costs ~16 ms at 1,000 requests, so sampling it would slow the thing measured).

Targets (issue 9): ``all`` p50 ≤ slowest + 20 ms; ``first`` p50 ≤ fastest + 20 ms with the losing
calls aborted within 100 ms; the map keeps exactly 4 in flight at ≥ 90 % of direct throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from _fanout import (
    FaultControl,
    PeerClient,
    celery_worker,
    cpu_s,
    direct_map,
    ensure_venv,
    fault_server,
    genspool_fanout,
    genspool_serving,
    timeline,
)
from _fanout_stats import abort_figures, branch_calls, lat_name, map_figures, pct, phases

CELERY = ("celery", ["celery[redis]", "hiredis", "httpx"])
LITELLM = ("litellm-sdk", ["litellm"])
MAP_MODEL, REDUCER = "map-020", "reducer"


def models_yaml(fault: str, latencies: list[int]) -> str:
    remote = f'    provider: openai\n    options: {{base_url: "{fault}/v1"}}\n'
    remote += "    breaker: {enabled: false}\n"
    lines = ["models:\n"]
    for name in [lat_name(ms) for ms in latencies] + [REDUCER]:
        lines.append(f"  - name: {name}\n{remote}")
        lines.append("    batching: {max_batch_size: 8, max_wait_ms: 0, max_concurrency: 8}\n")
    lines.append(f"  - name: {MAP_MODEL}\n{remote}")
    lines.append("    batching: {max_batch_size: 1, max_concurrency: 4}\n")
    return "".join(lines)


def rules(latencies: list[int], map_ms: float) -> list[dict[str, Any]]:
    out = [{"model": lat_name(ms), "latency_s": ms / 1000} for ms in latencies]
    return [*out, {"model": MAP_MODEL, "latency_s": map_ms / 1000}, {"model": REDUCER}]


# -- the 8-branch fan-out ------------------------------------------------------------------------


def run_latency(
    args: argparse.Namespace, fault: FaultControl, gs: tuple[str, int], peers: dict[str, PeerClient]
) -> dict[str, list[dict[str, Any]]]:
    """Interleaved rounds of every system and strategy; per fan-out its time as a user waits,
    the CPU its processes used net of what they burn idle, and its calls as the fault server
    saw them."""
    gs_url, gs_pid = gs
    idle_rates = idle_cpu({"genspool": [gs_pid], **{n: p.pids for n, p in peers.items()}})
    lats: list[int] = args.latencies
    models = [lat_name(ms) for ms in lats]
    wanted = args.strategies
    systems = [
        (p, s) for p in ["genspool", *peers] for s in wanted if (p, s) != ("celery", "first")
    ]
    runs: dict[str, list[dict[str, Any]]] = {f"{p} {s}": [] for p, s in systems}
    traces: dict[str, list[dict[str, float]]] = {"all": [], "first": []}
    for rnd in range(-args.warmup, args.rounds):
        for peer, strategy in systems:
            tag = f"r{rnd}-{peer}-{strategy}"
            fault.ready(rules(lats, args.map_latency_ms))
            pids = [gs_pid] if peer == "genspool" else peers[peer].pids
            cpu0, t0 = cpu_s(pids), time.time()
            if peer == "genspool":
                seconds, detail, ok, job_id = asyncio.run(
                    genspool_fanout(gs_url, models, strategy, tag)
                )
            else:
                seconds, detail, ok = peers[peer].run(strategy, tag)
            if rnd < 0:
                continue
            stats = fault.stats(settle_s=max(lats) / 1000 + 0.05)
            idle = idle_rates[peer] * (time.time() - t0)
            run = {"seconds": seconds, "ok": ok, "detail": detail}
            run["cpu_ms"] = (cpu_s(pids) - cpu0 - idle) * 1000
            if peer == "genspool" and args.trace and ok:
                traces[strategy].append(timeline(gs_url, job_id, t0))
            calls = branch_calls(stats, tag, lats)
            run |= phases(calls, t0, seconds, strategy)
            if strategy == "first":
                run |= abort_figures(calls, min(lats))
            runs[f"{peer} {strategy}"].append(run)
            if not ok:
                print(f"  {tag}: FAILED {detail}", file=sys.stderr)
    for strategy, marks in traces.items():
        if marks:
            print(
                f"genspool {strategy}, ms from the POST's start (p50 of {len(marks)}): "
                + ", ".join(f"{k} {pct([m[k] for m in marks], 0.5):.1f}" for k in marks[0])
            )
    return runs


PHASES = {
    "cpu_ms": "CPU net of idle (its processes, until its calls settled)",
    "first_call_ms": "first call arrived",
    "last_call_ms": "last call arrived",
    "after_answer_ms": "result seen after the deciding answer",
}


def report_latency(runs: dict[str, list[dict[str, Any]]], lats: list[int]) -> None:
    print(
        f"\n8-branch fan-out, branch latencies {lats} ms; ideal: all = {max(lats)} ms, "
        f"first = {min(lats)} ms (ratios are p50 / ideal)"
    )
    for name, rs in runs.items():
        ideal = max(lats) if name.endswith("all") else min(lats)
        ms = [r["seconds"] * 1000 for r in rs if r["ok"]]
        if not ms:
            print(f"  {name:15} no successful run ({rs[0]['detail'] if rs else 'none'})")
            continue
        p50, p95 = pct(ms, 0.5), pct(ms, 0.95)
        line = (
            f"  {name:15} n={len(ms):3} errors={len(rs) - len(ms)}  p50 {p50:7.1f} ms  "
            f"p95 {p95:7.1f} ms  p50/ideal {p50 / ideal:5.2f}x  (+{p50 - ideal:6.1f} ms)"
        )
        if name.endswith("first"):
            after = [a * 1000 for r in rs for a in r["after_s"]]
            losers, aborted = sum(r["losers"] for r in rs), sum(r["aborted"] for r in rs)
            line += f"  losers aborted {aborted}/{losers}"
            if after:
                line += f", after p50 {pct(after, 0.5):.0f} / max {max(after):.0f} ms"
        print(line)
        marks = [(k, [r[k] for r in rs if r["ok"] and k in r]) for k in PHASES]
        print(
            "  "
            + " " * 16
            + ", ".join(
                f"{label} p50 {pct(v, 0.5):.1f} ms"
                for (k, v), label in zip(marks, PHASES.values(), strict=True)
                if v
            )
        )
    p50s = _p50s(runs)
    ratios = [
        f"{n} {v / p50s[f'genspool {n.split()[1]}']:.2f}x"
        for n, v in p50s.items()
        if not n.startswith("genspool") and f"genspool {n.split()[1]}" in p50s
    ]
    if ratios:
        print("  p50 of each peer / genspool's, same strategy: " + ", ".join(ratios))
    target("genspool all", runs, max(lats) + 20)
    target("genspool first", runs, min(lats) + 20)
    first = runs.get("genspool first", [])
    longest = max((r["longest_s"] for r in first), default=None)
    if longest is not None:
        verdict = "met" if longest <= 0.1 else "MISSED"
        print(
            f"  target no losing call lasts over 100 ms (aborted, or answered before the abort):"
            f" {verdict} (longest {longest * 1000:.0f} ms)"
        )


def _p50s(runs: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    return {
        n: pct([r["seconds"] for r in rs if r["ok"]], 0.5)
        for n, rs in runs.items()
        if any(r["ok"] for r in rs)
    }


def target(name: str, runs: dict[str, list[dict[str, Any]]], limit_ms: float) -> None:
    ms = [r["seconds"] * 1000 for r in runs.get(name, []) if r["ok"]]
    if ms:
        p50 = pct(ms, 0.5)
        verdict = "met" if p50 <= limit_ms else "MISSED"
        print(f"  target {name} p50 <= {limit_ms:.0f} ms: {verdict} ({p50:.1f} ms)")


# -- the map -------------------------------------------------------------------------------------


def run_map(
    args: argparse.Namespace, fault: FaultControl, gs: tuple[str, int]
) -> dict[str, list[Any]]:
    """Rounds of the map through genspool and of the same calls made directly; the CPU is
    genspool serve's, or this process's for the direct clients (it does nothing else then),
    net of what each burns idle."""
    gs_url, gs_pid = gs
    idle_rates = idle_cpu({"genspool": [gs_pid], "direct": [os.getpid()]})
    out: dict[str, list[Any]] = {"genspool": [], "direct": []}
    latency_s = args.map_latency_ms / 1000
    for rnd in range(args.map_rounds):
        for system in ("direct", "genspool"):
            prefix = f"m{rnd}-{system}-"
            fault.ready(rules(args.latencies, args.map_latency_ms))
            pids = [gs_pid] if system == "genspool" else [os.getpid()]
            cpu0, t0 = cpu_s(pids), time.monotonic()
            if system == "genspool":
                seconds, detail, ok, _ = asyncio.run(
                    genspool_fanout(
                        gs_url, [MAP_MODEL], "map", prefix, items=args.map_items, reducer=REDUCER
                    )
                )
            else:
                seconds = asyncio.run(direct_map(fault.url, MAP_MODEL, prefix, args.map_items, 4))
                detail, ok = "", True
            idle = idle_rates[system] * (time.monotonic() - t0)
            cpu_ms = (cpu_s(pids) - cpu0 - idle) * 1000
            figures = map_figures(
                fault.stats(settle_s=0.1), MAP_MODEL, prefix, args.map_items, latency_s
            )
            run = {"seconds": seconds, "ok": ok, "detail": detail, "cpu_ms": cpu_ms}
            out[system].append(run | figures)
            if not ok:
                print(f"  {prefix}: FAILED {detail}", file=sys.stderr)
    return out


def report_map(out: dict[str, list[Any]], args: argparse.Namespace) -> None:
    ideal = 4 / (args.map_latency_ms / 1000)
    print(
        f"\n{args.map_items}-item map, {args.map_latency_ms:g} ms a call, 4 at once "
        f"(ideal {ideal:.0f} calls/s)"
    )
    med: dict[str, dict[str, float]] = {}
    for system, rs in out.items():
        ok = [r for r in rs if r["ok"] and r["complete"]] or rs
        med[system] = {
            k: statistics.median(r[k] for r in ok)
            for k in ("rate", "avg_in_flight", "share_at_4", "seconds", "cpu_ms")
        }
        m = med[system]
        print(
            f"  {system:8} runs={len(rs)} ok={sum(r['ok'] for r in rs)}  {m['rate']:6.1f} calls/s"
            f" at the server  in flight: max {sorted({r['max_in_flight'] for r in rs})}, avg "
            f"{m['avg_in_flight']:.2f}, 4 for {m['share_at_4']:.0%} of the span  end to end "
            f"{m['seconds']:.2f} s  CPU {m['cpu_ms'] / args.map_items:.2f} ms a call"
        )
    rate = med["genspool"]["rate"] / med["direct"]["rate"]
    e2e = med["direct"]["seconds"] / med["genspool"]["seconds"]
    four = {r["max_in_flight"] for r in out["genspool"]} == {4}
    verdict = "met" if rate >= 0.9 and four else "MISSED"
    print(
        f"  genspool/direct throughput at the server: {rate:.3f}x, end to end (submit, "
        f"map, reduce, SSE): {e2e:.3f}x; target >= 0.9x with exactly 4 in flight: {verdict}"
    )


# -- main ----------------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="latency,map", help="latency, map or both")
    parser.add_argument("--rounds", type=int, default=15, help="fan-outs per system/strategy")
    parser.add_argument("--warmup", type=int, default=2, help="rounds not counted")
    parser.add_argument("--map-rounds", type=int, default=3)
    parser.add_argument("--map-items", type=int, default=1000)
    parser.add_argument("--map-latency-ms", type=float, default=20.0)
    parser.add_argument(
        "--latencies",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[20, 40, 60, 80, 100, 120, 140, 160],
    )
    parser.add_argument(
        "--strategies", type=lambda v: v.split(","), default=["all", "first"], help="all,first"
    )
    parser.add_argument("--no-celery", action="store_true")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument(
        "--trace",
        action="store_true",
        help="also print genspool's steps, from its jobs' timestamps",
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds, 1 map round")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.warmup, args.map_rounds = 3, 1, 1
    parts = set(args.parts.split(","))
    if not parts or parts - {"latency", "map"}:
        parser.error(f"--parts: give latency, map or both, not {args.parts!r}")
    if not args.strategies or set(args.strategies) - {"all", "first"}:
        parser.error(f"--strategies: give all, first or both, not {args.strategies!r}")
    args.parts = parts
    return args


@contextmanager
def peers_running(args: argparse.Namespace, fault_url: str) -> Iterator[dict[str, PeerClient]]:
    models = ",".join(lat_name(ms) for ms in args.latencies)
    with ExitStack() as stack:
        peers: dict[str, PeerClient] = {}
        if not args.no_celery:
            python = ensure_venv(*CELERY)
            worker = stack.enter_context(celery_worker(python, fault_url))
            peers["celery"] = stack.enter_context(
                PeerClient.started(python, "celery_fanout.py", fault_url, models)
            )
            peers["celery"].pids.append(worker)
        if not args.no_litellm:
            python = ensure_venv(*LITELLM)
            peers["litellm"] = stack.enter_context(
                PeerClient.started(python, "litellm_fanout.py", fault_url, models)
            )
        yield peers


def idle_cpu(pids: dict[str, list[int]], seconds: float = 3.0) -> dict[str, float]:
    """What each system's processes burn while nothing is asked of them (share of a core)."""
    before = {name: cpu_s(p) for name, p in pids.items()}
    time.sleep(seconds)
    rates = {name: (cpu_s(p) - before[name]) / seconds for name, p in pids.items()}
    print("idle CPU: " + ", ".join(f"{n} {r:.1%} of a core" for n, r in rates.items()))
    return rates


def main() -> None:
    args = parse_args()
    print(
        f"load average before: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
        f"{os.getloadavg()[2]:.2f} on {os.cpu_count()} cores"
    )
    with ExitStack() as stack:
        fault = FaultControl(stack.enter_context(fault_server()))
        fault.ready(rules(args.latencies, args.map_latency_ms))
        yaml = models_yaml(fault.url, args.latencies)
        gs = stack.enter_context(genspool_serving(yaml))
        if "latency" in args.parts:
            peers = stack.enter_context(peers_running(args, fault.url))
            report_latency(run_latency(args, fault, gs, peers), args.latencies)
        if "map" in args.parts:
            report_map(run_map(args, fault, gs), args)
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
