"""Cutting a :class:`~genspool.rag.documents.Document` into chunks by the embedding model's own
tokenizer, with boundaries that stay put when the document is edited.

Each chunk is an exact slice of the document (``document.text[c.start:c.end] == c.text``) of at
most ``max_tokens`` tokens, and carries the page and heading path in force where it starts.

Why not one greedy pass of a splitter over the whole text: greedy packing decides each boundary
from the previous one, so an edit that changes one paragraph's length moves every boundary after
it. Measured on a 200-chunk document with semantic-text-splitter (800/400 tokens): one edited
paragraph changed 2–15 chunk hashes, so the cache of embeddings would miss for most of them.
Here boundaries are content-defined, as in rsync or FastCDC, at the level of text units:

1. **Units** are paragraphs; one longer than a quarter of a segment is cut at lines, then at
   sentences, and only then by semantic-text-splitter, inside that unit alone. Headings and
   page starts always begin a unit. A unit's cuts depend on its own text only.
2. **Segments** (at most ``max_tokens - overlap_tokens`` tokens) group consecutive units. A run
   of units ends after a unit whose hash, as a number in [0, 1), falls under ``tokens /
   target`` — so ends come every ``target`` tokens on average, wherever the document starts —
   or before a heading (unless only headings came since the last end). A run over the budget
   is halved after its unit of least hash, and the halves again. Past an edited unit the same
   units hash the same, so the segments fall back in step at the next end.
3. **Chunks** are a segment preceded by up to ``overlap_tokens`` from the end of the segment
   before it (none across a heading: a section's first chunk starts at its heading).

An edit inside one segment changes its chunk and the next one (which overlaps it), and a third
when it moves a segment's end. Not always: an edit that merges two runs, or pushes a run just
over the budget, re-cuts its halves and touches a 4th chunk. Measured with MiniLM's tokenizer at
800/400 tokens, ~200-chunk documents, random single-paragraph edits (appended to, cut short, a
word inserted, replaced): 2 chunks changed for about two thirds, 3 for a quarter, 4 for 1–8 %
(by corpus), never more; chunks average ~450 tokens.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from semantic_text_splitter import TextSplitter

from genspool.exceptions import InvalidRequest
from genspool.rag.documents import Document

__all__ = ["Chunk", "chunk"]

#: A unit's draw hashes its first characters only: an edit further into a paragraph leaves
#: where segments end alone (measured: a quarter fewer edits touching a third chunk).
_DRAWN = 64

#: Finer and finer places to cut a unit that is too long: paragraphs, lines, sentences.
_CUTS = (re.compile(r"\n[ \t]*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?])\s+"))


@dataclass(frozen=True, slots=True)
class Chunk:
    """``text`` is ``document.text[start:end]``; ``tokens`` counts it without special tokens;
    ``page`` and ``headings`` are those in force at ``start``; ``seq`` counts from 0."""

    text: str
    start: int
    end: int
    tokens: int
    page: int | None
    headings: tuple[str, ...]
    seq: int
    sha256: str


@dataclass(frozen=True, slots=True)
class _Unit:
    start: int
    end: int
    tokens: int
    heading: bool  # starts at a heading: a segment ends before it, and no overlap crosses it
    draw: float  # its hash as a number in [0, 1): where segments end


def chunk(
    document: Document, tokenizer: Any, max_tokens: int = 800, overlap_tokens: int = 400
) -> list[Chunk]:
    """The chunks of ``document``, cut by ``tokenizer`` (a ``tokenizers.Tokenizer``).

    OpenAI's ``static`` strategy defaults are 800 and 400; the overlap may be at most half.
    """
    _check(max_tokens, overlap_tokens)
    cutter = _Cutter(document, _untruncated(tokenizer), max_tokens, overlap_tokens)
    spans = list(cutter.spans())
    counts = cutter.count([document.text[s:e] for s, e in spans])
    pairs = enumerate(zip(spans, counts, strict=True))
    return [_chunk(document, s, e, n, seq) for seq, ((s, e), n) in pairs]


def _check(max_tokens: int, overlap_tokens: int) -> None:
    if max_tokens < 4:
        raise InvalidRequest(
            f"max_chunk_size_tokens is {max_tokens}; it must be at least 4",
            param="max_chunk_size_tokens",
        )
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise InvalidRequest(
            f"chunk_overlap_tokens is {overlap_tokens}; it must be between 0 and half of "
            f"max_chunk_size_tokens ({max_tokens // 2})",
            param="chunk_overlap_tokens",
        )


def _untruncated(tokenizer: Any) -> Any:
    """The tokenizer itself, or a copy without truncation and padding (which would cap or pad
    every count); the caller's tokenizer is never changed."""
    if tokenizer.truncation is None and tokenizer.padding is None:
        return tokenizer
    copy = type(tokenizer).from_str(tokenizer.to_str())
    copy.no_truncation()
    copy.no_padding()
    return copy


