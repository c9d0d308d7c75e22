"""The bounds of push, exactly: a connection's outbox drops token deltas before anything else,
never loses a terminal event, and overflows only when a state event cannot fit; the hub fans an
event out to many subscribers a bounded number per turn of the event loop, in order."""

from __future__ import annotations

import asyncio

from genspool.core.events import EventHub, JobChanged, Outbox, TokenDelta


def frame(size: int) -> bytes:
    return b"x" * size


async def test_deltas_are_dropped_first_and_a_terminal_event_evicts_them() -> None:
    box = Outbox(max_events=100, max_bytes=1000)
    assert box.put(frame(400), delta=True) and box.put(frame(400), delta=True)
    assert box.put(frame(400), delta=True)  # does not fit: dropped, not an overflow
    assert (len(box), box.dropped) == (2, 1)
    assert box.put(frame(900))  # a state event: the queued deltas go to make room
    assert (len(box), box.bytes, box.dropped) == (1, 900, 3)
    assert await box.get() == frame(900)


async def test_a_state_event_that_cannot_fit_overflows_but_a_lone_one_always_fits() -> None:
    box = Outbox(max_events=10, max_bytes=1000)
    assert box.put(frame(5000))  # alone: fits, however large (a terminal event is never lost)
    assert not box.put(frame(10))  # behind it, a state event cannot fit: the client is too slow
    box = Outbox(max_events=2, max_bytes=10**6)
    assert box.put(b"a") and box.put(b"b") and not box.put(b"c")


async def test_an_ended_outbox_sends_what_is_queued_unless_ended_at_once() -> None:
    box = Outbox(max_events=10, max_bytes=1000)
    box.put(b"a")
    box.end()
    assert [await box.get(), await box.get()] == [b"a", None]
    box = Outbox(max_events=10, max_bytes=1000)
    box.put(b"a")
    box.end(at_once=True)
    assert await box.get() is None and box.bytes == 0


async def test_a_large_fan_out_is_spread_over_turns_in_order() -> None:
    hub = EventHub(step=100)
    subs = [hub.subscribe(["j"]) for _ in range(250)]
    hub.publish(JobChanged("j", "running"))
    hub.publish(TokenDelta("j", "hi"))
    assert sum(s.queue.qsize() for s in subs) == 100  # this turn: one step
    await asyncio.sleep(0)
    assert sum(s.queue.qsize() for s in subs) == 200
    for _ in range(5):
        await asyncio.sleep(0)
    assert all(s.queue.qsize() == 2 for s in subs)
    for s in subs:  # each subscriber got the events in the order they were published
        assert isinstance(s.queue.get_nowait(), JobChanged)
        assert isinstance(s.queue.get_nowait(), TokenDelta)


def test_without_an_event_loop_every_subscriber_gets_the_event_at_once() -> None:
    hub = EventHub(step=10)
    subs = [hub.subscribe(["j"], deltas=False) for _ in range(25)]
    hub.publish(JobChanged("j", "succeeded"))
    hub.publish(TokenDelta("j", "not wanted"))
    assert all(s.queue.qsize() == 1 for s in subs)
