"""A batch's pure parts: the transitions of :mod:`genspool.batches.machine` (who may claim,
what a cancel or an expiry does, how each stop ends) and the streaming line splitter (lines cut
anywhere by chunk boundaries, an over-long line dropped and reported, no final newline)."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import pytest

from genspool.batches import machine, parse_window
from genspool.batches.lines import split_lines
from genspool.core.batch import Batch, BatchStatus
from genspool.exceptions import InvalidRequest

BASE = Batch(
    id="batch_1", tenant="acme", endpoint="/v1/chat/completions", input_file_id="file-1",
    completion_window="1h", created_at=1000.0, expires_at=4600.0,
)  # fmt: skip


async def pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.mark.parametrize("size", [1, 2, 3, 7, 1000])
async def test_lines_split_the_same_whatever_the_chunks(size: int) -> None:
    data = b'{"a": 1}\n\n' + b"x" * 20 + b"\nlast"
    got = [item async for item in split_lines(pieces(data, size), max_line_bytes=10)]
    assert got == [(1, b'{"a": 1}'), (2, b""), (3, None), (4, b"last")]


async def test_a_final_newline_makes_no_empty_line() -> None:
    got = [item async for item in split_lines(pieces(b"a\nb\n", 3), max_line_bytes=10)]
    assert got == [(1, b"a"), (2, b"b")]


def test_a_claim_waits_for_another_runners_lease() -> None:
    held = machine.claim(BASE, "a", 1000.0, 30.0)
    assert held is not None and (held.owner, held.lease_until, held.version) == ("a", 1030.0, 1)
    assert machine.claim(held, "b", 1029.0, 30.0) is None
    taken = machine.claim(held, "b", 1031.0, 30.0)
    assert taken is not None and taken.owner == "b"


def test_cancel_and_expiry_stop_the_lines_and_choose_the_end() -> None:
    running = dataclasses.replace(BASE, status=BatchStatus.IN_PROGRESS, in_progress_at=1001.0)
    cancelled = machine.cancel(running, 2000.0)
    assert cancelled is not None and cancelled.status is BatchStatus.CANCELLING
    assert machine.cancel(cancelled, 2001.0) is None and machine.expire(cancelled, 5000.0) is None
    ended = machine.finished(cancelled, "file-o", "file-e", 2100.0)
    assert ended is not None and (ended.status, ended.cancelled_at) == (BatchStatus.CANCELLED, 2100)
    assert machine.expire(running, 4599.0) is None
    expiring = machine.expire(running, 4600.0)
    assert expiring is not None and expiring.stop == "expire"
    gone = machine.finished(expiring, None, "file-e", 4700.0)
    assert gone is not None and (gone.status, gone.expired_at) == (BatchStatus.EXPIRED, 4700.0)
    assert machine.finished(gone, None, None, 4800.0) is None


def test_written_lines_count_and_finalize_only_when_all_are_in() -> None:
    running = dataclasses.replace(BASE, status=BatchStatus.IN_PROGRESS, total=3, enqueued=3)
    one = machine.wrote(
        running, lines=2, completed=1, failed=1, out_lines=1, err_lines=1,
        usage={"total_tokens": 5}, now=1.0, lease_s=30.0,
    )  # fmt: skip
    assert one is not None and (one.written, one.segments, one.usage) == (2, 1, {"total_tokens": 5})
    assert machine.lines_written(one, 1.0, 30.0) is None
    too_many = machine.wrote(
        one, lines=2, completed=2, failed=0, out_lines=2, err_lines=0, usage={}, now=1, lease_s=1
    )
    assert too_many is None
    two = machine.wrote(
        one, lines=1, completed=1, failed=0, out_lines=1, err_lines=0,
        usage={"total_tokens": 2}, now=2.0, lease_s=30.0,
    )  # fmt: skip
    assert two is not None and two.usage == {"total_tokens": 7}
    final = machine.lines_written(two, 3.0, 30.0)
    assert final is not None and final.status is BatchStatus.FINALIZING


def test_invalid_input_fails_the_batch_with_its_errors() -> None:
    errors = [{"code": "invalid_json_line", "message": "line 2: x", "param": None, "line": 2}]
    failed = machine.validated(BASE, 3, errors, 1.0, 30.0)
    assert failed is not None and failed.status is BatchStatus.FAILED and failed.owner is None
    assert failed.errors == tuple(errors)


@pytest.mark.parametrize(("text", "seconds"), [("24h", 86_400), ("60s", 60), ("7d", 604_800)])
def test_completion_windows(text: str, seconds: float) -> None:
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["0s", "31d", "1.5h", "24", "h", "-1h", " 24h"])
def test_bad_completion_windows(text: str) -> None:
    with pytest.raises(InvalidRequest, match="completion_window"):
        parse_window(text)
