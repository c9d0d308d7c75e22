"""EventBridge event patterns, compiled once into closures and matched against JSON events.

A pattern is a JSON object whose leaves are arrays (an OR of match values) and whose fields are
ANDed; ``compile_pattern`` checks it the way EventBridge (the ``aws/event-ruler`` compiler)
does and turns every leaf into a predicate with its strings lowered, networks parsed, bounds
taken and wildcards made regexes, so matching an event reads the event and nothing else.

Where EventBridge's documentation and its observed behaviour (the AWS-validated LocalStack
corpus in ``tests/data/eventbridge_patterns.json``) leave room, this module decides so:

- a number matches numerically (``[300]`` matches ``300.0``, as AWS answers), never ``true``;
- a field holding an object, ``[]`` or no scalar at all is *absent* for a leaf: ``exists: true``
  fails and ``exists: false`` holds there (exists works on leaf nodes only);
- ``anything-but`` needs a present scalar value: null, numbers and booleans are "anything but"
  a string set, a string is "anything but" a number set; an absent field never matches;
- an array of objects under a nested pattern matches when one element matches all of it
  (event-ruler's array consistency); keys are matched as written, not dot-joined.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterator
from typing import Any, Final, Generic, TypeVar

__all__ = ["Matcher", "PatternError", "PatternIndex", "compile_pattern", "matches"]

K = TypeVar("K")

Pred = Callable[[Any], bool]
ObjTest = Callable[[dict[str, Any]], bool]

_MISSING: Final = object()
_NUMBER: Final = (int, float)  # type() is checked, so bool (a subclass of int) is not a number
_MAX_COMBINATIONS: Final = 1000  # EventBridge refuses patterns whose $or expand beyond this
_OR: Final = "$or"
# event-ruler refuses these as field names inside "$or" (Constants.RESERVED_FIELD_NAMES_IN_OR_…)
_RESERVED_IN_OR: Final = frozenset(
    {
        *("exactly", "equals-ignore-case", "prefix", "suffix", "anything-but", "exists"),
        *("wildcard", "numeric", "cidr", "=", "<", "<=", ">", ">=", "regex", "not-wildcard"),
        *("not-equals-ignore-case", "date-after", "date-on-or-after", "date-before"),
        *("date-on-or-before", "in-date-range", "ip-address-in-range", "ip-address-not-in-range"),
    }
)
# event-ruler only treats these shapes as IP literals (and never resolves host names).
_IPV4: Final = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+")
_IPV6: Final = re.compile(r"[0-9a-fA-F:]*:[0-9a-fA-F:]*")


class PatternError(ValueError):
    """An invalid event pattern; ``path`` locates the offending part, e.g. ``detail.size[0]``."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path or "<pattern>"
        self.message = message
        super().__init__(f"{self.path}: {message}")


class Matcher:
    """A compiled pattern: call it with an event (a JSON object) to learn whether it matches."""

    __slots__ = ("_test", "exact", "pattern")

    def __init__(self, pattern: dict[str, Any], test: ObjTest) -> None:
        self.pattern = pattern
        self._test = test
        # Top-level fields that must equal one of these strings: what PatternIndex looks up.
        self.exact = {
            key: frozenset(value)
            for key, value in pattern.items()
            if isinstance(value, list) and value and all(isinstance(v, str) for v in value)
        }

    def __call__(self, event: Any) -> bool:
        if type(event) is not dict:
            raise TypeError(f"an event must be a JSON object, not {type(event).__name__}")
        return self._test(event)

    def __repr__(self) -> str:
        return f"Matcher({self.pattern!r})"


