"""α and β from the convergence curve ``KL(P₋ ‖ P_LLM | s₁…sₙ)`` (§4.2, fig. 3a / 11, app. H.1).

Lemma 5 (eq. 7): for a prompt sampled from P₋,

    KL(P₋(·|s) ‖ P(·|s)) ≤ log(1 + exp(log(1/α) − β|s|)),

≈ ``log(1/α) − β|s|`` while the prompt is short and → 0 after ``n* = log(1/α)/β`` sentences.
Three fits are reported side by side:

* ``floored`` (the default whole-curve fit, :attr:`ConvergenceResult.default`) —
  ``f(n) = log(1 + e^{a − βn}) + c``, ``a = log 1/α``, ``c ≥ 0``. A proxy P₋ is never the
  model's true component, so a measured KL levels off at some ``c > 0`` instead of → 0; the
  floorless curve then bends its slope to reach the plateau and underestimates β (on the
  authors' own agreeableness curve it gives about half the paper's β). ``n* = a/β`` is still
  where the softplus part turns from linear to 0.
* ``lemma5`` — the floorless curve ``f(n) = log(1 + e^{a − βn})`` (eq. 7 as stated);
* ``linear`` — the paper's straight line ``a − βn`` on the first ``n_linear`` sentences.

All three are weighted least squares (weights 1/stderr²) with the parameter covariance from
the Jacobian scaled by ``max(1, χ²_red)`` (the lemma is a bound, so misfit widens the CI
instead of hiding); with no usable stderrs the fit is unweighted and the residual variance
sets the scale.

``n* = a/β`` gets a delta-method CI, or percentile-bootstrap CIs (prompts resampled and the
curve refitted) when per-prompt values are available. Theorem 1/2 lengths follow from
:mod:`bebkit.theory` via :func:`theorem_lengths`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from bebkit.errors import InputError, check_range
from bebkit.estimate import Estimate
from bebkit.estimators.kl import KLCurve
from bebkit.fits.envelopes import CurveData

_Z95 = 1.959963984540054


def lemma5_curve(n: np.ndarray | Sequence[float], log_inv_alpha: float, beta: float) -> np.ndarray:
    """``log(1 + exp(log(1/α) − βn))`` (eq. 7), evaluated stably as ``logaddexp(0, ·)``."""
    return np.logaddexp(0.0, log_inv_alpha - beta * np.asarray(n, dtype=np.float64))


def floored_curve(
    n: np.ndarray | Sequence[float], log_inv_alpha: float, beta: float, floor: float
) -> np.ndarray:
    """``log(1 + exp(log(1/α) − βn)) + c``: eq. 7 plus the floor ``c`` of an imperfect proxy."""
    return lemma5_curve(n, log_inv_alpha, beta) + floor


#: The whole-curve model :attr:`ConvergenceResult.default` returns when it was fitted.
DEFAULT_MODEL = "floored"


@dataclass(frozen=True)
class ConvergenceFit:
    """A fitted ``(log 1/α, β[, c])`` with derived α and ``n* = log(1/α)/β``.

    Attributes:
        model: ``"floored"``, ``"lemma5"`` or ``"linear"``.
        log_inv_alpha, beta, alpha, n_star: estimates with CIs.
        cov: covariance of ``(log 1/α, β)`` (2×2) or ``(log 1/α, β, c)`` (3×3, floored).
        chi2_red: weighted residual sum of squares / (points − parameters) (NaN if ≤ 0 dof).
        n_used: the prefix lengths that entered the fit.
        weighted: False when stderrs were unusable (all zero) and the fit is unweighted.
        floor: the fitted floor ``c`` (floored model only, else None).
    """

    model: str
    log_inv_alpha: Estimate
    beta: Estimate
    alpha: Estimate
    n_star: Estimate
    cov: np.ndarray
    chi2_red: float
    n_used: tuple[float, ...]
    weighted: bool
    floor: Estimate | None = None

    def predict(self, n: np.ndarray | Sequence[float]) -> np.ndarray:
        a, b = self.log_inv_alpha.value, self.beta.value
        if self.model == "floored":
            return floored_curve(n, a, b, 0.0 if self.floor is None else self.floor.value)
        if self.model == "lemma5":
            return lemma5_curve(n, a, b)
        return a - b * np.asarray(n, dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        d = self._to_dict()
        if self.floor is not None:
            d["floor"] = self.floor.to_dict()
        return d

    def _to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "log_inv_alpha": self.log_inv_alpha.to_dict(),
            "beta": self.beta.to_dict(),
            "alpha": self.alpha.to_dict(),
            "n_star": self.n_star.to_dict(),
            "cov": self.cov.tolist(),
            "chi2_red": None if not math.isfinite(self.chi2_red) else self.chi2_red,
            "n_used": list(self.n_used),
            "weighted": self.weighted,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConvergenceFit:
        """Inverse of :meth:`to_dict` (e.g. to redraw a figure from a stored record)."""
        chi2 = d.get("chi2_red")
        return cls(
            model=str(d["model"]),
            log_inv_alpha=Estimate.from_dict(d["log_inv_alpha"]),
            beta=Estimate.from_dict(d["beta"]),
            alpha=Estimate.from_dict(d["alpha"]),
            n_star=Estimate.from_dict(d["n_star"]),
            cov=np.asarray(d["cov"], dtype=np.float64),
            chi2_red=float("nan") if chi2 is None else float(chi2),
            n_used=tuple(float(x) for x in d["n_used"]),
            weighted=bool(d["weighted"]),
            floor=Estimate.from_dict(d["floor"]) if d.get("floor") is not None else None,
        )


def _exp(x: float) -> float:
    """``e^x`` that returns ``inf`` instead of raising OverflowError."""
    return math.exp(x) if x < 709.0 else math.inf


def _weights(stderr: np.ndarray) -> tuple[np.ndarray, bool]:
    se = np.asarray(stderr, dtype=np.float64)
    ok = np.isfinite(se) & (se > 0)
    if not ok.any():
        return np.ones_like(se), False
    # A zero/NaN stderr (e.g. an exact point) gets the smallest positive one, not infinite weight.
    return np.where(ok, se, se[ok].min()), True


def _raw_lemma5(n: np.ndarray, y: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WLS fit of eq. 7; returns (params, J) with J the Jacobian of the scaled residuals."""
    a0, b0 = _raw_linear(n[: max(2, min(3, n.size))], y[: max(2, min(3, n.size))], se)[0]
    x0 = np.array([max(a0, 1e-3), max(b0, 1e-3)])

    def resid(x: np.ndarray) -> np.ndarray:
        return np.asarray((lemma5_curve(n, x[0], x[1]) - y) / se, dtype=np.float64)

    res = least_squares(resid, x0, bounds=([0.0, 1e-9], [np.inf, np.inf]), method="trf")
    return np.asarray(res.x, dtype=np.float64), np.asarray(res.jac, dtype=np.float64)


