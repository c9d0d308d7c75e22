"""EventBridge event patterns: genspool's own cases of each operator and edge (the published
conformance corpus is run by test_patterns_corpus.py)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from genspool.core.patterns import Matcher, PatternError, PatternIndex, compile_pattern, matches


@pytest.mark.parametrize(
    "operator",
    [
        "x",
        ["x", "y"],
        7,
        {"prefix": "x"},
        {"suffix": "x"},
        {"wildcard": "x*"},
        {"equals-ignore-case": "X"},
    ],
)
def test_an_absent_field_never_matches_anything_but(operator: Any) -> None:
    pattern = {"detail": {"state": [{"anything-but": operator}]}}
    assert not matches(pattern, {"detail": {}})
    assert not matches(pattern, {"other": 1})
    assert not matches(pattern, {"detail": {"state": []}})
    assert not matches(pattern, {"detail": {"state": {"nested": "z"}}})
    assert matches(pattern, {"detail": {"state": "z"}})
    assert matches(pattern, {"detail": {"state": None}})


def test_prefix_on_a_number_is_an_invalid_pattern_naming_its_path() -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern({"detail": {"size": [1, {"prefix": 5}]}})
    assert caught.value.path == "detail.size[1].prefix"
    assert str(caught.value) == f"detail.size[1].prefix: {caught.value.message}"
    assert "number" in caught.value.message


def test_errors_name_the_path_through_or_and_numeric() -> None:
    pattern = {"detail": {"$or": [{"a": ["x"]}, {"b": [{"numeric": [">", 0, "<", "9"]}]}]}}
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    assert caught.value.path == "detail.$or[1].b[0].numeric[3]"


def test_exists_on_an_object_valued_field_sees_no_leaf() -> None:
    event = {"detail": {"c-count": {"c1": 100}}}
    assert matches({"detail": {"c-count": [{"exists": False}]}}, event)
    assert not matches({"detail": {"c-count": [{"exists": True}]}}, event)
    assert matches({"detail": {"c-count": {"c1": [{"exists": True}]}}}, event)


def test_exists_on_null_and_on_an_empty_array() -> None:
    assert matches({"a": [{"exists": True}]}, {"a": None})
    assert not matches({"a": [{"exists": False}]}, {"a": None})
    assert matches({"a": [{"exists": False}]}, {"a": []})
    assert not matches({"a": [{"exists": False}]}, {"a": ["x"]})
    assert not matches({"a": [{"exists": False}, "y"]}, {"a": [["x"], {"b": 1}]})
    assert not matches({"a": [{"exists": True}]}, {"a": [[], []]})


def test_or_branches_and_their_limit() -> None:
    pattern = {
        "source": ["app"],
        "$or": [{"detail": {"size": [{"numeric": [">", 10]}]}}, {"detail-type": ["urgent"]}],
    }
    assert matches(pattern, {"source": "app", "detail": {"size": 11}})
    assert matches(pattern, {"source": "app", "detail-type": "urgent", "detail": {"size": 1}})
    assert not matches(pattern, {"source": "app", "detail-type": "calm", "detail": {"size": 1}})
    assert not matches(pattern, {"source": "other", "detail-type": "urgent"})
    branches = [{f"k{i}": ["v"]} for i in range(11)]
    with pytest.raises(PatternError, match="1331 combinations"):
        compile_pattern({"a": {"$or": branches}, "b": {"$or": branches}, "c": {"$or": branches}})


def test_reserved_words_are_not_fields_inside_or() -> None:
    with pytest.raises(PatternError) as caught:
        compile_pattern({"$or": [{"prefix": ["a"]}, {"b": ["c"]}]})
    assert caught.value.path == "$or[0].prefix"


def test_arrays_in_events_match_any_element_and_stay_consistent() -> None:
    assert matches({"tags": ["b", "z"]}, {"tags": ["a", ["b"]]})
    assert not matches({"tags": ["z"]}, {"tags": ["a", "b"]})
    people = {"people": [{"first": "Anna", "last": "Smith"}, {"first": "Peter", "last": "Jones"}]}
    assert matches({"people": {"first": ["Anna"], "last": ["Smith"]}}, people)
    assert not matches({"people": {"first": ["Anna"], "last": ["Jones"]}}, people)


def test_numbers_compare_numerically_and_booleans_are_not_numbers() -> None:
    assert matches({"n": [5]}, {"n": 5.0})
    assert matches({"n": [5.0]}, {"n": 5})
    assert matches({"n": [{"numeric": ["=", 5]}]}, {"n": 5.0})
    assert not matches({"n": [1]}, {"n": True})
    assert not matches({"n": [True]}, {"n": 1})
    assert not matches({"n": [{"numeric": [">=", 1]}]}, {"n": True})
    assert not matches({"n": ["5"]}, {"n": 5})
    assert matches({"n": [{"anything-but": [1, 2]}]}, {"n": True})
    account = 123456789012345678901  # beyond a double: matched exactly, never by range
    assert matches({"n": [account]}, {"n": account})
    assert not matches({"n": [{"numeric": [">", 0]}]}, {"n": account})


def test_equals_ignore_case_folds_unicode_per_character() -> None:
    assert matches({"city": [{"equals-ignore-case": "ÉCOLE"}]}, {"city": "école"})
    assert matches({"s": [{"equals-ignore-case": "Σίσυφος"}]}, {"s": "ΣΊΣΥΦΟΣ"})
    assert matches({"s": [{"equals-ignore-case": "Straße"}]}, {"s": "STRASSE"})
    assert matches({"s": [{"prefix": {"equals-ignore-case": "straß"}}]}, {"s": "STRASSE!"})
    assert matches({"s": [{"suffix": {"equals-ignore-case": "ß"}}]}, {"s": "GROSS"})
    assert not matches({"s": [{"equals-ignore-case": "abc"}]}, {"s": "abcd"})
    assert not matches({"s": [{"anything-but": {"equals-ignore-case": "Ünï"}}]}, {"s": "üNÏ"})


def test_wildcard_escapes() -> None:
    assert matches({"f": [{"wildcard": "a\\*b*"}]}, {"f": "a*bcd"})
    assert not matches({"f": [{"wildcard": "a\\*b*"}]}, {"f": "axbcd"})
    assert matches({"f": [{"wildcard": "c:\\\\*"}]}, {"f": "c:\\temp"})
    assert matches({"f": [{"wildcard": "*.png"}]}, {"f": "line\nbreak.png"})
    with pytest.raises(PatternError) as caught:
        compile_pattern({"f": [{"wildcard": "a\\b"}]})
    assert caught.value.path == "f[0].wildcard"


def test_cidr_matches_ip_strings_only() -> None:
    v6 = {"ip": [{"cidr": "2001:db8::/32"}]}
    assert matches(v6, {"ip": "2001:db8:ffff::1"})
    assert not matches(v6, {"ip": "2001:db9::1"})
    assert not matches(v6, {"ip": "10.0.0.1"})
    assert not matches({"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "example.com"})
    with pytest.raises(PatternError, match="malformed CIDR"):
        compile_pattern({"ip": [{"cidr": "10.0.0.0"}]})
    # event-ruler refuses a full-length mask; an exact value says the same thing
    with pytest.raises(PatternError, match="mask bits must be < 32"):
        compile_pattern({"ip": [{"cidr": "10.0.0.1/32"}]})


def test_the_pattern_is_not_read_when_matching() -> None:
    pattern = {"source": ["a", {"prefix": "b"}], "detail": {"n": [{"numeric": ["<", 3]}]}}
    matcher = compile_pattern(pattern)
    assert isinstance(matcher, Matcher) and matcher.pattern is pattern
    before = copy.deepcopy(pattern)
    pattern["source"].clear()
    pattern["detail"]["n"] = [{"numeric": [">", 100]}]
    assert matcher({"source": "bx", "detail": {"n": 2}})
    assert compile_pattern(before)({"source": "bx", "detail": {"n": 2}})


def test_an_event_must_be_an_object() -> None:
    with pytest.raises(TypeError, match="JSON object"):
        compile_pattern({"a": ["b"]})(["a"])


def test_an_index_finds_the_same_routes_as_calling_each() -> None:
    routes = {
        "exact": {"source": ["a", "b"], "detail": {"n": [{"numeric": [">", 1]}]}},
        "typed": {"source": [{"prefix": "a"}], "detail-type": ["t"]},
        "anywhere": {"detail": {"n": [{"exists": True}]}},
        "or": {"$or": [{"source": ["b"]}, {"detail-type": ["t"]}]},
        "resource": {"resources": ["r1", "r2"]},
    }
    index: PatternIndex[str] = PatternIndex()
    for key, route in routes.items():
        index.add(key, compile_pattern(route))
    events = [
        {"source": "a", "detail-type": "t", "detail": {"n": 2}},
        {"source": "b", "detail": {"n": 0}},
        {"source": "ax", "detail-type": "t", "resources": ["r2", "r1", "r3"]},
        {"source": "c"},
        {"source": ["a", "b"], "detail": {"n": 5}},
    ]
    for event in events:
        expected = [key for key, route in routes.items() if matches(route, event)]
        assert index.match(event) == expected
    assert index.match(events[2]) == ["typed", "or", "resource"]
    assert len(index) == len(routes)
    with pytest.raises(ValueError, match="already"):
        index.add("exact", compile_pattern({"x": ["y"]}))
