"""Queue-path benchmark: end-to-end no-op jobs/s of genspool and the queues it is set against.

For each peer (Celery, arq, taskiq, huey, the bare SQLite claim loop, and genspool through the
``run_genspool`` hook) and each run: wipe the queue, enqueue N no-op jobs from one producer
process (that loop timed alone), then start ONE worker process and time from its start to the
last stored result (start-up included). A monitor process, started before the worker, polls the
result store and also gives the steady-state rate (first to last result seen). Method and
settings follow ``/work/shared/PEERS.md``; every peer runs in its own venv under
``bench/.venvs/<peer>`` (created on first use) and its code lives in ``bench/peers/``. Producer
and worker are pinned to core 1 and the monitor to core 0 when ``taskset`` exists.

Usage::

    python bench/queue_path.py [--jobs N | --quick] [--runs 3]
        [--peers celery,arq,taskiq,huey,bare-sqlite,genspool] [--timeout 300] [--tree DIR]

``--tree DIR`` runs genspool from another checkout of it (say ``git worktree add /tmp/base
<commit>``): that tree's ``bench/peers/genspool_worker.py`` and its ``genspool`` package, so a
change is measured against the commit before it in the same script run.

Prints one line per run, then a table (medians with min-max) and genspool's ratios, and writes
``bench/results/queue_path.json``. Only the standard library is used here. Redis must be on
127.0.0.1:6379 (database 15 is flushed before every Redis run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

BENCH_DIR = Path(__file__).resolve().parent
REPO_DIR = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
VENVS_DIR = BENCH_DIR / ".venvs"
RESULTS_FILE = BENCH_DIR / "results" / "queue_path.json"

REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 15
REDIS_URL = f"redis://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
DEFAULT_JOBS, QUICK_JOBS = 20_000, 2_000
DEFAULT_PEERS = ("celery", "arq", "taskiq", "huey", "bare-sqlite", "genspool")
FRAMEWORKS = ("celery", "arq", "taskiq", "huey")
SYNC_LEVELS = ("FULL", "NORMAL")
STOP_GRACE_S = 10.0
READY_TIMEOUT_S = 60.0
PIP_TIMEOUT_S = 900.0
TAIL_CHARS = 2_000


class PeerError(Exception):
    """A peer's run failed; the message carries the relevant stderr tail."""


# --------------------------------------------------------------------------------------------
# Results


@dataclass
class Result:
    """One run of one peer at one setting (or why it was skipped or failed)."""

    label: str
    durability: str
    n_jobs: int
    enqueue_s: float | None = None
    e2e_s: float | None = None
    steady_rate: float | None = None
    skipped: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.e2e_s is not None and self.skipped is None and self.error is None

    @property
    def enqueue_rate(self) -> float | None:
        return self.n_jobs / self.enqueue_s if self.enqueue_s else None

    @property
    def e2e_rate(self) -> float | None:
        return self.n_jobs / self.e2e_s if self.e2e_s else None


@dataclass
class Summary:
    """All runs of one label, summarised."""

    label: str
    durability: str
    runs: list[Result] = field(default_factory=list)

    def _rates(self, attr: str) -> list[float]:
        values = (getattr(r, attr) for r in self.runs if r.ok)
        return [v for v in values if v is not None]

    def stats(self, attr: str) -> tuple[float, float, float] | None:
        """(median, min, max) of a rate over the successful runs."""
        rates = self._rates(attr)
        return (statistics.median(rates), min(rates), max(rates)) if rates else None

    def median(self, attr: str = "e2e_rate") -> float | None:
        stats = self.stats(attr)
        return stats[0] if stats else None

    def status(self) -> str:
        """'ok', or why no successful run exists."""
        if any(r.ok for r in self.runs):
            return "ok"
        reasons = {
            r.skipped or "FAILED: " + (r.error or "?").splitlines()[0].rstrip(":")
            for r in self.runs
        }
        return "; ".join(sorted(reasons))[:80]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"label": self.label, "durability": self.durability}
        for attr in ("enqueue_rate", "e2e_rate", "steady_rate"):
            stats = self.stats(attr)
            out[attr] = dict(zip(("median", "min", "max"), stats, strict=True)) if stats else None
        out["status"] = self.status()
        out["runs"] = [
            asdict(r) | {"enqueue_rate": r.enqueue_rate, "e2e_rate": r.e2e_rate} for r in self.runs
        ]
        return out


