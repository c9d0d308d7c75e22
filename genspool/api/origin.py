"""The door's first check, before routing and before any key: whom a request is addressed to
(``Host``) and which web page sent it (``Origin``, ``Sec-Fetch-Site``).

A server on loopback is still reachable from every web page its user visits, and with no API
key yet (open mode) nothing else stands in the way: a page can re-point its own name at
127.0.0.1 and then read the API as its own (DNS rebinding), POST a ``text/plain`` body to
``/v1/chat/completions`` (a "simple" request, sent without a preflight), or open the WebSocket
(browsers apply no same-origin rule to it). :class:`OriginGuard` answers 403, in the API's
error shape, to

- a ``Host`` that is neither a loopback name or address (``localhost``, 127.0.0.0/8, ``::1``,
  any port) nor allow-listed (rebinding needs a name of the attacker's, so it cannot pass);
- on POST, PUT, PATCH, DELETE (any method but GET, HEAD, OPTIONS) and on the WebSocket
  handshake: an ``Origin`` that is neither the request's own ``Host`` nor allow-listed, or,
  without ``Origin``, ``Sec-Fetch-Site: cross-site``.

A request with neither header (curl, the SDKs, genspool's own client) passes. Both checks
apply whether or not API keys exist, as Jupyter's and Ollama's do: they cost a header look-up,
and a key in a browser is not the only thing worth protecting. ``genspool serve`` passes
``GENSPOOL_ALLOWED_HOSTS`` and ``GENSPOOL_ALLOWED_ORIGINS`` (see :func:`allowed_hosts` for the
default, which is ``*`` — any host — only on a wildcard address, where a key is required).
"""

from __future__ import annotations

import ipaddress
import logging
import urllib.parse
from collections.abc import Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from genspool.api.errors import error_response

__all__ = ["OriginGuard", "allowed_hosts", "is_loopback"]

log = logging.getLogger("genspool.api")

ANY = "*"
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]"})
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def allowed_hosts(bind: str, configured: Iterable[str] = ()) -> list[str]:
    """The hosts a server bound to ``bind`` answers besides loopback ones: ``configured``
    (``GENSPOOL_ALLOWED_HOSTS``) when given; else ``bind`` itself, or any host (``*``) on a
    wildcard address, whose names genspool cannot know and where an API key is required."""
    chosen = [h.strip() for h in configured if h.strip()]
    if chosen:
        return chosen
    return [ANY] if bind.strip() in _WILDCARDS else [bind]


def is_loopback(name: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ``::1``, ``::ffff:127.x.x.x``)."""
    if name == "localhost":
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def _host_name(host: str) -> str:
    """The name in a ``Host`` value, without port, brackets or final dot, lowercased."""
    host = host.strip().lower()
    if host.startswith("["):
        name = host[1:].partition("]")[0]
    elif host.count(":") == 1:
        name = host.partition(":")[0]
    else:
        name = host  # a name, or a bare IPv6 address
    return name.rstrip(".")


def _without_default_port(netloc: str, scheme: str) -> str:
    default = _DEFAULT_PORTS.get(scheme)
    return netloc.removesuffix(f":{default}") if default else netloc


class OriginGuard:
    """Refuse (403) requests for a foreign ``Host`` and cross-origin browser requests that
    change state or open the WebSocket; see the module's docstring."""

    def __init__(
        self, app: ASGIApp, hosts: Iterable[str] = (), origins: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.hosts = frozenset(_host_name(h) for h in hosts)
        self.origins = frozenset(o.strip().lower().rstrip("/") for o in origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        refusal = self.refusal(scope)
        if refusal is None:
            return await self.app(scope, receive, send)
        message, code = refusal
        log.warning("refused a request to %s: %s", scope.get("path", "?"), message[:300])
        response = error_response(403, message, code)
        if scope["type"] == "http":
            return await response(scope, receive, send)
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" in scope.get("extensions", {}):
            return await websocket.send_denial_response(response)
        await websocket.close(1008, message.encode()[:120].decode(errors="ignore"))

    def refusal(self, scope: Scope) -> tuple[str, str] | None:
        """Why ``scope`` is refused (message, code), or None when it passes."""
        headers = Headers(scope=scope)
        host = headers.get("host")
        if host is not None and not self._host_allowed(host):
            return self._foreign_host(host), "host_not_allowed"
        if scope["type"] == "http" and scope["method"] in _SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if origin is not None:
            if self._origin_allowed(origin, host or ""):
                return None
            return _cross_origin(f"from the web page at {origin[:100]!r}"), "origin_not_allowed"
        if headers.get("sec-fetch-site", "").strip().lower() == "cross-site":
            return _cross_origin("from another site (Sec-Fetch-Site: cross-site)"), (
                "origin_not_allowed"
            )
        return None

    def _host_allowed(self, host: str) -> bool:
        name = _host_name(host)
        return ANY in self.hosts or name in self.hosts or is_loopback(name)

    def _origin_allowed(self, origin: str, host: str) -> bool:
        origin = origin.strip().lower().rstrip("/")
        if ANY in self.origins or origin in self.origins:
            return True
        if origin == "null":  # a sandboxed frame, a file:// page, a redirect: never our own
            return False
        parts = urllib.parse.urlsplit(origin)
        own = _without_default_port(host.strip().lower(), parts.scheme)
        # Scheme left out: behind a TLS proxy the page is https:// while this hop is http://.
        theirs = _without_default_port(parts.netloc, parts.scheme)
        return bool(theirs) and theirs == own

    @staticmethod
    def _foreign_host(host: str) -> str:
        return (
            f"refused: the Host header {host[:100]!r} is not a name of this server; it answers"
            " loopback names (localhost, 127.0.0.1, [::1]) and those in GENSPOOL_ALLOWED_HOSTS,"
            " so that no web page can reach it under a name of its own (DNS rebinding)"
        )


def _cross_origin(source: str) -> str:
    return (
        f"refused a cross-origin request {source}: web pages of other origins may not send"
        " POST, PUT, PATCH, DELETE or open the WebSocket here; to allow a page, add its origin"
        " (scheme://host:port) to GENSPOOL_ALLOWED_ORIGINS"
    )
