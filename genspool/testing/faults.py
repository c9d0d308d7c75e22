"""A **fault-injecting** OpenAI-compatible model server, for tests only: it misbehaves on
purpose, and computes nothing.

It serves ``/v1/chat/completions`` (the last message comes back as the answer),
``/v1/embeddings`` (a hash of each input as an 8-float vector), ``/v1/models`` and the other
OpenAI endpoints a remote model may pass through (completions, responses, moderations, rerank,
images, speech, transcriptions: :mod:`genspool.testing._endpoints`), with valid OpenAI bodies
and usage — except when a fault is drawn. Each model request draws one outcome from a seeded
RNG (reproducible for a given order of arrivals): a 429 with ``Retry-After``, a 5xx
(500/502/503), a connection reset (the socket is closed without an answer), a hang of
``hang_s`` (past the client's timeout), a 200 with a malformed JSON body, or a good answer; a
base latency (plus jitter) comes first. A request with ``stream: true`` gets the same one JSON
body (a remote that does not stream, which clients must accept). It binds to 127.0.0.1 only.

Per-model scripts (:mod:`genspool.testing._scripts`) take a request out of the draw: the first
rule matching its ``model`` sets its latency, outcome and answer (a fixed text, or an agent's
sequence of assistant messages with tool calls). While a request waits out its latency or hang,
the server watches its connection: a client that closes it (gave up, timed out, was cancelled)
ends the request at once, with nothing written, and the stats record the abort.

Control, also while it runs: ``GET``/``POST /_faults`` reads/changes the faults (JSON, any
subset of :class:`Faults`' fields); ``GET``/``POST /_faults/script`` reads/replaces the rules
(``{"rules": [...]}``); ``GET /_faults/stats`` counts outcomes, aborts (``aborted``), the
requests in flight now and at the peak (``in_flight``, ``max_in_flight``, and per model in
``by_model``), and, per request, its arrival times, outcomes, abort times and seconds from
arrival to abort (times are wall clock, ``time.time()``; a request is known by its ``user``
field, else by its last message or its input, so a test can tell how often each job was tried);
``POST /_faults/reset`` clears the counts and the rules.

In a test: ``with FaultServer(error_rate=0.3) as url: ...`` (a thread in this process; the
OpenAI base URL is ``url + "/v1"``). As a process:
``python -m genspool.testing.faults --port 0 --error-rate 0.3 [--script rules.json]`` prints
its URL, then serves until SIGTERM/SIGINT.

It is a small HTTP/1.1 server on asyncio streams rather than an ASGI app: an ASGI server cannot
drop a connection without answering, which is one of the faults, nor tell the moment a waiting
client leaves. It is one module (with its scripts beside it) so that it runs as
``python -m genspool.testing.faults`` and reads, top to bottom, as the specification of every
fault a test can ask for.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import http
import random
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from genspool.testing import _endpoints
from genspool.testing._scripts import Rule, chat_answer, parse_rules, words

__all__ = ["FaultServer", "Faults", "main"]

LOOPBACK = frozenset({"127.0.0.1", "localhost"})
MODEL_PATHS = frozenset({"/v1/chat/completions", "/v1/embeddings"}) | _endpoints.PATHS
MALFORMED = b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": [{"ind'


@dataclass
class Faults:
    """What share of model requests gets each fault (the shares add up to at most 1)."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    rate_429: float = 0.0
    retry_after_s: float = 1.0
    error_rate: float = 0.0
    error_statuses: list[int] = field(default_factory=lambda: [500, 502, 503])
    reset_rate: float = 0.0
    hang_rate: float = 0.0
    hang_s: float = 30.0
    malformed_rate: float = 0.0
    seed: int | None = 0

    def __post_init__(self) -> None:
        rates = [self.rate_429, self.error_rate, self.reset_rate, self.hang_rate]
        rates.append(self.malformed_rate)
        if any(r < 0 for r in rates) or sum(rates) > 1 + 1e-9:
            raise ValueError("fault rates must be >= 0 and add up to at most 1")
        if not self.error_statuses or any(not 500 <= s < 600 for s in self.error_statuses):
            raise ValueError("error_statuses must be 5xx codes")

    def draw(self, rng: random.Random) -> str:
        """One outcome: ``429``, a 5xx status, ``reset``, ``hang``, ``malformed`` or ``ok``."""
        u = rng.random()
        for outcome, rate in (
            ("429", self.rate_429),
            ("5xx", self.error_rate),
            ("reset", self.reset_rate),
            ("hang", self.hang_rate),
            ("malformed", self.malformed_rate),
        ):
            if u < rate:
                return str(rng.choice(self.error_statuses)) if outcome == "5xx" else outcome
            u -= rate
        return "ok"


