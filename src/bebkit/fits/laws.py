"""Competing laws for a misalignment curve ``y(n)`` (KL or NLL vs prompt length), scored by
how well each *predicts* the curve beyond where it was fitted.

Laws (all fitted by weighted least squares, weights 1/stderr², like
:func:`bebkit.fits.convergence.fit_convergence`):

* ``floored`` — Lemma 5 with a floor (Wolf et al., eq. 7 + c):
  ``y = log(1 + e^{a − βn}) + c``, ``a = log 1/α``, ``a, c ≥ 0``.
* ``lemma5`` — eq. 7 as stated, ``y = log(1 + e^{a − βn})``.
* ``power`` — the many-shot-jailbreaking power law (Anil et al. 2024, "Many-shot
  jailbreaking", NeurIPS; the NLL of the target response vs the number of shots n):
  ``y = C · n^{−γ} + c`` (n > 0), ``C, γ, c ≥ 0``.
* ``bayesian`` — the Bayesian in-context-learning law (Arora, Jurafsky, Potts & Goodman 2024,
  "Bayesian scaling laws for in-context learning", arXiv 2410.16531, their eq. for the
  expected NLL after n examples of task T):
  ``NLL(n) = −log [Σ_m ρ_m P_{m,T}^{Kn+1} / Σ_m ρ_m P_{m,T}^{Kn}]`` with task priors ρ_m,
  per-example probabilities P_{m,T} and ICL efficiency K. With two tasks (the target T = P₋
  with P_{T,T} = p, the other with P_{o,T} = q = r·p, r ≤ 1, prior ratio λ = ρ_o/ρ_T) this is
  ``y = c + log(1 + e^{a − βn}) − log(1 + e^{a − βn − δ})`` with ``c = −log p``,
  ``a = log λ``, ``β = −K log r`` and ``δ = −log r ≥ 0``. As δ → ∞ (the other task gives
  the target's examples no probability) it is exactly the floored Lemma 5 law: Lemma 5's
  curve *is* the Bayesian posterior of the negative component, and the Bayesian law's one
  extra parameter says how much the positive component still explains P₋'s text.

:func:`extrapolation_scores` fits each law on ``n ≤ k`` and scores its prediction for
``n > k`` by the normalised RMSE ``√mean((ŷ − y)²) / mean|y|`` over the held-out points, so a
report can say which law predicts a model's misalignment best.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from bebkit.errors import InputError, check_range
from bebkit.estimate import Estimate
from bebkit.estimators.kl import KLCurve
from bebkit.fits.convergence import _weights, _z
from bebkit.fits.envelopes import CurveData

ParamArray = np.ndarray


def _floored(n: np.ndarray, p: ParamArray) -> np.ndarray:
    return np.logaddexp(0.0, p[0] - p[1] * n) + p[2]


def _lemma5(n: np.ndarray, p: ParamArray) -> np.ndarray:
    return np.logaddexp(0.0, p[0] - p[1] * n)


def _power(n: np.ndarray, p: ParamArray) -> np.ndarray:
    return p[0] * np.power(n, -p[1]) + p[2]


def _bayesian(n: np.ndarray, p: ParamArray) -> np.ndarray:
    z = p[0] - p[1] * n
    return p[3] + np.logaddexp(0.0, z) - np.logaddexp(0.0, z - p[2])


def _line_start(n: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    k = max(2, min(3, n.size))
    slope, icpt = np.polyfit(n[:k], y[:k], 1)
    return float(icpt), float(-slope)


def _floors(y: np.ndarray) -> tuple[float, ...]:
    m = float(np.min(y))
    return (0.0, 0.5 * m, 0.9 * m) if m > 0 else (0.0,)


def _starts_floored(n: np.ndarray, y: np.ndarray) -> list[ParamArray]:
    out = []
    for c0 in _floors(y):
        a0, b0 = _line_start(n, y - c0)
        out.append(np.array([max(a0, 1e-3), max(b0, 1e-3), c0]))
    return out


def _starts_lemma5(n: np.ndarray, y: np.ndarray) -> list[ParamArray]:
    a0, b0 = _line_start(n, y)
    return [np.array([max(a0, 1e-3), max(b0, 1e-3)])]


def _starts_power(n: np.ndarray, y: np.ndarray) -> list[ParamArray]:
    out = []
    for c0 in _floors(y):
        ok = (y - c0 > 0) & (n > 0)
        if ok.sum() < 2:
            continue
        slope, icpt = np.polyfit(np.log(n[ok]), np.log(y[ok] - c0), 1)
        out.append(np.array([math.exp(min(icpt, 50.0)), max(-slope, 1e-3), c0]))
    return out or [np.array([max(float(y[0]), 1e-3), 1.0, 0.0])]


def _starts_bayesian(n: np.ndarray, y: np.ndarray) -> list[ParamArray]:
    out = []
    for s in _starts_floored(n, y):
        for d0 in (2.0, 8.0, 30.0):
            out.append(np.array([s[0], s[1], d0, s[2]]))
    return out


@dataclass(frozen=True)
class Law:
    """A curve law ``y = f(n; θ)`` with bounds, start values and its source."""

    name: str
    params: tuple[str, ...]
    func: Callable[[np.ndarray, ParamArray], np.ndarray]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    starts: Callable[[np.ndarray, np.ndarray], list[ParamArray]]
    formula: str
    citation: str
    needs_positive_n: bool = False


_INF = math.inf
LAWS: Mapping[str, Law] = {
    "floored": Law(
        "floored", ("log_inv_alpha", "beta", "floor"), _floored,
        (0.0, 1e-9, 0.0), (_INF, _INF, _INF), _starts_floored,
        "log(1 + e^{a − βn}) + c", "Wolf et al. 2023, Lemma 5 (eq. 7) plus a floor",
    ),
    "lemma5": Law(
        "lemma5", ("log_inv_alpha", "beta"), _lemma5,
        (0.0, 1e-9), (_INF, _INF), _starts_lemma5,
        "log(1 + e^{a − βn})", "Wolf et al. 2023, Lemma 5 (eq. 7)",
    ),
    "power": Law(
        "power", ("C", "gamma", "floor"), _power,
        (0.0, 0.0, 0.0), (_INF, 50.0, _INF), _starts_power,
        "C·n^(−γ) + c", "Anil et al. 2024, many-shot jailbreaking power law", True,
    ),
    "bayesian": Law(
        "bayesian", ("log_prior_ratio", "beta", "delta", "floor"), _bayesian,
        (-_INF, 1e-9, 0.0, 0.0), (_INF, _INF, 200.0, _INF), _starts_bayesian,
        "c + log(1 + e^{a − βn}) − log(1 + e^{a − βn − δ})",
        "Arora et al. 2024, Bayesian scaling law for ICL (two tasks)",
    ),
}  # fmt: skip
#: Laws compared by default.
DEFAULT_LAWS = ("floored", "power", "bayesian")


@dataclass(frozen=True)
class LawFit:
    """One law fitted to one curve.

    Attributes:
        law: the law's name (key of :data:`LAWS`).
        params: name → estimate (Wald CI from the Jacobian covariance, scaled by
            ``max(1, χ²_red)``; by ``χ²_red`` when unweighted).
        values: the raw parameter vector (to predict without rebuilding it).
        chi2_red: weighted residual sum of squares / (points − parameters).
        n_used: prefix lengths in the fit; weighted: whether stderrs were used.
    """

    law: str
    params: Mapping[str, Estimate]
    values: tuple[float, ...]
    cov: np.ndarray
    chi2_red: float
    n_used: tuple[float, ...]
    weighted: bool

    def predict(self, n: np.ndarray | Sequence[float]) -> np.ndarray:
        return LAWS[self.law].func(np.asarray(n, dtype=np.float64), np.asarray(self.values))

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law,
            "formula": LAWS[self.law].formula,
            "citation": LAWS[self.law].citation,
            "params": {k: v.to_dict() for k, v in self.params.items()},
            "chi2_red": self.chi2_red if math.isfinite(self.chi2_red) else None,
            "n_used": list(self.n_used),
            "weighted": self.weighted,
        }


def _as_points(
    data: KLCurve | CurveData | tuple[Any, Any],
) -> tuple[CurveData, np.ndarray, np.ndarray, np.ndarray, int]:
    """(curve, n, y, stderr, n_units); an ``(n, y)`` pair is taken as exact (unweighted fit)."""
    if isinstance(data, tuple):
        n = np.asarray(data[0], dtype=np.float64)
        y = np.asarray(data[1], dtype=np.float64)
        curve = CurveData.from_points(n, y, np.zeros(n.size))
    else:
        curve = data if isinstance(data, CurveData) else CurveData.from_kl_curve(data)
    if curve.statistic != "mean":
        raise InputError("curve laws need a curve of means (e.g. a KL curve)")
    n = np.asarray(curve.n, dtype=np.float64)
    y = curve.curve()
    if curve.units is not None:
        p = curve.units.shape[0]
        se = curve.units.std(axis=0, ddof=1) / math.sqrt(p)
        return curve, n, y, se, p
    assert curve.stderrs is not None
    return curve, n, y, np.asarray(curve.stderrs, dtype=np.float64), int(n.size)


def _raw_law(
    law: Law, n: np.ndarray, y: np.ndarray, se: np.ndarray, x0: ParamArray | None = None
) -> tuple[ParamArray, np.ndarray, float]:
    """Best WLS optimum over the law's starts (or ``x0``): (params, Jacobian, cost)."""
    lo, hi = np.asarray(law.lower), np.asarray(law.upper)

    def resid(x: ParamArray) -> np.ndarray:
        return np.asarray((law.func(n, x) - y) / se, dtype=np.float64)

    starts = [x0] if x0 is not None else law.starts(n, y)
    best = None
    for s in starts:
        s = np.minimum(np.maximum(np.asarray(s, dtype=np.float64), lo), hi)
        try:
            res = least_squares(resid, s, bounds=(lo, hi), method="trf")
        except ValueError:
            continue  # a start outside the domain (e.g. overflow); others remain
        if np.all(np.isfinite(res.fun)) and (best is None or res.cost < best.cost):
            best = res
    if best is None:
        raise InputError(f"could not fit the {law.name} law to this curve")
    return np.asarray(best.x), np.asarray(best.jac), float(best.cost)


