"""genspool's side of ``bench/queue_path.py`` — PLACEHOLDER, to be filled in by the lead.

The harness runs this file with the project's python (``.venv/bin/python`` when present) under
``taskset -c 1`` when taskset exists, so every process it starts inherits core 1; a polling
monitor may move itself to core 0 with ``os.sched_setaffinity(0, {0})``. Arguments::

    --jobs N  --synchronous FULL|NORMAL  --workdir DIR (fresh, empty; put the SQLite file here)
    --timeout SECONDS (bound every loop and subprocess by it)

What it should do, to measure the way the harness measures its peers: enqueue N no-op jobs
through genspool's library from this (producer) process, timing the enqueue loop alone; then
start ONE genspool worker process with a zero-latency model, noting ``time.time()`` just before
starting it; watch for stored results; stop the worker after the last one is stored. Then print
one JSON line (last line of stdout)::

    {"n": N, "enqueue_seconds": S, "worker_started": EPOCH, "done": N,
     "first_seen": EPOCH, "first_seen_done": K, "last_seen": EPOCH}

where ``first_seen``/``last_seen`` are when the first/last stored result was seen and
``first_seen_done`` how many results were stored by ``first_seen``. Until then it prints
``{"skipped": "<reason>"}``, which the harness reports as skipped; ``{"error": "<text>"}``
(or a non-zero exit) is reported as a failure.
"""

from __future__ import annotations

import argparse
import json


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--timeout", type=float, default=300.0)
    parser.parse_args()
    print(json.dumps({"skipped": "not implemented yet"}), flush=True)


if __name__ == "__main__":
    main()