class _State:
    """Faults, scripts, RNG and counters, shared by the server's loop and the test's thread."""

    def __init__(self, faults: Faults, rules: Sequence[Rule] = ()) -> None:
        self.lock = threading.Lock()
        self.faults = faults
        self.rules = list(rules)
        self.rng = random.Random(faults.seed)
        self.outcomes: dict[str, int] = {}
        self.requests: dict[str, dict[str, list[Any]]] = {}
        self.aborted = 0
        self.flight = _Flight()
        self.by_model: dict[str, _Flight] = {}

    def configure(self, changes: dict[str, Any]) -> Faults:
        with self.lock:
            unknown = set(changes) - {f.name for f in dataclasses.fields(Faults)}
            if unknown:
                raise ValueError(f"unknown fault settings: {sorted(unknown)}")
            self.faults = dataclasses.replace(self.faults, **changes)
            if "seed" in changes:
                self.rng = random.Random(self.faults.seed)
            return self.faults

    def script(self, raw: Any) -> list[Rule]:
        """Replace the rules (all checked first: a bad one leaves the old rules in place)."""
        rules = parse_rules(raw)
        with self.lock:
            self.rules = rules
            return list(rules)

    def decide(self, key: str, model: str) -> _Plan:
        """The outcome and delay of one arriving request (its model's rule, else a draw); it
        is counted, and in flight until :meth:`done`."""
        with self.lock:
            f = self.faults
            rule = next((r for r in self.rules if r.matches(model)), None)
            outcome = rule.drawn if rule else f.draw(self.rng)
            if rule is not None and rule.latency_s is not None:
                delay = rule.latency_s
            else:
                delay = f.latency_s + (self.rng.uniform(0, f.jitter_s) if f.jitter_s else 0.0)
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
            seen = self._seen(key)
            seen["arrivals"].append(time.time())
            seen["outcomes"].append(outcome)
            self.flight.enter()
            self.by_model.setdefault(model, _Flight()).enter()
            return _Plan(key, outcome, delay, f, rule)

    def done(self, model: str) -> None:
        with self.lock:
            self.flight.leave()
            self.by_model[model].leave()

    def abort(self, key: str, after_s: float) -> None:
        """Count a request whose client closed the connection before it was answered."""
        with self.lock:
            self.aborted += 1
            seen = self._seen(key)  # new if a reset came while it waited
            seen["aborted"].append(time.time())
            seen["aborted_after_s"].append(after_s)

    def _seen(self, key: str) -> dict[str, list[Any]]:
        return self.requests.setdefault(key, {n: [] for n in _PER_REQUEST})

    def stats(self) -> dict[str, Any]:
        with self.lock:
            requests = {
                k: {"count": len(v["arrivals"]), **{n: list(x) for n, x in v.items()}}
                for k, v in self.requests.items()
            }
            total = sum(self.outcomes.values())
            return {
                "total": total,
                "outcomes": dict(self.outcomes),
                "requests": requests,
                "aborted": self.aborted,
                **self.flight.stats(),
                "by_model": {
                    m: {**f.stats(), "requests": f.requests} for m, f in self.by_model.items()
                },
            }

    def reset(self) -> None:
        """Clear the counts and the scripts; the requests in flight stay counted as such."""
        with self.lock:
            self.outcomes.clear()
            self.requests.clear()
            self.rules = []
            self.aborted = 0
            self.flight = self.flight.restarted()
            self.by_model = {m: f.restarted() for m, f in self.by_model.items() if f.now}


#: What the stats keep of each request (by :func:`request_key`): wall-clock times (``time.time``,
#: so a test can compare them with its own), outcomes, and the seconds from arrival to abort.
_PER_REQUEST = ("arrivals", "outcomes", "aborted", "aborted_after_s")


@dataclass
class _Flight:
    """Requests being handled now, the peak since the last reset, and how many arrived."""

    now: int = 0
    peak: int = 0
    requests: int = 0

    def enter(self) -> None:
        self.now += 1
        self.requests += 1
        self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        self.now -= 1

    def restarted(self) -> _Flight:
        return _Flight(self.now, self.now)

    def stats(self) -> dict[str, int]:
        return {"in_flight": self.now, "max_in_flight": self.peak}


