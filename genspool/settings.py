"""Settings, read once at the edge (CLI, app factory) from ``GENSPOOL_*`` environment variables.

Library classes take plain arguments and never read the environment themselves.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

if TYPE_CHECKING:
    from genspool.core.events import PushLimits

__all__ = ["Settings"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GENSPOOL_", env_nested_delimiter="__")

    database_url: str = Field("sqlite:///genspool.db", description="Queue and store URL.")
    queue_url: str | None = Field(
        None, description="The queue's URL when it is not the store's (e.g. redis:// or nats://)."
    )
    config: Path | None = Field(None, description="Models YAML file; none serves the bundled ones.")
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    lease_s: float = Field(
        30.0, gt=0, description="How long a worker holds a job between heartbeats."
    )
    result_ttl_s: float = Field(86_400.0, gt=0, description="How long finished jobs are kept.")
    retry_base_s: float = Field(0.5, ge=0, description="First backoff step of a retry.")
    retry_cap_s: float = Field(60.0, ge=0, description="Longest backoff between two attempts.")
    max_retry_after_s: float = Field(
        300.0,
        ge=0,
        description="Longest Retry-After a job waits; a model asking for more fails over to its"
        " fallbacks, else the job is dead-lettered naming the Retry-After and this cap.",
    )
    max_body_bytes: int = Field(4 * 1024 * 1024, gt=0, description="Largest accepted request body.")
    max_file_bytes: int = Field(
        512 * 1024 * 1024,
        gt=0,
        description="Largest file POST /v1/files accepts (uploads are streamed to the blob store"
        " and bounded by this, not by max_body_bytes).",
    )
    files_url: str | None = Field(
        None,
        description="Where file contents live: file:///dir, or postgresql://...?schema=... for"
        " processes that share no disk. Default: a directory beside a SQLite database"
        " (<db>.files), the database's own schema on PostgreSQL.",
    )
    max_json_depth: int = Field(
        64,
        ge=2,
        le=512,
        description="How deep objects and arrays may nest in a request body (the body is level"
        " 1); a deeper one is answered 400.",
    )
    wait_timeout_s: float = Field(
        600.0, gt=0, description="How long OpenAI-compatible routes wait."
    )
    drain_timeout_s: float = Field(
        30.0,
        gt=0,
        description="On SIGINT/SIGTERM, how long in-flight jobs get to finish before they are "
        "handed back to the queue; the process exits within this plus a few seconds.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as JSON lines (genspool.logjson)."
    )
    key_cache_s: float = Field(
        5.0, gt=0, description="How long an API process trusts a cached API key record."
    )
    prompt_label_cache_s: float = Field(
        2.0,
        ge=0,
        description="How long an API process trusts a cached prompt label: a label moved by"
        " any process reaches every other within this.",
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API answers besides loopback ones, comma-separated ('*':"
        " any). Default: the --host it listens on, or any host on a wildcard address (0.0.0.0,"
        " ::), where an API key is required. Other Host headers get 403 (DNS rebinding).",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (scheme://host:port, comma-separated; '*': any) that may POST,"
        " PUT, PATCH, DELETE or open the WebSocket besides the server's own; other Origin"
        " headers, and Sec-Fetch-Site: cross-site, get 403.",
    )
    max_head_bytes: int = Field(
        64 * 1024,
        ge=1024,
        description="Largest request head (URL and headers) read before any key is checked;"
        " a larger one is answered 431 and its connection closed.",
    )
    max_headers: int = Field(
        100, ge=10, description="Most headers in one request; more are answered 431."
    )
    keep_alive_s: int = Field(
        5, ge=1, description="How long an idle keep-alive connection is held open (uvicorn)."
    )
    head_timeout_s: float = Field(
        10.0,
        gt=0,
        description="How long a connection may take to send a request's head (URL and"
        " headers), from when it opens or its request begins; a slower one is answered 408"
        " and closed (half-sent requests do not hold their sockets).",
    )
    max_connections: int = Field(
        4096,
        ge=1,
        description="Open connections and requests in progress past which uvicorn answers 503"
        " before routing (its limit_concurrency); keep it under the open-file limit.",
    )

    push_outbox_bytes: int = Field(
        256 * 1024,
        ge=1024,
        description="Bytes one WebSocket or SSE connection may have queued for a client that"
        " reads slowly; token deltas past it are dropped (the terminal event has the whole"
        " text), and a state event that still does not fit closes the connection (WebSocket"
        " 1008, SSE a final comment).",
    )
    push_outbox_events: int = Field(
        1_000, ge=10, description="Events one push connection may have queued (as above)."
    )
    push_subscriptions: int = Field(
        1_000,
        ge=1,
        description="Unfinished jobs one WebSocket may watch at once; one more closes it (1008).",
    )
    push_per_key: int = Field(
        256,
        ge=1,
        description="Open WebSocket and SSE connections per API key; past it SSE answers 429"
        " and a WebSocket is closed with 1013.",
    )
    push_total: int = Field(
        2_048,
        ge=1,
        description="Open WebSocket and SSE connections in one API process (429 / 1013 past"
        " it); keep it under max_connections.",
    )
    push_send_timeout_s: float = Field(
        30.0,
        gt=0,
        description="How long one event may take to reach a client that does not read before"
        " its connection is closed.",
    )
    push_idle_s: float = Field(
        60.0, gt=0, description="How long a WebSocket watching no job stays open (closed 1000)."
    )
    push_recheck_s: float = Field(
        2.0,
        gt=0,
        le=5,
        description="How often open push connections re-read their API key: a revoked key, or"
        " one that lost the 'read' scope, closes them within this (WebSocket 1008).",
    )

    def push_limits(self) -> PushLimits:
        """The push bounds above, as the API takes them."""
        from genspool.core.events import PushLimits

        return PushLimits(
            outbox_bytes=self.push_outbox_bytes,
            outbox_events=self.push_outbox_events,
            subscriptions=self.push_subscriptions,
            per_key=self.push_per_key,
            total=self.push_total,
            send_timeout_s=self.push_send_timeout_s,
            idle_s=self.push_idle_s,
            recheck_s=self.push_recheck_s,
        )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):  # "a.example, b.example" rather than JSON
            return [v.strip() for v in value.split(",") if v.strip()]
        return value
