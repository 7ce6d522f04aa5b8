"""The convergence figure names its KL unit and draws the fit whose n* the report states."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bebkit.estimate import Estimate
from bebkit.fits.convergence import fit_convergence, floored_curve
from bebkit.fits.envelopes import CurveData
from bebkit.reporting import kl_figures


def _results(unit: str) -> dict[str, Any]:
    n = np.array([1.0, 3, 5, 7, 9, 11, 13, 15])
    y = floored_curve(n, 12.0, 1.5, 4.0)  # planted log 1/α = 12, β = 1.5, floor c = 4
    se = np.full(n.size, 0.2)
    fit = fit_convergence(CurveData(n=n, statistic="mean", points=y, stderrs=se), rng=0)
    assert fit.floored is not None
    curve = {
        "n": n.tolist(),
        "estimates": [
            Estimate(float(v), 0.2, 10, v - 0.4, v + 0.4, 0.95, "kl").to_dict() for v in y
        ],
        "per_prompt": [[0.0] * n.size] * 10,
        "n_samples": 64,
        "unit": unit,
        "max_tokens": 48 if unit == "sentence" else 8,
    }
    return {
        "target_model": "m:base",
        "neg_model": "m:neg",
        "behavior": "agreeableness",
        "format": "alternating",
        "estimator": "rb",
        "curves": {"none": curve},
        "fits": {"none": fit.to_dict()},
    }


@pytest.mark.parametrize("unit", ["sentence", "tokens"])
def test_convergence_figure_names_unit_and_draws_the_reported_fit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unit: str
) -> None:
    seen: dict[str, Any] = {}

    def capture(fig: Any, path: Any) -> dict[str, str]:
        ax = fig.axes[0]
        seen["title"] = ax.get_title()
        seen["legend"] = [t.get_text() for t in ax.get_legend().get_texts()]
        return {}

    monkeypatch.setattr(kl_figures, "save_figure", capture)
    res = _results(unit)
    kl_figures.convergence_figure(res, tmp_path / "c.png", n_tokens=8)
    if unit == "sentence":
        # one KL sample is a whole next sentence: the title must not claim 8 tokens
        assert "64 sentences (≤ 48 tok)" in seen["title"].replace("\n", " ")
        assert "×8 tok" not in seen["title"]
    else:
        assert "64×8 tok" in seen["title"]
    floored = [t for t in seen["legend"] if t.startswith("floored Lemma 5 fit (reported)")]
    assert len(floored) == 1
    n_star = res["fits"]["none"]["floored"]["n_star"]["value"]
    assert f"n* = {n_star:.3g}" in floored[0]
    assert abs(n_star - 12.0 / 1.5) < 0.05  # the planted curve's log(1/α)/β
