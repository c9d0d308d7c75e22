"""OpenAI's vector-store search filters: the model, and three ways to apply one.

A filter is a comparison ``{"type": "eq"|"ne"|"gt"|"gte"|"lt"|"lte"|"in"|"nin", "key",
"value"}`` or a compound ``{"type": "and"|"or", "filters": [...]}`` over a file's
``attributes`` (string, number and boolean values). :func:`parse_filter` validates one and
names the path of what is wrong (``filters.filters[1].type: ...``); then

* :func:`compile_filter` gives a predicate over one attributes dict (the reference semantics);
* :func:`mask` gives a boolean array over a columnar table (:class:`AttributeColumns`), the
  embedded store's pre-filter, vectorised;
* :func:`to_sql` gives a PostgreSQL ``WHERE`` fragment over a JSONB ``attributes`` column.

All three agree (the tests check them against each other on random filters). The semantics,
where OpenAI's reference is silent:

* values compare only within a type: a number never equals a string, ``true`` never equals
  ``1``; ``gt``/``gte``/``lt``/``lte`` order numbers numerically and strings by code point
  (OpenAI's own examples compare ISO dates as strings), and never match a boolean;
* a missing key (or a value of another type) matches no ``eq``, ``gt``, … or ``in``;
* ``ne`` is exactly ``not eq`` and ``nin`` exactly ``not in``, so a row without the key
  matches them (as LlamaIndex's reference filter does): "not tagged draft" includes untagged.
* an empty ``and`` matches every row, an empty ``or`` none.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from functools import reduce
from typing import Annotated, Any, Literal, TypeAlias

import numpy as np
from numpy.typing import NDArray
from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Tag,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from genspool.core.columns import AttributeColumns, AttributeValue, kind_of
from genspool.exceptions import InvalidRequest

__all__ = [
    "ComparisonFilter",
    "CompoundFilter",
    "Filter",
    "compile_filter",
    "mask",
    "parse_filter",
    "to_sql",
]

Scalar: TypeAlias = str | int | float | bool
Predicate: TypeAlias = Callable[[Mapping[str, Any]], bool]
Mask: TypeAlias = NDArray[np.bool_]

_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
_COMPARE: dict[str, Callable[[Any, Any], Any]] = {**_ORDER, "eq": operator.eq}
_SQL_ORDER = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


class ComparisonFilter(BaseModel):
    """Compare the attribute ``key`` with ``value``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"]
    key: str
    value: Scalar | list[str | int | float]

    @field_validator("value", mode="plain")
    @classmethod
    def _check_value(cls, value: object, info: ValidationInfo) -> Scalar | list[str | int | float]:
        """One message that says what ``value`` must be for this ``type``, rather than
        pydantic's one error per member of the union."""
        op = info.data.get("type")
        if op in ("in", "nin"):
            if not isinstance(value, list) or any(
                kind_of(v) not in ("number", "string") for v in value
            ):
                raise ValueError(f"'{op}' needs a list of strings and numbers")
            return value
        if op in _ORDER and kind_of(value) not in ("number", "string"):
            raise ValueError(f"'{op}' needs a number or a string")
        if kind_of(value) is None:
            raise ValueError("must be a string, a finite number or a boolean")
        return value  # type: ignore[return-value]  # kind_of checked it is a Scalar


class CompoundFilter(BaseModel):
    """Combine ``filters`` with ``and`` or ``or``."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    type: Literal["and", "or"]
    filters: list[Filter]


def _variant(data: Any) -> str:
    kind = data.get("type") if isinstance(data, dict) else getattr(data, "type", None)
    return "compound" if kind in ("and", "or") else "comparison"


Filter: TypeAlias = Annotated[
    Annotated[ComparisonFilter, Tag("comparison")] | Annotated[CompoundFilter, Tag("compound")],
    Discriminator(_variant),
]
CompoundFilter.model_rebuild()
_ADAPTER: TypeAdapter[Filter] = TypeAdapter(Filter)


def parse_filter(data: object, name: str = "filters") -> Filter:
    """Validate a filter given as JSON data; :class:`InvalidRequest` names the wrong field."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        path = _path(name, error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        raise InvalidRequest(f"{path}: {message}", param=path) from exc


