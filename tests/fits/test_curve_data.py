"""``fit_curve_data``: bootstrap over prompts unless a column the fit uses collapsed."""

from __future__ import annotations

import numpy as np
import pytest

from bebkit.estimators.kl import KLCurve
from bebkit.fits.derived import fit_curve_data


def _curve(per_prompt: np.ndarray, se: float) -> KLCurve:
    return KLCurve(n=np.arange(per_prompt.shape[1]), per_prompt=per_prompt,
                   per_prompt_stderr=np.full(per_prompt.shape, se), n_samples=64,
                   method="rb")  # fmt: skip


def test_a_shared_context_column_outside_the_fit_does_not_decide() -> None:
    rng = np.random.default_rng(0)
    p, se = 10, 0.3
    later = 2.0 + rng.normal(0, 1.0, (p, 4))  # prompts differ: spread ≫ Monte-Carlo floor
    # n = 0: one shared context, the spread is Monte-Carlo noise only, here a little below
    # its floor se/√P (as happens about half the time)
    first = 3.0 + rng.normal(0, se, p)
    first = 3.0 + (first - first.mean()) * 0.8 * se / first.std(ddof=1)
    units = np.column_stack([first, later])
    floor = se / np.sqrt(p)
    assert units[:, 0].std(ddof=1) / np.sqrt(p) < floor
    assert fit_curve_data(_curve(units, se), n_min=1)[1] == "bootstrap_over_prompts"
    # included in the fit, a spread of 0.8 floor is still Monte-Carlo noise, not a collapse
    assert fit_curve_data(_curve(units, se), n_min=0)[1] == "bootstrap_over_prompts"


def test_a_collapsed_column_the_fit_uses_switches_to_the_parametric_band() -> None:
    rng = np.random.default_rng(1)
    units = 2.0 + rng.normal(0, 1.0, (6, 5))
    units[:, 3] = 1.5  # every prompt the same value by chance (discrete values)
    data, how = fit_curve_data(_curve(units, 0.2), n_min=1)
    assert how == "parametric_floored_stderr"
    # the collapsed column's stderr is the Monte-Carlo floor √(mean se²)/√P, not zero
    assert data.stderrs[3] == pytest.approx(np.sqrt(0.2**2 / 6), rel=1e-12)
    # a collapsed column outside the fitted range does not switch
    units[:, 3] = 2.0 + rng.normal(0, 1.0, 6)
    units[:, 0] = 1.5
    assert fit_curve_data(_curve(units, 0.2), n_min=1)[1] == "bootstrap_over_prompts"
    assert fit_curve_data(_curve(units, 0.2), n_min=0)[1] == "parametric_floored_stderr"