class PatternIndex(Generic[K]):
    """Many matchers matched together, e.g. a fan-out's routes.

    Each matcher that demands exact strings for a top-level field (``source``, ``detail-type``)
    is filed under its most selective such field and value; an event is then tried only against
    the matchers filed under its own values there, plus the matchers with no such field. With
    100 routes over a dozen sources this tries a handful per event instead of 100."""

    def __init__(self) -> None:
        self._order: dict[K, int] = {}
        self._filed: dict[str, dict[str, list[tuple[int, K, ObjTest]]]] = {}
        self._rest: list[tuple[int, K, ObjTest]] = []

    def add(self, key: K, matcher: Matcher) -> None:
        """File ``matcher`` under ``key`` (keys are unique; ``match`` returns them in add order)."""
        if key in self._order:
            raise ValueError(f"{key!r} is already in the index")
        entry = (len(self._order), key, matcher._test)
        self._order[key] = entry[0]
        if not matcher.exact:
            self._rest.append(entry)
            return
        field = min(matcher.exact, key=lambda f: len(matcher.exact[f]))
        table = self._filed.setdefault(field, {})
        for value in matcher.exact[field]:
            table.setdefault(value, []).append(entry)

    def match(self, event: Any) -> list[K]:
        """The keys of every matcher that matches ``event``, in the order they were added."""
        if type(event) is not dict:
            raise TypeError(f"an event must be a JSON object, not {type(event).__name__}")
        found = [(i, key) for i, key, test in self._rest if test(event)]
        for field, table in self._filed.items():
            value = event.get(field)
            values = (
                [value] if type(value) is str else _scalars(value) if type(value) is list else ()
            )
            for v in values:
                if type(v) is str:
                    found.extend((i, key) for i, key, test in table.get(v, ()) if test(event))
        if len(found) > 1:
            found = sorted(set(found))  # a list-valued field can reach a matcher twice
        return [key for _, key in found]

    def __len__(self) -> int:
        return len(self._order)


def compile_pattern(pattern: Any) -> Matcher:
    """Check ``pattern`` and compile it; raises :class:`PatternError` naming the bad part."""
    if not isinstance(pattern, dict):
        raise PatternError("", f"a pattern must be a JSON object, not {_kind(pattern)}")
    test, combinations = _object(pattern, "", in_or=False)
    if combinations > _MAX_COMBINATIONS:
        raise PatternError("", f"$or expands to {combinations} combinations (limit 1000)")
    return Matcher(pattern, test)


def matches(pattern: Any, event: Any) -> bool:
    """``compile_pattern(pattern)(event)``, for a one-off check."""
    return compile_pattern(pattern)(event)


# --- objects: fields ANDed, $or groups, nesting ---------------------------------------------


def _object(node: dict[str, Any], path: str, *, in_or: bool) -> tuple[ObjTest, int]:
    """The test of one pattern object and how many $or combinations it expands to."""
    if not node:
        raise PatternError(path, "an empty object matches nothing; give at least one field")
    tests: list[tuple[int, ObjTest]] = []
    combinations = 1
    for key, value in node.items():
        where = f"{path}.{key}" if path else key
        if key == _OR:
            test, count = _or_group(value, where)
            tests.append((2, test))
            combinations *= count
        elif in_or and key in _RESERVED_IN_OR:
            raise PatternError(where, f"{key!r} is a reserved word and cannot be a field in $or")
        elif isinstance(value, list):
            tests.append(_leaf_field(key, value, where))
        elif isinstance(value, dict):
            test, count = _nested_field(key, value, where, in_or=in_or)
            tests.append((3, test))
            combinations *= count
        else:
            raise PatternError(
                where, f"must be an array of match values or an object, not {_kind(value)}"
            )
    # Cheap, selective tests (exact strings) first: most events fail on them.
    return _all([t for _, t in sorted(tests, key=lambda p: p[0])]), combinations


def _or_group(value: Any, path: str) -> tuple[ObjTest, int]:
    if not isinstance(value, list) or len(value) < 2:
        raise PatternError(path, "$or takes an array of at least two pattern objects")
    branches: list[ObjTest] = []
    count = 0
    for i, branch in enumerate(value):
        if not isinstance(branch, dict):
            raise PatternError(
                f"{path}[{i}]", f"a $or branch must be an object, not {_kind(branch)}"
            )
        test, n = _object(branch, f"{path}[{i}]", in_or=True)
        branches.append(test)
        count += n
    return _any(branches), count


def _nested_field(key: str, node: dict[str, Any], path: str, *, in_or: bool) -> tuple[ObjTest, int]:
    inner, count = _object(node, path, in_or=in_or)
    # What the nested pattern says of a field that holds no object (only exists:false holds).
    on_empty = inner({})

    def test(obj: dict[str, Any]) -> bool:
        value = obj.get(key, _MISSING)
        if type(value) is dict:
            return inner(value)
        if type(value) is list:
            seen = False
            for element in _objects(value):
                if inner(element):
                    return True
                seen = True
            return on_empty and not seen
        return on_empty

    return test, count


def _all(tests: list[ObjTest]) -> ObjTest:
    if len(tests) == 1:
        return tests[0]
    if len(tests) == 2:
        first, second = tests
        return lambda obj: first(obj) and second(obj)

    def test(obj: dict[str, Any]) -> bool:
        return all(t(obj) for t in tests)

    return test