def _path(name: str, loc: tuple[int | str, ...]) -> str:
    parts = [name]
    for part in loc:
        if isinstance(part, int):
            parts[-1] += f"[{part}]"
        elif part not in ("comparison", "compound"):  # the union's tags, not fields
            parts.append(part)
    return ".".join(parts)


# -- one attributes dict ---------------------------------------------------------------------


def compile_filter(f: Filter) -> Predicate:
    """A predicate over one ``attributes`` dict: the reference semantics."""
    if isinstance(f, CompoundFilter):
        parts = [compile_filter(sub) for sub in f.filters]
        if f.type == "and":
            return lambda attrs: all(p(attrs) for p in parts)
        return lambda attrs: any(p(attrs) for p in parts)
    return _compile_comparison(f)


def _compile_comparison(f: ComparisonFilter) -> Predicate:
    key, value = f.key, f.value
    if f.type in ("eq", "ne"):
        negate = f.type == "ne"
        return lambda attrs: _same(attrs.get(key), value) != negate
    if f.type in ("in", "nin"):
        negate, choices = f.type == "nin", value if isinstance(value, list) else [value]
        return lambda attrs: any(_same(attrs.get(key), c) for c in choices) != negate
    compare = _ORDER[f.type]
    return lambda attrs: kind_of(got := attrs.get(key)) == kind_of(value) and compare(got, value)


def _same(got: object, value: object) -> bool:
    return got is not None and kind_of(got) == kind_of(value) and got == value


# -- a columnar table --------------------------------------------------------------------------


def mask(f: Filter, columns: AttributeColumns) -> Mask:
    """The rows of ``columns`` that ``f`` matches, as a boolean array of ``len(columns)``."""
    n = len(columns)
    if isinstance(f, CompoundFilter):
        masks = [mask(sub, columns) for sub in f.filters]
        if f.type == "and":
            return reduce(np.logical_and, masks, np.ones(n, dtype=bool))
        return reduce(np.logical_or, masks, np.zeros(n, dtype=bool))
    if f.type in ("ne", "nin"):
        return ~_positive(f.key, "eq" if f.type == "ne" else "in", f.value, columns)
    return _positive(f.key, f.type, f.value, columns)


def _positive(key: str, op: str, value: object, columns: AttributeColumns) -> Mask:
    """``eq``, ``in`` or an order over the typed columns; False wherever the key is missing."""
    if op == "in":
        choices = value if isinstance(value, list) else [value]
        return _in_numbers(key, choices, columns) | _in_strings(key, choices, columns)
    kind = kind_of(value)
    if kind == "number":
        numbers = columns.numbers(key)
        return _none(columns) if numbers is None else np.asarray(_COMPARE[op](numbers, value))
    if kind == "boolean":
        flags = columns.flags(key)
        return _none(columns) if flags is None else flags == int(bool(value))
    return _string_op(key, op, str(value), columns)


def _string_op(key: str, op: str, value: str, columns: AttributeColumns) -> Mask:
    codes = columns.codes(key)
    if codes is None:
        return _none(columns)
    if op == "eq":
        code = columns.code(value)
        return codes == code if code >= 0 else _none(columns)
    hits = np.asarray(_ORDER[op](columns.words(), value))
    return _lookup(codes, hits)


def _in_numbers(key: str, choices: list[Any], columns: AttributeColumns) -> Mask:
    numbers = columns.numbers(key)
    wanted = [float(c) for c in choices if kind_of(c) == "number"]
    if numbers is None or not wanted:
        return _none(columns)
    return np.isin(numbers, wanted)


