"""Following a Redis channel on a connection of its own, for as long as the caller wants:
resubscribing after a failure with a capped, jittered exponential backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from genspool.backends._errors import describe
from genspool.backends.redis._client import RedisClient
from genspool.exceptions import BackendError

__all__ = ["follow"]

log = logging.getLogger("genspool.backends.redis")

#: Reconnection delays of a subscription (doubled per failure, jittered).
RECONNECT_MIN_S, RECONNECT_MAX_S = 0.05, 2.0


async def follow(client: RedisClient, channel: str, deliver: Callable[[bytes], None]) -> None:
    """Call ``deliver`` with every message on ``channel`` until cancelled."""
    delay = RECONNECT_MIN_S
    while True:
        pubsub: PubSub | None = None
        try:
            pubsub = client.r.pubsub()
            await pubsub.subscribe(channel)
            if _cancelling():  # redis-py swallows a cancellation that came while connecting
                raise asyncio.CancelledError
            while True:
                # The timeout makes the loop come back now and then, so the connection's
                # health check PINGs a server that went away without closing the socket.
                message = await pubsub.get_message(timeout=5.0)
                if message is None:
                    if _cancelling():  # redis-py can turn a cancellation into a timeout
                        raise asyncio.CancelledError
                    continue
                if message["type"] == "subscribe":
                    delay = RECONNECT_MIN_S
                elif message["type"] == "message":
                    _deliver(deliver, message["data"])
        except (RedisError, OSError, BackendError) as exc:
            log.warning(
                "Redis subscription to %s lost (%s); resubscribing in %.2f s",
                channel, describe(exc), delay,
            )  # fmt: skip
            if _cancelling():
                raise asyncio.CancelledError from exc
        finally:
            if pubsub is not None:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
        await asyncio.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, RECONNECT_MAX_S)


def _deliver(deliver: Callable[[bytes], None], data: bytes) -> None:
    try:
        deliver(data)
    except Exception:  # a malformed message must not end the subscription
        log.exception("dropping a message the subscriber could not handle")


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
