"""Lemma 7's reverse sigmoid fitted to a behavior-expectation curve (§4.2 eq. 8, appendix H.3).

Lemma 7: after a misaligning prompt of n sentences from P₋, the probability of a good
response (B: Σ* → {0, 1}) is bounded by

    p_good(n) ≤ 1 / (1 + exp(βn − log 1/α)) = σ(a − βn),   a = log(1/α),

a reverse sigmoid centred at ``n½ = log(1/α)/β`` — the same point as Lemma 5's KL midpoint
``n* = log(1/α)/β`` (:mod:`bebkit.fits.convergence`). Comparing the two is a consistency check
of the theory that the paper did not make.

The fit is binomial maximum likelihood on the counts ``kᵢ`` good of ``Nᵢ`` responses at
``nᵢ`` sentences,

    ℓ(a, β) = Σᵢ kᵢ log σ(a − βnᵢ) + (Nᵢ − kᵢ) log σ(βnᵢ − a)

(a logistic regression of "good" on n). Confidence intervals: profile likelihood
(``2(ℓ̂ − ℓ_p) ≤ χ²₁``; responses treated as independent) or — preferred when the responses
come from several prompts, because responses to one prompt are correlated — a percentile
bootstrap that resamples whole prompts and refits. The delay an aligning prompt buys is the
difference of the fitted centres (paired bootstrap over the shared prompts), compared with
Theorem 2's extra length ``(β′/β)|s₀| + (σ/β)√(|s₀|/δ) + 1`` (:func:`theorem2_delay`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy.optimize import brentq, minimize, minimize_scalar
from scipy.special import expit, log_expit
from scipy.stats import chi2, norm

from bebkit.errors import InputError, check_range
from bebkit.estimate import Estimate

if TYPE_CHECKING:
    from bebkit.estimators.behavior import BehaviorCurve

#: |β| and |a| are kept below this: perfectly separated data (all good, then all bad) has
#: no finite maximum; the fit then reports ``at_bound``.
PARAM_BOUND = 50.0
#: Fewer prompts than this → profile-likelihood CIs: a bootstrap over 2–4 prompts has too few
#: distinct resamples and gives far too narrow intervals (seen on SmolLM2 with 3 prompts).
MIN_BOOT_PROMPTS = 5


def lemma7_curve(n: np.ndarray | Sequence[float], log_inv_alpha: float, beta: float) -> np.ndarray:
    """``1 / (1 + exp(βn − log 1/α)) = σ(log 1/α − βn)`` (eq. 8 / 94)."""
    return np.asarray(
        expit(log_inv_alpha - beta * np.asarray(n, dtype=np.float64)), dtype=np.float64
    )


def _loglik(a: float, b: float, n: np.ndarray, k: np.ndarray, t: np.ndarray) -> float:
    z = a - b * n
    return float(np.sum(k * log_expit(z) + (t - k) * log_expit(-z)))


def _negll_grad(x: np.ndarray, n: np.ndarray, k: np.ndarray, t: np.ndarray) -> tuple[float, Any]:
    a, b = float(x[0]), float(x[1])
    z = a - b * n
    p = expit(z)
    ll = np.sum(k * log_expit(z) + (t - k) * log_expit(-z))
    r = k - t * p  # dℓ/dz
    return float(-ll), -np.array([np.sum(r), -np.sum(r * n)])


def _start(n: np.ndarray, k: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Weighted least squares on empirical logits (½ continuity correction) as a start."""
    p = (k + 0.5) / (t + 1.0)
    y = np.log(p / (1 - p))
    w = t * p * (1 - p)
    design = np.column_stack([np.ones_like(n), -n])
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(design * sw[:, None], y * sw, rcond=None)
    return np.clip(coef, -PARAM_BOUND + 1e-6, PARAM_BOUND - 1e-6)


def _newton(
    x0: np.ndarray, n: np.ndarray, k: np.ndarray, t: np.ndarray, max_iter: int = 100
) -> tuple[np.ndarray, bool]:
    """Newton–Raphson on the concave ℓ (IRLS) with step halving; fast for bootstrap refits."""
    x = x0.astype(np.float64).copy()
    design = np.column_stack([np.ones_like(n), -n])
    ll = _loglik(x[0], x[1], n, k, t)
    for _ in range(max_iter):
        p = expit(x[0] - x[1] * n)
        grad = design.T @ (k - t * p)
        info = design.T @ (design * (t * p * (1 - p))[:, None])
        try:
            step = np.linalg.solve(info, grad)
        except np.linalg.LinAlgError:
            return x, False
        for _ in range(30):
            cand = x + step
            ll_c = _loglik(cand[0], cand[1], n, k, t)
            if ll_c >= ll - 1e-12:
                break
            step = step / 2
        else:
            return x, False
        x, ll = cand, ll_c
        if np.any(np.abs(x) > PARAM_BOUND):
            return x, False  # diverging: separated data
        if np.max(np.abs(step)) < 1e-10:
            return x, True
    return x, False