def _any(tests: list[ObjTest]) -> ObjTest:
    return lambda obj: any(t(obj) for t in tests)


def _objects(values: list[Any]) -> Iterator[dict[str, Any]]:
    """The objects in an event array, nested arrays crushed out."""
    for value in values:
        if type(value) is dict:
            yield value
        elif type(value) is list:
            yield from _objects(value)


def _scalars(values: list[Any]) -> Iterator[Any]:
    """The leaf values in an event array, nested arrays crushed out; objects are not leaves."""
    for value in values:
        if type(value) is list:
            yield from _scalars(value)
        elif type(value) is not dict:
            yield value


# --- leaves: an OR of match values -----------------------------------------------------------


def _leaf_field(key: str, values: list[Any], path: str) -> tuple[int, ObjTest]:
    pred, on_absent, rank = _leaf(values, path)
    if rank == 0 and not on_absent:
        return rank, _strings_field(key, frozenset(values), pred)

    def test(obj: dict[str, Any]) -> bool:
        value = obj.get(key, _MISSING)
        kind = type(value)
        if kind is str:
            return pred(value)
        if kind is list:
            present = False
            for scalar in _scalars(value):
                if pred(scalar):
                    return True
                present = True
            return on_absent and not present
        if kind is dict or value is _MISSING:
            return on_absent
        return pred(value)

    return rank, test


def _strings_field(key: str, strings: frozenset[str], pred: Pred) -> ObjTest:
    """The common leaf, exact strings only: one dict lookup and one set lookup per event."""

    def test(obj: dict[str, Any]) -> bool:
        value = obj.get(key)
        if type(value) is str:
            return value in strings
        return type(value) is list and any(pred(v) for v in _scalars(value))

    return test


def _leaf(values: list[Any], path: str) -> tuple[Pred, bool, int]:
    """(predicate on one scalar value, whether an absent field matches, sort rank)."""
    if not values:
        raise PatternError(path, "an empty array matches nothing; give at least one value")
    strings: set[str] = set()
    numbers: set[int | float] = set()
    literals: list[Any] = []  # null, true, false: compared by identity, never as numbers
    preds: list[Pred] = []
    on_absent = False
    for i, value in enumerate(values):
        where = f"{path}[{i}]"
        if isinstance(value, str):
            strings.add(value)
        elif type(value) in _NUMBER:
            numbers.add(_finite(value, where))
        elif value is None or isinstance(value, bool):
            literals.append(value)
        elif isinstance(value, dict):
            op = _operator(value, where)
            if op is None:
                on_absent = True
            else:
                preds.append(op)
        else:
            raise PatternError(
                where,
                "a match value must be a string, number, true, false, null or an object, "
                f"not {_kind(value)}",
            )
    if numbers:
        preds.insert(0, lambda v: type(v) in _NUMBER and v in numbers)
    if literals:
        preds.insert(0, lambda v: any(v is lit for lit in literals))
    if strings:
        preds.insert(0, frozenset(strings).__contains__)
    rank = 0 if strings and len(preds) == 1 else 1
    return _either(preds), on_absent, rank


def _either(preds: list[Pred]) -> Pred:
    if not preds:
        return lambda v: False
    if len(preds) == 1:
        return preds[0]
    return lambda v: any(p(v) for p in preds)


def _operator(expr: dict[str, Any], path: str) -> Pred | None:
    """One ``{"op": arg}`` match expression; None stands for ``exists: false``."""
    if len(expr) != 1:
        raise PatternError(
            path, 'a match expression has exactly one operator, e.g. {"prefix": "a"}'
        )
    ((name, arg),) = expr.items()
    where = f"{path}.{name}"
    if name == "exists":
        if not isinstance(arg, bool):
            raise PatternError(where, f"exists takes true or false, not {_kind(arg)}")
        return _always if arg else None
    compile_op = _OPERATORS.get(name)
    if compile_op is None:
        raise PatternError(
            where,
            f"unknown operator {name!r}; expected one of "
            + ", ".join(sorted([*_OPERATORS, "exists"])),
        )
    return compile_op(arg, where)


def _always(value: Any) -> bool:
    return True


