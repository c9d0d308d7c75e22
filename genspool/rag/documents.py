"""A source's bytes reduced to the text that is chunked, embedded and cited.

:func:`extract` reads PDF (pypdf, page by page), Markdown, HTML (trafilatura's main text, as
Markdown so its headings survive) and plain text. A :class:`Document` keeps where each page
starts and each heading stands as character offsets into its ``text``, so a chunk can name its
page and heading path and a citation can slice the source exactly.

``sha256`` is over the extracted text only. Heuristic metadata (trafilatura's title and date —
the date of a page without one is guessed from its footer, and can change as the site does) goes
into ``metadata`` and is never hashed, so re-ingesting an unchanged page is a no-op.

Extraction is synchronous and CPU-bound: callers run it in a thread.
"""

from __future__ import annotations

import bisect
import hashlib
import io
import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any, NamedTuple

from genspool.exceptions import InvalidRequest

__all__ = [
    "HTML",
    "MARKDOWN",
    "PDF",
    "TEXT",
    "Document",
    "Heading",
    "Page",
    "SourceError",
    "extract",
    "markdown_headings",
    "media_type_of",
]

PDF = "application/pdf"
MARKDOWN = "text/markdown"
HTML = "text/html"
TEXT = "text/plain"

_SUFFIXES = {
    ".pdf": PDF,
    ".md": MARKDOWN,
    ".markdown": MARKDOWN,
    ".html": HTML,
    ".htm": HTML,
    ".xhtml": HTML,
    ".txt": TEXT,
    ".text": TEXT,
}
#: Media types that say nothing about the content: the bytes are sniffed instead.
_VAGUE = {"", "application/octet-stream", "binary/octet-stream"}
_ALIASES = {"text/x-markdown": MARKDOWN, "application/xhtml+xml": HTML}


class SourceError(InvalidRequest):
    """A source that cannot be read as a document: an unsupported or binary file, a broken or
    encrypted PDF, or one with no text. The message names the file."""

    code = "unsupported_source"


class Page(NamedTuple):
    """Where a PDF page's text starts in :attr:`Document.text` (``number`` counts from 1)."""

    start: int
    number: int


class Heading(NamedTuple):
    """A heading at ``offset`` in :attr:`Document.text`: ``level`` 1 for ``#``, up to 6."""

    offset: int
    level: int
    title: str


