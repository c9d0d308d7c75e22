"""A ``multipart/form-data`` body parsed as it arrives, so that a file part is never held whole.

python-multipart's push parser (the one Starlette uses) calls back for each piece of each part;
:class:`FormStream` turns the callbacks into :data:`Event` values that the caller handles
between two reads of the body, awaiting whatever it does with them (a blob write) — so memory
stays at one read's worth of the file whatever its size. Text fields are kept, each bounded,
and so is the number of parts: ``await request.form()`` spools every part instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from genspool.exceptions import InvalidRequest

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = ["Event", "FileData", "FileEnd", "FileStart", "FormField", "FormStream"]


@dataclass(frozen=True, slots=True)
class FormField:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class FileStart:
    name: str
    filename: str | None


@dataclass(frozen=True, slots=True)
class FileData:
    data: bytes


@dataclass(frozen=True, slots=True)
class FileEnd:
    pass


Event = FormField | FileStart | FileData | FileEnd


def _text(raw: bytes, what: str) -> str:
    try:
        return raw.decode()
    except UnicodeDecodeError as exc:
        raise InvalidRequest(f"{what} is not UTF-8") from exc


class FormStream:
    """Feed it the body's chunks; each :meth:`feed` returns the events they completed. A part
    named ``file_field`` is a file (streamed as :class:`FileData`); any other is a text field of
    at most ``max_field_bytes``."""

    def __init__(
        self,
        content_type: str,
        *,
        file_field: str,
        max_field_bytes: int = 4096,
        max_parts: int = 16,
    ) -> None:
        kind, params = parse_options_header(content_type)
        boundary = params.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise InvalidRequest(
                f"Content-Type: expected multipart/form-data with a boundary, not"
                f" {content_type[:100]!r}"
            )
        self.file_field, self.max_field_bytes, self.max_parts = (
            file_field,
            max_field_bytes,
            max_parts,
        )
        self.ended = False
        self._events: list[Event] = []
        self._parts = 0
        self._header_name = bytearray()
        self._header_value = bytearray()
        self._headers: dict[bytes, bytes] = {}
        self._field: str | None = None  # the text field being read; None in a file part
        self._value = bytearray()
        self._parser = MultipartParser(boundary, self._callbacks())

    def _callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_name.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def feed(self, chunk: bytes) -> list[Event]:
        try:
            self._parser.write(chunk)
        except MultipartParseError as exc:
            raise InvalidRequest(f"the multipart body is malformed: {exc}") from exc
        events, self._events = self._events, []
        return events

    def close(self) -> list[Event]:
        """The last events, once the body has ended; a body cut short is an error."""
        try:
            self._parser.finalize()
        except MultipartParseError as exc:
            raise InvalidRequest(f"the multipart body is malformed: {exc}") from exc
        if not self.ended:
            raise InvalidRequest("the multipart body ended before its closing boundary")
        events, self._events = self._events, []
        return events

    # -- callbacks ---------------------------------------------------------------------------

    def _part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.max_parts:
            raise InvalidRequest(f"the form has more than {self.max_parts} parts")
        self._headers.clear()

    def _header_end(self) -> None:
        self._headers[bytes(self._header_name).lower()] = bytes(self._header_value)
        self._header_name.clear()
        self._header_value.clear()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = _text(options.get(b"name", b""), "a part's name")
        raw_filename = options.get(b"filename")
        filename = None if raw_filename is None else _text(raw_filename, "the filename")
        if name == self.file_field:
            self._field = None
            self._events.append(FileStart(name, filename))
        elif filename is not None:
            raise InvalidRequest(
                f"{name or 'a part'}: a file in a field other than {self.file_field!r}",
                param=name or None,
            )
        else:
            self._field = name
            self._value.clear()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._field is None:
            self._events.append(FileData(bytes(data[start:end])))
            return
        self._value.extend(data[start:end])
        if len(self._value) > self.max_field_bytes:
            raise InvalidRequest(
                f"{self._field}: longer than {self.max_field_bytes} bytes", param=self._field
            )

    def _part_end(self) -> None:
        if self._field is None:
            self._events.append(FileEnd())
        else:
            value = _text(bytes(self._value), self._field)
            self._events.append(FormField(self._field, value))

    def _end(self) -> None:
        self.ended = True
