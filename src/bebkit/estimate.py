"""A number with its uncertainty: every reported quantity in bebkit is an :class:`Estimate`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from statistics import NormalDist
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Estimate:
    """value ± stderr from n samples, with an optional confidence interval [ci_low, ci_high].

    ``exact`` marks numbers computed in closed form (stderr 0 by construction).
    """

    value: float
    stderr: float
    n: int
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None
    method: str = ""
    exact: bool = False

    @classmethod
    def from_samples(cls, samples: Sequence[float] | np.ndarray, method: str = "mean") -> Estimate:
        """Sample mean with stderr = sd/√n and a normal-approximation 95% CI."""
        x = np.asarray(samples, dtype=np.float64).ravel()
        n = int(x.size)
        if n == 0:
            raise ValueError("cannot estimate from zero samples")
        mean = float(x.mean())
        se = float(x.std(ddof=1) / math.sqrt(n)) if n > 1 else float("nan")
        return cls(mean, se, n, mean - 1.96 * se, mean + 1.96 * se, 0.95, method)

    @classmethod
    def exact_value(cls, value: float, method: str = "exact") -> Estimate:
        return cls(float(value), 0.0, 0, float(value), float(value), 1.0, method, True)

    @classmethod
    def from_dict(cls, d: Any) -> Estimate:
        """Inverse of :meth:`to_dict` (None stderr → NaN); KeyError/TypeError/ValueError if bad."""
        return cls(
            # to_dict writes NaN/inf as None (JSON has neither); read them back as NaN.
            value=float("nan") if d["value"] is None else float(d["value"]),
            stderr=float("nan") if d.get("stderr") is None else float(d["stderr"]),
            n=int(d.get("n") or 0),
            ci_low=d.get("ci_low"),
            ci_high=d.get("ci_high"),
            ci_level=d.get("ci_level"),
            method=str(d.get("method", "")),
            exact=bool(d.get("exact", False)),
        )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # JSON has no NaN/inf: encode them as None so records stay valid JSON.
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
        }

    def __str__(self) -> str:
        if self.exact:
            return f"{self.value:.6g} (exact)"
        return f"{self.value:.4g} ± {self.stderr:.2g} (n={self.n})"


def clustered_wilson(
    successes: Sequence[int] | np.ndarray, totals: Sequence[int] | np.ndarray, level: float = 0.95
) -> Estimate:
    """Pooled proportion p̂ = Σkᵢ/Σnᵢ over clusters i (a misaligning prompt's responses) with a
    Wilson interval at the effective size n/deff.

    Responses to one prompt are not independent: their spread between prompts is larger than
    binomial. The cluster-robust (ratio-estimator) variance
    ``V = P/(P−1) · Σᵢ (kᵢ − p̂ nᵢ)² / (Σnᵢ)²`` over the P clusters gives the design effect
    ``deff = max(1, V / (p̂(1−p̂)/Σnᵢ))``; the Wilson interval is taken at ``n/deff`` responses
    (its stderr is √V where that is larger). With one cluster, or p̂ ∈ {0, 1} (V = 0), deff = 1:
    the plain Wilson interval.
    """
    k = np.asarray(successes, dtype=np.float64)
    m = np.asarray(totals, dtype=np.float64)
    n = float(m.sum())
    if n <= 0:
        raise ValueError("totals must sum to a positive count")
    p = float(k.sum()) / n
    clusters = int(np.sum(m > 0))
    deff = 1.0
    if clusters >= 2 and 0.0 < p < 1.0:
        v = clusters / (clusters - 1) * float(np.sum((k - p * m) ** 2)) / n**2
        deff = max(1.0, v / (p * (1 - p) / n))
    est = _wilson(p, n / deff, level, f"wilson_clustered(prompts={clusters}, deff={deff:.3g})")
    return replace(est, n=int(n))


def _wilson(p: float, n: float, level: float, method: str) -> Estimate:
    """p̂ with stderr √(p̂(1−p̂)/n) and the Wilson score interval at (effective) size n:
    ``(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``."""
    z = NormalDist().inv_cdf(0.5 + level / 2)
    z2 = z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return Estimate(
        value=p,
        stderr=math.sqrt(p * (1 - p) / n),
        n=int(n),
        # At p̂ = 0 (1) the bound is exactly 0 (1); rounding would leave ±1e-17.
        ci_low=0.0 if p == 0.0 else max(0.0, centre - half),
        ci_high=1.0 if p == 1.0 else min(1.0, centre + half),
        ci_level=level,
        method=method,
    )


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Estimate:
    """Proportion p̂ = k/n with stderr √(p̂(1−p̂)/n) and the Wilson score interval.

    ``(p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n)``; well behaved at p̂ = 0 or 1.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    return _wilson(successes / n, n, level, "wilson")
