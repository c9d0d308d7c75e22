"""Worker start-up: from ``genspool worker`` being launched to the first result stored.

    python bench/worker_start.py [--runs 5]

A job of the zero-latency ``echo`` model waits in a fresh SQLite file; the clock starts when
the worker process is spawned and stops when this script sees the job succeeded (polling the
file every 5 ms). Beside it, in the same script: a bare ``python -c "import asyncio"`` process
start, the floor any Python worker pays. Target: first result within 0.4 s.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import median

from genspool.backends import open_storage
from genspool.core.job import Job, JobStatus
from genspool.core.queue import Queue

MODELS = "models:\n  - name: echo\n    provider: echo\n"


async def first_result(tmp: Path) -> float:
    url = f"sqlite:///{tmp / 'g.db'}"
    async with Queue(open_storage(url)) as q:
        job = await q.submit(Job(url="/v1/chat/completions", body={"messages": []}, model="echo"))
        start = time.perf_counter()
        worker = subprocess.Popen(  # noqa: ASYNC220 (returns at once; polled below)
            [sys.executable, "-m", "genspool", "worker", "--db", url,
             "--config", str(tmp / "models.yaml")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while (await q.get(job.id)).status is not JobStatus.SUCCEEDED:
                if worker.poll() is not None:
                    raise SystemExit(f"the worker exited with {worker.returncode}")
                await asyncio.sleep(0.005)
            return time.perf_counter() - start
        finally:
            worker.terminate()
            worker.wait(30)


def bare_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import asyncio"], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    worker, bare = [], []
    for i in range(args.runs):  # interleaved
        tmp = Path(tempfile.mkdtemp(prefix=f"genspool-start-{i}-"))
        (tmp / "models.yaml").write_text(MODELS)
        worker.append(asyncio.run(first_result(tmp)))
        bare.append(bare_python())
    w, b = median(worker), median(bare)
    print(f"bare python start:            {b * 1000:7.1f} ms (median of {args.runs})")
    print(f"worker start to first result: {w * 1000:7.1f} ms  {[round(x * 1000) for x in worker]}")
    print(f"ratio worker/bare python: {w / b:.1f}; first result in {w:.2f} s (target <= 0.4 s)")


if __name__ == "__main__":
    main()