def _check_law(name: str, n: np.ndarray) -> Law:
    if name not in LAWS:
        raise InputError(f"unknown law {name!r} (known: {', '.join(LAWS)})")
    law = LAWS[name]
    if law.needs_positive_n and np.any(n <= 0):
        raise InputError(f"the {name} law needs n > 0 (restrict the curve with n_min=1)")
    if n.size < len(law.params):
        raise InputError(f"the {name} law needs at least {len(law.params)} points, got {n.size}")
    return law


def _law_fit(
    law: Law, n: np.ndarray, y: np.ndarray, stderr: np.ndarray, n_units: int, ci_level: float
) -> LawFit:
    se, weighted = _weights(stderr)
    x, jac, _ = _raw_law(law, n, y, se)
    k = x.size
    dof = n.size - k
    chi2_red = float(np.sum(((law.func(n, x) - y) / se) ** 2) / dof) if dof > 0 else math.nan
    try:
        cov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        cov = np.full((k, k), np.nan)
    if math.isfinite(chi2_red):
        cov = cov * (chi2_red if not weighted else max(1.0, chi2_red))
    z = _z(ci_level)
    method = f"{law.name}_wls_delta"
    params = {}
    for i, name in enumerate(law.params):
        v, s = float(x[i]), math.sqrt(max(0.0, float(cov[i, i])))
        params[name] = Estimate(v, s, n_units, v - z * s, v + z * s, ci_level, method)
    return LawFit(
        law.name, params, tuple(float(v) for v in x), cov, chi2_red,
        tuple(float(v) for v in n), weighted,
    )  # fmt: skip


