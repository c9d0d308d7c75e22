"""Celery 5 peer of the fan-out bench: a chord on Redis (broker and result backend).

Each header task makes the same chat call as a genspool branch to the fault server; the chord's
callback gathers their answers into ``{model: text}``. Celery has no "first" strategy (a chord
waits for every task, and a running task cannot be aborted from the thread pool), so only
``all`` is run.

Worker, started by ``bench/fanout.py`` from this folder with the PEERS.md settings except the
pool, which must run the 8 calls at once (``-P solo`` would run them one after another)::

    FAULT_URL=... celery -A celery_fanout:app worker -P threads -c 8 --without-gossip \
        --without-mingle --without-heartbeat -l WARNING

``python celery_fanout.py --fault URL --models a,b`` is the client (``_fanout_common``).
"""

from __future__ import annotations

import os
from typing import Any

import httpx
from _fanout_common import chat_body, parse_args, serve_commands
from celery import Celery, chord

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/14")
QUEUE = "bench-fanout-celery"

app = Celery("bench_fanout", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_default_queue=QUEUE,
    # The chord's join reads the header's stored results (Redis counts them natively); they
    # are only needed until the callback ran, so they do not pile up across runs.
    result_expires=600,
)

#: One keep-alive pool shared by the worker's threads (httpx clients are thread-safe), as a
#: careful user would: a client per call would add a TCP handshake to every branch.
_client: httpx.Client | None = None


def client() -> httpx.Client:
    global _client
    if _client is None:
        limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
        _client = httpx.Client(timeout=30.0, limits=limits)
    return _client


@app.task(name="fanout.call")
def call(model: str, user: str) -> dict[str, Any]:
    """One branch: a chat call to the fault server; its model and answer text."""
    url = os.environ["FAULT_URL"] + "/v1/chat/completions"
    response = client().post(url, json=chat_body(model, user))
    response.raise_for_status()
    return {"model": model, "text": response.json()["choices"][0]["message"]["content"]}


@app.task(name="fanout.gather")
def gather(answers: list[dict[str, Any]]) -> dict[str, str]:
    """The chord's callback: every branch's answer, by model."""
    return {a["model"]: a["text"] for a in answers}


def main() -> None:
    args = parse_args()
    models = args.models.split(",")

    def run(strategy: str, tag: str) -> str:
        if strategy != "all":
            raise ValueError(f"celery has no {strategy!r} fan-out; only all (a chord)")
        header = [call.s(m, f"{tag}-{m}") for m in models]
        result = chord(header)(gather.s()).get(timeout=30)
        return f"{len(result)} answers"

    app.connection_for_write().ensure_connection(max_retries=3)
    serve_commands(run)


if __name__ == "__main__":
    main()
