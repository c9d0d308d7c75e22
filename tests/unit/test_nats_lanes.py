"""The NATS backend's decisions that need no server: which lanes a lease fetches how much from,
what it does with a work message given the record, and what a timer sweep finds."""

from __future__ import annotations

from typing import Any

from genspool.backends.nats import lanes, timers
from genspool.backends.nats._codec import Rec, name_token, priority_token
from genspool.backends.nats.lanes import INFLIGHT_GRACE_S, INFLIGHT_RETRY_S, Lane
from genspool.core.job import WAITING, Job, JobStatus
from genspool.core.machine import ACTIVE, PURGEABLE

NOW = 1_000.0
WAIT = frozenset(s.value for s in WAITING)


def subject(tenant: str, priority: int = 0, model: str = "m") -> str:
    return f"gs.work.{name_token(model)}.{priority_token(priority)}.{name_token(tenant)}"


def lane(tenant: str, priority: int = 0) -> Lane:
    return Lane.parse(subject(tenant, priority))


def job(**kw: Any) -> Job:
    return Job(url="/v1/chat/completions", body={}, model="m", **kw)


def rec(rev: int = 3, **kw: Any) -> Rec:
    return Rec(job(**kw), rev)


# -- planning --------------------------------------------------------------------------------


def test_a_lane_knows_its_priority_negative_ones_too() -> None:
    assert lane("a", 5).priority == 5 and lane("a", -2).priority == -2


def test_contenders_stop_at_the_first_priority_that_holds_enough() -> None:
    counts = {subject("a", 2): 1, subject("b", 1): 3, subject("c", 1): 1, subject("d", 0): 9}
    got = lanes.contenders(counts, 3)
    # priority 2 holds 1; priority 1 brings it to 5 >= 3, and every lane of priority 1 counts
    assert got == {lane("a", 2): 1, lane("b", 1): 3, lane("c", 1): 1}


def test_contenders_skip_empty_lanes_and_want_nothing_for_nothing() -> None:
    assert lanes.contenders({subject("a"): 0, subject("b"): 2}, 5) == {lane("b"): 2}
    assert lanes.contenders({subject("a"): 4}, 0) == {}


def test_one_lane_gives_what_it_has_up_to_the_want() -> None:
    assert lanes.shares({lane("a"): 10}, {}, 4) == {lane("a"): 4}
    assert lanes.shares({lane("a"): 2}, {}, 4) == {lane("a"): 2}


def test_tenants_share_by_rank_from_their_heads() -> None:
    """A tenant's later jobs count as the ranks after its head: the fair-share interleave."""
    bulk, late = lane("bulk"), lane("late")
    got = lanes.shares({bulk: 6, late: 2}, {bulk: 0.0, late: 0.5}, 4)
    assert got == {bulk: 2, late: 2}  # ranks 0, 0.5, 1, 1.5


def test_a_tenant_far_behind_in_rank_waits() -> None:
    ahead, behind = lane("ahead"), lane("behind")
    got = lanes.shares({ahead: 5, behind: 5}, {ahead: 0.0, behind: 10.0}, 3)
    assert got == {ahead: 3}


def test_higher_priority_comes_first_whatever_the_rank() -> None:
    high, low = lane("a", 3), lane("b", 0)
    got = lanes.shares({high: 2, low: 5}, {high: 100.0, low: 0.0}, 4)
    assert got == {high: 2, low: 2}


def test_a_lane_that_emptied_meanwhile_gets_nothing() -> None:
    a, b = lane("a"), lane("b")
    assert lanes.shares({a: 3, b: 3}, {a: None, b: 1.0}, 5) == {b: 3}


# -- the verdict on a work message -----------------------------------------------------------


def test_a_due_waiting_job_is_taken() -> None:
    for status in WAITING:
        assert lanes.work_verdict(rec(status=status), 2, 0.0, NOW, WAIT) == "take"


def test_a_job_that_moved_on_is_dropped() -> None:
    for status in set(JobStatus) - WAITING:
        assert lanes.work_verdict(rec(status=status), 2, 0.0, NOW, WAIT) == "drop"


def test_a_job_past_expires_at_is_left_to_the_expiry() -> None:
    assert lanes.work_verdict(rec(expires_at=NOW), 2, 0.0, NOW, WAIT) == "drop"


def test_a_retry_not_due_is_put_back_for_the_rest_of_its_backoff() -> None:
    verdict = lanes.work_verdict(rec(available_at=NOW + 2.5), 2, 0.0, NOW, WAIT)
    assert verdict == 2.5


