"""Drift statistics and reports on real MiniLM embeddings of generated text: answers about
cooking (topic A) against more cooking (no drift flagged by any method), against astronomy
(topic B: flagged by every method), and against cooking with 20 % astronomy mixed in (flagged by
MMD, which sees a minority topic that barely moves the mean). Plus the statistics' own checks
against values computed by hand or by the textbook tables."""

from __future__ import annotations

import random

import numpy as np
import pytest

from genspool.config import DriftThresholds, ModelConfig
from genspool.drift import alerts, stats
from genspool.drift.report import DriftReport, WindowData, compare, make_report
from genspool.drift.windows import Span

pytestmark = pytest.mark.slow  # the bundled embedding model

N = 200
FOODS = [
    "risotto",
    "lentil soup",
    "roast chicken",
    "banana bread",
    "pad thai",
    "omelette",
    "tomato sauce",
    "pancakes",
    "beef stew",
    "apple pie",
    "fried rice",
    "pesto pasta",
]
STEPS = [
    "simmer it gently",
    "stir in the butter",
    "season with salt and pepper",
    "bake until golden",
    "chop the onions finely",
    "whisk the eggs",
    "let the dough rest",
]
SKY = [
    "a neutron star",
    "the Andromeda galaxy",
    "a red giant",
    "the cosmic microwave background",
    "a black hole's event horizon",
    "Jupiter's moons",
    "a supernova remnant",
    "dark matter",
]
HOW = ["gravitational lensing", "spectroscopic redshift", "radio telescope arrays",
       "orbital mechanics", "stellar nucleosynthesis", "parallax measurements"]  # fmt: skip


def cooking(rng: random.Random) -> tuple[str, str]:
    food = rng.choice(FOODS)
    prompt = f"How do I make {food}?"
    answer = f"To make {food}, {rng.choice(STEPS)}, then {rng.choice(STEPS)}."
    return prompt, answer


def astronomy(rng: random.Random) -> tuple[str, str]:
    thing, how = rng.choice(SKY), rng.choice(HOW)
    prompt = f"Could you explain what astronomers have learned about {thing} through {how}?"
    answer = (
        f"Astronomers study {thing} using {how}. Observations across the spectrum show how "
        f"{thing} formed and evolved, and {rng.choice(HOW)} confirms the measured distances."
    )
    return prompt, answer