def _mle(n: np.ndarray, k: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, bool]:
    x0 = _start(n, k, t)
    x, ok = _newton(x0, n, k, t)
    if ok:
        return x, True
    # Separated or ill-conditioned data: bounded quasi-Newton, which stops at the bound.
    res = minimize(
        _negll_grad,
        x0,
        args=(n, k, t),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-PARAM_BOUND, PARAM_BOUND)] * 2,
        options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-10},
    )
    x = np.asarray(res.x, dtype=np.float64)
    return x, bool(res.success)


def _fisher_cov(a: float, b: float, n: np.ndarray, t: np.ndarray) -> np.ndarray:
    p = expit(a - b * n)
    w = t * p * (1 - p)
    design = np.column_stack([np.ones_like(n), -n])
    info = design.T @ (design * w[:, None])
    try:
        return np.asarray(np.linalg.inv(info), dtype=np.float64)
    except np.linalg.LinAlgError:
        return np.full((2, 2), np.nan)


def _profile_centre(c: float, n: np.ndarray, k: np.ndarray, t: np.ndarray) -> float:
    """max_β ℓ with the centre fixed: logit p = β(c − n)."""
    res = minimize_scalar(
        lambda b: -_loglik(b * c, b, n, k, t),
        bounds=(-PARAM_BOUND, PARAM_BOUND),
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(-res.fun)


def _profile_beta(b: float, n: np.ndarray, k: np.ndarray, t: np.ndarray) -> float:
    """max_a ℓ with β fixed."""
    res = minimize_scalar(
        lambda a: -_loglik(a, b, n, k, t),
        bounds=(-PARAM_BOUND, PARAM_BOUND),
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(-res.fun)


def _profile_ci(
    profile: Any, point: float, ll_hat: float, q: float, step: float, limit: float
) -> tuple[float | None, float | None]:
    """Where ``2(ℓ̂ − profile(x)) = q`` on each side of ``point`` (None: not reached by ``limit``)."""

    def g(x: float) -> float:
        return 2.0 * (ll_hat - profile(x)) - q

    out: list[float | None] = []
    for sign in (-1.0, 1.0):
        inner, d, found = point, step, None
        while d <= limit:
            outer = point + sign * d
            if g(outer) > 0:
                found = brentq(g, min(inner, outer), max(inner, outer), xtol=1e-8)
                break
            inner, d = outer, d * 2
        out.append(found)
    return out[0], out[1]


@dataclass(frozen=True)
class SigmoidFit:
    """Lemma 7 fitted to a fraction-good curve.

    Attributes:
        log_inv_alpha: a = log(1/α) (the logit of p_good at n = 0).
        beta: β, the per-sentence decay of the log-odds.
        alpha: e^{−a} (a prior weight only when a > 0, i.e. p_good(0) > ½).
        centre: n½ = a/β, where p_good crosses ½ (Lemma 7's centre).
        ci_method: ``"profile"`` or ``"bootstrap"`` (prompts resampled).
        deviance: 2 Σ [k log(k/N p̂) + (N−k) log((N−k)/(N(1−p̂)))] against the saturated model.
        dispersion: Pearson χ² / (L − 2); ≫ 1 means more spread than binomial (prompt
            heterogeneity or a non-sigmoid shape).
        converged, at_bound: optimiser status; ``at_bound`` flags separated data.
        n_points, n_responses, n_prompts: what the fit saw.
    """

    log_inv_alpha: Estimate
    beta: Estimate
    alpha: Estimate
    centre: Estimate
    ci_method: str
    deviance: float
    dispersion: float
    converged: bool
    at_bound: bool
    n: tuple[float, ...]
    n_points: int
    n_responses: int
    n_prompts: int | None
    n_boot: int = 0

    @property
    def decays(self) -> bool:
        """β's interval lies above 0: the curve does decay, so the centre a/β is identified."""
        return self.beta.ci_low is not None and self.beta.ci_low > 0

    def predict(self, n: np.ndarray | Sequence[float]) -> np.ndarray:
        return lemma7_curve(n, self.log_inv_alpha.value, self.beta.value)

    def to_dict(self) -> dict[str, Any]:
        def f(x: float) -> float | None:
            return x if math.isfinite(x) else None

        return {
            "log_inv_alpha": self.log_inv_alpha.to_dict(),
            "beta": self.beta.to_dict(),
            "alpha": self.alpha.to_dict(),
            "centre": self.centre.to_dict(),
            "decays": self.decays,
            "ci_method": self.ci_method,
            "deviance": f(self.deviance),
            "dispersion": f(self.dispersion),
            "converged": self.converged,
            "at_bound": self.at_bound,
            "n": list(self.n),
            "n_points": self.n_points,
            "n_responses": self.n_responses,
            "n_prompts": self.n_prompts,
            "n_boot": self.n_boot,
        }


def _as_counts(
    n: Sequence[float] | np.ndarray,
    good: Sequence[int] | np.ndarray,
    total: Sequence[int] | np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    nn = np.asarray(n, dtype=np.float64).ravel()
    k = np.asarray(good, dtype=np.float64).ravel()
    t = np.asarray(total, dtype=np.float64).ravel()
    if not nn.size == k.size == t.size:
        raise InputError("n, good and total must have the same length")
    if nn.size < 2:
        raise InputError(f"need at least 2 curve points to fit, got {nn.size}")
    if np.any(~np.isfinite(nn)) or np.any(t < 0) or np.any(k < 0) or np.any(k > t):
        raise InputError("counts must satisfy 0 <= good <= total and n must be finite")
    keep = t > 0
    if np.unique(nn[keep]).size < 2:
        raise InputError("need responses at at least 2 distinct n to fit a sigmoid")
    return nn[keep], k[keep], t[keep]


def _raw_fit(n: np.ndarray, k: np.ndarray, t: np.ndarray) -> tuple[float, float, bool, bool]:
    x, ok = _mle(n, k, t)
    at_bound = bool(np.any(np.abs(x) >= PARAM_BOUND - 1e-3))
    return float(x[0]), float(x[1]), ok, at_bound


def _centre(a: float, b: float) -> float:
    return a / b if b != 0 else math.copysign(math.inf, a) if a != 0 else math.nan


def fit_sigmoid(
    n: Sequence[float] | np.ndarray,
    good: Sequence[int] | np.ndarray,
    total: Sequence[int] | np.ndarray,
    *,
    per_prompt_good: np.ndarray | None = None,
    per_prompt_total: np.ndarray | None = None,
    n_boot: int = 0,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> SigmoidFit:
    """Binomial-ML fit of ``p_good(n) = σ(log 1/α − βn)`` to ``good[i]`` of ``total[i]`` at ``n[i]``.

    Args:
        per_prompt_good, per_prompt_total: ``[P, L]`` counts per prompt (rows sum to
            ``good`` / ``total``); with ``n_boot > 0`` the CIs are percentile-bootstrap CIs
            over prompts, otherwise profile-likelihood CIs.
        n_boot: bootstrap replicates (0 → profile likelihood).
    """
    check_range("ci_level", ci_level, low=0, high=1)
    if n_boot < 0:
        raise InputError(f"n_boot must be >= 0, got {n_boot}")
    nn, k, t = _as_counts(n, good, total)
    a, b, ok, at_bound = _raw_fit(nn, k, t)
    ll_hat = _loglik(a, b, nn, k, t)
    p = lemma7_curve(nn, a, b)
    dof = nn.size - 2
    with np.errstate(divide="ignore", invalid="ignore"):
        dev_terms = np.where(k > 0, k * np.log(k / (t * p)), 0.0) + np.where(
            t - k > 0, (t - k) * np.log((t - k) / (t * (1 - p))), 0.0
        )
        pearson = float(np.sum((k - t * p) ** 2 / (t * p * (1 - p))))
    deviance = float(2 * np.sum(dev_terms))
    dispersion = pearson / dof if dof > 0 else math.nan
    cov = _fisher_cov(a, b, nn, t)
    se_a, se_b = (math.sqrt(max(0.0, float(cov[i, i]))) for i in range(2))
    c = _centre(a, b)
    grad = np.array([1.0 / b, -a / b**2]) if b != 0 else np.full(2, np.nan)
    se_c = float(math.sqrt(max(0.0, float(grad @ cov @ grad))))
    n_total = int(t.sum())
    n_prompts: int | None = None

    if n_boot > 0:
        if per_prompt_good is None or per_prompt_total is None:
            raise InputError("a bootstrap over prompts needs per_prompt_good and per_prompt_total")
        pg = np.asarray(per_prompt_good, dtype=np.float64)
        pt = np.asarray(per_prompt_total, dtype=np.float64)
        if pg.shape != pt.shape or pg.ndim != 2 or pg.shape[1] != np.asarray(n).size:
            raise InputError("per-prompt counts must be [P, L] arrays matching n")
        n_prompts = int(pg.shape[0])
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        reps = _bootstrap(np.asarray(n, dtype=np.float64), pg, pt, n_boot, gen)
        lo_q, hi_q = (1 - ci_level) / 2, 1 - (1 - ci_level) / 2
        method = "binomial_ml_bootstrap_prompts"
        ea = _pct(a, reps[:, 0], lo_q, hi_q, n_total, ci_level, method)
        eb = _pct(b, reps[:, 1], lo_q, hi_q, n_total, ci_level, method)
        ec = _pct(c, reps[:, 0] / reps[:, 1], lo_q, hi_q, n_total, ci_level, method)
        ealpha = _pct(math.exp(-a), np.exp(-reps[:, 0]), lo_q, hi_q, n_total, ci_level, method)
        ci_method = "bootstrap"
    else:
        q = float(chi2.ppf(ci_level, 1))
        span = float(nn.max() - nn.min())
        method = "binomial_ml_profile"
        a_lo, a_hi, b_lo, b_hi, c_lo, c_hi = (None,) * 6
        if not at_bound:
            b_lo, b_hi = _profile_ci(
                lambda x: _profile_beta(x, nn, k, t),
                b,
                ll_hat,
                q,
                max(se_b, 1e-3) / 2,
                4 * PARAM_BOUND,
            )
            c_lo, c_hi = _profile_ci(
                lambda x: _profile_centre(x, nn, k, t),
                c,
                ll_hat,
                q,
                max(se_c, 1e-3) / 2 if math.isfinite(se_c) else 0.5,
                20 * max(span, 1.0),
            )
            a_lo, a_hi = _profile_ci(
                lambda x: _profile_beta_given_a(x, nn, k, t),
                a,
                ll_hat,
                q,
                max(se_a, 1e-3) / 2,
                4 * PARAM_BOUND,
            )
        ea = Estimate(a, se_a, n_total, a_lo, a_hi, ci_level, method)
        eb = Estimate(b, se_b, n_total, b_lo, b_hi, ci_level, method)
        ec = Estimate(c, se_c, n_total, c_lo, c_hi, ci_level, method)
        # α = e^{−a} is monotone in a: transform a's interval.
        ealpha = Estimate(
            math.exp(-a),
            math.exp(-a) * se_a,
            n_total,
            None if a_hi is None else math.exp(-a_hi),
            None if a_lo is None else math.exp(-a_lo),
            ci_level,
            method,
        )
        ci_method = "profile"
    if not (eb.ci_low is not None and eb.ci_low > 0):
        # β's interval reaches 0 (or below): a/β is unbounded there, so the centre has no
        # finite interval — report none rather than a meaningless huge one.
        ec = Estimate(c, math.nan, n_total, None, None, ci_level, ec.method + "_unidentified")
    return SigmoidFit(
        log_inv_alpha=ea,
        beta=eb,
        alpha=ealpha,
        centre=ec,
        ci_method=ci_method,
        deviance=deviance,
        dispersion=dispersion,
        converged=ok,
        at_bound=at_bound,
        n=tuple(float(x) for x in nn),
        n_points=int(nn.size),
        n_responses=n_total,
        n_prompts=n_prompts,
        n_boot=int(n_boot),
    )


def _profile_beta_given_a(a: float, n: np.ndarray, k: np.ndarray, t: np.ndarray) -> float:
    """max_β ℓ with a = log 1/α fixed."""
    res = minimize_scalar(
        lambda b: -_loglik(a, b, n, k, t),
        bounds=(-PARAM_BOUND, PARAM_BOUND),
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(-res.fun)


def _bootstrap(
    n: np.ndarray, pg: np.ndarray, pt: np.ndarray, n_boot: int, gen: np.random.Generator
) -> np.ndarray:
    """``[B, 2]`` refitted (a, β) on prompts resampled with replacement (degenerate draws dropped)."""
    p = pg.shape[0]
    reps = []
    for _ in range(n_boot):
        idx = gen.integers(0, p, size=p)
        k, t = pg[idx].sum(axis=0), pt[idx].sum(axis=0)
        keep = t > 0
        if np.unique(n[keep]).size < 2:
            continue
        a, b, _, _ = _raw_fit(n[keep], k[keep], t[keep])
        reps.append((a, b))
    return np.asarray(reps, dtype=np.float64).reshape(-1, 2)


def _pct(
    point: float, reps: np.ndarray, lo_q: float, hi_q: float, n: int, level: float, method: str
) -> Estimate:
    reps = reps[np.isfinite(reps)]
    if reps.size < 10:
        return Estimate(point, math.nan, n, None, None, level, method)
    lo, hi = np.quantile(reps, [lo_q, hi_q])
    return Estimate(point, float(reps.std(ddof=1)), n, float(lo), float(hi), level, method)


def fit_curve(
    curve: BehaviorCurve,
    *,
    n_boot: int = 200,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> SigmoidFit:
    """:func:`fit_sigmoid` on a :class:`~bebkit.estimators.behavior.BehaviorCurve`.

    With ``n_boot > 0`` and at least :data:`MIN_BOOT_PROMPTS` prompts the CIs resample
    prompts; otherwise they are profile-likelihood CIs.
    """
    boot = n_boot if curve.good.shape[0] >= MIN_BOOT_PROMPTS else 0
    return fit_sigmoid(
        curve.n,
        curve.good_counts,
        curve.totals,
        per_prompt_good=curve.good,
        per_prompt_total=curve.total,
        n_boot=boot,
        ci_level=ci_level,
        rng=rng,
    )


@dataclass(frozen=True)
class DelayResult:
    """How many sentences the aligning prompt delays misalignment: ``n½(aligned) − n½(none)``."""

    delay: Estimate
    none: SigmoidFit
    aligned: SigmoidFit

    def to_dict(self) -> dict[str, Any]:
        return {
            "delay": self.delay.to_dict(),
            "none": self.none.to_dict(),
            "aligned": self.aligned.to_dict(),
        }


def aligning_delay(
    none: BehaviorCurve,
    aligned: BehaviorCurve,
    *,
    n_boot: int = 200,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> DelayResult:
    """Difference of the fitted Lemma 7 centres, with a paired bootstrap CI over prompts.

    Both conditions use the same prompts, so each replicate resamples prompt ids once and
    refits both curves (their correlation cancels in the difference). With fewer than
    :data:`MIN_BOOT_PROMPTS` shared prompts or ``n_boot = 0`` the CI is Wald with independent stderrs (conservative).
    """
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    if not np.array_equal(none.n, aligned.n):
        raise InputError("both conditions must be measured at the same sentence counts")
    f_none = fit_curve(none, n_boot=n_boot, ci_level=ci_level, rng=gen)
    f_al = fit_curve(aligned, n_boot=n_boot, ci_level=ci_level, rng=gen)
    d = f_al.centre.value - f_none.centre.value
    shared = np.intersect1d(none.prompt_ids, aligned.prompt_ids)
    n_total = f_none.n_responses + f_al.n_responses
    if not (f_none.decays and f_al.decays):
        est = Estimate(d, math.nan, n_total, None, None, ci_level, "unidentified_no_decay")
    elif n_boot > 0 and shared.size >= MIN_BOOT_PROMPTS:
        rn = {int(p): i for i, p in enumerate(none.prompt_ids)}
        ra = {int(p): i for i, p in enumerate(aligned.prompt_ids)}
        rows_n = np.array([rn[int(p)] for p in shared])
        rows_a = np.array([ra[int(p)] for p in shared])
        n = none.n.astype(np.float64)
        diffs = []
        for _ in range(n_boot):
            idx = gen.integers(0, shared.size, size=shared.size)
            kn, tn = none.good[rows_n[idx]].sum(0), none.total[rows_n[idx]].sum(0)
            ka, ta = aligned.good[rows_a[idx]].sum(0), aligned.total[rows_a[idx]].sum(0)
            mn, ma = tn > 0, ta > 0
            if np.unique(n[mn]).size < 2 or np.unique(n[ma]).size < 2:
                continue
            a1, b1, _, _ = _raw_fit(n[mn], kn[mn], tn[mn])
            a2, b2, _, _ = _raw_fit(n[ma], ka[ma], ta[ma])
            diffs.append(_centre(a2, b2) - _centre(a1, b1))
        lo_q, hi_q = (1 - ci_level) / 2, 1 - (1 - ci_level) / 2
        est = _pct(d, np.asarray(diffs), lo_q, hi_q, n_total, ci_level, "paired_bootstrap_prompts")
    else:
        se = math.sqrt(f_none.centre.stderr**2 + f_al.centre.stderr**2)
        z = float(norm.ppf(0.5 + ci_level / 2))
        est = Estimate(d, se, n_total, d - z * se, d + z * se, ci_level, "wald_independent")
    return DelayResult(delay=est, none=f_none, aligned=f_al)


def theorem2_delay(
    beta: float, beta_prime: float, sigma: float, s0_len: float, delta: float = 0.1
) -> float:
    """Theorem 2's extra misaligning length bought by an aligning prefix s₀ (appendix E).

    ``theorem2_length − theorem1_length = (β′/β)|s₀| + (σ/β)√(|s₀|/δ) + 1`` (α and ε cancel),
    computed through :mod:`bebkit.theory` so the formula has one home.
    """
    from bebkit.theory import theorem1_length, theorem2_length

    alpha, eps = 0.5, 0.5  # cancel in the difference
    t2 = theorem2_length(alpha, beta, eps, beta_prime, sigma, delta, s0_len)
    t1 = theorem1_length(alpha, beta, eps)
    return float(t2 - t1)


def compare_centres(
    centre: Estimate, n_star: Estimate, *, identified: bool = True
) -> dict[str, Any]:
    """Lemma 7's behavior centre n½ vs Lemma 5's KL midpoint n* (both log(1/α)/β).

    Reports the difference with a Wald CI that treats the two as independent — they are not
    when both come from the same prompts (misalign's KL on its own prompts): a positive
    correlation makes this CI conservative, a negative one too narrow — the ratio, and ``consistent``: whether the difference's CI contains 0 — None when the centre
    is not identified (``identified=False``: the behavior curve shows no significant decay).
    """
    d = centre.value - n_star.value
    se = math.sqrt(centre.stderr**2 + n_star.stderr**2)
    z = float(norm.ppf(0.975))
    ok = identified and math.isfinite(se)
    return {
        "behavior_centre": centre.to_dict(),
        "kl_n_star": n_star.to_dict(),
        "difference": Estimate(
            d,
            se,
            centre.n,
            d - z * se if ok else None,
            d + z * se if ok else None,
            0.95,
            "wald_independent",
        ).to_dict(),
        "ratio": centre.value / n_star.value if n_star.value != 0 else None,
        "consistent": bool(abs(d) <= z * se) if ok else None,
    }


def bounded_sigmoid_curve(
    n: np.ndarray | Sequence[float],
    log_inv_alpha: float,
    beta: float,
    g_minus: float,
    g_plus: float,
) -> np.ndarray:
    """``g₋ + (g₊ − g₋)·σ(a − βn)``: Lemma 7's reverse sigmoid between a floor and a ceiling."""
    return g_minus + (g_plus - g_minus) * lemma7_curve(n, log_inv_alpha, beta)


def _bounded_negll(
    x: np.ndarray, n: np.ndarray, k: np.ndarray, t: np.ndarray, gm: float, gp: float
) -> tuple[float, Any]:
    z = x[0] - x[1] * n
    s = expit(z)
    p = np.clip(gm + (gp - gm) * s, 1e-12, 1 - 1e-12)
    ll = np.sum(k * np.log(p) + (t - k) * np.log1p(-p))
    dp = (gp - gm) * s * (1 - s)  # dp/dz
    r = (k / p - (t - k) / (1 - p)) * dp  # dℓ/dz
    return float(-ll), -np.array([np.sum(r), -np.sum(r * n)])


def _bounded_mle(
    n: np.ndarray, k: np.ndarray, t: np.ndarray, gm: float, gp: float, x0: np.ndarray | None
) -> tuple[np.ndarray, bool]:
    if x0 is None:
        # Start: the ordinary sigmoid fitted to the rescaled rates (k/t − g₋)/(g₊ − g₋).
        q = np.clip((k / t - gm) / (gp - gm), 0.02, 0.98)
        x0 = _start(n, np.round(q * t), t)
    x0 = np.clip(x0, -PARAM_BOUND + 1e-6, PARAM_BOUND - 1e-6)
    # Fisher scoring (2 parameters, expected information in closed form) with step halving;
    # fast enough for the g-draw refits. L-BFGS-B (bounded) if it does not converge.
    x = x0.astype(np.float64).copy()
    f, g = _bounded_negll(x, n, k, t, gm, gp)
    for _ in range(100):
        info = np.linalg.pinv(_bounded_fisher(x[0], x[1], n, t, gm, gp))
        step = -np.linalg.solve(info, g) if np.all(np.isfinite(info)) else -g
        for _ in range(40):
            cand = x + step
            fc, gc = _bounded_negll(cand, n, k, t, gm, gp)
            if fc <= f + 1e-12:
                break
            step = step / 2
        else:
            break
        x, f, g = cand, fc, gc
        if np.any(np.abs(x) > PARAM_BOUND):
            break
        if np.max(np.abs(step)) < 1e-10:
            return x, True
    res = minimize(
        _bounded_negll,
        x0,
        args=(n, k, t, gm, gp),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-PARAM_BOUND, PARAM_BOUND)] * 2,
        options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-9},
    )
    return np.asarray(res.x, dtype=np.float64), bool(res.success)


def _bounded_fisher(
    a: float, b: float, n: np.ndarray, t: np.ndarray, gm: float, gp: float
) -> np.ndarray:
    s = expit(a - b * n)
    p = np.clip(gm + (gp - gm) * s, 1e-12, 1 - 1e-12)
    w = t * ((gp - gm) * s * (1 - s)) ** 2 / (p * (1 - p))
    design = np.column_stack([np.ones_like(n), -n])
    try:
        return np.asarray(np.linalg.inv(design.T @ (design * w[:, None])), dtype=np.float64)
    except np.linalg.LinAlgError:
        return np.full((2, 2), np.nan)


@dataclass(frozen=True)
class BoundedSigmoidFit:
    """Lemma 7 between a floor g₋ and a ceiling g₊: ``p(n) = g₋ + (g₊ − g₋)·σ(a − βn)``.

    Attributes:
        log_inv_alpha, beta: a and β (binomial ML with g₋, g₊ fixed at their measured values).
        centre: a/β, where p(n) is half-way between g₋ and g₊.
        g_minus, g_plus: the floor and ceiling used (measured, with their CIs).
        centre_in_range: whether the centre lies inside the measured ``[min n, max n]``; when
            not, :attr:`note` says the centre is an extrapolation and should not be reported
            as a measured midpoint.
        ci_method: ``"wald_fisher+g_draws"`` — Wald intervals from the Fisher information plus
            the spread of refits over ``n_draws`` draws of (g₋, g₊) from their normal errors
            (total variance = E[Var | g] + Var[E | g]); ``n_draws = 0`` treats g as exact.
    """

    log_inv_alpha: Estimate
    beta: Estimate
    centre: Estimate
    g_minus: Estimate
    g_plus: Estimate
    centre_in_range: bool
    n_range: tuple[float, float]
    converged: bool
    at_bound: bool
    n_points: int
    n_responses: int
    n_draws: int
    ci_method: str = "wald_fisher+g_draws"

    @property
    def extrapolated(self) -> bool:
        return not self.centre_in_range

    @property
    def note(self) -> str:
        lo, hi = self.n_range
        if self.centre_in_range:
            return f"centre inside the measured range [{lo:g}, {hi:g}]"
        return (
            f"centre {self.centre.value:.3g} lies outside the measured range [{lo:g}, {hi:g}]: "
            "an extrapolation, not a measured midpoint"
        )

    def predict(self, n: np.ndarray | Sequence[float]) -> np.ndarray:
        return bounded_sigmoid_curve(
            n, self.log_inv_alpha.value, self.beta.value, self.g_minus.value, self.g_plus.value
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "log_inv_alpha": self.log_inv_alpha.to_dict(),
            "beta": self.beta.to_dict(),
            "centre": self.centre.to_dict(),
            "g_minus": self.g_minus.to_dict(),
            "g_plus": self.g_plus.to_dict(),
            "centre_in_range": self.centre_in_range,
            "extrapolated": self.extrapolated,
            "note": self.note,
            "n_range": list(self.n_range),
            "converged": self.converged,
            "at_bound": self.at_bound,
            "n_points": self.n_points,
            "n_responses": self.n_responses,
            "n_draws": self.n_draws,
            "ci_method": self.ci_method,
        }


def fit_bounded_sigmoid(
    n: Sequence[float] | np.ndarray,
    good: Sequence[int] | np.ndarray,
    total: Sequence[int] | np.ndarray,
    g_minus: Estimate,
    g_plus: Estimate,
    *,
    n_draws: int = 200,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> BoundedSigmoidFit:
    """Binomial ML of ``p(n) = g₋ + (g₊ − g₋)·σ(a − βn)`` to ``good[i]`` of ``total[i]``.

    ``ℓ(a, β) = Σᵢ kᵢ log p(nᵢ) + (Nᵢ − kᵢ) log(1 − p(nᵢ))`` with g₋ (the judge's good rate on
    P₋'s own responses) and g₊ (the model's rate at n = 0) fixed at their measured values;
    their uncertainty enters through ``n_draws`` refits with (g₋, g₊) drawn from normals with
    their stderrs (draws with g₋ ≥ g₊ or outside [0, 1] are redrawn by clipping/skipping).

    Raises:
        InputError: bad counts, or not ``0 ≤ g₋ < g₊ ≤ 1``.
    """
    check_range("ci_level", ci_level, low=0, high=1)
    if n_draws < 0:
        raise InputError(f"n_draws must be >= 0, got {n_draws}")
    gm, gp = float(g_minus.value), float(g_plus.value)
    if not (0.0 <= gm < gp <= 1.0):
        raise InputError(f"need 0 <= g_minus < g_plus <= 1, got g_minus={gm:g}, g_plus={gp:g}")
    nn, k, t = _as_counts(n, good, total)
    x, ok = _bounded_mle(nn, k, t, gm, gp, None)
    a, b = float(x[0]), float(x[1])
    at_bound = bool(np.any(np.abs(x) >= PARAM_BOUND - 1e-3))
    cov = _bounded_fisher(a, b, nn, t, gm, gp)
    c = _centre(a, b)
    grad = np.array([1.0 / b, -a / b**2]) if b != 0 else np.full(2, np.nan)
    var_a, var_b = float(cov[0, 0]), float(cov[1, 1])
    var_c = float(grad @ cov @ grad)
    used = 0
    if n_draws > 0 and (g_minus.stderr > 0 or g_plus.stderr > 0):
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        sm = g_minus.stderr if math.isfinite(g_minus.stderr) else 0.0
        sp = g_plus.stderr if math.isfinite(g_plus.stderr) else 0.0
        reps = []
        for _ in range(n_draws):
            gm_d = min(max(gm + sm * gen.standard_normal(), 0.0), 1.0)
            gp_d = min(max(gp + sp * gen.standard_normal(), 0.0), 1.0)
            if gp_d - gm_d < 1e-3:
                continue
            xd, _ = _bounded_mle(nn, k, t, gm_d, gp_d, x)
            reps.append((xd[0], xd[1], _centre(float(xd[0]), float(xd[1]))))
        r = np.asarray(reps, dtype=np.float64).reshape(-1, 3)
        r = r[np.all(np.isfinite(r), axis=1)]
        used = int(r.shape[0])
        if used >= 10:
            # Law of total variance: Fisher variance at the measured g + spread over g draws.
            var_a += float(r[:, 0].var(ddof=1))
            var_b += float(r[:, 1].var(ddof=1))
            var_c += float(r[:, 2].var(ddof=1))
    z = float(norm.ppf(0.5 + ci_level / 2))
    n_total = int(t.sum())
    method = "bounded_binomial_ml_wald" + ("+g_draws" if used else "")

    def wald(v: float, var: float) -> Estimate:
        s = math.sqrt(var) if var >= 0 and math.isfinite(var) else math.nan
        ok_ci = math.isfinite(s)
        return Estimate(
            v, s, n_total, v - z * s if ok_ci else None, v + z * s if ok_ci else None,
            ci_level, method,
        )  # fmt: skip

    ea, eb, ec = wald(a, var_a), wald(b, var_b), wald(c, var_c)
    if not (eb.ci_low is not None and eb.ci_low > 0):
        ec = Estimate(c, math.nan, n_total, None, None, ci_level, method + "_unidentified")
    lo, hi = float(nn.min()), float(nn.max())
    return BoundedSigmoidFit(
        log_inv_alpha=ea,
        beta=eb,
        centre=ec,
        g_minus=g_minus,
        g_plus=g_plus,
        centre_in_range=bool(math.isfinite(c) and lo <= c <= hi),
        n_range=(lo, hi),
        converged=ok,
        at_bound=at_bound,
        n_points=int(nn.size),
        n_responses=n_total,
        n_draws=used,
        ci_method="wald_fisher+g_draws" if used else "wald_fisher",
    )


__all__ = [
    "BoundedSigmoidFit",
    "DelayResult",
    "SigmoidFit",
    "aligning_delay",
    "bounded_sigmoid_curve",
    "compare_centres",
    "fit_bounded_sigmoid",
    "fit_curve",
    "fit_sigmoid",
    "lemma7_curve",
    "theorem2_delay",
]
