"""The batch runner: drives batches from ``validating`` to their end, in any API process.

Why not a parent job in a worker, as a fan-out is: a batch is no model call. It reads and
writes files (the API process holds the blob store) and checks lines against the model cards
(the API's model cards), and it may run for a day; as a job it would hold a worker's lane and a
model slot all that time. So each API process runs a :class:`BatchRunner` beside its file
purge, and the batch record's lease (:func:`genspool.batches.machine.claim`) makes one of them
drive each batch; when that process dies the lease runs out and another takes the batch over.

Driving a batch, a step at a time, each step ending in one fenced write of the record:

1. validate: stream the input file once and check every line (nothing runs if one is wrong),
   pinning the version of each stored prompt its lines name by a label
   (:mod:`genspool.batches.prompts`);
2. enqueue: stream it again and submit the lines as jobs in chunks, each job under the
   idempotency key ``batch:{batch}:{line}`` and with an id computed from its line, then move the
   ``enqueued`` cursor: a runner that dies between the two submits the chunk again, harmlessly;
3. follow: read the jobs after the ``written`` cursor, write the ended prefix as a segment
   (:mod:`genspool.batches.output`), move the cursor; once cancelled or expired, cancel the
   jobs still to run first (their workers abort the calls in flight), and write lines never
   enqueued as stopped;
4. finalize: join the segments into the output and error files, then end the batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from genspool.batches import machine
from genspool.batches.lines import Line, LineChecker, LineError, RequestCheck, split_lines
from genspool.batches.output import Segment, line_job_id, segment_key
from genspool.batches.prompts import LinePrompts
from genspool.core.batch import Batch, BatchStatus
from genspool.core.job import Job
from genspool.core.models import PROMPT, PROMPT_TOKENS, SCOPES
from genspool.core.prompts import Prompts
from genspool.core.queue import Queue
from genspool.core.roles import BatchStore
from genspool.core.scanner import Scanner
from genspool.exceptions import Conflict, NotFound
from genspool.files import Files
from genspool.providers.endpoints import file_ref

__all__ = ["BATCH_PRIORITY", "BatchRunner"]

log = logging.getLogger("genspool.batches")

#: Lines run after interactive calls (10) and after jobs submitted one by one (0).
BATCH_PRIORITY = -10


class _Lost(Exception):
    """Another runner holds the batch now (this one's lease ran out), or it ended."""


class BatchRunner(Scanner):
    WHAT = "batches"
    LEASE_S = 30.0
    #: How often a batch's unfinished lines are read again.
    POLL_S = 0.25
    ENQUEUE_CHUNK = 500
    READ_CHUNK = 1000
    #: The fewest lines a follow step reads: lines end about in order, so a step reads twice
    #: as many as ended in the last one (a full read of 1,000 rows every poll cost ~40 row
    #: decodes per line, the batch's largest CPU cost).
    MIN_WINDOW = 64

    def __init__(
        self,
        store: BatchStore,
        queue: Queue,
        files: Files,
        check: RequestCheck,
        *,
        max_line_bytes: int,
        owner: str | None = None,
        prompts: Prompts | None = None,
    ) -> None:
        """``check``: how one line's request is checked (the API's ``validate_request``);
        ``prompts``: the registry its lines' stored prompts come from (None: it keeps none)."""
        super().__init__(log)
        self.store, self.queue, self.files, self.check = store, queue, files, check
        self.prompts = prompts
        self.max_line_bytes = max_line_bytes
        self.owner = owner or f"batches-{uuid.uuid4().hex[:12]}"
        self.clock: Callable[[], float] = queue.clock
        #: Lines each batch's last follow step wrote (how far the next one reads).
        self._last_written: dict[str, int] = {}
        #: Called with each batch this runner ended (completed, failed, expired, cancelled),
        #: after the write: webhooks (genspool.webhooks) enqueue their deliveries here, and
        #: pipelines started by batch events (genspool.pipelines) start.
        self.on_end: list[Callable[[Batch], Awaitable[None]]] = []

    async def scan(self) -> None:
        """Claim the active batches that no runner's lease holds, up to ``MAX_DRIVEN``."""
        for found in await self.store.batches_active(100):
            if self.driving(found.id) or self.full:
                continue
            claimed = machine.claim(found, self.owner, self.clock(), self.LEASE_S)
            if claimed is not None and await self.store.batch_update(claimed, found.version):
                self.drive(found.id, self._drive(claimed))

    async def _drive(self, b: Batch) -> None:
        try:
            while not b.terminal:
                stepped = await self._step(b)
                if stepped is b:  # nothing to do yet: wait, keep the lease, see a cancel
                    await asyncio.sleep(self.POLL_S)
                    if b.lease_until - self.clock() < self.LEASE_S / 2:
                        stepped = await self._apply(b, machine.renew(b, self.clock(), self.LEASE_S))
                    else:  # no write of ours would meet the cancel's: read it
                        stepped = await self._current(b)
                b = stepped
        except _Lost:
            log.info("batch %s: driven elsewhere now", b.id)
        except Exception:
            log.exception("batch %s: a step failed; it is tried again", b.id)
        finally:
            self._last_written.pop(b.id, None)

    async def _step(self, b: Batch) -> Batch:
        now = self.clock()
        if (expired := machine.expire(b, now)) is not None:
            return await self._apply(b, expired)
        if b.stop is not None and b.in_progress_at is None:  # stopped before it ran a line
            return await self._apply(b, machine.finished(b, None, None, now))
        if b.status is BatchStatus.VALIDATING:
            return await self._validate(b)
        if b.written < b.total:
            if b.stop is None and b.enqueued < b.total:
                return await self._enqueue(b)
            return await self._follow(b)
        if (final := machine.lines_written(b, now, self.LEASE_S)) is not None:
            return await self._apply(b, final)
        return await self._finalize(b)

    # -- writing the record ------------------------------------------------------------------

    async def _try(self, old: Batch, new: Batch) -> Batch | None:
        """Write ``new`` over ``old``; None when the record changed meanwhile (a cancel) and
        this runner still holds it; :class:`_Lost` when it does not."""
        if await self.store.batch_update(new, old.version):
            if new.terminal and not old.terminal:
                await self._ended(new)
            return new
        fresh = await self.store.batch_get(old.id, None)
        if fresh is None or fresh.terminal or fresh.owner != self.owner:
            raise _Lost(old.id)
        return None

    async def _ended(self, b: Batch) -> None:
        for hook in self.on_end:
            try:
                await hook(b)
            except Exception:
                log.exception("batch %s: a hook on its end failed", b.id)

    async def _apply(self, old: Batch, new: Batch | None) -> Batch:
        """``new`` written, or the record as it is now (the caller's step decides again)."""
        if new is None:
            return old
        written = await self._try(old, new)
        if written is not None:
            return written
        fresh = await self.store.batch_get(old.id, None)
        if fresh is None:
            raise _Lost(old.id)
        return fresh

    # -- the steps ---------------------------------------------------------------------------

    def _checker(self, b: Batch, prompts: LinePrompts) -> LineChecker:
        return LineChecker(self.check, b.endpoint, self.max_line_bytes, prompts)

    def _prompts(self, b: Batch) -> LinePrompts:
        """The lines' stored prompts, with the versions pinned when the batch was checked."""
        return LinePrompts(self.prompts, b.tenant, b.endpoint, b.prompts)

    async def _validate(self, b: Batch) -> Batch:
        prompts = self._prompts(b)
        checker, total = self._checker(b, prompts), 0
        try:
            _, chunks = await self.files.content(b.input_file_id, b.tenant)
        except NotFound:
            gone = f"the input file {b.input_file_id} is gone (deleted or expired)"
            error = {
                "code": "invalid_file",
                "message": gone,
                "param": "input_file_id",
                "line": None,
            }
            return await self._apply(
                b, machine.validated(b, 0, [error], self.clock(), self.LEASE_S)
            )
        async for number, raw in split_lines(chunks, self.max_line_bytes):
            total = number
            if (line := await checker.check(number, raw)) is not None:
                await self._check_input(b, checker, line)
            if number % 10_000 == 0:  # a long file: keep the lease, see a cancel
                b = await self._apply(b, machine.renew(b, self.clock(), self.LEASE_S))
                if b.status is not BatchStatus.VALIDATING:
                    return b
        errors = checker.summary()
        if total == 0:
            errors = [{"code": "empty_file", "message": "the input file has no lines",
                       "param": "input_file_id", "line": None}]  # fmt: skip
        return await self._apply(
            b, machine.validated(b, total, errors, self.clock(), self.LEASE_S, prompts.pins)
        )

    async def _check_input(self, b: Batch, checker: LineChecker, line: Line) -> None:
        """A line's input file (a transcription's audio) must be one of the batch owner's."""
        ref = file_ref(b.endpoint, line.body)
        if ref is None:
            return
        try:
            await self.files.get(ref, b.tenant)
        except NotFound:
            why = f"file: no file {ref!r} among the batch owner's files"
            checker.refuse(line.number, LineError("invalid_file", why, "file"))

    async def _enqueue(self, b: Batch) -> Batch:
        checker = self._checker(b, self._prompts(b))
        pending: list[Job] = []
        _, chunks = await self.files.content(b.input_file_id, b.tenant)
        async for number, raw in split_lines(chunks, self.max_line_bytes):
            if number <= b.enqueued:
                continue
            line = await checker.check(number, raw)
            if line is None:  # it passed validation: the models changed since
                raise ValueError(f"batch {b.id}: line {number} no longer checks: {checker.errors}")
            pending.append(self._job(b, line))
            if len(pending) >= self.ENQUEUE_CHUNK:
                b = await self._submit(b, pending)
                pending = []
                if b.stop is not None:
                    return b
        return await self._submit(b, pending) if pending else b

    def _job(self, b: Batch, line: Line) -> Job:
        metadata: dict[str, Any] = {"custom_id": line.custom_id, "batch_id": b.id}
        if line.prompt_tokens is not None:
            metadata[PROMPT_TOKENS] = line.prompt_tokens
        if b.scopes is not None:
            metadata[SCOPES] = sorted(b.scopes)
        if line.prompt is not None:
            metadata[PROMPT] = line.prompt
        return Job(
            url=b.endpoint, body=line.body, model=line.model, id=line_job_id(b.id, line.number),
            tenant=b.tenant, priority=BATCH_PRIORITY, max_attempts=line.max_attempts,
            idempotency_key=f"batch:{b.id}:{line.number}", metadata=metadata,
            expires_at=b.expires_at,
        )  # fmt: skip

    async def _submit(self, b: Batch, jobs: list[Job]) -> Batch:
        await self.queue.submit_many(jobs)
        last = int(jobs[-1].id.rpartition("_")[2])
        return await self._apply(b, machine.enqueued(b, last, self.clock(), self.LEASE_S))

    async def _follow(self, b: Batch) -> Batch:
        if b.written >= b.enqueued:  # stopped before these lines were enqueued
            return await self._write_rest(b)
        window = min(self.READ_CHUNK, max(self.MIN_WINDOW, 2 * self._last_written.get(b.id, 0)))
        numbers = range(b.written + 1, min(b.enqueued, b.written + window) + 1)
        ids = [line_job_id(b.id, n) for n in numbers]
        found = {j.id: j for j in await self.queue.get_many(ids)}
        if b.stop is not None:
            await self._stop_jobs([j for j in found.values() if not j.terminal])
            found = {j.id: j for j in await self.queue.get_many(ids)}
        segment = Segment()
        for job_id in ids:
            job = found.get(job_id)
            if job is None:
                log.error("batch %s: the job %s of a line is gone", b.id, job_id)
                segment.add_lost(job_id)
            elif job.terminal:
                segment.add_job(job, b.stop)
            else:
                break
        self._last_written[b.id] = segment.lines
        return await self._write_segment(b, segment) if segment.lines else b

    async def _stop_jobs(self, jobs: list[Job]) -> None:
        async def one(job: Job) -> None:
            with contextlib.suppress(Conflict, NotFound):  # it ended meanwhile
                await self.queue.cancel(job.id)

        for start in range(0, len(jobs), 50):
            await asyncio.gather(*(one(j) for j in jobs[start : start + 50]))

    async def _write_rest(self, b: Batch) -> Batch:
        """The lines never enqueued, as stopped: read from the input (they were checked)."""
        why = b.stop or "cancel"
        segment = Segment()
        _, chunks = await self.files.content(b.input_file_id, b.tenant)
        async for number, raw in split_lines(chunks, self.max_line_bytes):
            if number <= b.written:
                continue
            custom_id = orjson.loads(raw or b"{}").get("custom_id", "")
            segment.add_stopped(str(custom_id), why, f"batch_req_{b.id[6:]}_{number}")
            if segment.lines >= self.READ_CHUNK:
                return await self._write_segment(b, segment)
        return await self._write_segment(b, segment)

    async def _write_segment(self, b: Batch, seg: Segment) -> Batch:
        for kind, data in (("o", seg.out), ("e", seg.err)):
            writer = await self.files.blobs.open_writer(
                segment_key(b.tenant, b.id, kind, b.segments)
            )
            try:
                await writer.write(bytes(data))
                await writer.commit()
            except BaseException:
                await writer.abort()
                raise
        new = machine.wrote(
            b, lines=seg.lines, completed=seg.completed, failed=seg.failed,
            out_lines=seg.out_lines, err_lines=seg.err_lines, usage=seg.usage,
            now=self.clock(), lease_s=self.LEASE_S,
        )  # fmt: skip
        return await self._apply(b, new)

    async def _finalize(self, b: Batch) -> Batch:
        made: list[str | None] = []
        for kind, count in (("o", b.out_lines), ("e", b.err_lines)):
            if count == 0:
                made.append(None)
                continue
            file_id = await self._join(b, kind, made)
            if file_id is None:
                return await self._apply(b, None)  # the record changed: decide again
            made.append(file_id)
            b = await self._current(b)
        await self._drop_segments(b)
        return await self._apply(b, machine.finished(b, made[0], made[1], self.clock()))

    async def _current(self, b: Batch) -> Batch:
        fresh = await self.store.batch_get(b.id, None)
        if fresh is None or fresh.owner != self.owner:
            raise _Lost(b.id)
        return fresh

    async def _join(self, b: Batch, kind: str, made: list[str | None]) -> str | None:
        """The output (``o``) or error (``e``) file of ``b``: the one a runner committed
        before it died, or one joined from the segments now."""
        index = 0 if kind == "o" else 1
        pending = b.pending_files[index]
        if pending is not None:
            with contextlib.suppress(NotFound):
                return (await self.files.get(pending, b.tenant)).id
        async with await self.files.open(tenant=b.tenant) as writer:
            ids = [*made, writer.id, None][:2]
            noted = await self._try(
                b, machine.pending(b, ids[0], ids[1], self.clock(), self.LEASE_S)
            )
            if noted is None:
                await writer.abort()
                return None
            for n in range(b.segments):
                chunks = await self.files.blobs.open_reader(segment_key(b.tenant, b.id, kind, n))
                if chunks is None:
                    raise LookupError(f"batch {b.id}: segment {kind}{n} is missing")
                async for chunk in chunks:
                    await writer.write(chunk)
            name = f"{b.id}_{'output' if kind == 'o' else 'error'}.jsonl"
            record = await writer.commit(
                filename=name, purpose="batch_output", expires_after_s=b.output_expires_after
            )
        return record.id

    async def _drop_segments(self, b: Batch) -> None:
        for n in range(b.segments):
            for kind in ("o", "e"):
                await self.files.blobs.delete(segment_key(b.tenant, b.id, kind, n))
