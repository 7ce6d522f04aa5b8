"""Parity computed, not typed: bebkit's fits on the authors' own curves (authors-figures.json)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bebkit.fits.parity import paper_parity
from bebkit.paper import PAPER_VALUES, load_authors_figures

REF = os.environ.get("BEBKIT_REFERENCE_DIR")
pytestmark = pytest.mark.skipif(not REF, reason="BEBKIT_REFERENCE_DIR not set")


@pytest.fixture(scope="module")
def table():  # type: ignore[no-untyped-def]
    return paper_parity(load_authors_figures(Path(str(REF)) / "authors-figures.json"))


def test_agreeableness_beta_and_n_star(table) -> None:  # type: ignore[no-untyped-def]
    """fig. 3a / 11 (chat, agreeableness): the paper states β_eff = 10, (1/β)log(1/α) ≈ 3.

    Tolerances from the paper's rounding: β is read off a plot and written as a round 10
    (fig. 11 writes 10 and 5, i.e. steps of 5), so |β − 10| ≤ 1 (±10 %) is already tighter
    than its resolution. n* is written "≈ 3", i.e. [2.5, 3.5) at integer rounding; the
    straight line's zero crossing is measured from n = 0 while the authors' axis starts at the
    first [/INST] sentence (n = 1), an origin ambiguity of one sentence, so the line's a/β
    gets [2.5, 4.5] and its crossing counted from the first point, a/β − 1, gets [2.5, 3.5].
    Measured: line β = 10.57 (none) / 9.93 (aligned), a/β = 3.83 / 3.89; floored β = 10.61 /
    9.93, n* = 3.31 / 3.43, floor c = 5.4 / 4.6.
    """
    assert PAPER_VALUES["beta_eff_agreeableness"].value == 10.0
    for cond in ("none", "aligned"):
        lin = table.row("agreeableness", cond, "linear")
        assert lin.n_used == (1.0, 2.0, 3.0)
        assert abs(lin.beta.value - 10.0) <= 1.0
        assert 2.5 <= lin.n_star.value <= 4.5
        assert 2.5 <= lin.n_star.value - 1.0 < 3.5
        fl = table.row("agreeableness", cond, "floored")
        assert abs(fl.beta.value - 10.0) <= 1.0
        assert 2.5 <= fl.n_star.value < 3.5
        # the floorless whole-curve fit misses both (the reason for the floor, issue 13.4)
        assert table.row("agreeableness", cond, "lemma5").beta.value < 7.0


def test_chat_over_base_beta_ratio(table) -> None:  # type: ignore[no-untyped-def]
    """§4.2 / app. M: chat β is "a factor of 5" larger than the base model's ("1 − 2").

    The paper's own numbers bracket the ratio: chat β 10 (agreeableness) / 5 (anti) over
    base β 1–2 gives 2.5–10, and "5" is a one-digit rounding. Asserted: the straight-line
    ratio (the paper's estimator, no aligning prompt) in [4, 7] for both behaviors, i.e.
    5 within its rounding to one digit plus the ±25 % of reading β_base ≈ 1.5 ± 0.5 off a
    plot at the low side. Measured: 5.94 (agreeableness), 5.70 (anti-immigration);
    floored: 4.33 / 5.85.
    """
    for b in ("agreeableness", "anti-immigration"):
        r = table.beta_ratio[(b, "none", "linear")]
        assert 4.0 <= r.value <= 7.0, (b, r)
        assert r.ci_low is not None and r.ci_low < 5.0 < r.ci_high  # type: ignore[operator]
    d = table.to_dict()
    assert "unweighted" in d["uncertainty"] and len(d["rows"]) == 18


def test_sentence_axis_halves_the_per_marker_slope(table) -> None:  # type: ignore[no-untyped-def]
    """On the alternating layout marker k closes sentence 2k − 1, so a straight line fitted on
    the sentence axis has exactly half the per-marker slope and n*_s = 2·n*_k − 1 (the
    intercept moves with the axis); the pretrained (newline) curves do not move."""
    sent = paper_parity(
        load_authors_figures(Path(str(REF)) / "authors-figures.json"), axis="sentences"
    )
    for b in ("agreeableness", "anti-immigration"):
        k, s = table.row(b, "none", "linear"), sent.row(b, "none", "linear")
        assert s.beta.value == pytest.approx(k.beta.value / 2, rel=1e-9)
        assert s.n_star.value == pytest.approx(2 * k.n_star.value - 1, rel=1e-6)
        kp, sp = table.row(b, "pretrained", "linear"), sent.row(b, "pretrained", "linear")
        assert sp.beta.value == kp.beta.value
    with pytest.raises(ValueError, match="axis"):
        paper_parity(load_authors_figures(Path(str(REF)) / "authors-figures.json"), axis="x")