def _raw_floored(
    n: np.ndarray, y: np.ndarray, se: np.ndarray, x0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """WLS fit of ``log(1 + e^{a − βn}) + c`` with ``a, c ≥ 0``; returns (params, J).

    Without ``x0`` it starts from several floors (0, ½ and 9/10 of the curve's minimum, each
    with a straight line through the first points of ``y − c₀``) and keeps the best: the cost
    surface has a shallow valley along (β, c) and one start can stop on the wrong side.
    """

    def resid(x: np.ndarray) -> np.ndarray:
        return np.asarray((floored_curve(n, x[0], x[1], x[2]) - y) / se, dtype=np.float64)

    if x0 is not None:
        starts = [np.asarray(x0, dtype=np.float64)]
    else:
        k = max(2, min(3, n.size))
        ymin = float(np.min(y))
        starts = []
        for c0 in (0.0, 0.5 * ymin, 0.9 * ymin) if ymin > 0 else (0.0,):
            a0, b0 = _raw_linear(n[:k], y[:k] - c0, se)[0]
            starts.append(np.array([max(a0, 1e-3), max(b0, 1e-3), c0]))
    lo, hi = [0.0, 1e-9, 0.0], [np.inf, np.inf, np.inf]
    best = None
    for x in starts:
        x = np.clip(x, [0.0, 1e-6, 0.0], None)
        res = least_squares(resid, x, bounds=(lo, hi), method="trf")
        if best is None or res.cost < best.cost:
            best = res
    assert best is not None
    return np.asarray(best.x, dtype=np.float64), np.asarray(best.jac, dtype=np.float64)


def _raw_linear(n: np.ndarray, y: np.ndarray, se: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """WLS straight line ``y = a − βn``; returns ((a, β), J)."""
    w = 1.0 / se[: n.size]
    jac = np.column_stack([w, -n * w])  # d(resid)/d(a, β) with resid = (a − βn − y)/se
    coef, *_ = np.linalg.lstsq(jac, y * w, rcond=None)
    return np.asarray(coef, dtype=np.float64), jac


def _delta_nstar(a: float, b: float, cov: np.ndarray) -> float:
    g = np.zeros(cov.shape[0])
    g[:2] = (1.0 / b, -a / b**2)  # ∇(a/β); c does not enter n*
    return float(math.sqrt(max(0.0, g @ cov @ g)))


def _raw(
    model: str, n: np.ndarray, y: np.ndarray, se: np.ndarray, x0: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    if model == "floored":
        return _raw_floored(n, y, se, x0)
    return (_raw_lemma5 if model == "lemma5" else _raw_linear)(n, y, se)


def _predict(model: str, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    if model == "floored":
        return floored_curve(n, p[0], p[1], p[2])
    if model == "lemma5":
        return lemma5_curve(n, p[0], p[1])
    return np.asarray(p[0] - p[1] * n, dtype=np.float64)


def _fit_once(
    model: str, n: np.ndarray, y: np.ndarray, se: np.ndarray, x0: np.ndarray | None = None
) -> np.ndarray:
    # Bootstrap refits start at the full-data optimum (one start, not the multi-start search).
    return _raw(model, n, y, se, x0)[0]


def _fit(
    model: str,
    n: np.ndarray,
    y: np.ndarray,
    stderr: np.ndarray,
    boot_curves: np.ndarray | None,
    ci_level: float,
    n_units: int,
) -> ConvergenceFit:
    se, weighted = _weights(stderr)
    params, jac = _raw(model, n, y, se)
    k = params.size
    a, b = float(params[0]), float(params[1])
    pred = _predict(model, n, params)
    dof = n.size - k
    chi2_red = float(np.sum(((pred - y) / se) ** 2) / dof) if dof > 0 else float("nan")
    try:
        cov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.nan)
    if not weighted and dof > 0:
        cov = cov * chi2_red  # unweighted: residual variance sets the scale
    elif math.isfinite(chi2_red):
        cov = cov * max(1.0, chi2_red)
    se_a, se_b = (math.sqrt(max(0.0, float(cov[i, i]))) for i in range(2))
    n_star = a / b if b > 0 else float("inf")
    z = _z(ci_level)
    efloor: Estimate | None = None
    if boot_curves is not None:
        x0 = params if model == "floored" else None
        reps = np.array([_fit_once(model, n, bc, se, x0) for bc in boot_curves]).reshape(-1, k)
        reps = reps[np.all(np.isfinite(reps), axis=1) & (reps[:, 1] > 0)]
        lo_q, hi_q = (1 - ci_level) / 2, 1 - (1 - ci_level) / 2
        ns = reps[:, 0] / reps[:, 1]
        method = f"{model}_wls_bootstrap"
        ea = _pct(a, reps[:, 0], lo_q, hi_q, n_units, ci_level, method)
        eb = _pct(b, reps[:, 1], lo_q, hi_q, n_units, ci_level, method)
        ens = _pct(n_star, ns, lo_q, hi_q, n_units, ci_level, method)
        alphas = np.exp(-reps[:, 0])
        ealpha = _pct(_exp(-a), alphas, lo_q, hi_q, n_units, ci_level, method)
        if k == 3:
            efloor = _pct(float(params[2]), reps[:, 2], lo_q, hi_q, n_units, ci_level, method)
    else:
        method = f"{model}_wls_delta"
        ea = Estimate(a, se_a, n_units, a - z * se_a, a + z * se_a, ci_level, method)
        eb = Estimate(b, se_b, n_units, b - z * se_b, b + z * se_b, ci_level, method)
        se_ns = _delta_nstar(a, b, cov) if b > 0 else float("nan")
        ens = Estimate(
            n_star, se_ns, n_units, n_star - z * se_ns, n_star + z * se_ns, ci_level, method
        )
        al = _exp(-a)
        # α = e^{−a}: CI by transforming a's CI (monotone), stderr by the delta method.
        # A badly determined a (huge se_a) must not overflow: e^{>709} is reported as inf.
        ealpha = Estimate(
            al, al * se_a, n_units, _exp(-(a + z * se_a)), _exp(-(a - z * se_a)), ci_level
        )
        ealpha = Estimate(**{**ealpha.__dict__, "method": method})
        if k == 3:
            c, se_c = float(params[2]), math.sqrt(max(0.0, float(cov[2, 2])))
            # c ≥ 0 by construction: the Wald interval is truncated at the bound.
            efloor = Estimate(
                c, se_c, n_units, max(0.0, c - z * se_c), c + z * se_c, ci_level, method
            )
    return ConvergenceFit(
        model=model,
        log_inv_alpha=ea,
        beta=eb,
        alpha=ealpha,
        n_star=ens,
        cov=cov,
        chi2_red=chi2_red,
        n_used=tuple(float(x) for x in n),
        weighted=weighted,
        floor=efloor,
    )


def _z(level: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2)) if level != 0.95 else _Z95


def _pct(
    point: float, reps: np.ndarray, lo_q: float, hi_q: float, n: int, level: float, method: str
) -> Estimate:
    if reps.size < 10:
        return Estimate(point, float("nan"), n, None, None, level, method)
    lo, hi = np.quantile(reps, [lo_q, hi_q])
    return Estimate(point, float(reps.std(ddof=1)), n, float(lo), float(hi), level, method)


@dataclass(frozen=True)
class ConvergenceResult:
    """The fits of one convergence curve (``floored`` is None in records written before it)."""

    lemma5: ConvergenceFit
    linear: ConvergenceFit
    floored: ConvergenceFit | None = None

    @property
    def default(self) -> ConvergenceFit:
        """The whole-curve fit to report: ``floored`` when present, else ``lemma5``."""
        return self.floored if self.floored is not None else self.lemma5

    @property
    def default_kind(self) -> str:
        """The name of :attr:`default`: ``"floored"`` or ``"lemma5"``."""
        return "floored" if self.floored is not None else "lemma5"

    def to_dict(self) -> dict[str, Any]:
        d = {"lemma5": self.lemma5.to_dict(), "linear": self.linear.to_dict()}
        if self.floored is not None:
            d["floored"] = self.floored.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ConvergenceResult:
        fl = d.get("floored")
        return cls(
            ConvergenceFit.from_dict(d["lemma5"]),
            ConvergenceFit.from_dict(d["linear"]),
            None if fl is None else ConvergenceFit.from_dict(fl),
        )


def fit_convergence(
    data: KLCurve | CurveData,
    *,
    n_min: float | None = None,
    n_max: float | None = None,
    n_linear: int = 3,
    n_boot: int = 0,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
    floored: bool = True,
    linear_max: float | None = None,
) -> ConvergenceResult:
    """Fit eq. 7 with and without a floor to the whole curve and a line to its first points.

    The floored fit ``log(1 + e^{a − βn}) + c`` is the default whole-curve fit
    (:attr:`ConvergenceResult.default`); it needs at least 3 points (else it is skipped).

    Args:
        data: ``kl_curve(P₋, P_LLM, …)`` or a :class:`CurveData` of means ± stderrs.
        n_min, n_max: restrict the curve.
        n_linear: points used by the straight-line fit (the paper: first 3 sentences).
        n_boot: > 0 → percentile-bootstrap CIs (prompts resampled when available,
            otherwise a parametric normal bootstrap of the points); 0 → delta method.
        floored: also fit the floored curve (default True).
        linear_max: the straight line uses every point with n ≤ this instead of the first
            ``n_linear`` (a window in sentences shared with another curve,
            :func:`matched_windows`).
    """
    check_range("ci_level", ci_level, low=0, high=1)
    curve = data if isinstance(data, CurveData) else CurveData.from_kl_curve(data)
    if curve.statistic != "mean":
        raise InputError("fit_convergence needs a KL curve (means over prompts)")
    mask = np.ones(curve.n.size, dtype=bool)
    if n_min is not None:
        mask &= curve.n >= n_min
    if n_max is not None:
        mask &= curve.n <= n_max
    n = np.asarray(curve.n[mask], dtype=np.float64)
    if n.size < 2:
        raise InputError(f"need at least 2 curve points to fit, got {n.size}")
    if n_linear < 2:
        raise InputError(f"n_linear must be >= 2, got {n_linear}")
    y = curve.curve()[mask]
    if curve.units is not None:
        p = curve.units.shape[0]
        se = curve.units[:, mask].std(axis=0, ddof=1) / math.sqrt(p)
        n_units = p
    else:
        assert curve.stderrs is not None
        se = curve.stderrs[mask]
        n_units = int(n.size)
    boot = None
    if n_boot > 0:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        boot = curve.bootstrap(n_boot, gen)[:, mask]
    lem = _fit("lemma5", n, y, se, boot, ci_level, n_units)
    k = min(n_linear, n.size) if linear_max is None else int(np.sum(n <= linear_max))
    if k < 2:
        raise InputError(f"the straight line needs >= 2 points, got {k}")
    lin = _fit(
        "linear", n[:k], y[:k], se[:k], None if boot is None else boot[:, :k], ci_level, n_units
    )
    flo = _fit("floored", n, y, se, boot, ci_level, n_units) if floored and n.size >= 3 else None
    return ConvergenceResult(lemma5=lem, linear=lin, floored=flo)


def matched_windows(
    ns: Sequence[Sequence[float]], *, n_min: float = 1, n_linear: int = 3
) -> tuple[float, float]:
    """``(W, L)``: one sentence window shared by several curves read at different n.

    A KL curve flattens with n, so a slope fitted over a wider window is smaller: comparing
    the β of an alternating-layout curve (read at n = 1, 3, 5, …, 19) with a newline curve
    (n = 1 … 10) fitted each over its own points compares different windows (two curves with
    the same per-sentence β give a straight-line ratio of ≈ 0.8). ``W`` is the last n every
    curve reaches (the whole-curve fits use n_min ≤ n ≤ W); ``L`` is the sentence of the
    ``n_linear``-th point of the sparsest curve (the straight line uses n_min ≤ n ≤ L).
    """
    used = [np.sort(np.asarray([x for x in n if x >= n_min], dtype=np.float64)) for n in ns]
    if any(u.size < 2 for u in used):
        raise InputError(f"each curve needs >= 2 points from n = {n_min:g}")
    w = float(min(u[-1] for u in used))
    lin = float(max(u[min(n_linear, u.size) - 1] for u in used))
    return w, min(lin, w)


def theorem_lengths(
    *,
    log_inv_alpha: float,
    beta: float,
    epsilon: float = 0.1,
    beta_prime: float | None = None,
    sigma: float | None = None,
    s0_len: float | None = None,
    delta: float = 0.1,
) -> dict[str, float]:
    """Misaligning lengths (sentences) implied by fitted values, via :mod:`bebkit.theory`.

    ``n_star = log(1/α)/β`` (Lemma 5's midpoint), ``theorem1`` = Theorem 1's
    ``(1/β)(log 1/α + log 1/ε + log 4)`` and, given β′, σ and the aligning prompt length
    ``s0_len``, ``theorem2``.
    """
    from bebkit.theory import theorem1_length, theorem2_length

    alpha = math.exp(-log_inv_alpha)
    out: dict[str, float] = {
        "n_star": log_inv_alpha / beta,
        "theorem1": float(theorem1_length(alpha, beta, epsilon)),
    }
    if beta_prime is not None and sigma is not None and s0_len is not None:
        out["theorem2"] = float(
            theorem2_length(alpha, beta, epsilon, beta_prime, sigma, delta, s0_len)
        )
    return out