def _chunk(document: Document, start: int, end: int, tokens: int, seq: int) -> Chunk:
    text = document.text[start:end]
    return Chunk(
        text=text,
        start=start,
        end=end,
        tokens=tokens,
        page=document.page_at(start),
        headings=tuple(document.headings_at(start)),
        seq=seq,
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )


class _Cutter:
    """One document's units, segments and chunk spans."""

    def __init__(self, document: Document, tokenizer: Any, max_tokens: int, overlap: int) -> None:
        self.text = document.text
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap
        self.step = max_tokens - overlap  # a segment's budget: the tokens a chunk adds
        self.unit_cap = max(self.step // 4, 1)
        self.min_segment = self.step // 4  # no hash-chosen end before this many tokens
        self.target = max(self.step * 3 // 4, 1)  # mean tokens past min_segment to a hash end
        self.headings = {h.offset for h in document.headings}
        self._splitter: TextSplitter | None = None

    def count(self, texts: Sequence[str]) -> list[int]:
        encoded = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [len(e.ids) for e in encoded]

    # -- chunks ---------------------------------------------------------------------------------

    def spans(self) -> Iterator[tuple[int, int]]:
        """(start, end) of each chunk: a segment and its overlap, recounted to fit."""
        previous: list[_Unit] = []
        for segment in self.segments(self.units()):
            yield from self._fitted(segment, previous)
            previous = segment

    def _fitted(self, segment: list[_Unit], previous: list[_Unit]) -> Iterator[tuple[int, int]]:
        """Units are counted alone; a tokenizer whose tokens merge across a seam can make the
        joined text longer, so the overlap goes first, then the segment is halved."""
        start, end = segment[0].start, segment[-1].end
        with_tail = self._tail(previous) if previous and not segment[0].heading else None
        for first in (with_tail, start) if with_tail is not None else (start,):
            if self.count([self.text[first:end]])[0] <= self.max_tokens:
                yield first, end
                return
        if len(segment) == 1:  # one unit over budget alone: nothing left to cut
            yield start, end
            return
        half = len(segment) // 2
        yield from self._fitted(segment[:half], previous)
        yield from self._fitted(segment[half:], segment[:half])

    def _tail(self, previous: list[_Unit]) -> int | None:
        """Where the overlap taken from the end of ``previous`` starts, if any fits."""
        used, start = 0, None
        for unit in reversed(previous):
            if used + unit.tokens > self.overlap:
                partial = self._suffix(unit, self.overlap - used)
                return partial if partial is not None else start
            used, start = used + unit.tokens, unit.start
        return start

    def _suffix(self, unit: _Unit, budget: int) -> int | None:
        """The start of the last ``budget`` tokens of ``unit``, moved on to a word's start."""
        if budget <= 0:
            return None
        text = self.text[unit.start : unit.end]
        offsets = self.tokenizer.encode(text, add_special_tokens=False).offsets
        for begin, _ in offsets[max(len(offsets) - budget, 1) :]:
            if begin > 0 and text[begin - 1].isspace():
                return unit.start + int(begin)
        return None

    # -- segments -------------------------------------------------------------------------------

    def segments(self, units: list[_Unit]) -> Iterator[list[_Unit]]:
        for run in self._runs(units):
            yield from self._fitting(run)

    def _runs(self, units: list[_Unit]) -> Iterator[list[_Unit]]:
        """Units up to each hash-chosen end, or up to a heading; of any size. Headings in a row
        stay together, so a heading is never a chunk alone."""
        current: list[_Unit] = []
        for unit in units:
            if unit.heading and not all(u.heading for u in current):
                yield current
                current = []
            current.append(unit)
            if self._ends(current):
                yield current
                current = []
        if current:
            yield current

    def _ends(self, current: list[_Unit]) -> bool:
        last = current[-1]
        return last.draw < last.tokens / self.target and self._size(current) >= self.min_segment

    def _fitting(self, run: list[_Unit]) -> Iterator[list[_Unit]]:
        """A run over the budget halved, and its halves again, each time after the unit of
        least draw: the cuts depend on the run's own units, not on where a cut fell before,
        so an edit re-cuts only the part of the run it is in."""
        if self._size(run) <= self.step or len(run) == 1:
            yield run
            return
        cut = self._split_point(run)
        yield from self._fitting(run[:cut])
        yield from self._fitting(run[cut:])

    def _split_point(self, run: list[_Unit]) -> int:
        """After the unit of least draw that leaves ``min_segment`` tokens each side, if any."""
        total, before = self._size(run), 0
        places: list[tuple[float, float, int]] = []
        for i, unit in enumerate(run[:-1], start=1):
            before += unit.tokens
            balanced = before >= self.min_segment and total - before >= self.min_segment
            places.append((0.0 if balanced else 1.0, unit.draw, i))
        return min(places)[2]

    @staticmethod
    def _size(units: list[_Unit]) -> int:
        return sum(u.tokens for u in units)

    # -- units ----------------------------------------------------------------------------------

    def units(self) -> list[_Unit]:
        spans: list[tuple[int, int]] = []
        for start, end in self._sections():
            spans.extend(self._cut(start, end, 0))
        counts = self.count([self.text[s:e] for s, e in spans])
        return [self._unit(s, e, n) for (s, e), n in zip(spans, counts, strict=True)]

    def _unit(self, start: int, end: int, tokens: int) -> _Unit:
        digest = hashlib.sha256(
            self.text[start : min(end, start + _DRAWN)].encode("utf-8")
        ).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        return _Unit(start, end, tokens, start in self.headings, draw)

    def _sections(self) -> Iterator[tuple[int, int]]:
        """The text cut before every heading; a unit never spans one."""
        bounds = sorted({0, *self.headings, len(self.text)})
        yield from itertools.pairwise(bounds)

    def _cut(self, start: int, end: int, level: int) -> list[tuple[int, int]]:
        """Trimmed, non-empty spans of at most ``unit_cap`` tokens covering ``[start, end)``."""
        pieces = [(s, e) for s, e in self._split(start, end, level) if s < e]
        if not pieces:
            return []
        counts = self.count([self.text[s:e] for s, e in pieces])
        spans: list[tuple[int, int]] = []
        for (s, e), n in zip(pieces, counts, strict=True):
            if n <= self.unit_cap:
                spans.append((s, e))
            elif level + 1 < len(_CUTS):
                spans.extend(self._cut(s, e, level + 1))
            else:
                spans.extend(self._by_splitter(s, e))
        return spans

    def _split(self, start: int, end: int, level: int) -> Iterator[tuple[int, int]]:
        position = start
        for match in _CUTS[level].finditer(self.text, start, end):
            yield self._trimmed(position, match.start())
            position = match.end()
        yield self._trimmed(position, end)

    def _trimmed(self, start: int, end: int) -> tuple[int, int]:
        piece = self.text[start:end]
        return start + len(piece) - len(piece.lstrip()), start + len(piece.rstrip())

    def _by_splitter(self, start: int, end: int) -> list[tuple[int, int]]:
        """A sentence too long alone: semantic-text-splitter cuts it (words, then characters)."""
        if self._splitter is None:
            self._splitter = TextSplitter.from_huggingface_tokenizer(
                self.tokenizer, self.unit_cap, trim=True
            )
        pieces = self._splitter.chunk_indices(self.text[start:end])
        return [(start + at, start + at + len(piece)) for at, piece in pieces]