def fit_law(
    data: KLCurve | CurveData | tuple[Any, Any],
    law: str = "floored",
    *,
    n_min: float | None = None,
    n_max: float | None = None,
    ci_level: float = 0.95,
) -> LawFit:
    """Fit one of :data:`LAWS` to a curve (``(n, y)`` pairs are fitted unweighted)."""
    check_range("ci_level", ci_level, low=0, high=1)
    _, n, y, se, n_units = _as_points(data)
    mask = np.ones(n.size, dtype=bool)
    if n_min is not None:
        mask &= n >= n_min
    if n_max is not None:
        mask &= n <= n_max
    spec = _check_law(law, n[mask])
    return _law_fit(spec, n[mask], y[mask], se[mask], n_units, ci_level)


def _nrmse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.sqrt(np.mean((pred - y) ** 2)) / np.mean(np.abs(y)))


@dataclass(frozen=True)
class LawScore:
    """A law's extrapolation score: fitted on ``n ≤ k``, scored on ``n > k``."""

    law: str
    nrmse: Estimate
    rmse: float
    fit: LawFit
    predicted: tuple[float, ...]
    best_fraction: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "law": self.law,
            "nrmse": self.nrmse.to_dict(),
            "rmse": self.rmse,
            "fit": self.fit.to_dict(),
            "predicted": list(self.predicted),
            "best_fraction": self.best_fraction,
        }


