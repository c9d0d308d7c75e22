"""HTTP answers and transport failures → the classes of :mod:`genspool.exceptions`.

The server builds each error body from an exception's ``code``, so the body's code names the
class to raise; the status decides only when the code is unknown (an older client, or an
answer from a proxy in front of the server).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx

from genspool import exceptions as exc_

__all__ = ["error_from_response", "transport_error"]

#: The classes the API answers with, by their code. Model errors come from the
#: OpenAI-compatible routes, which report a failed job with the job's error code.
_BY_CODE: dict[str, type[exc_.GenspoolError]] = {
    cls.code: cls
    for cls in (
        exc_.BackendError,
        exc_.InvalidRequest,
        exc_.ContextWindowExceeded,
        exc_.Unauthorized,
        exc_.Forbidden,
        exc_.NotFound,
        exc_.UnknownModel,
        exc_.Conflict,
        exc_.PayloadTooLarge,
        exc_.RateLimited,
        exc_.ModelError,
        exc_.ModelTimeout,
        exc_.CircuitOpen,
        exc_.ModelRateLimited,
    )
}
_BY_STATUS: dict[int, type[exc_.GenspoolError]] = {
    400: exc_.InvalidRequest,
    401: exc_.Unauthorized,
    403: exc_.Forbidden,
    404: exc_.NotFound,
    409: exc_.Conflict,
    413: exc_.PayloadTooLarge,
    429: exc_.RateLimited,
}


def error_from_response(response: httpx.Response) -> exc_.GenspoolError:
    """The exception for an error answer (status >= 400); its body must have been read."""
    error = _error_body(response)
    message = str(error.get("message") or response.reason_phrase or "error")
    code = str(error.get("code") or "")
    cls = _BY_CODE.get(code) or _BY_STATUS.get(response.status_code)
    if cls is None:
        status = response.status_code
        exc: exc_.GenspoolError = exc_.APIStatusError(
            message, status_code=status, code=code or f"http_{status}", response=response
        )
        return exc
    exc = _build(cls, message, error.get("param"), response)
    exc.response = response
    return exc


def transport_error(error: httpx.TransportError, url: str) -> exc_.APIConnectionError:
    """A failure to get an answer from ``url`` at all."""
    if isinstance(error, httpx.TimeoutException):
        return exc_.APITimeoutError(f"no answer from {url} in time ({type(error).__name__})")
    return exc_.APIConnectionError(f"cannot reach {url}: {error or type(error).__name__}")


def _error_body(response: httpx.Response) -> Mapping[str, Any]:
    """``{"message", "code", "param"}`` of an OpenAI-shaped error body; a body that is not
    one (an HTML page from a proxy) becomes the message."""
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {"message": response.text.strip()[:500]}
    return error if isinstance(error, Mapping) else {"message": str(error)}


def _build(
    cls: type[exc_.GenspoolError], message: str, param: Any, response: httpx.Response
) -> exc_.GenspoolError:
    # The classes' constructors differ only in these keyword arguments.
    retry_after = _retry_after(response)
    if issubclass(cls, exc_.RateLimited):
        return cls(message, retry_after=1.0 if retry_after is None else retry_after)
    if issubclass(cls, exc_.ModelError):
        return cls(message, retry_after=retry_after)
    return cls(message, param=param if isinstance(param, str) else None)


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds from ``Retry-After`` (the API sends whole seconds, never an HTTP date)."""
    try:
        return max(0.0, float(response.headers["retry-after"]))
    except (KeyError, ValueError):
        return None