@dataclass(frozen=True, slots=True)
class Document:
    """A source's extracted text, with the offsets of its pages and headings."""

    source: str
    filename: str
    media_type: str
    text: str
    pages: tuple[Page, ...] = ()
    headings: tuple[Heading, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    sha256: str = field(init=False)

    def __post_init__(self) -> None:
        digest = hashlib.sha256(self.text.encode("utf-8")).hexdigest()
        object.__setattr__(self, "sha256", digest)

    def page_at(self, offset: int) -> int | None:
        """The page that ``offset`` falls on; None for a document without pages."""
        i = bisect.bisect_right([p.start for p in self.pages], offset) - 1
        return self.pages[max(i, 0)].number if self.pages else None

    def headings_at(self, offset: int) -> list[str]:
        """The heading path in force at ``offset``, outermost first (e.g. ["Guide", "Install"]).

        A heading that starts exactly at ``offset`` is included."""
        path: list[Heading] = []
        for heading in self.headings:
            if heading.offset > offset:
                break
            path = [h for h in path if h.level < heading.level] + [heading]
        return [h.title for h in path]


def extract(
    data: bytes, filename: str, media_type: str | None = None, *, source: str | None = None
) -> Document:
    """The :class:`Document` of one file or fetched page; ``source`` defaults to ``filename``.

    ``media_type`` may carry parameters (a Content-Type header's ``charset``); without a useful
    one the type comes from the filename's suffix, then from the bytes themselves.
    """
    kind, charset = _parse_media_type(media_type)
    kind = kind or media_type_of(filename, data)
    reader = _READERS.get(kind) or (_text if kind.startswith("text/") else None)
    if reader is None:
        raise SourceError(f"{filename}: {kind} is not a supported type (PDF, Markdown, HTML, text)")
    text, pages, metadata = reader(data, filename, charset)
    if not text.strip():
        raise SourceError(f"{filename}: no text could be extracted")
    headings = markdown_headings(text) if kind in (MARKDOWN, HTML) else ()
    return Document(
        source=source or filename,
        filename=filename,
        media_type=kind,
        text=text,
        pages=pages,
        headings=headings,
        metadata=metadata,
    )


def media_type_of(filename: str, data: bytes) -> str:
    """The media type a file is read as: by its suffix when known, else by its first bytes."""
    by_suffix = _SUFFIXES.get(PurePosixPath(filename).suffix.lower())
    if by_suffix:
        return by_suffix
    if data.startswith(b"%PDF-"):
        return PDF
    head = data[:512].lstrip().lower()
    if head.startswith((b"<!doctype html", b"<html")):
        return HTML
    if b"\x00" in data[:8192] or _decode(data, None) is None:
        raise SourceError(f"{filename}: a binary file, not a supported document")
    return TEXT


def _parse_media_type(value: str | None) -> tuple[str, str | None]:
    """``text/html; charset=latin-1`` → (``text/html``, ``latin-1``); vague types → ""."""
    kind, _, params = (value or "").partition(";")
    kind = kind.strip().lower()
    match = re.search(r"charset=\"?([\w.:-]+)", params, re.IGNORECASE)
    kind = _ALIASES.get(kind, kind)
    return ("" if kind in _VAGUE else kind), (match.group(1) if match else None)


# -- readers: (data, filename, charset) -> (text, pages, metadata) -------------------------------

_Read = tuple[str, tuple[Page, ...], dict[str, Any]]

#: Between two pages' text: a paragraph break, so no chunk boundary or word joins across it.
PAGE_BREAK = "\n\n"


def _pdf(data: bytes, filename: str, charset: str | None) -> _Read:
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise SourceError(f"{filename}: the PDF is encrypted")
        texts = [_normalise(page.extract_text() or "").strip() for page in reader.pages]
        title = reader.metadata.title if reader.metadata else None
    except (PyPdfError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{filename}: not a readable PDF ({exc})") from exc
    pages, parts, offset = [], [], 0
    for number, text in enumerate(texts, start=1):
        pages.append(Page(offset, number))
        parts.append(text)
        offset += len(text) + len(PAGE_BREAK)
    metadata = {"title": title} if title else {}
    return PAGE_BREAK.join(parts), tuple(pages), metadata


def _markdown(data: bytes, filename: str, charset: str | None) -> _Read:
    text = _text(data, filename, charset)[0]
    headings = markdown_headings(text)
    titles = [h.title for h in headings if h.level == 1]
    return text, (), ({"title": titles[0]} if titles else {})


def _html(data: bytes, filename: str, charset: str | None) -> _Read:
    import trafilatura

    page: str | bytes = data if charset is None else _text(data, filename, charset)[0]
    # Markdown output keeps the page's headings as `#` lines; deduplicate stays off, as its
    # cache would make one page's text depend on the pages extracted before it.
    text = trafilatura.extract(
        page, output_format="markdown", include_comments=False, include_tables=True,
        deduplicate=False,
    )  # fmt: skip
    if text is None:
        raise SourceError(f"{filename}: no main text found in the HTML")
    found = trafilatura.extract_metadata(page)
    fields = found.as_dict() if found else {}
    metadata = {k: v for k, v in fields.items() if _plain(v) and k not in _NOT_METADATA}
    return _normalise(text), (), metadata


#: trafilatura's fields that describe the extraction, not the page (``filedate`` is today).
_NOT_METADATA = {"filedate", "fingerprint", "id", "raw_text", "text", "body", "commentsbody"}


def _text(data: bytes, filename: str, charset: str | None) -> _Read:
    text = _decode(data, charset)
    if text is None:
        raise SourceError(f"{filename}: not text in {charset or 'UTF-8'}")
    return _normalise(text), (), {}


_READERS = {PDF: _pdf, MARKDOWN: _markdown, HTML: _html, TEXT: _text}


def _decode(data: bytes, charset: str | None) -> str | None:
    try:
        return data.decode(charset or "utf-8-sig")
    except (UnicodeDecodeError, LookupError):
        return None


def _normalise(text: str) -> str:
    """One newline convention and no BOM, so the same text hashes the same from any editor."""
    return text.replace("\r\n", "\n").replace("\r", "\n").lstrip("\ufeff")


def _plain(value: Any) -> bool:
    return isinstance(value, str | int | float) and value != ""


# -- headings ------------------------------------------------------------------------------------

_ATX = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_headings(text: str) -> tuple[Heading, ...]:
    """ATX (``## Title``) and setext (a line underlined by ``===``/``---``) headings, outside
    fenced code blocks, each at the offset of its line's start."""
    found: list[Heading] = []
    offset, fence, previous = 0, "", (0, "")
    for line in text.split("\n"):
        fenced = _FENCE.match(line)
        if fenced and (not fence or fenced.group(1) == fence):
            fence = "" if fence else fenced.group(1)
        elif not fence:
            heading = _heading(line, offset, previous)
            if heading:
                found.append(heading)
        previous = (offset, line)
        offset += len(line) + 1
    return tuple(found)


def _heading(line: str, offset: int, previous: tuple[int, str]) -> Heading | None:
    atx = _ATX.match(line)
    if atx:
        return Heading(offset, len(atx.group(1)), atx.group(2).strip())
    underline = _SETEXT.match(line)
    above_offset, above = previous
    if underline and above.strip() and not _ATX.match(above) and not _SETEXT.match(above):
        return Heading(above_offset, 1 if underline.group(1)[0] == "=" else 2, above.strip())
    return None
