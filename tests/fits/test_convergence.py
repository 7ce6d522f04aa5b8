"""Lemma-5 and straight-line fits of the convergence curve KL(P₋‖P_LLM)(n)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimators.kl import KLCurve
from bebkit.fits.convergence import fit_convergence, lemma5_curve, theorem_lengths
from bebkit.fits.envelopes import CurveData
from bebkit.theory import theorem1_length, theorem2_length


def test_lemma5_curve_shape() -> None:
    a, b = 6.0, 2.0
    n = np.array([0.0, 1.0, 3.0, 10.0])
    np.testing.assert_allclose(lemma5_curve(n, a, b), np.log1p(np.exp(a - b * n)))
    # ≈ straight line before n* = a/β, → 0 after
    assert lemma5_curve([0.0], 40.0, 10.0)[0] == pytest.approx(40.0)
    assert lemma5_curve([100.0], 40.0, 10.0)[0] == pytest.approx(0.0, abs=1e-12)


def test_exact_curve_is_recovered_exactly() -> None:
    n = np.arange(1, 11, dtype=float)
    y = lemma5_curve(n, 30.0, 9.0)
    res = fit_convergence(CurveData.from_points(n, y, np.full(n.size, 0.1)))
    assert res.lemma5.log_inv_alpha.value == pytest.approx(30.0, rel=1e-6)
    assert res.lemma5.beta.value == pytest.approx(9.0, rel=1e-6)
    assert res.lemma5.n_star.value == pytest.approx(30.0 / 9.0, rel=1e-6)
    assert res.lemma5.alpha.value == pytest.approx(math.exp(-30.0), rel=1e-5)
    # the straight line through the first 3 points of an (almost) linear part
    assert res.linear.beta.value == pytest.approx(9.0, rel=1e-2)
    assert res.linear.n_used == (1.0, 2.0, 3.0)


def _noisy_curve(seed: int, a: float = 12.0, b: float = 3.0) -> KLCurve:
    rng = np.random.default_rng(seed)
    n = np.arange(0, 10)
    units = lemma5_curve(n, a, b)[None, :] + rng.normal(0.0, 1.0, size=(40, n.size))
    return KLCurve(n, units, np.full(units.shape, 0.1), 64, "mc")


def test_noisy_per_prompt_curves_recover_alpha_beta() -> None:
    a, b = 12.0, 3.0
    curve = _noisy_curve(0, a, b)
    delta = fit_convergence(curve)
    boot = fit_convergence(curve, n_boot=300, rng=0)
    for fit in (delta.lemma5, boot.lemma5):
        for est, true in ((fit.log_inv_alpha, a), (fit.beta, b), (fit.n_star, a / b)):
            assert est.ci_low is not None and est.ci_high is not None
            assert est.ci_low <= true <= est.ci_high, (fit.model, est, true)
        assert fit.alpha.ci_low <= math.exp(-a) <= fit.alpha.ci_high
    assert "bootstrap" in boot.lemma5.beta.method and "delta" in delta.lemma5.beta.method
    assert 0.3 < delta.lemma5.chi2_red < 3.0


def test_delta_method_coverage_over_seeds() -> None:
    """Nominal 95% CIs of β and n* cover the truth in most replications (measured ≈ 96%)."""
    hits = np.zeros(2)
    for seed in range(40):
        fit = fit_convergence(_noisy_curve(seed)).lemma5
        hits[0] += fit.beta.ci_low <= 3.0 <= fit.beta.ci_high
        hits[1] += fit.n_star.ci_low <= 4.0 <= fit.n_star.ci_high
    assert np.all(hits >= 34), hits


def test_paper_reference_numbers_fit() -> None:
    """The paper's fig. 3a curve (chat, agreeableness, with aligning prompt), 10% stderrs."""
    y = np.array([29.01, 18.02, 9.16, 7.12, 6.17, 4.71, 4.33, 3.68, 3.25, 2.65])
    n = np.arange(1, 11, dtype=float)
    res = fit_convergence(CurveData.from_points(n, y, 0.1 * y))
    lin = res.linear
    # WLS line on the first three points: slope ≈ (9.16 − 29.01)/2 = −9.9 (fig. 11: β_eff ≈ 10)
    assert 8.5 < lin.beta.value < 11.0
    assert 2.5 < lin.n_star.value < 4.5
    assert res.lemma5.beta.value > 0 and res.lemma5.chi2_red > 0
    d = res.to_dict()
    assert set(d) == {"lemma5", "linear", "floored"} and d["linear"]["n_used"] == [1.0, 2.0, 3.0]


def test_theorem_lengths_delegate_to_theory() -> None:
    out = theorem_lengths(log_inv_alpha=20.0, beta=5.0, epsilon=0.1)
    assert out["n_star"] == pytest.approx(4.0)
    assert out["theorem1"] == pytest.approx(theorem1_length(math.exp(-20.0), 5.0, 0.1))
    out2 = theorem_lengths(
        log_inv_alpha=20.0, beta=5.0, beta_prime=7.0, sigma=3.0, s0_len=4.0, delta=0.1
    )
    assert out2["theorem2"] == pytest.approx(
        theorem2_length(math.exp(-20.0), 5.0, 0.1, 7.0, 3.0, 0.1, 4.0)
    )


def test_errors_and_unweighted_fallback() -> None:
    with pytest.raises(InputError, match="at least 2"):
        fit_convergence(CurveData.from_points([1.0], [3.0], [0.1]))
    with pytest.raises(InputError, match="n_linear"):
        fit_convergence(CurveData.from_points([1.0, 2.0], [3.0, 1.0], [0.1, 0.1]), n_linear=1)
    n = np.arange(1, 6, dtype=float)
    res = fit_convergence(CurveData.from_points(n, lemma5_curve(n, 8.0, 2.0), np.zeros(5)))
    assert not res.lemma5.weighted
    assert res.lemma5.beta.value == pytest.approx(2.0, rel=1e-6)
