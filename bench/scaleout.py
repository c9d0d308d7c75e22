"""Scale-out benchmark: end-to-end no-op jobs/s of genspool on each backend with 1 and 2 worker
processes, beside the peers that run on the same server, in the same script run.

Per backend (``--backends``) and worker count (``--workers``), each run: a fresh namespace
(genspool: ``?schema=`` / ``?prefix=`` / a new SQLite file; peers: their Redis database flushed,
a new PostgreSQL database, a new SQLite file); enqueue N no-op jobs from one producer process
(that loop timed alone); start a monitor; then start W worker processes and time from their
start to the last stored result (start-up included; also the steady-state rate, first to last
result seen). The namespace is dropped afterwards. genspool runs the real ``genspool worker``
command serving the zero-latency ``echo`` model (``batching:`` ``max_batch_size: 256``,
``max_wait_ms: 0``, ``max_concurrency: 8`` by default: 8 slots shared by all worker processes,
each of which asks for up to 8, so that at W=2 both get some (4 each, as measured);
``--max-concurrency`` sets it).

Peers, tuned per ``/work/shared/PEERS.md``, each in its own venv under ``bench/.venvs/``:
Redis: arq, taskiq, Celery (``-P solo``); PostgreSQL: Procrastinate 3 (concurrency 10, pool
10; no result store, succeeded rows are counted); SQLite: huey (4 threads). NATS has no peer.
The process machinery is ``bench/queue_path.py``'s: producer and worker 1 pinned to core 1,
worker 2 to core 0, the monitor to core 0 (when taskset exists); the servers are not pinned.
Each run also records the CPU time of the workers' process trees and of the server's
processes (per job), and how busy the whole machine was, since the servers share it.

Usage::

    python bench/scaleout.py [--jobs 20000 | --quick] [--runs 3]
        [--backends postgres,redis,nats,sqlite] [--workers 1,2] [--no-peers]
        [--max-concurrency 8] [--snapshot] [--timeout 300]

``--snapshot`` runs genspool from a copy of HEAD's ``genspool/`` (put ahead of the editable
install on ``PYTHONPATH``), so that edits others make to the work tree during a long run do not
mix code versions; the commit is printed and recorded.

Prints one line per run, a table of medians (min-max), then per backend genspool's ratio to
its fastest same-server peer and its 2-worker/1-worker ratio; writes
``bench/results/scaleout.json``. Only the standard library is used here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from queue_path import (
    FRAMEWORK_SPECS,
    PEERS_DIR,
    REPO_DIR,
    Framework,
    PeerError,
    Result,
    Summary,
    ensure_venv,
    fmt_rate,
    fmt_stats,
    genspool_python,
    guarded,
    last_json_line,
    peer_env,
    pin,
    ratio,
    redis_durability,
    redis_flush,
    run_json,
    start_logged,
    stop,
    tail,
    timings,
    wait_for_file,
)

RESULTS_FILE = REPO_DIR / "bench" / "results" / "scaleout.json"
PG_SERVER = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_SERVER = "redis://127.0.0.1:6379/15"  # the peers' database (flushed before their runs)
NATS_SERVER = "nats://127.0.0.1:4222"
BACKENDS = ("postgres", "redis", "nats", "sqlite")
DEFAULT_JOBS, QUICK_JOBS = 20_000, 2_000
MAX_CONCURRENCY = 8
SQLITE_SYNC = "FULL"  # huey's setting (SQLite's default), so the SQLite rows compare alike
SERVER_PROCESSES = {"postgres": "postgres", "redis": "redis-server", "nats": "nats-server"}
PROCRASTINATE = Framework(
    "procrastinate",
    ("procrastinate==3.*", "psycopg[binary]"),
    "procrastinate_app.py",
    "python procrastinate_app.py worker",
    "postgres",
)
PEER_SPECS = {**FRAMEWORK_SPECS, "procrastinate": PROCRASTINATE}
PEERS_BY_BACKEND = {
    "redis": ("arq", "taskiq", "celery"),
    "postgres": ("procrastinate",),
    "sqlite": ("huey",),
    "nats": (),
}
MODELS = """models:
  - name: echo
    provider: echo
    batching:
      max_batch_size: 256
      max_wait_ms: 0
      max_concurrency: {max_concurrency}