def _in_strings(key: str, choices: list[Any], columns: AttributeColumns) -> Mask:
    codes = columns.codes(key)
    wanted = [c for w in choices if isinstance(w, str) and (c := columns.code(w)) >= 0]
    if codes is None or not wanted:
        return _none(columns)
    hits = np.zeros(len(columns.words()), dtype=bool)
    hits[wanted] = True
    return _lookup(codes, hits)


def _lookup(codes: NDArray[np.int32], hits: Mask) -> Mask:
    """Per row, whether its string's code is a hit; code ``-1`` (no string) lands on the
    False appended at the end."""
    return np.append(hits, False)[codes]


def _none(columns: AttributeColumns) -> Mask:
    return np.zeros(len(columns), dtype=bool)


# -- PostgreSQL --------------------------------------------------------------------------------


def to_sql(
    f: Filter, dialect: Literal["postgres"] = "postgres", column: str = "attributes"
) -> tuple[str, list[AttributeValue | list[Any]]]:
    """A ``WHERE`` fragment and its parameters (psycopg ``%s`` style) over the JSONB
    ``column``, with the semantics of :func:`compile_filter`.

    Each typed comparison sits in a ``CASE`` on ``jsonb_typeof``: PostgreSQL does not promise
    to evaluate ``AND`` left to right, so ``typeof = 'number' AND (…)::float8 > x`` may cast a
    string and fail, while ``CASE`` guards the cast. Strings compare ``COLLATE "C"`` (code
    point order, as Python); keys are parameters, never spliced into the SQL."""
    if dialect != "postgres":
        raise ValueError(f"unknown SQL dialect {dialect!r}")
    if not column.isidentifier():
        raise ValueError(f"not a column name: {column!r}")
    params: list[AttributeValue | list[Any]] = []
    return _sql(f, column, params), params


def _sql(f: Filter, column: str, params: list[AttributeValue | list[Any]]) -> str:
    if isinstance(f, CompoundFilter):
        if not f.filters:
            return "TRUE" if f.type == "and" else "FALSE"
        joiner = " AND " if f.type == "and" else " OR "
        return "(" + joiner.join(_sql(sub, column, params) for sub in f.filters) + ")"
    if f.type in ("ne", "nin"):
        return f"(NOT {_sql_positive(f, column, params)})"
    return _sql_positive(f, column, params)


def _sql_positive(
    f: ComparisonFilter, column: str, params: list[AttributeValue | list[Any]]
) -> str:
    if f.type in ("in", "nin"):
        choices = f.value if isinstance(f.value, list) else [f.value]
        numbers = [float(c) for c in choices if kind_of(c) == "number"]
        strings = [c for c in choices if isinstance(c, str)]
        parts = []
        if numbers:
            parts.append(_typed(f.key, "number", "= ANY(%s::float8[])", numbers, column, params))
        if strings:
            parts.append(_typed(f.key, "string", "= ANY(%s::text[])", strings, column, params))
        return "(" + " OR ".join(parts) + ")" if parts else "FALSE"
    op = _SQL_ORDER.get(f.type, "=")
    kind = kind_of(f.value) or "string"
    return _typed(f.key, kind, f"{op} %s{_PARAM_CASTS[kind]}", f.value, column, params)


_CASTS = {"number": "::float8", "string": ' COLLATE "C"', "boolean": "::boolean"}
_PARAM_CASTS = {"number": "::float8", "string": "::text", "boolean": "::boolean"}


def _typed(
    key: str,
    kind: str,
    test: str,
    value: AttributeValue | list[Any],
    column: str,
    params: list[AttributeValue | list[Any]],
) -> str:
    """``CASE WHEN <key is a kind> THEN <its text, cast> <test> ELSE FALSE END``."""
    params.extend([key, key, value])
    guard = f"jsonb_typeof({column}->%s) = '{kind}'"
    return f"(CASE WHEN {guard} THEN ({column}->>%s){_CASTS[kind]} {test} ELSE FALSE END)"