@dataclass(frozen=True)
class _Plan:
    """What to do with one request: its outcome, the wait before it, and the rule (if any)."""

    key: str
    outcome: str
    delay: float
    faults: Faults
    rule: Rule | None


# -- answers -----------------------------------------------------------------------------------


def request_key(body: dict[str, Any]) -> str:
    """How a request is known in the stats: ``user``, else its last message, else its input."""
    if body.get("user"):
        return str(body["user"])
    messages = body.get("messages")
    if isinstance(messages, list) and messages and isinstance(messages[-1], dict):
        return str(messages[-1].get("content", ""))
    for name in ("input", "prompt", "query", "file_name"):
        if body.get(name):
            return str(body[name])[:200]
    return ""


def _embeddings(body: dict[str, Any]) -> dict[str, Any]:
    inputs = body.get("input", "")
    texts = inputs if isinstance(inputs, list) else [inputs]
    digests = [hashlib.blake2b(str(t).encode(), digest_size=8).digest() for t in texts]
    data = [
        {"object": "embedding", "index": i, "embedding": [b / 255 for b in d]}
        for i, d in enumerate(digests)
    ]
    tokens = sum(words(t) for t in texts)
    return {
        "object": "list",
        "data": data,
        "model": str(body.get("model", "fault-model")),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def _models() -> dict[str, Any]:
    model = {"id": "fault-model", "object": "model", "created": 0, "owned_by": "genspool-faults"}
    return {"object": "list", "data": [model]}


# -- HTTP --------------------------------------------------------------------------------------


class _Reply:
    def __init__(
        self,
        status: int,
        body: bytes | dict[str, Any],
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self.status, self.headers, self.content_type = status, headers or {}, content_type
        self.body = body if isinstance(body, bytes) else orjson.dumps(body)

    def encode(self) -> bytes:
        head = [f"HTTP/1.1 {self.status} {http.HTTPStatus(self.status).phrase}"]
        head += [f"Content-Type: {self.content_type}", f"Content-Length: {len(self.body)}"]
        head += [f"{k}: {v}" for k, v in self.headers.items()]
        return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + self.body


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> _Reply:
    body = {"error": {"message": message, "type": "fault_injected", "code": str(status)}}
    return _Reply(status, body, headers)


#: How a request can end without an answer: the socket reset on purpose, or the client gone.
_Drop = Literal["reset", "aborted"]


class _Link:
    """One client connection. While a request waits out its latency or hang, the server reads
    ahead to notice the client closing the connection; a byte read that way is the start of a
    pipelined next request, kept for it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.early = b""

    async def head(self) -> list[str]:
        early, self.early = self.early, b""
        raw = early + await self.reader.readuntil(b"\r\n\r\n")
        return raw.decode("latin-1").split("\r\n")

    async def left_during(self, seconds: float) -> bool:
        """Wait ``seconds`` unless the client closes the connection first; whether it did.

        EOF counts as leaving: HTTP/1.1 clients do not half-close while awaiting an answer."""
        if seconds <= 0:
            return False
        if self.early:  # already read ahead: nothing more to watch on this request
            await asyncio.sleep(seconds)
            return False
        deadline = asyncio.get_running_loop().time() + seconds
        watch = asyncio.ensure_future(self.reader.read(1))
        try:
            await asyncio.wait({watch}, timeout=seconds)
        finally:
            if not watch.done():
                watch.cancel()  # a read cancelled before it returns consumes nothing
                await asyncio.wait({watch})  # until it lets go of the reader, for the next request
        if watch.cancelled():
            return False
        if watch.exception() is not None:
            return True  # reset by the peer
        self.early = watch.result()
        if not self.early:
            return True
        await asyncio.sleep(max(0.0, deadline - asyncio.get_running_loop().time()))
        return False


class _Connections:
    """The HTTP side: parse requests, route them, act out the drawn or scripted fault."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.tasks: set[asyncio.Task[None]] = set()

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        link = _Link(reader, writer)
        try:
            while await self._one(link):
                pass
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        except asyncio.CancelledError:
            pass  # shutting down; ending quietly keeps asyncio's stream callback from logging it
        finally:
            if task is not None:
                self.tasks.discard(task)
            writer.close()

    async def _one(self, link: _Link) -> bool:
        """Serve one request; whether the connection stays open."""
        head = await link.head()
        method, target = head[0].split(" ")[:2]
        headers = {
            k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in head[1:] if ":" in h)
        }
        if "chunked" in headers.get("transfer-encoding", ""):
            await self._send(link.writer, _error(411, "send a Content-Length"))
            return False
        raw = await link.reader.readexactly(int(headers.get("content-length", "0")))
        kind = headers.get("content-type", "")
        if kind.startswith("multipart/form-data"):
            raw = orjson.dumps(_endpoints.form(raw, kind))  # an upload, read as its fields
        reply = await self._route(method, target.split("?")[0], raw, link)
        if reply == "reset":
            _reset(link.writer)
            return False
        if reply == "aborted":  # the client is gone: nothing is written, the socket is closed
            return False
        await self._send(link.writer, reply)
        return headers.get("connection", "").lower() != "close"

    async def _route(self, method: str, path: str, raw: bytes, link: _Link) -> _Reply | _Drop:
        if path in MODEL_PATHS and method == "POST":
            return await self._model(path, raw, link)
        if path == "/v1/models" and method == "GET":
            return _Reply(200, _models())
        if path.startswith("/_faults"):
            return self._control(method, path, raw)
        return _error(404, f"no route {method} {path}")

    def _control(self, method: str, path: str, raw: bytes) -> _Reply:
        if (method, path) == ("GET", "/_faults/stats"):
            return _Reply(200, self.state.stats())
        if (method, path) == ("POST", "/_faults/reset"):
            self.state.reset()
            return _Reply(200, {"reset": True})
        if path == "/_faults/script" and method in ("GET", "POST"):
            return self._script(method, raw)
        if path != "/_faults" or method not in ("GET", "POST"):
            return _error(404, f"no route {method} {path}")
        if method == "POST":
            try:
                self.state.configure(orjson.loads(raw or b"{}"))
            except (ValueError, TypeError) as exc:
                return _error(400, str(exc))
        return _Reply(200, dataclasses.asdict(self.state.faults))

    def _script(self, method: str, raw: bytes) -> _Reply:
        if method == "POST":
            try:
                body = orjson.loads(raw or b"{}")
                if not isinstance(body, dict) or set(body) != {"rules"}:
                    raise ValueError('the body must be {"rules": [...]}')
                self.state.script(body["rules"])
            except ValueError as exc:  # orjson's decode error is one too
                return _error(400, str(exc))
        with self.state.lock:
            return _Reply(200, {"rules": [r.to_json() for r in self.state.rules]})

    async def _model(self, path: str, raw: bytes, link: _Link) -> _Reply | _Drop:
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        messages = body.get("messages", [{}])
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return _error(400, "messages must be a list of message objects")
        model = str(body.get("model", ""))
        plan = self.state.decide(request_key(body), model)
        try:
            return await self._act(path, body, plan, link)
        finally:
            self.state.done(model)

    async def _act(
        self, path: str, body: dict[str, Any], plan: _Plan, link: _Link
    ) -> _Reply | _Drop:
        """Wait (watching for the client leaving), then answer as planned."""
        outcome, faults, started = plan.outcome, plan.faults, time.monotonic()
        wait = plan.delay + (faults.hang_s if outcome == "hang" else 0.0)
        if await link.left_during(wait):
            self.state.abort(plan.key, time.monotonic() - started)
            return "aborted"
        if outcome == "reset":
            return "reset"
        if outcome == "429":
            after = {"Retry-After": f"{faults.retry_after_s:g}"}
            return _error(429, "rate limited (fault injected)", after)
        if outcome.isdigit():
            return _error(int(outcome), f"server error {outcome} (fault injected)")
        if outcome == "malformed":
            return _Reply(200, MALFORMED)
        if path == "/v1/embeddings":
            return _Reply(200, _embeddings(body))
        if path in _endpoints.PATHS:
            kind, answer = _endpoints.answer(path, body)
            return _Reply(200, answer, content_type=kind)
        scripted = plan.rule.message(body.get("messages")) if plan.rule else None
        return _Reply(200, chat_answer(body, scripted))

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, reply: _Reply) -> None:
        writer.write(reply.encode())
        await writer.drain()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP RST rather than a FIN: the client sees the connection reset."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _check_host(host: str) -> str:
    if host not in LOOPBACK:
        raise ValueError(f"the fault server binds to 127.0.0.1 only, not {host!r}")
    return "127.0.0.1"


