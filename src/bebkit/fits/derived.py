"""Quantities derived from fitted curves: the data a fit bootstraps, delta-method functions of
fitted ``(log 1/α, β)`` (Theorem 1/2 lengths) and ratios of independent estimates (β ratio,
σ/β)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.kl import KLCurve
from bebkit.fits.envelopes import CurveData

_Z95 = 1.959963984540054


#: A column's spread over prompts counts as collapsed below this fraction of its Monte-Carlo
#: floor. Where every prompt shares the context (n = 0) the spread IS Monte-Carlo noise, so it
#: falls below the floor itself about half the time; below half of it with P = 10 prompts has
#: probability P(χ²₉ < 2.25) ≈ 1 %, while a chance zero spread (discrete values) is caught.
_COLLAPSED = 0.5


def fit_curve_data(curve: KLCurve, n_min: int = 0) -> tuple[CurveData, str]:
    """The data the envelope / convergence fits bootstrap, and how it was built.

    Normally the per-prompt matrix (bootstrap over prompts). With few prompts the spread over
    prompts of one n can be (near) zero by chance — e.g. discrete synthetic values — while
    each per-prompt value still carries Monte-Carlo noise ``se_within``; a zero-spread column
    would make the envelope CI collapse to a point. Then the fit uses the points with
    ``se_n = max(se_between, √(mean se_within²)/√P)`` and a parametric bootstrap instead.
    Only the columns the fit uses (``n ≥ n_min``) decide.
    """
    units = np.asarray(curve.per_prompt, dtype=np.float64)
    p = units.shape[0]
    floor = np.sqrt(np.mean(np.asarray(curve.per_prompt_stderr, float) ** 2, axis=0) / p)
    used = np.asarray(curve.n) >= n_min
    if p >= 3:
        between = units.std(axis=0, ddof=1) / math.sqrt(p)
        if np.all(between[used] >= _COLLAPSED * floor[used]):
            return CurveData.from_kl_curve(curve), "bootstrap_over_prompts"
        se = np.maximum(between, floor)
    else:
        se = np.maximum(np.asarray(curve.stderrs, float), floor)
    pts = units.mean(axis=0)
    return CurveData.from_points(curve.n, pts, se), "parametric_floored_stderr"


def delta_estimate(
    fn: Callable[[float, float], float],
    log_inv_alpha: float,
    beta: float,
    cov: np.ndarray,
    *,
    n: int,
    method: str,
) -> Estimate:
    """``f(log 1/α, β)`` with a delta-method stderr ``√(∇fᵀ Σ ∇f)`` and a normal 95% CI.

    The gradient is a central finite difference (f is smooth in both arguments).
    """
    a, b = float(log_inv_alpha), float(beta)
    try:
        value = float(fn(a, b))
    except (ValueError, ZeroDivisionError):  # outside the function's domain (e.g. α = 1)
        return Estimate(float("nan"), float("nan"), n, None, None, 0.95, method)
    if not (np.all(np.isfinite(cov)) and math.isfinite(value)):
        return Estimate(value, float("nan"), n, None, None, 0.95, method)
    ha, hb = 1e-6 * max(1.0, abs(a)), 1e-6 * max(1e-3, abs(b))
    try:
        g = np.array(
            [
                (fn(a + ha, b) - fn(a - ha, b)) / (2 * ha),
                (fn(a, b + hb) - fn(a, b - hb)) / (2 * hb),
            ]
        )
    except (ValueError, ZeroDivisionError):
        return Estimate(value, float("nan"), n, None, None, 0.95, method)
    se = float(math.sqrt(max(0.0, float(g @ cov @ g))))
    return Estimate(value, se, n, value - _Z95 * se, value + _Z95 * se, 0.95, method)


def ratio_estimate(num: Estimate, den: Estimate, *, method: str = "ratio_delta_log") -> Estimate:
    """``R = X/Y`` of two independent positive estimates, CI ``exp(log R ± z·se_log)``.

    ``se_log² = (se_X/X)² + (se_Y/Y)²`` (delta method on the log scale, independence).
    """
    if not (num.value > 0 and den.value > 0):
        return Estimate(num.value / den.value if den.value else float("nan"), float("nan"),
                        min(num.n, den.n), None, None, 0.95, method)  # fmt: skip
    r = num.value / den.value
    se_log = math.sqrt((num.stderr / num.value) ** 2 + (den.stderr / den.value) ** 2)
    if not math.isfinite(se_log):
        return Estimate(r, float("nan"), min(num.n, den.n), None, None, 0.95, method)
    return Estimate(
        r,
        r * se_log,
        min(num.n, den.n),
        r * math.exp(-_Z95 * se_log),
        r * math.exp(_Z95 * se_log),
        0.95,
        method,
    )


def estimate_from_dict(d: Mapping[str, Any]) -> Estimate:
    """Rebuild an :class:`Estimate` from its ``to_dict`` form (e.g. read from a record)."""
    try:
        return Estimate.from_dict(d)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"malformed estimate {dict(d)!r}: {exc}") from None


__all__ = ["delta_estimate", "estimate_from_dict", "fit_curve_data", "ratio_estimate"]
