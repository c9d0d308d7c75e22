"""The web UI's CSRF tokens and its small parts (genspool.api.ui): a token is good only for
the session it was made for, under the secret it was made with; the secret is shared through
the store; the jobs view's time range and cursors; where a login may send the browser; the
overview's trends and sparklines."""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from genspool.api.ui.jobs import Filters, id_at, parse_instant, trace_id
from genspool.api.ui.login import safe_next
from genspool.api.ui.overview import Trends
from genspool.api.ui.pages import sparkline
from genspool.api.ui.session import Csrf, load_secret
from genspool.backends import open_storage
from genspool.core.job import Job, new_job_id
from genspool.core.models import TRACEPARENT
from genspool.exceptions import InvalidRequest
from genspool.metrics.series import JobSeries


def sid() -> str:
    return secrets.token_urlsafe(32)


def test_a_token_is_good_for_its_session_only() -> None:
    csrf = Csrf(secrets.token_bytes(32))
    mine, theirs = sid(), sid()
    token = csrf.token(mine)
    assert csrf.valid(mine, token)
    assert not csrf.valid(theirs, token)
    assert not csrf.valid(mine, csrf.token(theirs))
    assert not csrf.valid(mine, token[:-1] + ("0" if token[-1] != "0" else "1"))
    assert not csrf.valid(mine, token.upper())


def test_a_token_of_another_secret_or_a_missing_part_is_refused() -> None:
    one, other = Csrf(secrets.token_bytes(32)), Csrf(secrets.token_bytes(32))
    session = sid()
    assert not other.valid(session, one.token(session))
    for session_id, token in ((None, one.token(session)), (session, None), ("", ""), (session, "")):
        assert not one.valid(session_id, token)
    # A session id the server never makes (too short, odd characters) is refused outright.
    assert not one.valid("abc", one.token("abc"))
    assert not one.valid("x" * 42 + "!", one.token("x" * 42 + "!"))


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Csrf(b"short")


async def test_every_process_on_one_store_gets_the_same_secret(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/csrf.db")
    await storage.connect()
    try:
        # Processes starting together race to make it: all end up with one.
        racing = [load_secret(storage.kv, storage.coordination) for _ in range(8)]
        first, *others = await asyncio.gather(*racing)
        again = await load_secret(storage.kv, storage.coordination)
        assert all(o == first for o in others) and first == again and len(first) >= 32
        session = sid()
        assert Csrf(again).valid(session, Csrf(first).token(session))
    finally:
        await storage.drop()


def test_id_at_bounds_the_ids_made_before_and_after() -> None:
    before = new_job_id()
    time.sleep(0.002)
    at = time.time()
    time.sleep(0.002)
    after = new_job_id()
    assert before < id_at(at) < after
    assert len(id_at(at)) == len(before) - 10  # the time part only


def test_parse_instant_takes_durations_ago_and_utc_times() -> None:
    now = 1_800_000_000.0
    assert parse_instant("15m", now, "since") == now - 900
    assert parse_instant("2h", now, "since") == now - 7200
    assert parse_instant("1.5d", now, "since") == now - 1.5 * 86_400
    utc = dt.datetime(2027, 1, 15, 8, 0, tzinfo=dt.UTC).timestamp()
    assert parse_instant("2027-01-15T08:00", now, "until") == utc  # no zone: UTC
    assert parse_instant("2027-01-15T08:00:00Z", now, "until") == parse_instant(
        "2027-01-15T08:00", now, "until"
    )
    assert parse_instant("2027-01-15T09:00:00+01:00", now, "until") == parse_instant(
        "2027-01-15T08:00", now, "until"
    )
    with pytest.raises(InvalidRequest, match=r"since: 'yesterday' is neither a time"):
        parse_instant("yesterday", now, "since")


def test_filters_round_trip_through_the_url() -> None:
    f = Filters(model="echo", since="1h", limit=10)
    assert f.query() == "model=echo&since=1h&limit=10"
    assert f.query(after="job_1") == "model=echo&since=1h&after=job_1&limit=10"
    assert Filters().query() == ""  # the default page size is left out


def test_a_login_sends_the_browser_only_to_a_page_of_the_ui() -> None:
    assert safe_next("/ui", "/ui/jobs?status=failed") == "/ui/jobs?status=failed"
    for bad in (None, "", "https://evil.example/", "//evil.example/ui/", "/uix", "/ui\\..\\x",
                "/other", "/ui/\r\nSet-Cookie: x"):  # fmt: skip
        assert safe_next("/ui", bad) == "/ui/", bad


def test_the_trace_id_comes_from_the_jobs_traceparent() -> None:
    job = Job(url="/v1/chat/completions", body={}, model="m")
    assert trace_id(job) is None
    job.metadata[TRACEPARENT] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert trace_id(job) == "4bf92f3577b34da6a3ce929d0e0e4736"
    job.metadata[TRACEPARENT] = "garbage"
    assert trace_id(job) is None


def test_trends_turn_the_counters_into_rates_and_mean_latencies() -> None:
    series = JobSeries(CollectorRegistry(), ["m"])
    metrics = SimpleNamespace(series=series)  # what Trends reads of a Metrics
    trends = Trends(size=3, every_s=1.0)
    trends.sample(metrics, 100.0)  # type: ignore[arg-type]
    series.finished.labels("m", "succeeded").inc(4)
    for seconds in (1.0, 3.0):
        series.end_to_end.labels("m").observe(seconds)
    trends.sample(metrics, 102.0)  # type: ignore[arg-type]
    trends.sample(metrics, 102.5)  # type: ignore[arg-type]  # under a second later: skipped
    trends.sample(metrics, 103.0)  # type: ignore[arg-type]  # nothing ended meanwhile
    assert trends.throughput("m") == [2.0, 0.0]
    assert trends.latency("m") == [2.0, None]
    for at in (104.0, 105.0, 106.0):
        trends.sample(metrics, at)  # type: ignore[arg-type]
    assert len(trends.throughput("m")) == 3  # the last ``size`` only
    assert trends.throughput("unknown") == []


def test_a_sparkline_is_svg_attributes_only_with_gaps() -> None:
    svg = str(sparkline([1.0, 2.0, None, 0.5, 1.0], width=40, height=10))
    assert svg.startswith('<svg class="spark" width="40" height="10"')
    assert svg.count("<polyline") == 2 and "style" not in svg
    assert 'points="0.0,5.0 10.0,1.0"' in svg  # scaled to the maximum, 1 px margins
    assert str(sparkline([])).count("<polyline") == 0
