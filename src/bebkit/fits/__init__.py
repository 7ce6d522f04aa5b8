"""bebkit.fits: β, β′, σ² envelopes and α, β from the convergence curve (§4.1–4.2, app. H, L)."""

from bebkit.fits.convergence import (
    ConvergenceFit,
    ConvergenceResult,
    fit_convergence,
    lemma5_curve,
    matched_windows,
    theorem_lengths,
)
from bebkit.fits.envelopes import CurveData, EnvelopeFit, fit_beta, fit_beta_prime, fit_sigma2

__all__ = [
    "ConvergenceFit",
    "ConvergenceResult",
    "CurveData",
    "EnvelopeFit",
    "fit_beta",
    "fit_beta_prime",
    "fit_convergence",
    "fit_sigma2",
    "lemma5_curve",
    "matched_windows",
    "theorem_lengths",
]