# --------------------------------------------------------------------------------------------
# Processes


def pin(core: int) -> list[str]:
    """Prefix that pins a command to ``core``, or nothing without taskset or a second core."""
    if shutil.which("taskset") and (os.cpu_count() or 1) > core:
        return ["taskset", "-c", str(core)]
    return []


def tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "").strip()[-TAIL_CHARS:]


def last_json_line(stdout: str) -> dict[str, Any]:
    """The last line of ``stdout`` that parses as a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise PeerError(f"no JSON line in output: {tail(stdout)!r}")


def run_json(
    cmd: Sequence[str], env: dict[str, str], timeout: float, cwd: Path = PEERS_DIR
) -> dict[str, Any]:
    """Run a command to completion (bounded) and return its last JSON line."""
    try:
        proc = subprocess.run(
            list(cmd), env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise PeerError(f"timed out after {timeout:.0f}s: {cmd}\n{tail(exc.stderr)}") from exc
    if proc.returncode != 0:
        raise PeerError(f"exit {proc.returncode}: {' '.join(cmd)}\n{tail(proc.stderr)}")
    return last_json_line(proc.stdout)


def start_logged(cmd: Sequence[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start a long-running process in its own session, output to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            list(cmd),
            env=env,
            cwd=PEERS_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group we started, then SIGKILL it if it lingers."""
    if proc.poll() is not None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Wait (bounded) until ``proc`` has created ``path``."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while not path.exists():
        if proc.poll() is not None:
            raise PeerError(f"monitor exited early:\n{tail(log.read_text(errors='replace'))}")
        if time.monotonic() > deadline:
            raise PeerError("monitor never became ready")
        time.sleep(0.01)


def wait_monitor(
    monitor: subprocess.Popen[bytes],
    worker: subprocess.Popen[bytes],
    logs: tuple[Path, Path],
    timeout: float,
) -> dict[str, Any]:
    """Wait for the monitor's report, failing fast if the worker dies first."""
    deadline = time.monotonic() + timeout
    while monitor.poll() is None:
        if worker.poll() is not None:
            raise PeerError(f"worker exited ({worker.returncode}):\n{tail(logs[1].read_text())}")
        if time.monotonic() > deadline:
            raise PeerError(f"no report after {timeout:.0f}s:\n{tail(logs[1].read_text())}")
        time.sleep(0.05)
    report = last_json_line(logs[0].read_text(errors="replace"))
    if report.get("timed_out"):
        raise PeerError(f"only {report.get('done')} results:\n{tail(logs[1].read_text())}")
    return report


def timings(result: Result, report: dict[str, Any], started: float) -> Result:
    """Fill end-to-end and steady-state figures from a monitor-style report."""
    if report.get("done", 0) < result.n_jobs or report.get("last_seen") is None:
        raise PeerError(f"incomplete report: {report}")
    last, first = float(report["last_seen"]), report.get("first_seen")
    result.e2e_s = last - started
    if first is not None and last > float(first):
        result.steady_rate = (result.n_jobs - int(report["first_seen_done"])) / (last - first)
    return result


# --------------------------------------------------------------------------------------------
# Redis (a few RESP commands over a socket, so that the harness needs no packages)


def read_reply(stream: BinaryIO) -> Any:
    """Read one RESP reply (enough of the protocol for PING, SELECT, FLUSHDB, CONFIG GET)."""
    line = stream.readline().rstrip(b"\r\n")
    kind, rest = line[:1], line[1:]
    if kind == b"-":
        raise PeerError(f"Redis error: {rest.decode()}")
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2].decode()
    if kind == b"*":
        return [read_reply(stream) for _ in range(max(int(rest), 0))]
    if kind == b":":
        return int(rest)
    return rest.decode()


def redis_call(*args: str, db: int | None = None) -> Any:
    """Send one command (after SELECT db if given) and return its reply."""
    commands = [("SELECT", str(db))] if db is not None else []
    commands.append(args)
    payload = b"".join(
        f"*{len(c)}\r\n".encode() + b"".join(f"${len(a)}\r\n{a}\r\n".encode() for a in c)
        for c in commands
    )
    with socket.create_connection((REDIS_HOST, REDIS_PORT), timeout=5) as sock:
        sock.sendall(payload)
        stream = sock.makefile("rb")
        replies = [read_reply(stream) for _ in commands]
    return replies[-1]


