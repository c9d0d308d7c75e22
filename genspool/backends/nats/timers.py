"""The timers of the NATS backend, and what a sweep decides on each due one (no server here).

Timers replace the secondary indexes a SQL store would use. Each kind is a subject of the
stream ``<prefix>_timers`` with a durable consumer; a timer is a message that names the jobs
it watches and the time it is due at. :func:`genspool.backends.nats._sweep.sweep` is the one
loop over them all: it fetches a kind's messages, puts back those not due yet (a nak with the
delay), reads the records of the due ones and asks the kind's judge, which returns what to do
with the message (a :data:`~genspool.backends.nats.lanes.Verdict`) and the jobs it found:

* ``lease`` (one per lease call: token ``t``, deadline ``u``, ``ids``): running jobs whose
  lease ran out (``stale_leases``); looked at again at the next deadline while extended.
* ``expire`` (one per job with ``expires_at``, field ``e``): waiting jobs past it
  (``overdue``); dropped once the job has ended, re-armed by a replay.
* ``purge`` (one per job that ended in a purgeable status, field ``f``: when it finished):
  found when it finished before the cutoff (``purge`` deletes them).

The queue facade acts on what ``stale_leases`` and ``overdue`` report, so their timers are
looked at again shortly after (the facade's write may lose a race) and dropped when the job
has moved on.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping
from dataclasses import dataclass
from typing import Any

from genspool.backends.nats._codec import Rec
from genspool.backends.nats.lanes import Verdict, inflight
from genspool.core.job import Job

__all__ = [
    "HELD_RECHECK_S",
    "KINDS",
    "REAPER_RECHECK_S",
    "Judge",
    "TimerKind",
    "expire",
    "lease",
    "purge",
]

#: After a sweep reported a job to the facade, look at its timer again after this long.
REAPER_RECHECK_S = 2.0
#: A purge notice not due yet is looked at again after at most this long (each process may
#: have its own result TTL, so the cutoff is the caller's).
PURGE_RECHECK_S = 1.0
#: A purge notice of a job its separate store has not copied yet is looked at again after
#: this long (the next maintenance usually finds it copied).
HELD_RECHECK_S = 0.001

Note = dict[str, Any]
#: (note, records by id, the sweep's time, the message's age) -> (verdict, jobs found)
Judge = Callable[[Note, Mapping[str, Rec], float, float], tuple[Verdict, list[Job]]]


@dataclass(frozen=True, slots=True)
class TimerKind:
    name: str  # the subject's last token and the consumer's suffix
    when: str  # the note's field that says when it is due
    recheck_cap: float | None = None  # naks of notes not due wait at most this long

    def ids(self, note: Note) -> list[str]:
        return list(note["ids"]) if "ids" in note else [note["id"]]

    def delay(self, note: Note, at: float) -> float | None:
        """Seconds until the note is due at ``at``'s pace; None when it is due."""
        wait = float(note[self.when]) - at
        if wait <= 0:
            return None
        return min(wait, self.recheck_cap) if self.recheck_cap is not None else wait


KINDS = {
    "lease": TimerKind("lease", "u"),
    "expire": TimerKind("expire", "e"),
    "purge": TimerKind("purge", "f", PURGE_RECHECK_S),
}


def lease(note: Note, recs: Mapping[str, Rec], now: float, age: float) -> tuple[Verdict, list[Job]]:
    """The jobs of one lease call still held under its token whose lease ran out."""
    held = [recs[i].job for i in note["ids"] if i in recs and recs[i].job.lease_token == note["t"]]
    if not held:
        return "drop", []
    deadlines = [j.lease_expires_at or 0.0 for j in held]
    gone = [j for j, d in zip(held, deadlines, strict=True) if d < now]
    # Look again at the next deadline, or soon when the facade must act on some.
    later = [d - now for d in deadlines if d >= now] + [REAPER_RECHECK_S] * bool(gone)
    return max(min(later), 0.001), gone


def expire(waiting: Container[str], active: Container[str]) -> Judge:
    """The judge of expiry timers, given the core's status sets."""

    def judge(
        note: Note, recs: Mapping[str, Rec], now: float, age: float
    ) -> tuple[Verdict, list[Job]]:
        rec = recs.get(note["id"])
        pending = inflight(rec, note["r"], age)
        if pending is not None:
            return pending, []
        assert rec is not None
        job = rec.job
        if job.status in waiting and job.expires_at is not None and job.expires_at <= now:
            return REAPER_RECHECK_S, [job]
        if job.status not in active:
            return "drop", []  # ended; a replay arms a new timer
        # running: it may come back to waiting after its deadline
        return max((job.lease_expires_at or now) - now, REAPER_RECHECK_S), []

    return judge


def purge(statuses: Container[str], held: Container[str] = ()) -> Judge:
    """The judge of purge timers for jobs in ``statuses``; the sweep's time is the cutoff.
    A job in ``held`` (its separate store has not copied it yet) is looked at again soon."""

    def judge(
        note: Note, recs: Mapping[str, Rec], cutoff: float, age: float
    ) -> tuple[Verdict, list[Job]]:
        rec = recs.get(note["id"])
        if rec is None:
            return "drop", []
        pending = inflight(rec, note["r"], age)
        if pending is not None:
            return pending, []
        job = rec.job
        if job.status not in statuses:
            return "drop", []  # the ending this notice announced did not happen
        if job.finished_at is not None and job.finished_at >= cutoff:
            return min(job.finished_at - cutoff, PURGE_RECHECK_S) or 0.001, []
        if job.id in held:
            return HELD_RECHECK_S, []
        return "take", [job]

    return judge
