"""One URL redaction for every backend: what a message or a log line may show of a URL."""

from __future__ import annotations

import pytest

from genspool.backends import shown_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("sqlite:///genspool.db", "sqlite:///genspool.db"),
        ("postgresql://postgres@127.0.0.1/test", "postgresql://postgres@127.0.0.1/test"),
        ("postgresql://u:pw@h:5432/db?schema=a", "postgresql://u:***@h:5432/db?schema=a"),
        (
            "postgresql://h/db?password=pw&sslpassword=x",
            "postgresql://h/db?password=***&sslpassword=***",
        ),
        ("redis://:pw@h:6379/0?prefix=p", "redis://:***@h:6379/0?prefix=p"),
        ("redis://token@h", "redis://***@h"),
        ("nats://token@h:4222", "nats://***@h:4222"),
        ("nats://u:pw@h:4222?prefix=x", "nats://u:***@h:4222?prefix=x"),
        ("redis://h:notaport", "redis://h:notaport"),
    ],
)
def test_secrets_are_hidden_and_the_rest_kept(url: str, shown: str) -> None:
    assert shown_url(url) == shown