"""


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class ScaleResult(Result):
    """A queue path run with W workers, plus where the CPU went."""

    workers: int = 1
    worker_cpu_s: float | None = None
    worker_cpu_each: list[float | None] = field(default_factory=list)  # is the work shared?
    server_cpu_s: float | None = None
    machine_busy: float | None = None  # share of all cores busy between start and last result

    @property
    def worker_ms_per_job(self) -> float | None:
        return 1000 * self.worker_cpu_s / self.n_jobs if self.worker_cpu_s is not None else None

    @property
    def server_ms_per_job(self) -> float | None:
        return 1000 * self.server_cpu_s / self.n_jobs if self.server_cpu_s is not None else None


@dataclass
class ScaleSummary(Summary):
    name: str = ""
    server: str = ""
    workers: int = 1

    def to_json(self) -> dict[str, Any]:
        out = super().to_json() | {"name": self.name, "server": self.server}
        for attr in ("worker_ms_per_job", "server_ms_per_job", "machine_busy"):
            stats = self.stats(attr)
            out[attr] = dict(zip(("median", "min", "max"), stats, strict=True)) if stats else None
        return out | {"workers": self.workers}


# --------------------------------------------------------------------------------------------
# CPU accounting from /proc (Linux); None elsewhere


def _stat_fields(pid: str) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw.rsplit(")", 1)[1].split()  # after "pid (comm)": state is field 0


def cpu_seconds(match: Callable[[str, list[str]], bool]) -> float | None:
    """Sum of user+system CPU of the processes for which ``match(pid, fields)`` holds."""
    if not Path("/proc/stat").exists():
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        fields = _stat_fields(pid)
        if fields is not None and match(pid, fields):
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def session_cpu(sessions: set[int]) -> float | None:
    """CPU of every process in the given sessions (each worker was started in its own)."""
    return cpu_seconds(lambda _, f: int(f[3]) in sessions)  # field 3 is the session id


def server_cpu(server: str) -> float | None:
    name = SERVER_PROCESSES.get(server)
    if name is None:
        return None

    def is_server(pid: str, _: list[str]) -> bool:
        try:
            return Path(f"/proc/{pid}/comm").read_text().strip() == name
        except OSError:
            return False

    return cpu_seconds(is_server)


def machine_cpu() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores so far."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


# --------------------------------------------------------------------------------------------
# What is measured


@dataclass
class Target:
    """One queue on one server: its interpreter, module, worker command and namespace hooks."""

    name: str
    server: str
    python: str
    module: str  # a program in bench/peers with enqueue and wait commands
    worker: Callable[[int], list[str]]  # the command of worker process i
    env: dict[str, str]
    args: list[str] = field(default_factory=list)  # extra options of enqueue and wait
    prepare: Callable[[], None] = lambda: None
    cleanup: Callable[[], None] = lambda: None


def worker_core(i: int) -> int:
    """Worker 0 on core 1 (where queue_path.py puts its worker), the next on core 0, ..."""
    return (1 + i) % (os.cpu_count() or 1)


def wait_report(
    monitor: subprocess.Popen[bytes], workers: Sequence[subprocess.Popen[bytes]], work: Path
) -> dict[str, Any]:
    """Wait for the monitor's report (it has its own timeout), failing fast if a worker dies."""
    while monitor.poll() is None:
        for i, proc in enumerate(workers):
            if proc.poll() is not None:
                log = tail((work / f"worker{i}.log").read_text(errors="replace"))
                raise PeerError(f"worker {i} exited ({proc.returncode}):\n{log}")
        time.sleep(0.05)
    report = last_json_line((work / "monitor.log").read_text(errors="replace"))
    if report.get("timed_out"):
        log = tail((work / "worker0.log").read_text(errors="replace"))
        raise PeerError(f"incomplete: {report}:\n{log}")
    return report


