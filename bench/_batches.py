"""The moving parts of ``bench/batches.py``: the models file, input files, a batch driven through
the HTTP API (upload streamed, create, follow, cancel), a sampler of a process's RSS, and the
fault server's view of the calls (from their arrivals)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

CHAT = "/v1/chat/completions"
ENDED = frozenset({"completed", "failed", "cancelled", "expired"})


def models_yaml(fault_url: str, model: str, concurrency: int, batch_size: int) -> str:
    """One remote model on the fault server: ``concurrency`` batches of ``batch_size`` calls in
    flight at most, sent as soon as leased, no breaker (the server never fails here), and a
    context window that takes the upload part's long lines."""
    return (
        "models:\n"
        f"  - name: {model}\n"
        "    provider: openai\n"
        f'    options: {{base_url: "{fault_url}/v1"}}\n'
        "    context_window: 1000000\n"
        "    breaker: {enabled: false}\n"
        f"    batching: {{max_batch_size: {batch_size}, max_wait_ms: 0,"
        f" max_concurrency: {concurrency}}}\n"
    )


def write_input(path: Path, model: str, lines: int, tag: str, words: int = 0) -> int:
    """A batch input file of ``lines`` chat requests (``words`` filler words each, for size);
    each line's ``user`` is its ``custom_id``, which names its call at the fault server."""
    filler = " ".join(f"w{i % 997}" for i in range(words))
    with path.open("wb") as out:
        for n in range(lines):
            cid = f"{tag}-{n}"
            messages = [{"role": "user", "content": f"{cid} {filler}"}]
            body = {"model": model, "user": cid, "messages": messages}
            line = {"custom_id": cid, "method": "POST", "url": CHAT, "body": body}
            out.write(json.dumps(line).encode() + b"\n")
    return path.stat().st_size


@dataclass
class Followed:
    """When each status of a batch was first seen (``time.monotonic()``), and the last record."""

    seen: dict[str, float] = field(default_factory=dict)
    last: dict[str, Any] = field(default_factory=dict)


class BatchClient:
    """A user's view of the Batch API: the calls the OpenAI SDK makes, through httpx."""

    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=600)

    def upload(self, path: Path) -> str:
        """Upload ``path`` with purpose ``batch``; httpx streams a file object in 64 KiB
        chunks (its length from ``fstat``), so neither side holds the whole file."""
        with path.open("rb") as f:
            r = self.http.post(
                "/v1/files",
                data={"purpose": "batch"},
                files={"file": (path.name, f, "application/jsonl")},
            )
        r.raise_for_status()
        return str(r.json()["id"])

    def create(self, file_id: str) -> str:
        body = {"input_file_id": file_id, "endpoint": CHAT, "completion_window": "24h"}
        r = self.http.post("/v1/batches", json=body)
        r.raise_for_status()
        return str(r.json()["id"])

    def get(self, batch_id: str) -> dict[str, Any]:
        r = self.http.get(f"/v1/batches/{batch_id}")
        r.raise_for_status()
        out: dict[str, Any] = r.json()
        return out

    def cancel(self, batch_id: str) -> None:
        self.http.post(f"/v1/batches/{batch_id}/cancel").raise_for_status()

    def follow(
        self, batch_id: str, until: frozenset[str] = ENDED, every_s: float = 0.05,
        timeout_s: float = 900.0, into: Followed | None = None,
    ) -> Followed:  # fmt: skip
        """Poll the batch until its status is in ``until``, noting when each status appeared."""
        out = into or Followed()
        deadline = time.monotonic() + timeout_s
        while True:
            out.last = self.get(batch_id)
            out.seen.setdefault(out.last["status"], time.monotonic())
            if out.last["status"] in until:
                return out
            if time.monotonic() > deadline:
                raise SystemExit(f"batch {batch_id} still {out.last['status']} after {timeout_s} s")
            time.sleep(every_s)

    def close(self) -> None:
        self.http.close()


def use_snapshot(into: Path, rev: str = "HEAD") -> str:
    """Copy ``rev``'s ``genspool/`` into ``into`` and put it first on the ``PYTHONPATH`` of the
    processes started from now on (``genspool serve``, the fault server), so that edits made to
    the work tree during a run do not mix code versions; returns the commit."""
    repo = Path(__file__).resolve().parent.parent
    git = ["git", "-C", str(repo)]
    commit = subprocess.run([*git, "rev-parse", rev], capture_output=True, text=True, check=True)
    sha = commit.stdout.strip()
    archive = subprocess.run([*git, "archive", sha, "genspool"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive.stdout, check=True)
    os.environ["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(into), os.environ.get("PYTHONPATH")])
    )
    return sha


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def rss_sampled(pid: int, every_s: float = 0.05) -> Iterator[list[float]]:
    """Samples of ``pid``'s RSS (MB), every ``every_s`` on a thread, while the block runs; the
    first is taken before the block starts."""
    samples = [rss_mb(pid)]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(every_s):
            samples.append(rss_mb(pid))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()
        samples.append(rss_mb(pid))


def call_figures(stats: dict[str, Any], prefix: str, latency_s: float, full: int) -> dict[str, Any]:
    """What the fault server saw of the calls whose key starts with ``prefix``: how many, over
    what window (first arrival to last answer), the time-weighted mean in flight, and the share
    of that window spent with ``full`` calls in flight (each call lasts ``latency_s``)."""
    arrivals = sorted(
        a for key, seen in stats["requests"].items() if key.startswith(prefix)
        for a in seen["arrivals"]
    )  # fmt: skip
    if not arrivals:
        return {"calls": 0, "window_s": 0.0, "mean_in_flight": 0.0, "share_full": 0.0,
                "longest_gap_s": 0.0}  # fmt: skip
    window = arrivals[-1] + latency_s - arrivals[0]
    edges = sorted([(a, 1) for a in arrivals] + [(a + latency_s, -1) for a in arrivals])
    level, at, at_full = 0, arrivals[0], 0.0
    for when, step in edges:
        if level >= full:
            at_full += when - at
        level, at = level + step, when
    return {
        "calls": len(arrivals),
        "first_arrival": arrivals[0],
        "window_s": window,
        "mean_in_flight": len(arrivals) * latency_s / window,
        "share_full": at_full / window,
        "longest_gap_s": max((b - a for a, b in itertools.pairwise(arrivals)), default=0.0),
    }
