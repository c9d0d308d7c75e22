"""Map-reduce: split work into requests that fit, run them as branches, reduce in levels.

The map's pieces are a list of ``items`` or a long ``text`` cut by the target model's own
tokenizer (:mod:`genspool.fanout.split`) so that every request, prompt and ``max_tokens``
included, fits the model's window. They run as ordinary child jobs, so the model's
``max_concurrency``, rate limits and retries bound them like any other job. Their outputs are
then reduced: in one call when they fit the reducer's window, else in levels of groups that do
(:func:`~genspool.fanout.split.plan_level`), each level checked to shrink
(:func:`~genspool.fanout.split.check_shrinks`), so a reduce ends or stops with an error naming
the level and the sizes; it never loops.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, Protocol

from genspool.core.models import Models
from genspool.exceptions import GenspoolError
from genspool.fanout.aggregate import Aggregator, FanoutFailed, Outcome, text_of
from genspool.fanout.spec import Aggregate, MapSpec, PlannedBranch, ReduceSpec
from genspool.fanout.template import render

__all__ = ["Branches", "MapReduce", "max_tokens_of"]


class Branches(Protocol):
    """What map-reduce needs of its coordinator (:class:`~genspool.fanout.coordinator.Fanout`)."""

    models: Models

    async def follow(self, branches: Sequence[PlannedBranch], agg: Aggregator) -> None: ...

    async def call(
        self, name: str, url: str, body: dict[str, Any], timeout_s: float | None
    ) -> Outcome: ...


#: What a request's answer may take when its body does not say (the reducer's budget keeps
#: room for it).
DEFAULT_MAX_TOKENS = 256


def max_tokens_of(body: dict[str, Any]) -> int:
    value = body.get("max_completion_tokens", body.get("max_tokens"))
    return value if isinstance(value, int) and value > 0 else DEFAULT_MAX_TOKENS


class MapReduce:
    def __init__(self, fan: Branches, spec: MapSpec, reduce: ReduceSpec | None) -> None:
        self.fan, self.spec, self.reduce = fan, spec, reduce

    async def run(self) -> dict[str, Any]:
        try:
            branches = await self._pieces()
        except GenspoolError as exc:
            raise FanoutFailed(f"map: {exc}", {"branches": []}, code="map_invalid") from exc
        agg = Aggregator(Aggregate(strategy="all"), [b.name for b in branches])
        await self.fan.follow(branches, agg)
        result = agg.result()
        result["strategy"] = "map_reduce"
        result["map"] = {"pieces": len(branches)}
        outputs = [
            text_of(agg.outcomes[b.name].result) or ""
            for b in branches
            if b.name in agg.outcomes and agg.outcomes[b.name].ok
        ]
        result["output"] = None
        if outputs and self.reduce is not None:
            await self._reduce(outputs, result)
        return result

    # -- map ---------------------------------------------------------------------------------

    async def _pieces(self) -> list[PlannedBranch]:
        spec = self.spec
        if spec.items is not None:
            bodies = [
                render(spec.body, {"item": item, "index": i}) for i, item in enumerate(spec.items)
            ]
        else:
            bodies = await asyncio.to_thread(self._split, spec.text or "")
        card = self.fan.models.card(str(spec.body.get("model", "")))
        out = []
        for i, body in enumerate(bodies):
            counts = card.count(spec.url, body) if card.count is not None else None
            out.append(
                PlannedBranch(
                    name=f"map-{i:05d}",
                    url=spec.url,
                    body=body,
                    timeout_s=spec.timeout_s,
                    prompt_tokens=sum(counts) if counts is not None else None,
                )
            )
        return out

    def _split(self, text: str) -> list[dict[str, Any]]:
        from genspool.fanout.split import request_overhead, split_text, text_budget, text_counter

        spec = self.spec
        card = self.fan.models.card(str(spec.body.get("model", "")))
        count = text_counter(card)
        if count is None:
            raise FanoutFailed(
                f"map: model {card.name} cannot count tokens, so a text cannot be cut to fit"
                " its window; give items instead",
                {"branches": []},
                code="map_invalid",
            )
        overhead = request_overhead(card, spec.body, "chunk", {"index": 0})
        budget = text_budget(
            window=card.context_window, overhead=overhead, max_tokens=max_tokens_of(spec.body)
        )
        chunks = split_text(text, budget=budget, count=count, overlap=spec.overlap_tokens)
        return [render(spec.body, {"chunk": c.text, "index": i}) for i, c in enumerate(chunks)]

    # -- reduce ------------------------------------------------------------------------------

    async def _reduce(self, outputs: list[str], result: dict[str, Any]) -> None:
        from genspool.fanout.split import (
            SEPARATOR,
            ReduceStalled,
            check_shrinks,
            plan_level,
            request_overhead,
            text_budget,
            text_counter,
        )

        reduce = self.reduce
        assert reduce is not None
        card = self.fan.models.card(str(reduce.body.get("model", "")))
        count = text_counter(card)
        levels: list[dict[str, Any]] = []
        result["reduce"] = {"levels": levels}
        texts = outputs
        level = 0
        while True:
            joined = SEPARATOR.join(texts)
            if count is None:
                break  # a model that cannot count: one call, and its own window decides
            overhead = request_overhead(card, reduce.body, "outputs")
            budget = text_budget(
                window=card.context_window,
                overhead=overhead,
                max_tokens=max_tokens_of(reduce.body),
                what="reduce",
            )
            before = count(joined)
            if before <= budget:
                break
            level += 1
            groups = await asyncio.to_thread(plan_level, texts, budget=budget, count=count)
            names = [f"reduce-{level}-{i:04d}" for i in range(len(groups))]
            branches = [
                PlannedBranch(
                    name=name,
                    url=reduce.url,
                    body=render(reduce.body, {"outputs": g.text}),
                    timeout_s=reduce.timeout_s,
                )
                for name, g in zip(names, groups, strict=True)
            ]
            agg = Aggregator(Aggregate(strategy="all"), names)
            await self.fan.follow(branches, agg)
            done = [agg.outcomes.get(n) for n in names]
            levels.append(
                {"level": level, "requests": len(groups), "input_tokens": before,
                 "branches": [o.public() for o in done if o is not None]}
            )  # fmt: skip
            failed = [o for o in done if o is None or not o.ok]
            if failed:
                self._failed(result, f"reduce level {level}: {len(failed)} request(s) failed")
            texts = [text_of(o.result) or "" for o in done if o is not None]
            after = count(SEPARATOR.join(texts))
            following = len(plan_level(texts, budget=budget, count=count))
            try:
                check_shrinks(level, before, after, len(groups), following)
            except ReduceStalled as exc:
                self._failed(result, str(exc), code="reduce_stalled")
        final = await self.fan.call(
            "reduce",
            reduce.url,
            render(reduce.body, {"outputs": SEPARATOR.join(texts)}),
            reduce.timeout_s,
        )
        result["reduce"]["final"] = final.public()
        if not final.ok:
            self._failed(result, "the final reduce call failed")
        result["output"] = text_of(final.result)
        _add_usage(result, [final, *(o for lv in levels for o in _outcomes(lv))])

    @staticmethod
    def _failed(result: dict[str, Any], message: str, *, code: str = "reduce_failed") -> None:
        """The mapped results stay readable in the error's details."""
        result["partial"] = True
        raise FanoutFailed(message, result, code=code)


def _outcomes(level: dict[str, Any]) -> list[Outcome]:
    return [
        Outcome(b["name"], b["job_id"], b["status"], b.get("result"), b.get("error"))
        for b in level["branches"]
    ]


def _add_usage(result: dict[str, Any], outcomes: list[Outcome]) -> None:
    for o in outcomes:
        usage = (o.result or {}).get("usage") if o.ok else None
        if isinstance(usage, dict):
            for key, value in usage.items():
                if key in result["usage"] and isinstance(value, int):
                    result["usage"][key] += value