def measure(target: Target, result: ScaleResult, timeout: float, work: Path) -> ScaleResult:
    """Enqueue, start the monitor, start the workers, wait for the last result, stop, clean."""
    n, env = result.n_jobs, target.env
    args = ["--jobs", str(n), "--timeout", str(timeout), *target.args]
    target.prepare()
    try:
        cmd = [*pin(1), target.python, target.module, "enqueue", *args]
        result.enqueue_s = float(run_json(cmd, env, timeout)["seconds"])
        ready = work / "ready"
        wait_cmd = [*pin(0), target.python, target.module, "wait", *args, "--ready", str(ready)]
        monitor = start_logged(wait_cmd, env, work / "monitor.log")
        workers: list[subprocess.Popen[bytes]] = []
        try:
            wait_for_file(ready, monitor, work / "monitor.log")
            server_before, machine_before = server_cpu(target.server), machine_cpu()
            started = time.time()
            for i in range(result.workers):
                argv = [*pin(worker_core(i)), *target.worker(i)]
                workers.append(start_logged(argv, env, work / f"worker{i}.log"))
            report = wait_report(monitor, workers, work)
            cpu_accounting(result, target.server, workers, server_before, machine_before)
        finally:
            for proc in (*workers, monitor):
                stop(proc)
        return timings(result, report, started)
    finally:
        target.cleanup()


def cpu_accounting(
    result: ScaleResult,
    server: str,
    workers: Sequence[subprocess.Popen[bytes]],
    server_before: float | None,
    machine_before: tuple[int, int] | None,
) -> None:
    result.worker_cpu_s = session_cpu({p.pid for p in workers})
    result.worker_cpu_each = [session_cpu({p.pid}) for p in workers]
    server_after, machine_after = server_cpu(server), machine_cpu()
    if server_before is not None and server_after is not None:
        result.server_cpu_s = server_after - server_before
    if machine_before and machine_after and machine_after[1] > machine_before[1]:
        busy = machine_after[0] - machine_before[0]
        result.machine_busy = busy / (machine_after[1] - machine_before[1])


# -- genspool


def genspool_url(server: str, namespace: str, work: Path) -> str:
    return {
        "postgres": f"{PG_SERVER}?schema={namespace}",
        "redis": f"{REDIS_SERVER}?prefix={namespace}",
        "nats": f"{NATS_SERVER}?prefix={namespace}",
        "sqlite": f"sqlite:///{work / 'genspool.db'}?synchronous={SQLITE_SYNC}",
    }[server]


def genspool_target(server: str, work: Path, max_concurrency: int, src: str | None) -> Target:
    python = genspool_python()
    url = genspool_url(server, f"bench_{os.urandom(4).hex()}", work)
    models = work / "models.yaml"
    models.write_text(MODELS.format(max_concurrency=max_concurrency))
    env = peer_env() | {"GENSPOOL_LOG_LEVEL": "WARNING"}
    if src:  # ahead of the editable install, which is found only after sys.path
        env["PYTHONPATH"] = os.pathsep.join((src, env["PYTHONPATH"]))

    def worker(_: int) -> list[str]:
        return [python, "-m", "genspool", "worker", "--db", url, "--config", str(models)]

    def drop() -> None:
        if server != "sqlite":  # its file goes with the run's temporary directory
            run_json([python, "genspool_worker.py", "drop", "--db", url], env, 120)

    return Target(
        "genspool", server, python, "genspool_worker.py", worker, env, ["--db", url], cleanup=drop
    )


# -- peers


def peer_target(spec: Framework, server: str, bindir: Path, work: Path) -> Target:
    python = str(bindir / "python")
    env = peer_env(work / "huey.db" if spec.store == "sqlite" else None)
    env |= {"BENCH_PG_URL": PG_SERVER, "BENCH_PG_DB": f"bench_{spec.name}_{os.urandom(3).hex()}"}

    def worker(i: int) -> list[str]:
        argv = spec.worker_argv(bindir)
        return [*argv, "-n", f"w{i}@%h"] if spec.name == "celery" else argv

    def admin(command: str) -> Callable[[], None]:
        def call() -> None:
            run_json([python, spec.module, command], env, 120)

        return call

    target = Target(spec.name, server, python, spec.module, worker, env)
    if spec.store == "redis":
        target.prepare = target.cleanup = redis_flush
    elif spec.store == "postgres":
        target.prepare, target.cleanup = admin("setup"), admin("teardown")
    return target


