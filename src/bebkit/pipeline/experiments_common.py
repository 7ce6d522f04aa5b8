"""Shared pieces of the KL experiments of §4.1–4.2 and appendices L, M, N.

* :class:`KLSettings` — the sizes every KL experiment shares (prompts, sentences,
  continuations, estimator, bootstrap), frozen and validated;
* :func:`multi_target_kl_curves` — ``KL(P‖Q_j | sₙ)`` for several targets Q_j from ONE set of
  continuations ``y ~ P(·|sₙ)`` per (prompt, n): P is sampled and scored once, each target
  scored once. :func:`bebkit.estimators.kl.kl_curve` re-samples P for every target, which
  doubles the cost of fig. 3a / 11 (two conditions, same P₋ side);
* :func:`delta_estimate` — a function of fitted ``(log 1/α, β)`` with a delta-method CI from
  the fit's covariance (Theorem 1/2 lengths);
* :func:`ratio_estimate` — ``X/Y`` of independent estimates, CI on the log scale.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.kl import Estimator, KLCurve, kl_samples_grid
from bebkit.estimators.prompts import SampledPrompt
from bebkit.fits.envelopes import CurveData
from bebkit.models.protocol import LanguageModel

_Z95 = 1.959963984540054


class KLSettings(BaseModel):
    """Sizes shared by every KL experiment (the paper's defaults: app. L.1).

    ``n_samples`` continuations of ``n_tokens`` tokens per (prompt, n); every generated token
    is scored (the authors' code skipped the first). ``estimator`` ``rb`` (Rao-Blackwell, the
    default) sums the exact next-token KL along each path; ``mc`` is the paper's plain mean.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    behavior: str
    fmt: Literal["chat", "newline"] = "chat"
    n_prompts: int = Field(10, ge=1)
    n_sentences: int = Field(10, ge=1)
    n_samples: int = Field(64, ge=2)
    n_tokens: int = Field(8, ge=1)
    estimator: Estimator = "rb"
    max_sentence_tokens: int = Field(48, ge=1)
    n_boot: int = Field(1000, ge=100)
    fit_n_min: int = Field(1, ge=0)
    seed: int = Field(0, ge=0)


def multi_target_kl_curves(
    p: LanguageModel,
    targets: Mapping[str, tuple[LanguageModel, str | None]],
    prompts: Sequence[SampledPrompt],
    *,
    ns: Iterable[int],
    estimator: Estimator = "rb",
    n_samples: int = 64,
    n_tokens: int = 8,
    rng: np.random.Generator,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, KLCurve]:
    """``KL(P(·|sₙ) ‖ Q_j(·|s′ₙ))`` for every target, prompt and n in ``ns`` (fig. 2a, 3a, 11).

    ``targets`` maps a label to ``(Q_j, system_prompt or None)``; ``s′ₙ`` is Q_j's view
    (:meth:`SampledPrompt.target_context`). One P-sample set per (prompt, n), shared.
    """
    if not prompts:
        raise InputError("need at least one prompt")
    if not targets:
        raise InputError("need at least one target model")
    n_list = sorted({int(n) for n in ns})
    n_max = min(pr.n_sentences for pr in prompts)
    if not n_list or n_list[0] < 0 or n_list[-1] > n_max:
        raise InputError(f"ns must lie in [0, {n_max}] (the shortest prompt)")
    vals = {k: np.empty((len(prompts), len(n_list))) for k in targets}
    ses = {k: np.empty((len(prompts), len(n_list))) for k in targets}
    total, done = len(prompts) * len(n_list), 0
    for i, pr in enumerate(prompts):
        # All prefix lengths of one prompt in one batched call: P samples and scores itself,
        # each target scores the same continuations (and the RB step KL) in one pass.
        grid = {
            k: (q, [pr.target_context(q, n, system) for n in n_list])
            for k, (q, system) in targets.items()
        }
        per_n = kl_samples_grid(
            p,
            [pr.context(p, n) for n in n_list],
            grid,
            n_samples=n_samples,
            n_tokens=n_tokens,
            with_rb=estimator != "mc",
            rng=rng,
        )
        for j, ks in enumerate(per_n):
            for k, s in ks.items():
                est = s.estimate(estimator)
                vals[k][i, j], ses[k][i, j] = est.value, est.stderr
        done += len(n_list)
        if progress is not None:
            progress(done, total)
    return {
        k: KLCurve(
            n=np.asarray(n_list, dtype=np.int64),
            per_prompt=vals[k],
            per_prompt_stderr=ses[k],
            n_samples=n_samples,
            method=estimator,
            label=k,
        )
        for k in targets
    }


def fit_curve_data(curve: KLCurve) -> tuple[CurveData, str]:
    """The data the envelope / convergence fits bootstrap, and how it was built.

    Normally the per-prompt matrix (bootstrap over prompts). With few prompts the spread over
    prompts of one n can be (near) zero by chance — e.g. discrete synthetic values, or equal
    contexts at n = 0 — while each per-prompt value still carries Monte-Carlo noise
    ``se_within``; a zero-spread column would make the envelope CI collapse to a point. Then
    the fit uses the points with ``se_n = max(se_between, √(mean se_within²)/√P)`` and a
    parametric bootstrap instead.
    """
    units = np.asarray(curve.per_prompt, dtype=np.float64)
    p = units.shape[0]
    floor = np.sqrt(np.mean(np.asarray(curve.per_prompt_stderr, float) ** 2, axis=0) / p)
    if p >= 3:
        between = units.std(axis=0, ddof=1) / math.sqrt(p)
        if np.all(between >= floor):
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


def say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def fmt_ci(e: Mapping[str, Any] | Estimate | None, digits: int = 3) -> str:
    """``value [lo, hi]`` of an estimate (dict or object) for human output."""
    if e is None:
        return "n/a"
    d = e.to_dict() if isinstance(e, Estimate) else dict(e)
    v = d.get("value")
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    lo_s = "?" if lo is None else f"{lo:.{digits}g}"
    hi_s = "?" if hi is None else f"{hi:.{digits}g}"
    return f"{v:.{digits}g} [{lo_s}, {hi_s}]"


__all__ = [
    "Estimator",
    "KLSettings",
    "delta_estimate",
    "estimate_from_dict",
    "fit_curve_data",
    "fmt_ci",
    "multi_target_kl_curves",
    "ratio_estimate",
    "say",
]
