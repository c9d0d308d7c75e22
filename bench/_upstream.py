"""An instant OpenAI-compatible upstream for the gateway benchmark: a raw asyncio server.

    python bench/_upstream.py --port 0        # prints its URL on the first line

Answers ``POST /v1/chat/completions`` with a canned 8-token completion, plain or streamed
(``stream: true``: one SSE chunk a token, the usage chunk when ``stream_options.include_usage``,
then ``[DONE]``), and ``GET /v1/models`` and ``GET /healthz``. A model whose name starts with
``paced`` streams its tokens ``--token-ms`` apart (time to first token then differs from the
whole answer's); every other model answers at once. Parsing is httptools' (C), the loop
uvloop's when installed: a uvicorn + FastAPI app spends ~0.3 ms of CPU a request, which would
make the baseline, not the gateway, the slow side of the comparison.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import sys
import time
from typing import Any

import httptools
import orjson

TOKENS = ["Hello", " from", " the", " instant", " upstream", ",", " canned", "."]
USAGE = {"prompt_tokens": 9, "completion_tokens": len(TOKENS), "total_tokens": 9 + len(TOKENS)}


def completion(model: str) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-upstream",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(TOKENS)},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
        }
    )


def chunks(model: str, include_usage: bool) -> list[bytes]:
    """The SSE events of a streamed completion, one per token and the bookends."""
    head = {"id": "chatcmpl-upstream", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model}  # fmt: skip

    def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return b"data: " + orjson.dumps({**head, "choices": [choice]}) + b"\n\n"

    out = [event({"role": "assistant", "content": ""})]
    out += [event({"content": token}) for token in TOKENS]
    out.append(event({}, "stop"))
    if include_usage:
        out.append(b"data: " + orjson.dumps({**head, "choices": [], "usage": USAGE}) + b"\n\n")
    return [*out, b"data: [DONE]\n\n"]


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class Upstream(asyncio.Protocol):
    token_s = 0.005

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: Any = transport  # uvloop's is no asyncio.Transport subclass
        self.parser = httptools.HttpRequestParser(self)
        self.url, self.body = b"", b""

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        url, body, self.url, self.body = self.url, self.body, b"", b""
        if url == b"/v1/chat/completions":
            self.chat(orjson.loads(body))
        elif url == b"/v1/models":
            self.send(200, orjson.dumps({"object": "list", "data": [{"id": "instant"}]}))
        elif url == b"/healthz":
            self.send(200, b"{}")
        else:
            self.send(404, b'{"error": {"message": "not found"}}')

    def send(self, status: int, body: bytes) -> None:
        head = b"HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
        self.transport.write(head % (status, len(body)) + body)

    def chat(self, request: dict[str, Any]) -> None:
        model = str(request.get("model", "instant"))
        if not request.get("stream"):
            self.send(200, completion(model))
            return
        usage = bool((request.get("stream_options") or {}).get("include_usage"))
        events = chunks(model, usage)
        self.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        if model.startswith("paced"):
            asyncio.get_running_loop().create_task(self.paced(events))
        else:
            self.transport.write(b"".join(map(_chunked, events)) + b"0\r\n\r\n")

    async def paced(self, events: list[bytes]) -> None:
        self.transport.write(_chunked(events[0]) + _chunked(events[1]))
        for event in events[2:]:
            await asyncio.sleep(self.token_s)
            if self.transport.is_closing():
                return
            self.transport.write(_chunked(event))
        self.transport.write(b"0\r\n\r\n")


async def serve(port: int) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    server = await asyncio.get_running_loop().create_server(Upstream, sock=sock, backlog=1024)
    print(f"http://127.0.0.1:{sock.getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token-ms", type=float, default=5.0, help="pace of paced* models")
    args = parser.parse_args()
    Upstream.token_s = args.token_ms / 1000
    try:
        from uvloop import run
    except ImportError:
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