# --------------------------------------------------------------------------------------------
# Cases


@dataclass(frozen=True)
class Case:
    name: str
    server: str
    workers: int
    durability: str
    run: Callable[[int, float], ScaleResult]

    @property
    def label(self) -> str:
        return f"{self.name} {self.server} x{self.workers}"


def durabilities(backends: Sequence[str]) -> dict[str, str]:
    out = {
        "postgres": f"PostgreSQL: {pg_settings()}",
        "nats": "NATS JetStream file storage (server defaults: no fsync per write)",
        "sqlite": f"SQLite {SQLITE_SYNC} (WAL)",
    }
    if "redis" in backends:
        out["redis"] = redis_durability() or "unavailable: Redis"
    return out


def pg_settings() -> str:
    """fsync / synchronous_commit of the server, for the durability label."""
    if not shutil.which("psql"):
        return "durable per its configuration (psql not found to show it)"
    cmd = ["psql", "-At", PG_SERVER, "-c", "show fsync", "-c", "show synchronous_commit"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.split()
    except (OSError, subprocess.TimeoutExpired):
        return "unreachable"
    return f"fsync={out[0]}, synchronous_commit={out[1]}" if len(out) == 2 else "unreachable"


def genspool_case(
    server: str, workers: int, durability: str, max_concurrency: int, src: str | None
) -> Case:
    def run(n: int, timeout: float) -> ScaleResult:
        result = ScaleResult(f"genspool {server} x{workers}", durability, n, workers=workers)

        def body() -> ScaleResult:
            with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
                work = Path(tmp)
                target = genspool_target(server, work, max_concurrency, src)
                return measure(target, result, timeout, work)

        return guarded(result, body)  # type: ignore[return-value]

    return Case("genspool", server, workers, durability, run)


def peer_case(spec: Framework, server: str, workers: int, durability: str) -> Case:
    setup: dict[str, str] = {}

    def body(result: ScaleResult, timeout: float) -> ScaleResult:
        if durability.startswith("unavailable"):
            raise PeerError(durability)
        if "error" in setup:
            raise PeerError(setup["error"])
        try:
            bindir = ensure_venv(spec)
        except PeerError as exc:
            setup["error"] = f"venv setup failed: {exc}"
            raise
        with tempfile.TemporaryDirectory(prefix=f"bench-scale-{spec.name}-") as tmp:
            work = Path(tmp)
            return measure(peer_target(spec, server, bindir, work), result, timeout, work)

    def run(n: int, timeout: float) -> ScaleResult:
        result = ScaleResult(f"{spec.name} {server} x{workers}", durability, n, workers=workers)
        return guarded(result, lambda: body(result, timeout))  # type: ignore[return-value]

    return Case(spec.name, server, workers, durability, run)


def build_cases(args: argparse.Namespace) -> list[Case]:
    labels = durabilities(args.backends)
    cases: list[Case] = []
    for server in args.backends:
        label, workers, peers = labels[server], args.workers, not args.no_peers
        cases += [
            genspool_case(server, w, label, args.max_concurrency, args.genspool_src)
            for w in workers
        ]
        for name in PEERS_BY_BACKEND[server] if peers else ():
            cases += [peer_case(PEER_SPECS[name], server, w, label) for w in workers]
    return cases


# --------------------------------------------------------------------------------------------
# Reporting


def fmt_ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


def split(result: ScaleResult) -> str:
    """How the workers' CPU divides between them (when there are several)."""
    each = result.worker_cpu_each
    if len(each) < 2 or any(c is None for c in each):
        return ""
    return " (" + "/".join(f"{c:.2f}" for c in each if c is not None) + " s)"


def print_run(run_no: int, result: ScaleResult) -> None:
    head = f"  run {run_no} {result.label:<26}"
    if result.error:
        print(f"{head} FAILED:\n    " + result.error.replace("\n", "\n    "))
    else:
        busy = f"{100 * result.machine_busy:.0f}%" if result.machine_busy is not None else "-"
        print(
            f"{head} enqueue {fmt_rate(result.enqueue_rate):>7}/s  "
            f"e2e {fmt_rate(result.e2e_rate):>7}/s ({result.e2e_s:.2f} s)  "
            f"steady {fmt_rate(result.steady_rate):>7}/s  CPU ms/job: workers "
            f"{fmt_ms(result.worker_ms_per_job)}{split(result)}, server "
            f"{fmt_ms(result.server_ms_per_job)}; "
            f"machine busy {busy}"
        )
    sys.stdout.flush()


def print_table(summaries: Sequence[ScaleSummary]) -> None:
    cols = (
        "queue",
        "server",
        "W",
        "enqueue jobs/s",
        "end-to-end jobs/s",
        "steady jobs/s",
        "worker CPU ms/job",
        "server CPU ms/job",
    )
    rows = [
        (
            s.name,
            s.server,
            str(s.workers),
            fmt_stats(s.stats("enqueue_rate")),
            fmt_stats(s.stats("e2e_rate")) if s.status() == "ok" else s.status(),
            fmt_stats(s.stats("steady_rate")),
            fmt_ms(s.median("worker_ms_per_job")),
            fmt_ms(s.median("server_ms_per_job")),
        )
        for s in summaries
    ]
    widths = [max(len(r[i]) for r in (cols, *rows)) for i in range(len(cols))]
    print("\n" + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))