def redis_flush() -> None:
    reply = redis_call("FLUSHDB", db=REDIS_DB)
    if reply != "OK":
        raise PeerError(f"FLUSHDB failed: {reply!r}")


def redis_config(name: str) -> str:
    """One CONFIG GET value (for the durability label)."""
    reply = redis_call("CONFIG", "GET", name)
    return str(reply[1]) if isinstance(reply, list) and len(reply) > 1 else "?"


def redis_durability() -> str | None:
    """Durability label for Redis runs, or None if Redis is not reachable."""
    try:
        if redis_call("PING") != "PONG":
            return None
        save, aof = redis_config("save"), redis_config("appendonly")
    except (OSError, PeerError):
        return None
    if not save and aof == "no":
        return "Redis, no persistence"
    return f"Redis, save={save!r} appendonly={aof}"


# --------------------------------------------------------------------------------------------
# Venvs


@dataclass(frozen=True)
class Framework:
    """A queue framework peer: its venv packages, module, worker command and result store."""

    name: str
    packages: tuple[str, ...]
    module: str
    worker: str  # command line; its first word is a script in the venv's bin/
    store: str  # "redis" or "sqlite"

    def worker_argv(self, bindir: Path) -> list[str]:
        program, *args = self.worker.split()
        return [str(bindir / program), *args]


FRAMEWORK_SPECS = {
    "celery": Framework(
        "celery",
        ("celery[redis]==5.*", "hiredis"),
        "celery_app.py",
        "celery -A celery_app:app worker -P solo --without-gossip --without-mingle"
        " --without-heartbeat -l WARNING",
        "redis",
    ),
    "arq": Framework(
        "arq",
        ("arq==0.28.*", "hiredis", "uvloop"),
        "arq_app.py",
        "python arq_app.py worker",  # max_jobs=500, poll_delay=0.01, uvloop: in arq_app.py
        "redis",
    ),
    "taskiq": Framework(
        "taskiq",
        ("taskiq==0.13.*", "taskiq-redis", "hiredis", "uvloop"),
        "taskiq_app.py",
        "taskiq worker taskiq_app:broker --workers 1 --max-async-tasks 1000"
        " --max-prefetch 1000 --log-level WARNING",
        "redis",
    ),
    "huey": Framework(
        "huey",
        ("huey==3.5.*",),
        "huey_app.py",
        "huey_consumer huey_app.huey -w 4 -k thread -q",
        "sqlite",
    ),
}