@dataclass(frozen=True)
class ExtrapolationResult:
    """Every law's held-out error on one curve; ``best`` is the smallest normalised RMSE.

    ``best_fraction`` of each score (with ``n_boot > 0``) is how often that law was best over
    bootstrap replicates of the curve — how firmly the data pick the winner.
    """

    k: float
    n_fit: tuple[float, ...]
    n_held: tuple[float, ...]
    observed: tuple[float, ...]
    scores: Mapping[str, LawScore]
    n_boot: int = 0

    @property
    def best(self) -> str:
        return min(self.scores, key=lambda k: self.scores[k].nrmse.value)

    def to_dict(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "n_fit": list(self.n_fit),
            "n_held": list(self.n_held),
            "observed": list(self.observed),
            "best": self.best,
            "n_boot": self.n_boot,
            "scores": {k: v.to_dict() for k, v in self.scores.items()},
        }


def extrapolation_scores(
    curve: KLCurve | CurveData | tuple[Any, Any],
    k: float,
    laws: Sequence[str] = DEFAULT_LAWS,
    *,
    n_min: float | None = None,
    n_boot: int = 0,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> ExtrapolationResult:
    """Fit each law on ``n_min ≤ n ≤ k``, predict ``n > k``; score by normalised RMSE.

    ``NRMSE = √(mean_{n>k} (ŷ(n) − y(n))²) / mean_{n>k} |y(n)|``. With ``n_boot > 0`` the
    curve is resampled (prompts, or the points' normal errors), every law refitted from its
    full-data optimum and rescored, giving a percentile CI of each NRMSE and how often each
    law wins; otherwise the NRMSE has no CI (stderr NaN).
    """
    check_range("ci_level", ci_level, low=0, high=1)
    if n_boot < 0:
        raise InputError(f"n_boot must be >= 0, got {n_boot}")
    if not laws:
        raise InputError("need at least one law to score")
    cd, n, y, se, n_units = _as_points(curve)
    keep = np.ones(n.size, dtype=bool) if n_min is None else n >= n_min
    fit_m, held_m = keep & (n <= k), keep & (n > k)
    if not held_m.any():
        raise InputError(f"no curve points beyond k={k:g} to score the extrapolation")
    specs = {name: _check_law(name, n[fit_m]) for name in laws}
    nf, nh = n[fit_m], n[held_m]
    fits = {
        name: _law_fit(s, nf, y[fit_m], se[fit_m], n_units, ci_level) for name, s in specs.items()
    }
    preds = {name: f.predict(nh) for name, f in fits.items()}
    point = {name: _nrmse(p, y[held_m]) for name, p in preds.items()}
    reps: dict[str, list[float]] = {name: [] for name in laws}
    wins = dict.fromkeys(laws, 0)
    if n_boot > 0:
        gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        sef, _ = _weights(se[fit_m])
        for yb in cd.bootstrap(n_boot, gen):
            row = {}
            for name, s in specs.items():
                x0 = np.asarray(fits[name].values)
                try:
                    xb = _raw_law(s, nf, yb[fit_m], sef, x0)[0]
                except InputError:
                    continue
                row[name] = _nrmse(s.func(nh, xb), yb[held_m])
            for name, v in row.items():
                reps[name].append(v)
            if len(row) == len(specs):
                wins[min(row, key=lambda m: row[m])] += 1
    lo_q, hi_q = (1 - ci_level) / 2, 1 - (1 - ci_level) / 2
    scores = {}
    total_wins = sum(wins.values())
    for name in laws:
        r = np.asarray(reps[name])
        if r.size >= 10:
            lo, hi = np.quantile(r, [lo_q, hi_q])
            est = Estimate(point[name], float(r.std(ddof=1)), n_units, float(lo), float(hi),
                           ci_level, "nrmse_bootstrap")  # fmt: skip
        else:
            est = Estimate(point[name], math.nan, n_units, None, None, None, "nrmse_point")
        rmse = float(np.sqrt(np.mean((preds[name] - y[held_m]) ** 2)))
        scores[name] = LawScore(
            name, est, rmse, fits[name], tuple(float(v) for v in preds[name]),
            wins[name] / total_wins if total_wins else None,
        )  # fmt: skip
    return ExtrapolationResult(
        float(k), tuple(float(v) for v in nf), tuple(float(v) for v in nh),
        tuple(float(v) for v in y[held_m]), scores, int(n_boot),
    )  # fmt: skip


__all__ = [
    "DEFAULT_LAWS",
    "LAWS",
    "ExtrapolationResult",
    "Law",
    "LawFit",
    "LawScore",
    "extrapolation_scores",
    "fit_law",
]