def versus(gen: ScaleSummary | None, peer: ScaleSummary | None) -> dict[str, Any]:
    """genspool's median rates over a peer's."""

    def med(s: ScaleSummary | None, attr: str) -> float | None:
        return s.median(attr) if s else None

    return {
        "fastest_peer": peer.name if peer else None,
        "fastest_peer_e2e": med(peer, "e2e_rate"),
        "vs_fastest_peer_e2e": ratio(med(gen, "e2e_rate"), med(peer, "e2e_rate")),
        "vs_fastest_peer_steady": ratio(med(gen, "steady_rate"), med(peer, "steady_rate")),
    }


def compute_ratios(summaries: Sequence[ScaleSummary], workers: Sequence[int]) -> dict[str, Any]:
    """Per server: genspool over its fastest same-server peer at each W (end-to-end and
    steady), and genspool's (and each peer's) rate at the most workers over one worker."""
    out: dict[str, Any] = {}
    for server in dict.fromkeys(s.server for s in summaries):
        here = [s for s in summaries if s.server == server]
        entry: dict[str, Any] = {}
        for w in workers:
            gen = next((s for s in here if s.name == "genspool" and s.workers == w), None)
            peers = [s for s in here if s.name != "genspool" and s.workers == w and s.median()]
            fastest = max(peers, key=lambda s: s.median() or 0.0, default=None)
            entry[f"x{w}"] = versus(gen, fastest)
        if len(workers) > 1:
            lo, hi = min(workers), max(workers)
            scaling: dict[str, Any] = {}
            for name in dict.fromkeys(s.name for s in here):
                one = next((s for s in here if s.name == name and s.workers == lo), None)
                many = next((s for s in here if s.name == name and s.workers == hi), None)
                if one and many:
                    scaling[name] = {
                        "e2e": ratio(many.median(), one.median()),
                        "steady": ratio(many.median("steady_rate"), one.median("steady_rate")),
                    }
            entry[f"x{hi}_over_x{lo}"] = scaling
        out[server] = entry
    return out


def fmt_ratio(value: float | None) -> str:
    return f"{value:.2f}x" if value is not None else "n/a"


def print_ratios(
    ratios: dict[str, Any], workers: Sequence[int], durability: dict[str, str]
) -> None:
    print(
        "\nratios (medians; targets: genspool >= 2x the fastest same-server peer, "
        "genspool >= 1.6x from 1 to 2 workers)"
    )
    for server, entry in ratios.items():
        print(f"{server} ({durability.get(server, '?')}):")
        for w in workers:
            r = entry[f"x{w}"]
            if r["fastest_peer"] is None:
                print(f"  W={w}: no same-server peer measured")
                continue
            print(
                f"  W={w}: genspool vs fastest peer ({r['fastest_peer']}, "
                f"{fmt_rate(r['fastest_peer_e2e'])}/s): end-to-end "
                f"{fmt_ratio(r['vs_fastest_peer_e2e'])}, steady "
                f"{fmt_ratio(r['vs_fastest_peer_steady'])}"
            )
        key = f"x{max(workers)}_over_x{min(workers)}"
        for name, s in entry.get(key, {}).items():
            print(
                f"  {name} {key.replace('_over_', '/')}: end-to-end {fmt_ratio(s['e2e'])}, "
                f"steady {fmt_ratio(s['steady'])}"
            )