def ensure_venv(spec: Framework) -> Path:
    """Create ``bench/.venvs/<peer>`` and install its packages unless already done."""
    venv = VENVS_DIR / spec.name
    marker = venv / ".bench-installed"
    wanted = "\n".join(spec.packages)
    if marker.exists() and marker.read_text() == wanted:
        return venv / "bin"
    print(f"  setting up {venv.relative_to(REPO_DIR)}: pip install {' '.join(spec.packages)}")
    steps = [[sys.executable, "-m", "venv", str(venv)]]
    steps.append([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", *spec.packages])
    for step in steps:
        try:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=PIP_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"timed out: {' '.join(step)}") from exc
        if proc.returncode != 0:
            raise PeerError(f"{' '.join(step)} failed:\n{tail(proc.stderr)}")
    marker.write_text(wanted)
    return venv / "bin"


# --------------------------------------------------------------------------------------------
# Runners: each returns one Result and never raises


@dataclass(frozen=True)
class Case:
    """One labelled measurement the harness repeats ``--runs`` times."""

    label: str
    durability: str
    run: Callable[[int, float], Result]


def peer_env(db: Path | None = None) -> dict[str, str]:
    env = dict(os.environ, BENCH_REDIS_URL=REDIS_URL, PYTHONPATH=str(PEERS_DIR))
    if db is not None:
        env["BENCH_DB"] = str(db)
    return env


def measure_framework(spec: Framework, bindir: Path, result: Result, timeout: float) -> Result:
    """Wipe, enqueue, start the monitor, start the worker, wait for the last result, stop."""
    python, n = str(bindir / "python"), result.n_jobs
    with tempfile.TemporaryDirectory(prefix=f"bench-{spec.name}-") as tmp:
        work = Path(tmp)
        env = peer_env(work / "huey.db" if spec.store == "sqlite" else None)
        if spec.store == "redis":
            redis_flush()
        args = ["--jobs", str(n), "--timeout", str(timeout)]
        produced = run_json([*pin(1), python, spec.module, "enqueue", *args], env, timeout)
        result.enqueue_s = float(produced["seconds"])
        logs = (work / "monitor.log", work / "worker.log")
        wait_cmd = [*pin(0), python, spec.module, "wait", *args, "--ready", str(work / "ready")]
        monitor = start_logged(wait_cmd, env, logs[0])
        worker: subprocess.Popen[bytes] | None = None
        try:
            wait_for_file(work / "ready", monitor, logs[0])
            started = time.time()
            worker = start_logged([*pin(1), *spec.worker_argv(bindir)], env, logs[1])
            report = wait_monitor(monitor, worker, logs, timeout)
        finally:
            for proc in (worker, monitor):
                if proc is not None:
                    stop(proc)
        return timings(result, report, started)


def guarded(result: Result, body: Callable[[], Result]) -> Result:
    """Run ``body``; turn a failure into ``result.error`` instead of an exception."""
    try:
        return body()
    except (PeerError, OSError, ValueError, KeyError) as exc:
        result.error = str(exc) or type(exc).__name__
        return result


def framework_case(spec: Framework, durability: str) -> Case:
    setup: dict[str, Path | str] = {}  # "bindir" once set up, or "error" once it failed

    def body(result: Result, timeout: float) -> Result:
        if spec.store == "redis" and durability.startswith("unavailable"):
            raise PeerError("Redis is not reachable on 127.0.0.1:6379")
        if "error" in setup:
            raise PeerError(str(setup["error"]))
        if "bindir" not in setup:
            try:
                setup["bindir"] = ensure_venv(spec)
            except PeerError as exc:
                setup["error"] = f"venv setup failed: {exc}"
                raise PeerError(str(setup["error"])) from exc
        return measure_framework(spec, Path(setup["bindir"]), result, timeout)

    def run(n: int, timeout: float) -> Result:
        result = Result(spec.name, durability, n)
        return guarded(result, lambda: body(result, timeout))

    return Case(spec.name, durability, run)


def run_bare_sqlite(n_jobs: int, synchronous: str, timeout: float) -> Result:
    """The bare claim loop: enqueue process, then worker process, on a fresh file."""
    result = Result(f"bare-sqlite {synchronous}", f"SQLite {synchronous} (WAL)", n_jobs)

    def body() -> Result:
        with tempfile.TemporaryDirectory(prefix="bench-bare-") as tmp:
            base = [sys.executable, "bare_sqlite.py"]
            opts = ["--db", f"{tmp}/bare.db", "--jobs", str(n_jobs)]
            opts += ["--synchronous", synchronous, "--timeout", str(timeout)]
            produced = run_json([*pin(1), *base, "enqueue", *opts], peer_env(), timeout)
            result.enqueue_s = float(produced["seconds"])
            started = time.time()
            report = run_json([*pin(1), *base, "worker", *opts], peer_env(), timeout)
            return timings(result, report, started)

    return guarded(result, body)


# ============================================================================================
# GENSPOOL HOOK — the lead fills in bench/peers/genspool_worker.py (its docstring gives the
# contract). This function runs it and turns its JSON line into a Result: {"skipped": ...} is
# reported as skipped, {"error": ...} or a non-zero exit as a failure.
# ============================================================================================


def genspool_python() -> str:
    """The project's venv python (genspool installed there), else this interpreter."""
    venv_python = REPO_DIR / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def genspool_env(tree: Path | None) -> tuple[Path, dict[str, str]]:
    """Where genspool_worker.py runs and its environment: this checkout, or ``tree``'s code
    (first on PYTHONPATH, ahead of the editable install, for the worker process too)."""
    if tree is None:
        return PEERS_DIR, peer_env()
    peers = tree / "bench" / "peers"
    return peers, dict(peer_env(), PYTHONPATH=os.pathsep.join([str(peers), str(tree)]))


def run_genspool(
    n_jobs: int, synchronous: str, timeout: float = 300.0, tree: Path | None = None
) -> Result:
    """Run ``python bench/peers/genspool_worker.py`` for one measurement of genspool."""
    result = Result(f"genspool {synchronous}", f"SQLite {synchronous} (WAL)", n_jobs)
    cwd, env = genspool_env(tree)

    def body() -> Result:
        with tempfile.TemporaryDirectory(prefix="bench-genspool-") as tmp:
            cmd = [*pin(1), genspool_python(), "genspool_worker.py", "--jobs", str(n_jobs)]
            cmd += ["--synchronous", synchronous, "--workdir", tmp, "--timeout", str(timeout)]
            report = run_json(cmd, env, timeout + 30, cwd)
        if "skipped" in report:
            result.skipped = str(report["skipped"])
            return result
        if "error" in report:
            raise PeerError(str(report["error"]))
        result.enqueue_s = float(report["enqueue_seconds"])
        return timings(result, report, float(report["worker_started"]))

    return guarded(result, body)


# ============================================================================================


def build_cases(peers: Sequence[str], tree: Path | None = None) -> list[Case]:
    """The measurements for the chosen peers, in run order."""
    needs_redis = any(FRAMEWORK_SPECS[p].store == "redis" for p in peers if p in FRAMEWORKS)
    redis_label = (redis_durability() if needs_redis else None) or "unavailable: Redis"
    cases: list[Case] = []
    for peer in peers:
        if peer in FRAMEWORK_SPECS:
            spec = FRAMEWORK_SPECS[peer]
            durability = redis_label if spec.store == "redis" else "SQLite FULL (WAL)"
            cases.append(framework_case(spec, durability))
        elif peer == "bare-sqlite":
            cases += [bare_case(s) for s in SYNC_LEVELS]
        elif peer == "genspool":
            cases += [genspool_case(s, tree) for s in SYNC_LEVELS]
    return cases


def bare_case(sync: str) -> Case:
    return Case(
        f"bare-sqlite {sync}", f"SQLite {sync} (WAL)", lambda n, t: run_bare_sqlite(n, sync, t)
    )


def genspool_case(sync: str, tree: Path | None = None) -> Case:
    return Case(
        f"genspool {sync}", f"SQLite {sync} (WAL)", lambda n, t: run_genspool(n, sync, t, tree)
    )


# --------------------------------------------------------------------------------------------
# Reporting


def fmt_rate(value: float | None) -> str:
    return f"{value:,.0f}" if value is not None else "-"


def fmt_stats(stats: tuple[float, float, float] | None) -> str:
    if stats is None:
        return "-"
    return f"{stats[0]:,.0f} ({stats[1]:,.0f}-{stats[2]:,.0f})"


def print_run(run_no: int, result: Result) -> None:
    head = f"  run {run_no} {result.label:<18}"
    if result.skipped:
        print(f"{head} skipped: {result.skipped}")
    elif result.error:
        print(f"{head} FAILED:\n    " + result.error.replace("\n", "\n    "))
    else:
        print(
            f"{head} enqueue {fmt_rate(result.enqueue_rate):>8}/s   "
            f"e2e {fmt_rate(result.e2e_rate):>8}/s ({result.e2e_s:.2f} s)   "
            f"steady {fmt_rate(result.steady_rate):>8}/s"
        )
    sys.stdout.flush()


def print_table(summaries: Sequence[Summary]) -> None:
    cols = ("peer", "durability", "enqueue jobs/s", "end-to-end jobs/s", "steady jobs/s")
    rows = [
        (
            s.label,
            s.durability,
            fmt_stats(s.stats("enqueue_rate")),
            fmt_stats(s.stats("e2e_rate")) if s.status() == "ok" else s.status(),
            fmt_stats(s.stats("steady_rate")),
        )
        for s in summaries
    ]
    widths = [max(len(str(r[i])) for r in (cols, *rows)) for i in range(len(cols))]
    print("\n" + "  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))


def compute_ratios(summaries: Sequence[Summary]) -> dict[str, Any]:
    """genspool's median end-to-end rate over the fastest framework and the bare loop."""
    by_label = {s.label: s for s in summaries}
    frameworks = [s for s in summaries if s.label in FRAMEWORKS and s.median() is not None]
    fastest = max(frameworks, key=lambda s: s.median() or 0.0, default=None)
    out: dict[str, Any] = {"fastest_peer": fastest.label if fastest else None}
    for sync in SYNC_LEVELS:
        gen = by_label.get(f"genspool {sync}")
        bare = by_label.get(f"bare-sqlite {sync}")
        rate = gen.median() if gen else None
        out[f"genspool {sync}"] = {
            "vs_fastest_peer": ratio(rate, fastest.median() if fastest else None),
            "vs_bare_sqlite": ratio(rate, bare.median() if bare else None),
            "status": gen.status() if gen else "not run",
        }
    return out


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def print_ratios(ratios: dict[str, Any], summaries: Sequence[Summary]) -> None:
    by_label = {s.label: s for s in summaries}
    fastest = ratios["fastest_peer"]
    if fastest:
        peer = by_label[fastest]
        print(
            f"\nfastest framework peer: {fastest} {fmt_rate(peer.median())}/s ({peer.durability})"
        )
    for sync in SYNC_LEVELS:
        entry = ratios[f"genspool {sync}"]
        if entry["status"] != "ok":
            print(f"genspool {sync}: {entry['status']}: no ratio")
            continue
        parts = [
            f"{v:.2f}x {k.removeprefix('vs_').replace('_', ' ')}"
            for k, v in entry.items()
            if k.startswith("vs_") and v is not None
        ]
        print(f"genspool {sync} end-to-end: " + ", ".join(parts) + f" (bare at {sync})")


def fsync_ms(samples: int = 50) -> float:
    """Median fsync latency of a 4 KiB append in the temp dir (what synchronous=FULL pays)."""
    times = []
    with tempfile.NamedTemporaryFile() as probe:
        for _ in range(samples):
            probe.write(b"x" * 4096)
            probe.flush()
            start = time.perf_counter()
            os.fsync(probe.fileno())
            times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def environment(n_jobs: int, runs: int) -> dict[str, Any]:
    return {
        "fsync_ms_median": round(fsync_ms(), 3),
        "tempdir": tempfile.gettempdir(),
        "n_jobs": n_jobs,
        "runs": runs,
        "worker_pinning": " ".join(pin(1)) or None,
        "monitor_pinning": " ".join(pin(0)) or None,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_json(env: dict[str, Any], summaries: Sequence[Summary], ratios: dict[str, Any]) -> None:
    RESULTS_FILE.parent.mkdir(parents=True, exist_ok=True)
    doc = {"environment": env, "results": [s.to_json() for s in summaries], "ratios": ratios}
    RESULTS_FILE.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nwrote {RESULTS_FILE.relative_to(REPO_DIR)}")


# --------------------------------------------------------------------------------------------
# Main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=None, help=f"default {DEFAULT_JOBS:,}")
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK_JOBS:,} jobs")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--peers", default=",".join(DEFAULT_PEERS))
    parser.add_argument("--timeout", type=float, default=300.0, help="per subprocess, seconds")
    parser.add_argument("--tree", type=Path, default=None, help="run genspool from this checkout")
    args = parser.parse_args(argv)
    args.peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = sorted(set(args.peers) - set(DEFAULT_PEERS))
    if unknown:
        parser.error(f"unknown peers {unknown}; choose from {','.join(DEFAULT_PEERS)}")
    if args.jobs is None:
        args.jobs = QUICK_JOBS if args.quick else DEFAULT_JOBS
    if args.jobs < 1 or not 1 <= args.runs <= 20:
        parser.error("--jobs must be >= 1 and --runs 1..20")
    return args


def print_header(env: dict[str, Any]) -> None:
    pinning = (
        f"producer and worker pinned with `{env['worker_pinning']}`, monitor with "
        f"`{env['monitor_pinning']}`"
        if env["worker_pinning"]
        else "no taskset (or one core): processes NOT pinned"
    )
    print(f"queue path: {env['n_jobs']:,} no-op jobs x {env['runs']} runs; {pinning}")
    print(
        f"python {env['python']}, sqlite {env['sqlite']}, {env['cpus']} cpus; "
        f"fsync {env['fsync_ms_median']:.2f} ms (median) in {env['tempdir']}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    env = environment(args.jobs, args.runs)
    print_header(env)
    cases = build_cases(args.peers, args.tree)
    summaries = [Summary(c.label, c.durability) for c in cases]
    for run_no in range(1, args.runs + 1):
        for case, summary in zip(cases, summaries, strict=True):
            result = case.run(args.jobs, args.timeout)
            summary.runs.append(result)
            print_run(run_no, result)
    print_table(summaries)
    ratios = compute_ratios(summaries)
    print_ratios(ratios, summaries)
    write_json(env, summaries, ratios)
    return 0


if __name__ == "__main__":
    sys.exit(main())