def _prefix(arg: Any, path: str) -> Pred:
    if isinstance(arg, dict) and list(arg) == ["equals-ignore-case"]:
        source = _ignore_case(_string(arg["equals-ignore-case"], f"{path}.equals-ignore-case"))
        regex = re.compile(source, re.DOTALL)
        return lambda v: type(v) is str and regex.match(v) is not None
    text = _string(arg, path, 'a string or {"equals-ignore-case": string}')
    return lambda v: type(v) is str and v.startswith(text)


def _suffix(arg: Any, path: str) -> Pred:
    if isinstance(arg, dict) and list(arg) == ["equals-ignore-case"]:
        source = _ignore_case(_string(arg["equals-ignore-case"], f"{path}.equals-ignore-case"))
        # Case variants can differ in length (ß ~ SS), so search for a match ending at the end.
        regex = re.compile(f"(?:{source})\\Z", re.DOTALL)
        return lambda v: type(v) is str and regex.search(v) is not None
    text = _string(arg, path, 'a string or {"equals-ignore-case": string}')
    return lambda v: type(v) is str and v.endswith(text)


def _equals_ignore_case(arg: Any, path: str) -> Pred:
    regex = re.compile(_ignore_case(_string(arg, path)), re.DOTALL)
    return lambda v: type(v) is str and regex.fullmatch(v) is not None


def _ignore_case(text: str) -> str:
    """event-ruler's rule: each pattern character matches its lower or its upper case form."""
    parts = []
    for char in text:
        forms = {char, char.lower(), char.upper()}
        parts.append(
            re.escape(char)
            if len(forms) == 1
            else "(?:" + "|".join(map(re.escape, sorted(forms))) + ")"
        )
    return "".join(parts)


def _wildcard(arg: Any, path: str) -> Pred:
    regex = _wildcard_regex(_string(arg, path), path)
    return lambda v: type(v) is str and regex.fullmatch(v) is not None


def _wildcard_regex(text: str, path: str) -> re.Pattern[str]:
    """``*`` is any run of characters; ``\\*`` and ``\\\\`` are a literal star and backslash."""
    parts, i = [], 0
    while i < len(text):
        char = text[i]
        if char == "*":
            if text.startswith("**", i):
                raise PatternError(path, f"consecutive wildcard characters at position {i}")
            parts.append(".*")
        elif char == "\\":
            if text[i + 1 : i + 2] not in ("*", "\\"):
                raise PatternError(
                    path, f"invalid escape at position {i}: only \\* and \\\\ are allowed"
                )
            parts.append(re.escape(text[i + 1]))
            i += 1
        else:
            parts.append(re.escape(char))
        i += 1
    return re.compile("".join(parts), re.DOTALL)


def _cidr(arg: Any, path: str) -> Pred:
    text = _string(arg, path)
    address, slash, bits = text.partition("/")
    if not slash or "/" in bits or not bits.isdigit():
        raise PatternError(
            path, f"malformed CIDR {text!r}: expected address/bits, e.g. 10.0.0.0/24"
        )
    ip = _ip(address)
    if ip is None:
        raise PatternError(path, f"invalid IP address {address!r} in CIDR {text!r}")
    # event-ruler refuses a full-length mask (/32, /128): use the address as an exact value.
    if int(bits) >= ip.max_prefixlen:
        raise PatternError(path, f"IPv{ip.version} mask bits must be < {ip.max_prefixlen}")
    network = ipaddress.ip_network(f"{ip}/{bits}", strict=False)

    def test(v: Any) -> bool:
        if type(v) is not str:
            return False
        event_ip = _ip(v)
        return event_ip is not None and event_ip.version == network.version and event_ip in network

    return test


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not (_IPV4.fullmatch(text) or _IPV6.fullmatch(text)):
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _anything_but(arg: Any, path: str) -> Pred:
    if isinstance(arg, dict):
        return _anything_but_op(arg, path)
    items = arg if isinstance(arg, list) else [arg]
    if not items:
        raise PatternError(
            path, "anything-but takes a string, a number or a non-empty array of them"
        )
    for i, item in enumerate(items):
        if not (isinstance(item, str) or type(item) in _NUMBER):
            where = f"{path}[{i}]" if isinstance(arg, list) else path
            raise PatternError(where, f"anything-but takes strings or numbers, not {_kind(item)}")
    if len({isinstance(item, str) for item in items}) > 1:
        raise PatternError(path, "anything-but values must be all strings or all numbers")
    excluded = frozenset(_finite(x, path) if not isinstance(x, str) else x for x in items)
    if isinstance(items[0], str):
        return lambda v: v not in excluded
    return lambda v: type(v) not in _NUMBER or v not in excluded