def environment(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "n_jobs": args.jobs,
        "runs": args.runs,
        "cpus": os.cpu_count(),
        "worker_pinning": [" ".join(pin(worker_core(i))) or None for i in range(2)],
        "monitor_pinning": " ".join(pin(0)) or None,
        "max_concurrency": args.max_concurrency,
        "genspool_code": getattr(args, "genspool_commit", None) or "work tree",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "load_before": os.getloadavg(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(doc: dict[str, Any]) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RESULTS_FILE.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {RESULTS_FILE.relative_to(REPO_DIR)}")


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help=f"default {DEFAULT_JOBS:,}")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_JOBS:,} jobs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--workers", default="1,2", help="worker process counts")
    parser.add_argument("--no-peers", action="store_true", help="genspool only")
    parser.add_argument(
        "--max-concurrency",
        type=int,
        default=MAX_CONCURRENCY,
        help="the echo model's max_concurrency, shared by all worker processes",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="per subprocess, seconds")
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run genspool from a copy of HEAD's genspool/ (others may edit the work tree)",
    )
    args = parser.parse_args(argv)
    args.genspool_src = None
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backends {unknown}; choose from {','.join(BACKENDS)}")
    args.workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
    if args.jobs is None:
        args.jobs = QUICK_JOBS if args.quick else DEFAULT_JOBS
    if args.jobs < 1 or not 1 <= args.runs <= 20 or not args.workers or min(args.workers) < 1:
        parser.error("--jobs must be >= 1, --runs 1..20, --workers positive integers")
    return args


def snapshot(into: Path) -> str:
    """Copy HEAD's ``genspool/`` into ``into``; returns the commit."""
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_DIR, capture_output=True, text=True, check=True
    ).stdout.strip()
    archive = subprocess.run(
        ["git", "archive", commit, "genspool"], cwd=REPO_DIR, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return commit


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-genspool-src-") as src:
        if args.snapshot:
            args.genspool_commit = snapshot(Path(src))
            args.genspool_src = src
            print(f"genspool from a snapshot of commit {args.genspool_commit[:12]} in {src}")
        return run(args)


def run(args: argparse.Namespace) -> int:
    env = environment(args)
    print(
        f"scale-out: {args.jobs:,} no-op jobs x {args.runs} runs, workers {args.workers}, "
        f"backends {','.join(args.backends)}; {env['cpus']} cpus, worker i pinned to "
        f"{env['worker_pinning']}, monitor to {env['monitor_pinning']!r}; servers unpinned; "
        f"load average before {', '.join(f'{x:.2f}' for x in env['load_before'])}; genspool "
        f"echo model max_concurrency {args.max_concurrency} (shared by all worker processes)"
    )
    cases = build_cases(args)
    summaries = [
        ScaleSummary(c.label, c.durability, name=c.name, server=c.server, workers=c.workers)
        for c in cases
    ]
    for run_no in range(1, args.runs + 1):
        for case, summary in zip(cases, summaries, strict=True):
            result = case.run(args.jobs, args.timeout)
            summary.runs.append(result)
            print_run(run_no, result)
    print_table(summaries)
    durability = {c.server: c.durability for c in cases}
    ratios = compute_ratios(summaries, args.workers)
    print_ratios(ratios, args.workers, durability)
    print("\ndurability:")
    for server, label in durability.items():
        print(f"  {server}: {label}")
    write_json(
        {
            "environment": env,
            "durability": durability,
            "results": [s.to_json() for s in summaries],
            "ratios": ratios,
            "peers_dir": str(PEERS_DIR.relative_to(REPO_DIR)),
        }
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