@pytest.fixture(scope="module")
def windows() -> dict[str, WindowData]:
    """Four windows of generated (prompt, answer) pairs, the answers embedded by the bundled
    MiniLM (each distinct text once: the generators repeat themselves)."""
    from genspool.providers.onnx_embed import OnnxEmbeddingProvider

    rng = random.Random(7)
    pairs = {
        "baseline": [cooking(rng) for _ in range(N)],
        "same": [cooking(rng) for _ in range(N)],
        "other": [astronomy(rng) for _ in range(N)],
        "mixed": [cooking(rng) for _ in range(N - N // 5)]
        + [astronomy(rng) for _ in range(N // 5)],
    }
    texts = sorted({answer for group in pairs.values() for _, answer in group})
    vectors, _ = OnnxEmbeddingProvider("all-minilm-l6-v2").embed(texts)
    row = {text: i for i, text in enumerate(texts)}
    return {
        name: WindowData(
            vectors[[row[a] for _, a in group]],
            np.array([len(p) for p, _ in group]),
            np.array([len(a) for _, a in group]),
        )
        for name, group in pairs.items()
    }


def flagged(base: WindowData, cur: WindowData) -> set[str]:
    return {m.name for m in compare(base, cur, DriftThresholds()) if m.flagged}


ALL = {"centroid", "mmd", "wasserstein", "ks_prompt_chars", "ks_output_chars"}


def test_more_of_the_same_topic_is_not_flagged(windows: dict[str, WindowData]) -> None:
    assert flagged(windows["baseline"], windows["same"]) == set()


def test_another_topic_is_flagged_by_every_method(windows: dict[str, WindowData]) -> None:
    assert flagged(windows["baseline"], windows["other"]) == ALL


def test_a_fifth_of_another_topic_is_flagged_by_mmd(windows: dict[str, WindowData]) -> None:
    methods = {m.name: m for m in compare(windows["baseline"], windows["mixed"], DriftThresholds())}
    assert methods["mmd"].flagged
    assert methods["mmd"].value < 0.01 and methods["mmd"].detail["mmd2"] > 0
    # The mean barely moves: the centroid alone would not call it (a fifth of the way to B).
    other = compare(windows["baseline"], windows["other"], DriftThresholds())[0].value
    assert methods["centroid"].value < other / 5


def test_a_report_is_handed_to_listeners_and_a_flagged_one_logged(
    windows: dict[str, WindowData], caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[DriftReport] = []
    remove = alerts.on_report(seen.append)
    cfg = ModelConfig(name="chat", provider="echo")
    try:
        calm = make_report(cfg, windows["baseline"], windows["same"], (Span(0, 1), Span(1, 2)))
        moved = make_report(cfg, windows["baseline"], windows["other"], (Span(0, 1), Span(1, 2)))
    finally:
        remove()
    assert (calm.verdict, moved.verdict) == ("no_drift", "drift")
    assert seen == [calm, moved]
    assert "drift flagged for model chat by centroid, mmd" in caplog.text
    assert caplog.text.count("drift flagged") == 1
    body = moved.to_dict()
    assert body["flagged"] and body["current"]["samples"] == N
    assert len(body["charts"]["output_chars"]["edges"]) == 21


def test_too_few_samples_give_no_verdict(windows: dict[str, WindowData]) -> None:
    few = WindowData(windows["other"].embeddings[:5], np.arange(5), np.arange(5))
    cfg = ModelConfig(name="chat", provider="echo")
    report = make_report(cfg, windows["baseline"], few, (None, None))
    assert (report.verdict, report.methods, report.flagged) == ("insufficient", [], False)


# -- the statistics alone (no model) ------------------------------------------------------------


def test_kolmogorov_tail_matches_the_tables() -> None:
    # The 5 % and 1 % critical values of the Kolmogorov distribution.
    assert stats.kolmogorov_sf(1.3581) == pytest.approx(0.05, abs=2e-4)
    assert stats.kolmogorov_sf(1.6276) == pytest.approx(0.01, abs=1e-4)
    assert stats.kolmogorov_sf(0.0) == 1.0
    # Either side of the seam between its two series: Q(1) = 0.2700.
    assert stats.kolmogorov_sf(0.99999) == pytest.approx(0.27, abs=1e-4)
    assert stats.kolmogorov_sf(1.0) == pytest.approx(0.27, abs=1e-4)


def test_ks_statistic_is_exact_with_ties() -> None:
    r = stats.ks_2samp([1, 2, 2, 3], [2, 3, 3, 4, 5])
    # F_a - F_b at 2: 3/4 - 1/5 = 0.55, the largest gap.
    assert r.statistic == pytest.approx(0.55) and r.sizes == (4, 5)
    assert stats.ks_2samp([5, 6, 7], [5, 6, 7]).p_value == 1.0


def test_wasserstein_is_exact_for_unequal_sizes() -> None:
    a = np.array([[0.0], [1.0], [3.0]])
    b = np.array([[1.0], [2.0]])
    # Quantile functions: a = 0, 1, 3 on thirds; b = 1, 2 on halves.
    # |0-1|/3 + |1-1|/6 + |1-2|/6 + |3-2|/3 = 1/3 + 0 + 1/6 + 1/3
    assert stats.wasserstein_1d(a, b)[0] == pytest.approx(5 / 6)
    assert stats.wasserstein_1d(a, a)[0] == 0.0


def test_mmd_of_one_distribution_is_not_significant() -> None:
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((300, 16)), rng.standard_normal((300, 16))
    r = stats.mmd(a, b)
    assert r.p_value > 0.05 and abs(r.mmd2) < 0.01
    moved = stats.mmd(a, b + 0.5)
    assert moved.p_value == pytest.approx(1 / 201) and moved.mmd2 > 0.05