def test_a_write_in_flight_is_looked_at_again_then_given_up() -> None:
    """The record still at the revision the message supersedes (or not created yet)."""
    assert lanes.work_verdict(rec(rev=4), 4, 1.0, NOW, WAIT) == INFLIGHT_RETRY_S
    assert lanes.work_verdict(None, 0, 1.0, NOW, WAIT) == INFLIGHT_RETRY_S
    assert lanes.work_verdict(None, 0, INFLIGHT_GRACE_S + 1, NOW, WAIT) == "drop"
    assert lanes.work_verdict(rec(rev=4), 4, INFLIGHT_GRACE_S + 1, NOW, WAIT) == "drop"


def test_a_superseded_message_is_judged_on_the_record_and_a_purged_job_dropped() -> None:
    assert lanes.work_verdict(rec(rev=9), 4, 0.0, NOW, WAIT) == "take"
    assert lanes.work_verdict(None, 4, 0.0, NOW, WAIT) == "drop"


def test_ready_means_waiting_due_and_alive() -> None:
    assert lanes.ready(job(), NOW, WAIT)
    assert not lanes.ready(job(status=JobStatus.RUNNING), NOW, WAIT)
    assert not lanes.ready(job(available_at=NOW + 1), NOW, WAIT)
    assert not lanes.ready(job(expires_at=NOW), NOW, WAIT)


# -- timers ----------------------------------------------------------------------------------


def test_a_timer_is_due_at_its_time_and_purge_notices_look_again_soon() -> None:
    kinds = timers.KINDS
    assert kinds["lease"].delay({"u": NOW - 1}, NOW) is None
    assert kinds["expire"].delay({"e": NOW + 7}, NOW) == 7
    assert kinds["purge"].delay({"f": NOW + 7}, NOW) == timers.PURGE_RECHECK_S
    assert kinds["lease"].ids({"ids": ["a", "b"]}) == ["a", "b"]
    assert kinds["purge"].ids({"id": "a"}) == ["a"]


def test_a_lease_timer_finds_the_jobs_still_held_past_their_deadline() -> None:
    held = rec(status=JobStatus.RUNNING, id="a", lease_token="t", lease_expires_at=NOW - 1)
    extended = rec(status=JobStatus.RUNNING, id="b", lease_token="t", lease_expires_at=NOW + 9)
    other = rec(status=JobStatus.RUNNING, id="c", lease_token="u", lease_expires_at=NOW - 1)
    recs = {"a": held, "b": extended, "c": other}
    verdict, found = timers.lease({"t": "t", "ids": ["a", "b", "c", "gone"]}, recs, NOW, 0.0)
    assert found == [held.job] and verdict == timers.REAPER_RECHECK_S
    verdict, found = timers.lease({"t": "t", "ids": ["b"]}, recs, NOW, 0.0)
    assert found == [] and verdict == 9  # at the extended deadline
    assert timers.lease({"t": "t", "ids": ["c"]}, recs, NOW, 0.0) == ("drop", [])


def test_an_expiry_timer_reports_waiting_jobs_past_expires_at_until_they_end() -> None:
    judge = timers.expire(WAITING, ACTIVE)
    late = rec(id="a", expires_at=NOW - 1)
    assert judge({"id": "a", "r": 1}, {"a": late}, NOW, 0.0) == (
        timers.REAPER_RECHECK_S,
        [late.job],
    )
    ended = rec(id="a", status=JobStatus.CANCELLED, expires_at=NOW - 1)
    assert judge({"id": "a", "r": 1}, {"a": ended}, NOW, 0.0) == ("drop", [])
    running = rec(id="a", status=JobStatus.RUNNING, expires_at=NOW - 1, lease_expires_at=NOW + 20)
    assert judge({"id": "a", "r": 1}, {"a": running}, NOW, 0.0) == (20, [])
    assert judge({"id": "a", "r": 0}, {}, NOW, 0.0) == (INFLIGHT_RETRY_S, [])  # being created


def test_a_purge_timer_takes_ended_jobs_finished_before_the_cutoff() -> None:
    judge = timers.purge(frozenset(PURGEABLE))
    old = rec(id="a", status=JobStatus.SUCCEEDED, finished_at=NOW - 5)
    assert judge({"id": "a", "r": 1}, {"a": old}, NOW, 0.0) == ("take", [old.job])
    young = rec(id="a", status=JobStatus.SUCCEEDED, finished_at=NOW + 0.25)
    assert judge({"id": "a", "r": 1}, {"a": young}, NOW, 0.0) == (0.25, [])
    dead_letter = rec(id="a", status=JobStatus.FAILED, finished_at=NOW - 5)
    assert judge({"id": "a", "r": 1}, {"a": dead_letter}, NOW, 0.0) == ("drop", [])
    assert judge({"id": "a", "r": 1}, {}, NOW, 0.0) == ("drop", [])
    in_flight = rec(rev=1, id="a", status=JobStatus.RUNNING)
    assert judge({"id": "a", "r": 1}, {"a": in_flight}, NOW, 0.0) == (INFLIGHT_RETRY_S, [])
