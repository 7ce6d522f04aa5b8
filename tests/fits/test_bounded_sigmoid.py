"""Lemma 7 between a floor g₋ and a ceiling g₊: planted truth, coverage, extrapolation flag."""

from __future__ import annotations

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.fits.sigmoid import bounded_sigmoid_curve, fit_bounded_sigmoid

N = np.arange(0, 11, dtype=float)
T = np.full(N.size, 64)
GM, GP, A, B = 0.1, 0.9, 6.0, 1.5  # centre a/β = 4


def test_planted_centre_coverage() -> None:
    """150 seeds, 64 responses at n = 0…10, g₋ = 0.1, g₊ = 0.9 known exactly.

    Measured (200 seeds): 95 % Wald CI coverage of the centre 0.95, mean centre 4.016 (truth
    4). Asserted: coverage 0.88–0.99, |bias| < 0.1 sentence.
    """
    p = bounded_sigmoid_curve(N, A, B, GM, GP)
    hits, cs = 0, []
    for seed in range(150):
        k = np.random.default_rng(seed).binomial(64, p)
        f = fit_bounded_sigmoid(N, k, T, Estimate.exact_value(GM), Estimate.exact_value(GP))
        assert f.centre.ci_low is not None and f.centre.ci_high is not None
        hits += f.centre.ci_low <= A / B <= f.centre.ci_high
        cs.append(f.centre.value)
    assert 0.88 <= hits / 150 <= 0.99
    assert abs(np.mean(cs) - A / B) < 0.1


def test_g_uncertainty_widens_ci_and_extrapolation_flag() -> None:
    p = bounded_sigmoid_curve(N, A, B, GM, GP)
    k = np.random.default_rng(0).binomial(64, p)
    exact = fit_bounded_sigmoid(N, k, T, Estimate.exact_value(GM), Estimate.exact_value(GP))
    noisy = fit_bounded_sigmoid(N, k, T, Estimate(GM, 0.03, 50), Estimate(GP, 0.03, 50),
                                n_draws=50)  # fmt: skip
    assert noisy.centre.stderr > exact.centre.stderr and noisy.n_draws == 50
    assert exact.centre_in_range and not exact.extrapolated
    # only the top of the curve measured (n ≤ 2): centre 4 lies beyond the data
    part = fit_bounded_sigmoid(N[:3], k[:3], T[:3], Estimate.exact_value(GM),
                               Estimate.exact_value(GP))  # fmt: skip
    assert part.extrapolated and "extrapolation" in part.note
    assert part.to_dict()["extrapolated"] is True


def test_bad_bounds() -> None:
    with pytest.raises(InputError, match="g_minus < g_plus"):
        fit_bounded_sigmoid(N, T // 2, T, Estimate.exact_value(0.9), Estimate.exact_value(0.1))
