"""The one exception tree of genspool.

Every error genspool raises on purpose derives from :class:`GenspoolError`. Each class carries
the HTTP status the API answers with and a ``code`` that goes into the error body, so the API
maps exceptions to responses in one place. Foreign errors (sqlite3, httpx, llama.cpp) are
translated at the boundary with ``raise ... from exc``.

    GenspoolError
    ├── ConfigError            bad settings or model file (CLI exits non-zero)
    ├── BackendError           the queue/store could not be reached or used
    ├── InvalidRequest (400)   a field is missing or wrong
    │   └── ContextWindowExceeded (400)
    ├── Unauthorized (401)     no API key, or an unknown or revoked one
    ├── Forbidden (403)        the API key lacks the scope the route needs
    ├── NotFound (404)         unknown job, or one the caller may not see
    ├── UnknownModel (404)     the model is not served here
    ├── Conflict (409)         e.g. replaying a job that is not dead-lettered
    ├── PayloadTooLarge (413)
    ├── RateLimited (429)      over a rate limit; ``retry_after`` says when to try again
    ├── ModelError             a model call failed; ``retryable`` says whether to try again
    │   ├── ModelTimeout
    │   ├── CircuitOpen        refused: the model's circuit breaker is open (not tried)
    │   └── ModelRateLimited   refused: the model's own rpm/tpm budget is spent (not tried)
    │
    │   raised by genspool.Client only (the API never answers with them):
    ├── APIConnectionError     the server could not be reached, or the connection broke
    │   └── APITimeoutError    no answer within the client's timeout
    ├── APIStatusError         an error answer no class above matches (e.g. a proxy's 502)
    └── WaitTimeout            ``wait()`` gave up; the job had not ended yet

An error that :class:`genspool.Client` raised from an HTTP answer is the class the server raised
(matched by the body's ``code``, else by the status) and carries that answer as ``response``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "BackendError",
    "CircuitOpen",
    "ConfigError",
    "Conflict",
    "ContextWindowExceeded",
    "Forbidden",
    "GenspoolError",
    "InvalidRequest",
    "ModelError",
    "ModelRateLimited",
    "ModelTimeout",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "UnknownModel",
    "WaitTimeout",
]


class GenspoolError(Exception):
    """Base of every genspool error."""

    status_code: int = 500
    code: str = "internal_error"
    #: The HTTP answer this error was read from, when a client raised it (else None).
    response: httpx.Response | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    @property
    def headers(self) -> dict[str, str]:
        """HTTP headers the API sends with this error (e.g. ``Retry-After``)."""
        return {}


class ConfigError(GenspoolError):
    code = "config_error"


class BackendError(GenspoolError):
    status_code = 503
    code = "backend_unavailable"


class InvalidRequest(GenspoolError):
    status_code = 400
    code = "invalid_request_error"


class ContextWindowExceeded(InvalidRequest):
    code = "context_length_exceeded"


class Unauthorized(GenspoolError):
    status_code = 401
    code = "invalid_api_key"

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": "Bearer"}


class Forbidden(GenspoolError):
    status_code = 403
    code = "insufficient_scope"


class NotFound(GenspoolError):
    status_code = 404
    code = "not_found"


class UnknownModel(GenspoolError):
    status_code = 404
    code = "model_not_found"


class Conflict(GenspoolError):
    status_code = 409
    code = "conflict"


class PayloadTooLarge(GenspoolError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(GenspoolError):
    """Over a rate limit; nothing was done, the same request may succeed after ``retry_after``."""

    status_code = 429
    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


class ModelError(GenspoolError):
    """A model call failed. ``retryable`` decides between a retry and the dead-letter queue."""

    status_code = 502
    code = "model_error"
    #: False for a call refused before it reached the model (breaker open, own rate limit):
    #: the job goes back to the queue until ``retry_after`` without using up an attempt.
    counts_as_attempt = True

    def __init__(
        self, message: str, *, retryable: bool = True, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after


class ModelTimeout(ModelError):
    status_code = 504
    code = "model_timeout"


class CircuitOpen(ModelError):
    """The model's circuit breaker is open: the call was not made. Retryable after
    ``retry_after`` (the rest of the cool-down)."""

    status_code = 503
    code = "circuit_open"
    counts_as_attempt = False


class ModelRateLimited(ModelError):
    """The model's own request/token budget (``rpm``/``tpm``) would not allow the call before
    the job's deadline: the call was not made. Retryable after ``retry_after``."""

    status_code = 429
    code = "model_rate_limited"
    counts_as_attempt = False


# -- raised by the client only -----------------------------------------------------------------


class APIConnectionError(GenspoolError):
    """The client could not reach the API, or lost the connection before the answer."""

    code = "connection_error"


class APITimeoutError(APIConnectionError):
    code = "timeout"


class APIStatusError(GenspoolError):
    """An HTTP error answer that no class of the tree matches; ``status_code`` and ``code`` are
    the answer's own."""

    def __init__(
        self, message: str, *, status_code: int, code: str, response: httpx.Response | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        self.response = response


class WaitTimeout(GenspoolError):
    """``wait()`` ran out of time: the job is still queued or running (it was not cancelled)."""

    code = "wait_timeout"

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id