async def _start(state: _State, port: int) -> tuple[asyncio.Server, _Connections]:
    conns = _Connections(state)
    server = await asyncio.start_server(conns.serve, "127.0.0.1", port)
    return server, conns


async def _shutdown(server: asyncio.Server, conns: _Connections) -> None:
    server.close()
    for task in list(conns.tasks):
        task.cancel()
    await asyncio.gather(*conns.tasks, return_exceptions=True)
    await server.wait_closed()


class FaultServer:
    """The fault server on a thread of this process. ``with FaultServer(...) as url`` gives its
    root URL (``http://127.0.0.1:<port>``); ``configure``, ``stats`` and ``reset`` act on it
    directly (or use the ``/_faults`` routes); ``scripts`` (or :meth:`script`) sets the rules
    of :mod:`genspool.testing._scripts`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        scripts: Sequence[Mapping[str, Any]] = (),
        **faults: Any,
    ) -> None:
        _check_host(host)
        self.port = port
        self._state = _State(Faults(**faults), parse_rules(list(scripts)))
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, **changes: Any) -> Faults:
        return self._state.configure(changes)

    def stats(self) -> dict[str, Any]:
        return self._state.stats()

    def script(self, rules: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Replace the per-model rules; a bad rule raises ValueError saying where it is wrong."""
        return [r.to_json() for r in self._state.script(list(rules))]

    def rules(self) -> list[dict[str, Any]]:
        with self._state.lock:
            return [r.to_json() for r in self._state.rules]

    def reset(self) -> None:
        """Clear the counts and the scripts (the faults stay as configured)."""
        self._state.reset()

    def start(self) -> str:
        self._thread = threading.Thread(target=self._run, name="fault-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"the fault server did not start: {self._error}")
        return self.url

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        server, conns = await _start(self._state, self.port)
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        await self._stop.wait()
        await _shutdown(server, conns)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- as a process ------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m genspool.testing.faults",
        description="A fault-injecting OpenAI-compatible model server, for tests only.",
    )
    p.add_argument("--host", default="127.0.0.1", help="127.0.0.1 only; anything else is refused")
    p.add_argument("--port", type=int, default=0, help="0: any free port (printed)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument("--jitter-ms", type=float, default=0.0)
    p.add_argument("--rate-429", type=float, default=0.0, help="share of 429 answers")
    p.add_argument("--retry-after", type=float, default=1.0, help="Retry-After of a 429, s")
    p.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers")
    p.add_argument("--error-statuses", default="500,502,503", help="5xx codes to draw from")
    p.add_argument("--reset-rate", type=float, default=0.0, help="share of connection resets")
    p.add_argument("--hang-rate", type=float, default=0.0, help="share of hangs")
    p.add_argument("--hang-s", type=float, default=30.0, help="how long a hang lasts")
    p.add_argument("--malformed-rate", type=float, default=0.0, help="share of broken JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--script", metavar="FILE.json", help='per-model rules: {"rules": [...]}')
    return p


def _script(path: str | None) -> list[Rule]:
    """The rules of a ``--script`` file: ``{"rules": [...]}`` or the bare list."""
    if path is None:
        return []
    try:
        with open(path, "rb") as file:
            raw = orjson.loads(file.read())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise ValueError(f"--script {path}: {exc}") from exc
    rules = raw.get("rules") if isinstance(raw, dict) else raw
    try:
        return parse_rules(rules)
    except ValueError as exc:
        raise ValueError(f"--script {path}: {exc}") from exc


def _faults(args: argparse.Namespace) -> Faults:
    return Faults(
        latency_s=args.latency_ms / 1000,
        jitter_s=args.jitter_ms / 1000,
        rate_429=args.rate_429,
        retry_after_s=args.retry_after,
        error_rate=args.error_rate,
        error_statuses=[int(s) for s in args.error_statuses.split(",")],
        reset_rate=args.reset_rate,
        hang_rate=args.hang_rate,
        hang_s=args.hang_s,
        malformed_rate=args.malformed_rate,
        seed=args.seed,
    )


async def _serve(state: _State, port: int) -> None:
    server, conns = await _start(state, port)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await _shutdown(server, conns)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        _check_host(args.host)
        faults, rules = _faults(args), _script(args.script)
    except ValueError as exc:
        parser.error(str(exc))
    asyncio.run(_serve(_State(faults, rules), args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
