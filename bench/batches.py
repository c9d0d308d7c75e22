"""The Batch API as a user drives it: throughput of a 10,000-line batch, the API's memory while
a 200 MB input is uploaded and validated, and interactive calls' p99 while a batch runs.

    python bench/batches.py [--parts throughput,upload,interactive] [--lines 10000] [--quick]
                            [--concurrency 64] [--batch-size 1] [--upload-lines 50000]
                            [--calls 200] [--rate 10]

Every model call goes to one fault server (``python -m genspool.testing.faults``, its own
process) scripted to answer model ``lat-050`` after 50 ms. genspool is ``genspool serve`` (API,
batch runner and worker in one process, SQLite ``NORMAL``), started by each part as a
subprocess, with ``lat-050`` a remote model of ``max_concurrency: 64`` batches of
``max_batch_size: 1`` (so at most 64 calls in flight), ``max_wait_ms: 0``, no breaker. Files
go up with httpx (a file object: streamed), batches are created, followed (polled every 50 ms)
and cancelled through the HTTP API, as the OpenAI SDK does it.

* **throughput**: ``--lines`` chat lines, timed from the start of ``genspool serve`` (its
  start-up included) to the batch's ``completed``, against the ideal ``lines × 50 ms / 64``
  (target ≤ 1.1×) and against a baseline run beside it: the same calls made straight to the
  fault server by 64 aiohttp clients. The fault server's peak and mean in-flight calls show
  whether the 64 slots were kept busy; the serve process's CPU seconds show whether it was the
  bottleneck (it shares 2 cores with the fault server and this script).
* **upload**: a ``--upload-lines`` (50,000) line input of about 200 MB (long user messages)
  uploaded, then a batch created on it and followed until it leaves ``validating``, while the
  serve process's RSS (``/proc/PID/status`` VmRSS) is sampled every 50 ms; the growth over the
  RSS before the upload, against the target of 64 MB. The batch is cancelled afterwards (the
  peak until it is ``cancelled`` is printed too: its lines were being enqueued meanwhile).
* **interactive**: ``--calls`` ``POST /v1/chat/completions`` (priority 10, the path users wait
  on), sent open-loop at ``--rate`` per second, first with nothing else running, then while a
  batch (priority -10) keeps every slot of the model busy; p99 time to the answer of each, and
  the ratio loaded / unloaded (target ≤ 2×). A 10,000-line batch lasts ~8 s at the ideal rate,
  less than 200 calls at 10/s take, so the batch has as many lines as keep it running through
  the calls (``--lines`` at least; only calls made while it ran are counted). The fault server's
  arrival times split each call into the wait before its model call and the rest.

``--quick``: 1,000 lines, a 5,000-line upload, 50 interactive calls (under 2 minutes).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from _batches import (
    ENDED,
    BatchClient,
    call_figures,
    models_yaml,
    rss_sampled,
    use_snapshot,
    write_input,
)
from _common import pct
from _fanout import FaultControl, cpu_s, direct_map, fault_server, genspool_serving

MODEL, LATENCY_S = "lat-050", 0.05
#: Filler words per line of the upload part: ~4 KB a line, ~200 MB for 50,000 lines.
UPLOAD_WORDS = 780
RUNNING = frozenset({"in_progress", "finalizing", *ENDED})


@dataclass
class Figure:
    """One row of the closing table: a measured value beside its baseline and target ratio."""

    name: str
    value: float
    baseline: float
    baseline_name: str
    unit: str
    target: float  # the ratio value / baseline must be at most this

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else math.inf


def rules() -> list[dict[str, Any]]:
    return [{"model": MODEL, "latency_s": LATENCY_S}]


# -- throughput ----------------------------------------------------------------------------------


def throughput(args: argparse.Namespace, fault: FaultControl, tmp: Path) -> list[Figure]:
    n, conc = args.lines, args.concurrency * args.batch_size  # calls in flight at most
    path = tmp / "throughput.jsonl"
    size = write_input(path, MODEL, n, "t")
    fault.ready(rules())
    direct = asyncio.run(direct_map(fault.url, MODEL, "d-", n, conc))
    fault.ready(rules())
    wall0, t0 = time.time(), time.monotonic()
    yaml = models_yaml(fault.url, MODEL, args.concurrency, args.batch_size)
    with genspool_serving(yaml) as (url, pid):
        ready = time.monotonic()
        client = BatchClient(url)
        batch_id = client.create(client.upload(path))
        created = time.monotonic()
        done = client.follow(batch_id)
        end = time.monotonic()
        cpu = cpu_s([pid])
        client.close()
    stats = fault.stats(settle_s=1.0)
    calls = call_figures(stats, "t-", LATENCY_S, conc)
    wall, ideal = end - t0, n * LATENCY_S / conc
    seen = done.seen
    counts = done.last["request_counts"]
    print(
        f"\nthroughput: {n} lines ({size / 1e6:.1f} MB), {conc} calls in flight at most; batch"
        f" {done.last['status']}, {counts['completed']} completed, {counts['failed']} failed"
    )
    marks = [("serve start-up", t0), ("upload + create", ready), ("validating", created)]
    marks += [(s, seen[s]) for s in ("in_progress", "finalizing") if s in seen]
    for (label, at), (_, until) in zip(marks, [*marks[1:], ("", end)], strict=True):
        print(f"  {label:30} {until - at:6.2f} s")
    first = calls.get("first_arrival", wall0) - wall0
    print(
        f"  model calls: {calls['calls']} over {calls['window_s']:.2f} s (first at"
        f" {first:.2f} s after the start), mean in flight {calls['mean_in_flight']:.1f},"
        f" peak {stats['max_in_flight']}, {calls['share_full'] * 100:.0f} % of the time at"
        f" {conc}, longest pause between arrivals {calls['longest_gap_s'] * 1000:.0f} ms;"
        f" serve used {cpu:.1f} s CPU ({cpu / wall * 100:.0f} % of a core)"
    )
    print(
        f"  wall {wall:.2f} s; ideal {ideal:.2f} s -> {wall / ideal:.2f}x; the same calls direct"
        f" ({conc} clients) {direct:.2f} s -> {wall / direct:.2f}x"
    )
    return [
        Figure("batch wall time (start-up included)", wall, ideal, "ideal", "s", 1.1),
        Figure("batch wall time vs direct calls", wall, direct, "direct", "s", 1.1),
        Figure("fault server peak in flight", stats["max_in_flight"], conc, "limit", "", 1.0),
    ]


# -- upload --------------------------------------------------------------------------------------


def upload(args: argparse.Namespace, fault: FaultControl, tmp: Path) -> list[Figure]:
    path = tmp / "upload.jsonl"
    size = write_input(path, MODEL, args.upload_lines, "u", words=UPLOAD_WORDS) / 1e6
    fault.ready(rules())
    yaml = models_yaml(fault.url, MODEL, args.concurrency, args.batch_size)
    with genspool_serving(yaml) as (url, pid):
        client = BatchClient(url)
        client.http.get("/v1/models").raise_for_status()  # a first request: routes warmed
        time.sleep(1.0)
        with rss_sampled(pid) as samples:
            t0 = time.monotonic()
            file_id = client.upload(path)
            uploaded = time.monotonic()
            batch_id = client.create(file_id)
            left = client.follow(batch_id, until=RUNNING)
            validated = time.monotonic()
        with rss_sampled(pid) as later:
            client.cancel(batch_id)
            ended = client.follow(batch_id)
        client.close()
    before, peak, peak_after = samples[0], max(samples), max(later)
    print(
        f"\nupload: {args.upload_lines} lines, {size:.0f} MB; uploaded in {uploaded - t0:.1f} s"
        f" ({size / (uploaded - t0):.0f} MB/s), validated in {validated - uploaded:.1f} s (now"
        f" {left.last['status']}); RSS before {before:.0f} MB, peak to validation {peak:.0f} MB"
        f" (+{peak - before:.0f}), peak until {ended.last['status']} {peak_after:.0f} MB"
        f" (+{peak_after - before:.0f}); {len(samples) + len(later)} samples"
    )
    return [Figure("API RSS growth, upload + validation", peak - before, 64.0, "target", "MB", 1.0)]


# -- interactive ---------------------------------------------------------------------------------


@dataclass
class Call:
    key: str
    started: float  # time.time(), to set against the fault server's arrivals
    seconds: float
    ok: bool


async def open_loop(url: str, calls: int, rate: float, prefix: str) -> list[Call]:
    """``calls`` chat completions, the n-th sent at n / ``rate`` s whatever the others do."""
    async with aiohttp.ClientSession(base_url=url) as session:

        async def one(n: int) -> Call:
            await asyncio.sleep(n / rate)
            key = f"{prefix}{n}"
            body = {"model": MODEL, "user": key, "messages": [{"role": "user", "content": key}]}
            started, t = time.time(), time.perf_counter()
            async with session.post("/v1/chat/completions", json=body) as r:
                await r.read()
                return Call(key, started, time.perf_counter() - t, r.status == 200)

        return list(await asyncio.gather(*(one(n) for n in range(calls))))


def interactive(args: argparse.Namespace, fault: FaultControl, tmp: Path) -> list[Figure]:
    conc = args.concurrency * args.batch_size
    lines = max(args.lines, math.ceil(1.5 * args.calls / args.rate * conc / LATENCY_S))
    path = tmp / "interactive.jsonl"
    write_input(path, MODEL, lines, "b")
    fault.ready(rules())
    yaml = models_yaml(fault.url, MODEL, args.concurrency, args.batch_size)
    with genspool_serving(yaml) as (url, _):
        asyncio.run(open_loop(url, 10, 20.0, "warm-"))
        unloaded = asyncio.run(open_loop(url, args.calls, args.rate, "i0-"))
        client = BatchClient(url)
        batch_id = client.create(client.upload(path))
        client.follow(batch_id, until=RUNNING)
        while client.get(batch_id)["request_counts"]["completed"] < conc:
            time.sleep(0.05)  # its lines are running, not only enqueued
        loaded = asyncio.run(open_loop(url, args.calls, args.rate, "i1-"))
        after = client.get(batch_id)
        client.cancel(batch_id)
        client.follow(batch_id)
        client.close()
    stats = fault.stats(settle_s=1.0)
    # Only the calls that ended while the batch still sent calls of its own were made under load.
    last = max(a for k, v in stats["requests"].items() if k.startswith("b-") for a in v["arrivals"])
    counted = [c for c in loaded if c.started + c.seconds <= last]
    print(f"\ninteractive: {args.calls} calls at {args.rate:g}/s; a batch of {lines} lines")
    for label, calls in (("unloaded", unloaded), ("batch running", counted)):
        _report_calls(label, calls, stats)
    p99_0 = pct([c.seconds for c in unloaded if c.ok], 0.99)
    p99_1 = pct([c.seconds for c in counted if c.ok], 0.99)
    print(
        f"  the batch was {after['status']} when the calls ended"
        f" ({after['request_counts']['completed']} of {lines} lines done); p99 loaded /"
        f" unloaded {p99_1 / p99_0:.2f}x"
    )
    return [Figure("interactive p99 under a batch", p99_1, p99_0, "unloaded", "ms", 2.0)]


def _report_calls(label: str, calls: list[Call], stats: dict[str, Any]) -> None:
    ok = [c for c in calls if c.ok]
    ms = [c.seconds for c in ok]
    arrivals = {k: v["arrivals"][0] for k, v in stats["requests"].items() if v["arrivals"]}
    waits = [arrivals[c.key] - c.started for c in ok if c.key in arrivals]
    rest = [c.seconds - (arrivals[c.key] - c.started) - LATENCY_S for c in ok if c.key in arrivals]
    print(
        f"  {label:14} n={len(calls)} errors={len(calls) - len(ok)}  p50 {pct(ms, 0.5):6.1f} ms"
        f"  p99 {pct(ms, 0.99):6.1f} ms  max {max(ms) * 1000:6.1f} ms;  to the model call p50"
        f" {pct(waits, 0.5):.1f} / p99 {pct(waits, 0.99):.1f} ms, after its answer p50"
        f" {pct(rest, 0.5):.1f} / p99 {pct(rest, 0.99):.1f} ms"
    )


# -- the run -------------------------------------------------------------------------------------

PARTS: dict[str, Callable[[argparse.Namespace, FaultControl, Path], list[Figure]]] = {
    "throughput": throughput,
    "upload": upload,
    "interactive": interactive,
}


def table(figures: list[Figure]) -> None:
    print(f"\n{'figure':40} {'measured':>12} {'baseline':>20} {'ratio':>7} {'target':>7}  verdict")
    for f in figures:
        value = f"{f.value:.1f} {f.unit}".strip()
        base = f"{f.baseline_name} {f.baseline:.1f} {f.unit}".strip()
        verdict = "met" if f.ratio <= f.target + 1e-9 else "MISSED"
        print(f"{f.name:40} {value:>12} {base:>20} {f.ratio:6.2f}x {f.target:6.2f}x  {verdict}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--parts", default="throughput,upload,interactive")
    p.add_argument("--lines", type=int, default=10_000)
    p.add_argument("--upload-lines", type=int, default=50_000)
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--rate", type=float, default=10.0, help="interactive calls per second")
    p.add_argument("--concurrency", type=int, default=64, help="the model's max_concurrency")
    p.add_argument("--batch-size", type=int, default=1, help="the model's max_batch_size")
    p.add_argument("--quick", action="store_true")
    p.add_argument(
        "--snapshot", nargs="?", const="HEAD", metavar="REV",
        help="run genspool from a copy of a commit's genspool/ (default HEAD), not the work tree",
    )  # fmt: skip
    args = p.parse_args(argv)
    if args.quick:
        args.lines, args.upload_lines, args.calls = 1000, 5000, 50
    unknown = set(args.parts.split(",")) - set(PARTS)
    if unknown:
        p.error(f"unknown parts {sorted(unknown)}; the parts are {', '.join(PARTS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    started = time.monotonic()
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="genspool-bench-batches-") as tmp:
        if args.snapshot:
            (Path(tmp) / "code").mkdir()
            print(f"genspool from a copy of {use_snapshot(Path(tmp) / 'code', args.snapshot)}")
        with fault_server() as url:
            fault = FaultControl(url)
            for part in args.parts.split(","):
                figures += PARTS[part](args, fault, Path(tmp))
    table(figures)
    print(f"\n(the run took {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
