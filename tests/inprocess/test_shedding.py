"""Load shedding at the door: beyond ``max_queue_depth``, or with the oldest waiting job older
than ``max_queue_age_s``, a submission gets 429 with ``Retry-After`` and a message naming the
limit; nothing accepted is touched. No worker runs, so the queue only grows; the snapshot is
refreshed by hand and time moves on a fake clock."""

from __future__ import annotations

from genspool.testing.inprocess import FakeClock, serve
from tests.helpers.api import CHAT, assert_error, chat_body

SHED = {"name": "shed", "provider": "echo", "admission": {"max_queue_depth": 20}}
AGED = {"name": "aged", "provider": "echo", "admission": {"max_queue_age_s": 1.0}}


async def test_beyond_max_queue_depth_submissions_get_429() -> None:
    async with serve([SHED]) as gs:
        answers = [
            await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("shed")})
            for _ in range(25)
        ]
        assert [r.status_code for r in answers] == [202] * 20 + [429] * 5
        for refused in answers[20:]:
            message = assert_error(refused, 429, "rate_limit_exceeded")
            assert "max_queue_depth is 20" in message and "shed" in message, message
            assert int(refused.headers["retry-after"]) >= 1
        await gs.services.admission.refresh()  # the snapshot agrees with what was admitted
        again = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("shed")})
        assert again.status_code == 429
        assert (await gs.queue.depth())["shed"]["queued"] == 20


async def test_a_queue_older_than_max_queue_age_sheds() -> None:
    clock = FakeClock()
    async with serve([AGED], clock=clock) as gs:
        submit = {"url": CHAT, "body": chat_body("aged")}
        assert (await gs.client.post("/v1/jobs", json=submit)).status_code == 202
        await gs.services.admission.refresh()
        assert (await gs.client.post("/v1/jobs", json=submit)).status_code == 202
        clock.advance(2.5)
        await gs.services.admission.refresh()
        refused = await gs.client.post("/v1/jobs", json=submit)
        assert "max_queue_age_s is 1" in assert_error(refused, 429, "rate_limit_exceeded")
        assert int(refused.headers["retry-after"]) >= 1
