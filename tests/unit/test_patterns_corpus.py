"""EventBridge event patterns against a published conformance corpus: LocalStack's event-pattern
templates (each validated against AWS EventBridge itself) and aws/event-ruler's assertions, 357
cases of match, no match and invalid pattern, with 8 deliberate divergences listed and checked.

The corpus is extracted from those repositories (Apache-2.0; the file names each case's repo,
path and commit). It is kept out of this repository, as the tool library's rules ask of
material fetched from public repositories: point ``GENSPOOL_PATTERN_CORPUS`` at the file (by
default ``.corpus/eventbridge_patterns.json`` at the root of the checkout). Without it these
tests are skipped, saying so; genspool's own cases (test_patterns.py) always run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from genspool.core.patterns import PatternError, compile_pattern

_PATH = Path(
    os.environ.get(
        "GENSPOOL_PATTERN_CORPUS",
        Path(__file__).resolve().parents[2] / ".corpus" / "eventbridge_patterns.json",
    )
)
if not _PATH.exists():
    pytest.skip(f"no EventBridge pattern corpus at {_PATH}", allow_module_level=True)

CORPUS = json.loads(_PATH.read_text())


def _ids(cases: list[dict[str, Any]]) -> list[str]:
    return [f"{c['source']}:{c['name']}" for c in cases]


@pytest.mark.parametrize("case", CORPUS["cases"], ids=_ids(CORPUS["cases"]))
def test_corpus(case: dict[str, Any]) -> None:
    if case["expect"] == "invalid":
        with pytest.raises(PatternError):
            compile_pattern(case["pattern"])
        return
    matcher = compile_pattern(case["pattern"])
    if "event" in case:
        assert matcher(case["event"]) is (case["expect"] == "match")


@pytest.mark.parametrize("case", CORPUS["excluded"], ids=_ids(CORPUS["excluded"]))
def test_excluded_cases_still_differ(case: dict[str, Any]) -> None:
    """Each exclusion is a deliberate divergence: if it stops diverging, the list is stale."""
    if case["expect"] == "invalid":
        compile_pattern(case["pattern"])  # refused there, accepted here (see the reason)
    elif case["expect"] == "valid":
        with pytest.raises(PatternError):
            compile_pattern(case["pattern"])
    else:
        assert compile_pattern(case["pattern"])(case["event"]) is not (case["expect"] == "match")


def test_corpus_is_large_and_sourced() -> None:
    assert len(CORPUS["cases"]) > 300
    assert {c["source"] for c in CORPUS["cases"]} == set(CORPUS["sources"])
    assert all(len(s["commit"]) == 40 for s in CORPUS["sources"].values())


