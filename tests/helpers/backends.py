"""The backends the contract suite runs on, and how a test names and opens one.

A kind ``a+b`` runs the queue on server ``a`` and the store on server ``b`` (a split
deployment); its URL is the store's URL and the queue's URL, separated by a space.
"""

from __future__ import annotations

from collections.abc import Callable

from genspool.backends import Storage, open_storage

__all__ = ["BACKENDS", "kind_url", "open_backend"]

BACKENDS = ["memory", "sqlite", "postgres", "redis", "nats", "redis+postgres", "nats+postgres"]


def kind_url(kind: str, namespaced_url: Callable[[str], str]) -> str:
    """A fresh namespace's URL for a kind of ``BACKENDS``."""
    queue, _, store = kind.rpartition("+")
    return f"{namespaced_url(store)} {namespaced_url(queue)}" if queue else namespaced_url(store)


def open_backend(url: str) -> Storage:
    store, _, queue = url.partition(" ")
    return open_storage(store, queue_url=queue or None)
