"""One way to show a backend URL in a message or a log line: without its secrets.

A password in the authority (``user:pw@``), a token given as the user part alone (where a
server reads it so: ``nats://token@host``, ``redis://token@host``) and secret-looking query
parameters (``password=``, ``token=``, ``sslpassword=``...) are replaced by ``***``; the rest
is kept so the message still says which server was meant.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["shown_url"]

_TOKEN_AS_USER = frozenset({"nats", "tls", "redis", "rediss"})
_SECRET_PARAMS = ("password", "passwd", "pass", "token", "secret", "key", "auth")


def _secret_param(name: str) -> bool:
    return any(word in name.lower() for word in _SECRET_PARAMS)


def shown_url(url: str) -> str:
    """``url`` fit to print: passwords, user-part tokens and secret parameters are ``***``."""
    try:
        parts = urlsplit(url)
        username, password = parts.username, parts.password
    except ValueError:  # not a URL at all (a bad port): show only its scheme
        return f"{url.partition('://')[0]}://***"
    netloc = parts.netloc
    token_user = password is None and parts.scheme in _TOKEN_AS_USER
    if password is not None or (username is not None and token_user):
        host = netloc.rpartition("@")[2]
        user = "***" if password is None else f"{username or ''}:***"
        netloc = f"{user}@{host}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if _secret_param(k) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url  # urlunsplit would also drop the empty authority of sqlite:///file.db
    return urlunsplit(parts._replace(netloc=netloc, query=query))