def _anything_but_op(arg: dict[str, Any], path: str) -> Pred:
    if len(arg) != 1 or next(iter(arg)) not in (
        "prefix",
        "suffix",
        "equals-ignore-case",
        "wildcard",
    ):
        raise PatternError(
            path, "anything-but takes one of prefix, suffix, equals-ignore-case, wildcard"
        )
    ((name, value),) = arg.items()
    where = f"{path}.{name}"
    items = value if isinstance(value, list) else [value]
    texts = [
        _string(x, f"{where}[{i}]" if isinstance(value, list) else where)
        for i, x in enumerate(items)
    ]
    if name in ("prefix", "suffix") and "" in texts:
        raise PatternError(where, f"an empty {name} is not allowed in anything-but")
    inner = _either([_OPERATORS[name](text, where) for text in texts])
    return lambda v: type(v) is not str or not inner(v)


def _numeric(arg: Any, path: str) -> Pred:
    if not isinstance(arg, list) or not arg:
        raise PatternError(path, 'numeric takes an array such as [">", 0, "<=", 5]')
    terms = list(arg)
    ops = terms[0::2]
    nums = [_double(x, f"{path}[{2 * i + 1}]") for i, x in enumerate(terms[1::2])]
    if len(terms) % 2 or not all(isinstance(op, str) for op in ops):
        raise PatternError(path, 'numeric takes operator/number pairs, e.g. [">", 0, "<=", 5]')
    if ops == ["="]:
        value = nums[0]
        return lambda v: type(v) in _NUMBER and _as_double(v) == value
    low, high = _bounds(ops, nums, path)
    return _range(low, high)


def _bounds(
    ops: list[str], nums: list[float], path: str
) -> tuple[tuple[float, bool] | None, tuple[float, bool] | None]:
    """((bottom, inclusive) or None, (top, inclusive) or None) from the operators."""
    first, *rest = ops
    if first in (">", ">=") and rest in ([], ["<"], ["<="]):
        low = (nums[0], first == ">=")
        high = (nums[1], rest[0] == "<=") if rest else None
        if high is not None and not low[0] < high[0]:
            raise PatternError(path, f"the bottom {low[0]} must be less than the top {high[0]}")
        return low, high
    if first in ("<", "<=") and not rest:
        return None, (nums[0], first == "<=")
    raise PatternError(
        path, f"bad numeric operators {ops}: use =, or >/>= then optionally </<=, or </<= alone"
    )


def _range(low: tuple[float, bool] | None, high: tuple[float, bool] | None) -> Pred:
    lo, lo_in = low if low else (-math.inf, True)
    hi, hi_in = high if high else (math.inf, True)

    def test(v: Any) -> bool:
        if type(v) not in _NUMBER:
            return False
        x = _as_double(v)
        if x is None:
            return False
        return (lo < x or (lo_in and lo == x)) and (x < hi or (hi_in and hi == x))

    return test


def _as_double(value: int | float) -> float | None:
    """The value as an IEEE-754 double, or None when it has none (event-ruler cannot compare it)."""
    if type(value) is float:
        return value
    try:
        as_float = float(value)
    except OverflowError:
        return None
    return as_float if as_float == value else None


def _double(value: Any, path: str) -> float:
    if type(value) not in _NUMBER:
        raise PatternError(path, f"numeric bounds must be numbers, not {_kind(value)}")
    as_float = _as_double(value)
    if as_float is None or not math.isfinite(as_float):
        raise PatternError(path, f"{value} cannot be compared: it is not a finite IEEE-754 double")
    return as_float


def _finite(value: int | float, path: str) -> int | float:
    if type(value) is float and not math.isfinite(value):
        raise PatternError(path, f"{value} is not a JSON number")
    return value


def _string(value: Any, path: str, expected: str = "a string") -> str:
    if not isinstance(value, str):
        raise PatternError(path, f"expected {expected}, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    return {
        str: "a string",
        int: "a number",
        float: "a number",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)


_OPERATORS: Final[dict[str, Callable[[Any, str], Pred]]] = {
    "prefix": _prefix,
    "suffix": _suffix,
    "equals-ignore-case": _equals_ignore_case,
    "wildcard": _wildcard,
    "anything-but": _anything_but,
    "numeric": _numeric,
    "cidr": _cidr,
}
