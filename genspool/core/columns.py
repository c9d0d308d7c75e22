"""A columnar table of file attributes, so a filter is a few numpy operations over all rows.

OpenAI's file ``attributes`` are flat maps of string, number or boolean values, and one key may
hold different types on different rows. Each key is therefore kept as up to three typed
columns, each allocated only once a value of its type appears:

* numbers as ``float64``, ``NaN`` where the row has no number under the key (NaN compares
  false with everything, which is what ``eq``/``gt``/… need for a missing value);
* strings dictionary-encoded as ``int32`` codes into a vocabulary, ``-1`` where absent, so
  ``eq`` is one integer comparison and ``gt``/``in`` are a lookup table over the (small)
  vocabulary gathered by the codes;
* booleans as ``int8`` (``0``/``1``, ``-1`` where absent).

Rows are appended, rewritten in place (an attribute update) and compacted with the vector
matrix that owns them (:meth:`AttributeColumns.take`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TypeAlias, TypeVar

import numpy as np
from numpy.typing import NDArray

__all__ = ["AttributeColumns", "AttributeValue", "Attributes", "kind_of"]

AttributeValue: TypeAlias = str | int | float | bool
Attributes: TypeAlias = Mapping[str, AttributeValue]

_NO_CODE = -1
_A = TypeVar("_A", NDArray[np.float64], NDArray[np.int32], NDArray[np.int8])


def kind_of(value: object) -> str | None:
    """``"boolean"``, ``"number"`` or ``"string"``; None for anything else.

    Checked before ``int`` because ``bool`` is an ``int`` in Python, and ``True == 1`` must
    not make a boolean attribute match the number 1 (it does not in JSON, nor in JSONB)."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number" if not isinstance(value, float) or math.isfinite(value) else None
    return "string" if isinstance(value, str) else None


class _Column:
    """One key's typed columns over ``capacity`` rows."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.numbers: NDArray[np.float64] | None = None
        self.codes: NDArray[np.int32] | None = None
        self.flags: NDArray[np.int8] | None = None

    def clear(self, start: int, stop: int) -> None:
        """Empty rows ``start:stop`` (no value of any type)."""
        if self.numbers is not None:
            self.numbers[start:stop] = np.nan
        if self.codes is not None:
            self.codes[start:stop] = _NO_CODE
        if self.flags is not None:
            self.flags[start:stop] = -1

    def grow(self, capacity: int) -> None:
        self.numbers = _grown(self.numbers, capacity, np.nan)
        self.codes = _grown(self.codes, capacity, _NO_CODE)
        self.flags = _grown(self.flags, capacity, -1)
        self.capacity = capacity

    def take(self, keep: NDArray[np.bool_]) -> None:
        """Keep only the rows of ``keep`` (the first ``len(keep)``), packed to the front."""
        for name in ("numbers", "codes", "flags"):
            array = getattr(self, name)
            if array is not None:
                kept = array[: len(keep)][keep]
                array[: len(kept)] = kept


def _grown(array: _A | None, capacity: int, fill: float) -> _A | None:
    if array is None:
        return None
    out = np.full(capacity, fill, dtype=array.dtype)
    out[: len(array)] = array
    return out


class AttributeColumns:
    """The attributes of ``len(self)`` rows, by key, as typed numpy columns."""

    def __init__(self) -> None:
        self._rows = 0
        self._capacity = 0
        self._columns: dict[str, _Column] = {}
        self._vocab: dict[str, int] = {}
        self._words: list[str] = []
        self._words_array: NDArray[np.str_] | None = None

    def __len__(self) -> int:
        return self._rows

    def append(self, rows: Sequence[Attributes | None]) -> None:
        """Add rows at the end, in order."""
        self._reserve(self._rows + len(rows))
        start, self._rows = self._rows, self._rows + len(rows)
        for offset, attributes in enumerate(rows):
            self._write(start + offset, attributes or {})

    def set(self, row: int, attributes: Attributes | None) -> None:
        """Replace one row's attributes (OpenAI's update of a file's ``attributes``)."""
        if not 0 <= row < self._rows:
            raise IndexError(row)
        for column in self._columns.values():
            column.clear(row, row + 1)
        self._write(row, attributes or {})

    def take(self, keep: NDArray[np.bool_]) -> None:
        """Keep the rows where ``keep`` is true, in order; ``len(keep)`` must be ``len(self)``."""
        kept = int(np.count_nonzero(keep))
        for column in self._columns.values():
            column.take(keep)
            column.clear(kept, self._rows)
        self._rows = kept

    def row(self, row: int) -> dict[str, AttributeValue]:
        """One row's attributes as a dict, as they were given (numbers as float or int)."""
        out: dict[str, AttributeValue] = {}
        for key, column in self._columns.items():
            if column.numbers is not None and not math.isnan(number := column.numbers[row]):
                out[key] = int(number) if number.is_integer() else float(number)
            elif column.codes is not None and (code := int(column.codes[row])) != _NO_CODE:
                out[key] = self._words[code]
            elif column.flags is not None and (flag := int(column.flags[row])) != -1:
                out[key] = bool(flag)
        return out

    # Column access for the filter compiler: views over the ``len(self)`` rows, or None when no
    # row ever held a value of that type under ``key``.

    def numbers(self, key: str) -> NDArray[np.float64] | None:
        column = self._columns.get(key)
        return None if column is None or column.numbers is None else column.numbers[: self._rows]

    def codes(self, key: str) -> NDArray[np.int32] | None:
        column = self._columns.get(key)
        return None if column is None or column.codes is None else column.codes[: self._rows]

    def flags(self, key: str) -> NDArray[np.int8] | None:
        column = self._columns.get(key)
        return None if column is None or column.flags is None else column.flags[: self._rows]

    def code(self, word: str) -> int:
        """The code of a string value, ``-1`` if no row ever held it."""
        return self._vocab.get(word, _NO_CODE)

    def words(self) -> NDArray[np.str_]:
        """The vocabulary, indexed by code (numpy compares ``<U`` strings by code point, as
        Python does)."""
        if self._words_array is None or len(self._words_array) != len(self._words):
            self._words_array = np.array(self._words, dtype=np.str_)
        return self._words_array

    def _reserve(self, rows: int) -> None:
        if rows <= self._capacity:
            return
        self._capacity = max(rows, self._capacity * 3 // 2, 1024)
        for column in self._columns.values():
            column.grow(self._capacity)

    def _write(self, row: int, attributes: Attributes) -> None:
        for key, value in attributes.items():
            column = self._columns.get(key)
            if column is None:
                column = self._columns[key] = _Column(self._capacity)
            self._put(column, row, value)

    def _put(self, column: _Column, row: int, value: AttributeValue) -> None:
        kind = kind_of(value)
        if kind == "number":
            if column.numbers is None:
                column.numbers = np.full(column.capacity, np.nan)
            column.numbers[row] = value
        elif kind == "string":
            if column.codes is None:
                column.codes = np.full(column.capacity, _NO_CODE, dtype=np.int32)
            column.codes[row] = self._encode(str(value))
        elif kind == "boolean":
            if column.flags is None:
                column.flags = np.full(column.capacity, -1, dtype=np.int8)
            column.flags[row] = int(bool(value))
        else:
            raise ValueError(f"attribute values are strings, numbers or booleans: {value!r}")

    def _encode(self, word: str) -> int:
        code = self._vocab.get(word)
        if code is None:
            code = self._vocab[word] = len(self._words)
            self._words.append(word)
        return code
