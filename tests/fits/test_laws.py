"""Competing misalignment laws and their extrapolation scores (floored Lemma 5, power, Bayesian)."""

from __future__ import annotations

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.fits.envelopes import CurveData
from bebkit.fits.laws import LAWS, extrapolation_scores, fit_law

N = np.arange(1, 13, dtype=float)


def test_bayesian_law_reduces_to_floored_for_large_delta() -> None:
    """Arora et al.'s two-task law → log(1 + e^{a−βn}) + c as δ → ∞ (Lemma 5 is its limit)."""
    p_b = np.array([10.0, 2.5, 60.0, 1.5])
    p_f = np.array([10.0, 2.5, 1.5])
    np.testing.assert_allclose(LAWS["bayesian"].func(N, p_b), LAWS["floored"].func(N, p_f))


def _noisy(y: np.ndarray, seed: int, rel: float = 0.03) -> CurveData:
    rng = np.random.default_rng(seed)
    se = rel * np.abs(y)
    return CurveData.from_points(N, y + rng.normal(0.0, 1.0, N.size) * se, se)


def test_floored_data_best_predicted_by_floored_law() -> None:
    y = LAWS["floored"].func(N, np.array([12.0, 3.0, 2.0]))
    wins = 0
    for seed in range(8):
        res = extrapolation_scores(_noisy(y, seed), k=7, laws=("floored", "power"))
        wins += res.best == "floored"
        assert res.n_held == (8.0, 9.0, 10.0, 11.0, 12.0)
    assert wins == 8


def test_power_data_best_predicted_by_power_law() -> None:
    y = LAWS["power"].func(N, np.array([30.0, 1.2, 0.5]))
    wins = 0
    for seed in range(8):
        res = extrapolation_scores(_noisy(y, seed), k=7)
        wins += res.best == "power"
        assert res.scores["power"].nrmse.value < 0.1
    assert wins == 8


def test_bootstrap_scores_and_dict() -> None:
    y = LAWS["floored"].func(N, np.array([12.0, 3.0, 2.0]))
    res = extrapolation_scores(_noisy(y, 0), k=7, laws=("floored", "power"), n_boot=30)
    s = res.scores["floored"]
    assert s.nrmse.ci_low is not None and s.best_fraction is not None
    assert s.best_fraction > 0.5
    d = res.to_dict()
    assert d["best"] == "floored" and set(d["scores"]) == {"floored", "power"}


def test_fit_law_recovers_power_params() -> None:
    f = fit_law((N, LAWS["power"].func(N, np.array([30.0, 1.2, 0.5]))), "power")
    assert f.params["gamma"].value == pytest.approx(1.2, rel=1e-4)
    assert f.params["floor"].value == pytest.approx(0.5, abs=1e-3)


def test_errors() -> None:
    cd = CurveData.from_points(np.arange(0, 6.0), np.linspace(5, 1, 6), np.full(6, 0.1))
    with pytest.raises(InputError, match="n > 0"):
        extrapolation_scores(cd, k=3, laws=("power",))
    with pytest.raises(InputError, match="beyond"):
        extrapolation_scores(cd, k=10, laws=("floored",))
    with pytest.raises(InputError, match="unknown law"):
        fit_law(cd, "cubic")
