"""Metrics across processes: ``genspool worker --metrics-port`` serves the worker's own series,
and a real Prometheus server (Debian's package) scraping ``genspool serve`` on loopback sees
``rate(genspool_jobs_finished_total[30s])`` and the counter agree with the store.

Prometheus is started by pid and stopped by pid, with its own config and data directory under
the test's. Without the binary the test skips, except under ``CI=true`` where it fails."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.processes import Spawner, free_port, wait_until

CHAT = "/v1/chat/completions"
ECHO = [{"name": "echo", "provider": "echo", "batching": {"max_batch_size": 8, "max_wait_ms": 5}}]
FINISHED = 'genspool_jobs_finished_total{model="echo",status="succeeded"}'


def samples(text: str) -> dict[str, float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


def submit(client: httpx.Client, n: int) -> list[str]:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    ids = []
    for _ in range(n):
        r = client.post("/v1/jobs", json={"url": CHAT, "body": body})
        assert r.status_code == 202, r.text
        ids.append(r.json()["id"])
    return ids


def test_a_worker_serves_its_own_metrics_on_its_port(spawner: Spawner, tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    api = spawner.server(ECHO, command="api", db=db)
    port = free_port()
    worker = spawner.start(
        "worker", "--db", spawner.sqlite_url(db), "--config", str(api.config),
        "--metrics-port", str(port), name="worker",
    )  # fmt: skip
    with httpx.Client(base_url=api.url, timeout=10) as client:
        api.wait_all(submit(client, 5), timeout=30)

    def scraped() -> dict[str, float] | None:
        try:
            found = samples(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
        except httpx.HTTPError:
            return None
        return found if found.get(FINISHED) == 5 else None

    from_worker = wait_until(scraped, 15, what="the worker's metrics to count 5 jobs")
    assert from_worker['genspool_worker_in_flight{model="echo"}'] == 0
    assert from_worker['genspool_queue_wait_seconds_count{model="echo"}'] == 5
    assert "genspool_queue_depth" not in " ".join(from_worker)  # the API's, not the worker's
    from_api = samples(httpx.get(f"{api.url}/metrics", timeout=5).text)
    assert from_api['genspool_jobs_submitted_total{model="echo"}'] == 5
    assert from_api.get(FINISHED) == 0  # the worker ended them, in its own process
    assert worker.alive


@pytest.fixture
def prometheus_bin() -> str:
    found = shutil.which("prometheus")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("prometheus is not installed (apt-get install -y prometheus)")
        pytest.skip("prometheus is not installed (apt-get install -y prometheus)")
    return found


@pytest.fixture
def prometheus(prometheus_bin: str, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A Prometheus on loopback (its URL, and its config file to fill in), stopped by pid."""
    config = tmp_path / "prometheus.yml"
    yield f"http://127.0.0.1:{free_port()}", config


def _start_prometheus(binary: str, url: str, config: Path, target: str) -> subprocess.Popen[bytes]:
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n"
        f"  - job_name: genspool\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    log = (config.parent / "prometheus.log").open("wb")
    return subprocess.Popen(
        [
            binary, f"--config.file={config}", f"--storage.tsdb.path={config.parent / 'tsdb'}",
            f"--web.listen-address={url.removeprefix('http://')}",
        ],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _query(url: str, expr: str, at: float | None = None) -> float | None:
    params: dict[str, str | float] = {"query": expr}
    if at is not None:
        params["time"] = at
    data = httpx.get(f"{url}/api/v1/query", params=params, timeout=5).json()["data"]["result"]
    return float(data[0]["value"][1]) if data else None


def _up(url: str) -> bool | None:
    try:
        return _query(url, "up") == 1.0 or None
    except (httpx.HTTPError, ValueError):  # not listening, or not ready (503, no JSON)
        return None


def test_a_real_prometheus_sees_the_stores_counts(
    spawner: Spawner, tmp_path: Path, prometheus: tuple[str, Path], prometheus_bin: str
) -> None:
    db = tmp_path / "g.db"
    server = spawner.server(ECHO, db=db)
    url, config = prometheus
    proc = _start_prometheus(prometheus_bin, url, config, server.url.removeprefix("http://"))
    try:
        wait_until(lambda: _up(url), 30, what="prometheus scraping genspool")
        stop, ids = threading.Event(), []

        def feed() -> None:  # ~10 jobs a second for 40 s
            with httpx.Client(base_url=server.url, timeout=10) as client:
                while not stop.is_set():
                    ids.extend(submit(client, 1))
                    time.sleep(0.1)

        feeder = threading.Thread(target=feed)
        feeder.start()
        time.sleep(40)
        at = time.time() - 2  # a scrape surely stored
        stop.set()
        feeder.join()
        server.wait_all(ids, timeout=30)
        rows = spawner.read_db(
            db, "SELECT count(*) FROM jobs WHERE status = 'succeeded' AND finished_at > ? "
            "AND finished_at <= ?", (at - 30, at),
        )  # fmt: skip
        store_rate = rows[0][0] / 30
        seen_rate = _query(url, f"rate({FINISHED}[30s])", at)
        assert seen_rate is not None and store_rate > 5
        assert abs(seen_rate - store_rate) / store_rate < 0.15, (seen_rate, store_rate)
        total = spawner.read_db(db, "SELECT count(*) FROM jobs WHERE status = 'succeeded'")[0][0]
        assert total == len(ids)

        def counted() -> float | None:
            return _query(url, FINISHED) if _query(url, FINISHED) == total else None

        wait_until(counted, 10, what=f"prometheus to see {total} finished jobs")
    finally:
        proc.terminate()
        proc.wait(timeout=20)
