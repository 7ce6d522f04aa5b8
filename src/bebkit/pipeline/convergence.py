"""Convergence of the LLM to P₋ in KL (§4.2 fig. 3a, appendix L.2 fig. 11, Lemma 5).

For prompts ``s ~ P₋`` (chat format: one sentence per user turn), estimate
``KL(P₋(·|s₁…sₙ) ‖ P_LLM(·|s₁…sₙ))`` for n = 0 … N with and without an aligning system prompt
for P_LLM (P₋ keeps the format's own header), both conditions from ONE set of continuations
per (prompt, n). For each condition fit

* Lemma 5 (eq. 7) ``log(1 + exp(log 1/α − βn))`` to the whole curve (WLS), and
* the paper's straight line ``log 1/α − βn`` to the first ``n_linear`` sentences,

over n ≥ ``fit_n_min``, with ``n* = log(1/α)/β`` and — from the fitted values — Theorem 1's
length and, given β′ and σ (e.g. from ``bebkit beta-sigma``), Theorem 2's length with the
aligning prompt's sentence count as |s₀| (delta-method CIs from the fit covariance).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from bebkit.errors import InputError
from bebkit.estimators.kl import KLCurve
from bebkit.estimators.prompts import (
    DEFAULT_ALIGNING_PROMPT,
    NEWLINE,
    PromptFormat,
    SampledPrompt,
    sample_prompts,
    save_prompts,
)
from bebkit.fits.convergence import ConvergenceResult, fit_convergence
from bebkit.models.protocol import LanguageModel
from bebkit.pipeline.experiments_common import (
    KLSettings,
    delta_estimate,
    fit_curve_data,
    fmt_ci,
    multi_target_kl_curves,
    say,
)

NO_ALIGN = "none"
ALIGN = "aligned"
CONDITIONS: tuple[str, ...] = (NO_ALIGN, ALIGN)


class ConvergenceSettings(KLSettings):
    """Settings of :func:`run_convergence` (paper: 10 prompts × 10 sentences, 64 × 8 tokens)."""

    conditions: tuple[str, ...] = CONDITIONS
    aligning_prompt: str = DEFAULT_ALIGNING_PROMPT
    n_linear: int = Field(3, ge=2)
    epsilon: float = Field(0.1, gt=0, lt=1)
    delta: float = Field(0.1, gt=0, lt=1)
    beta_prime: float | None = Field(None, ge=0)
    sigma: float | None = Field(None, ge=0)
    s0_sentences: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _check(self) -> ConvergenceSettings:
        if not self.conditions or any(c not in CONDITIONS for c in self.conditions):
            raise ValueError(f"conditions must be a non-empty subset of {CONDITIONS}")
        if len(set(self.conditions)) != len(self.conditions):
            raise ValueError("conditions must not repeat")
        return self


def convergence_curves(
    neg: LanguageModel,
    target: LanguageModel,
    prompts: list[SampledPrompt],
    settings: ConvergenceSettings,
    *,
    rng: np.random.Generator,
    log: Callable[[str], None] | None = None,
) -> dict[str, KLCurve]:
    """``KL(P₋‖P_LLM)(n)`` per condition, one P₋ continuation set per (prompt, n)."""
    s = settings
    targets = {c: (target, s.aligning_prompt if c == ALIGN else None) for c in s.conditions}
    total = len(prompts) * (s.n_sentences + 1)
    step = max(1, total // 10)

    def progress(done: int, tot: int) -> None:
        if done % step == 0 or done == tot:
            say(log, f"  KL: {done}/{tot} prefixes")

    return multi_target_kl_curves(
        neg,
        targets,
        prompts,
        ns=range(0, s.n_sentences + 1),
        estimator=s.estimator,
        n_samples=s.n_samples,
        n_tokens=s.n_tokens,
        rng=rng,
        progress=progress,
    )


def fit_curves(
    curves: Mapping[str, KLCurve], settings: ConvergenceSettings, *, rng: np.random.Generator
) -> tuple[dict[str, ConvergenceResult | None], dict[str, str]]:
    """Lemma 5 + straight-line fits per condition (bootstrap over prompts when ≥ 3 prompts)."""
    fits: dict[str, ConvergenceResult | None] = {}
    errors: dict[str, str] = {}
    for c, cv in curves.items():
        n_boot = settings.n_boot if cv.per_prompt.shape[0] >= 3 else 0
        data, _ = fit_curve_data(cv)
        try:
            fits[c] = fit_convergence(
                data,
                n_min=settings.fit_n_min,
                n_linear=settings.n_linear,
                n_boot=n_boot,
                rng=rng,
            )
        except (InputError, ArithmeticError) as exc:
            fits[c] = None
            errors[c] = f"{type(exc).__name__}: {exc}"
    return fits, errors


def lengths_from_fit(
    res: ConvergenceResult,
    settings: ConvergenceSettings,
    *,
    s0_len: float | None,
    beta_prime: float | None,
    sigma: float | None,
) -> dict[str, Any]:
    """Theorem 1 (and 2) lengths at the Lemma 5 and straight-line fits, delta-method CIs.

    Theorem 1: ``(log 1/α + log 1/ε + log 4)/β``; Theorem 2 adds ``(β′/β)|s₀| + (σ/β)√(|s₀|/δ)
    + 1`` (β′, σ taken as known; their uncertainty is not propagated).
    """
    from bebkit.theory import theorem1_length, theorem2_length

    eps, dlt = settings.epsilon, settings.delta
    out: dict[str, Any] = {"epsilon": eps, "delta": dlt, "s0_sentences": s0_len,
                           "beta_prime": beta_prime, "sigma": sigma}  # fmt: skip
    for name, fit in (("lemma5", res.lemma5), ("linear", res.linear)):
        a, b, n = fit.log_inv_alpha.value, fit.beta.value, fit.beta.n
        part: dict[str, Any] = {"n_star": fit.n_star.to_dict()}
        if not (b > 0 and 0 < math.exp(-a) < 1):
            # α = e^{−a} must lie in (0, 1) and β > 0 for the theorems' lengths to exist.
            part["note"] = f"no theorem lengths: fitted log 1/alpha = {a:.3g}, beta = {b:.3g}"
            out[name] = part
            continue
        part["theorem1"] = delta_estimate(
            lambda x, y: theorem1_length(math.exp(-x), y, eps), a, b, fit.cov,
            n=n, method=f"theorem1_{name}_delta",
        ).to_dict()  # fmt: skip
        if beta_prime is not None and sigma is not None and s0_len is not None:
            part["theorem2"] = delta_estimate(
                lambda x, y: theorem2_length(math.exp(-x), y, eps, beta_prime, sigma, dlt, s0_len),
                a, b, fit.cov, n=n, method=f"theorem2_{name}_delta",
            ).to_dict()  # fmt: skip
        out[name] = part
    return out


def run_convergence(
    neg: LanguageModel,
    target: LanguageModel,
    settings: ConvergenceSettings,
    out_dir: str | Path,
    *,
    fmt: PromptFormat = NEWLINE,
    stop_ids: Any = None,
    kind: str = "convergence",
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "paper",
    note: str = "",
    log: Callable[[str], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    extra_results: Callable[[dict[str, Any], dict[str, ConvergenceResult | None]], None]
    | None = None,
) -> dict[str, Any]:
    """Run fig. 3a / 11 with P₋ = ``neg`` and P_LLM = ``target``; write outputs to ``out_dir``.

    ``reference`` maps a condition to the paper's ``(n, KL)``. ``extra_results`` may add to
    the results before the record is written (used by the pretrained experiment).
    Files: ``prompts.jsonl``, ``record.json``, ``<kind>.png`` / ``.svg``.
    """
    from bebkit.pipeline.misalign import count_sentences
    from bebkit.records import make_record, write_record

    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(s.seed)
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    say(log, f"sampling {s.n_prompts} prompts x {s.n_sentences} sentences from {neg.name}")
    prompts = sample_prompts(
        neg,
        n_prompts=s.n_prompts,
        n_sentences=s.n_sentences,
        rng=rng,
        fmt=fmt,
        stop_ids=stop_ids,
        max_sentence_tokens=s.max_sentence_tokens,
    )
    save_prompts(out / "prompts.jsonl", prompts)
    timings["prompts"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(log, f"KL(P- || {target.name}) [{', '.join(s.conditions)}], {s.n_samples} x "
             f"{s.n_tokens} tokens ({s.estimator})")  # fmt: skip
    curves = convergence_curves(neg, target, prompts, s, rng=rng, log=log)
    timings["kl"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fits, errors = fit_curves(curves, s, rng=rng)
    s0 = s.s0_sentences if s.s0_sentences is not None else count_sentences(s.aligning_prompt)
    lengths = {
        c: lengths_from_fit(
            f,
            s,
            s0_len=s0 if c == ALIGN else 0.0,
            beta_prime=s.beta_prime,
            sigma=s.sigma,
        )
        for c, f in fits.items()
        if f is not None
    }
    timings["fit"] = time.perf_counter() - t0

    kl_falls = {c: _falls(cv) for c, cv in curves.items()}
    results: dict[str, Any] = {
        "behavior": s.behavior,
        "format": s.fmt,
        "neg_model": neg.name,
        "target_model": target.name,
        "estimator": s.estimator,
        "conditions": list(s.conditions),
        "curves": {c: cv.to_dict() for c, cv in curves.items()},
        "fits": {c: (None if f is None else f.to_dict()) for c, f in fits.items()},
        "fit_errors": errors,
        "lengths": lengths,
        "kl_falls": kl_falls,
        "fit_data": {c: fit_curve_data(cv)[1] for c, cv in curves.items()},
        "s0_sentences": s0,
        "truncated_prompt_sentences": int(sum(sum(p.truncated) for p in prompts)),
    }
    if extra_results is not None:
        extra_results(results, fits)
    figs = convergence_figure(
        results,
        out / f"{kind}.png",
        n_tokens=s.n_tokens,
        note=note,
        reference=reference,
        reference_label=reference_label,
    )
    results["files"] = {
        "record": str(out / "record.json"),
        "prompts": str(out / "prompts.jsonl"),
        "figure": figs["png"],
        "figure_svg": figs["svg"],
    }
    config = {**s.model_dump(), **(extra_config or {})}
    record = make_record(kind, config=config, seed=s.seed, results=results, timings=timings)
    write_record(out / "record.json", record)
    return results


def _falls(cv: KLCurve) -> dict[str, Any]:
    """Does the KL fall with n? First-vs-last difference with its CI and the OLS slope sign."""
    est = cv.estimates
    first, last = est[1] if len(est) > 1 else est[0], est[-1]
    diff = first.value - last.value
    se = math.sqrt(first.stderr**2 + last.stderr**2) if math.isfinite(first.stderr) else math.nan
    x = cv.n.astype(float)
    slope = float(np.polyfit(x, cv.means, 1)[0]) if x.size >= 2 else math.nan
    return {
        "from_n": int(cv.n[1] if len(est) > 1 else cv.n[0]),
        "to_n": int(cv.n[-1]),
        "drop": {
            "value": diff,
            "stderr": se,
            "ci_low": diff - 1.96 * se,
            "ci_high": diff + 1.96 * se,
            "ci_level": 0.95,
            "n": int(cv.per_prompt.shape[0]),
            "method": "first_minus_last_normal",
        },
        "ols_slope": slope,
        "falls": bool(diff - 1.96 * se > 0) if math.isfinite(se) else bool(diff > 0),
    }


def summary_lines(r: Mapping[str, Any]) -> list[str]:
    """Human-readable summary of :func:`run_convergence`'s results."""
    lines = [f"{r['behavior']} ({r['format']}): P- = {r['neg_model']}, P_LLM = {r['target_model']}"]
    for c, cv in r["curves"].items():
        vals = " ".join(f"{e['value']:.2f}" for e in cv["estimates"])
        lines.append(f"  KL [{c:>7}] n={cv['n'][0]}..{cv['n'][-1]}: {vals}")
        f = r["fits"].get(c)
        if f is None:
            lines.append(f"  fit [{c}] failed: {r['fit_errors'].get(c, '')}")
            continue
        for m in ("lemma5", "linear"):
            g = f[m]
            lines.append(
                f"  {m:>6} [{c:>7}]: log 1/a = {fmt_ci(g['log_inv_alpha'])}, beta = "
                f"{fmt_ci(g['beta'])}, n* = {fmt_ci(g['n_star'])}"
            )
        ln = r["lengths"].get(c, {}).get("lemma5") or {}
        if "theorem1" in ln:
            t = f"  Theorem 1 length (lemma5 fit) = {fmt_ci(ln['theorem1'])}"
            if "theorem2" in ln:
                t += f", Theorem 2 = {fmt_ci(ln['theorem2'])}"
            lines.append(t)
        falls = r["kl_falls"][c]
        lines.append(
            f"  KL falls from n={falls['from_n']} to {falls['to_n']}: "
            f"{'yes' if falls['falls'] else 'not significantly'} "
            f"(drop {falls['drop']['value']:.2f} ± {falls['drop']['stderr']:.2f})"
        )
    if "beta_ratio" in r:
        for m, e in r["beta_ratio"].items():
            if isinstance(e, dict) and "value" in e:
                lines.append(f"  beta_aligned / beta_pretrained [{m}] = {fmt_ci(e)} (paper ~5)")
    lines.append(f"  outputs in {Path(r['files']['record']).parent}")
    return lines


CONDITION_LABELS = {NO_ALIGN: "no aligning prompt", ALIGN: "aligning prompt"}


def convergence_figure(
    results: Mapping[str, Any],
    path: str | Path,
    *,
    n_tokens: int,
    note: str = "",
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "paper",
) -> dict[str, str]:
    """Fig. 3a / 11 / 13b from a convergence (or pretrained) ``results`` dict alone.

    The same function draws the figure during a run and redraws it later from the stored
    record (e.g. with the paper's curves added), so both pictures are identical by construction.
    ``reference`` maps a condition (``none``/``aligned``) to the paper's ``(n, KL)``.
    """
    from bebkit.estimate import Estimate
    from bebkit.reporting.kl_figures import plot_convergence

    curves: dict[str, Any] = {}
    n_prompts = 0
    for c, cv in results["curves"].items():
        est = [Estimate.from_dict(e) for e in cv["estimates"]]
        curves[CONDITION_LABELS.get(c, c)] = (np.asarray(cv["n"], dtype=np.float64), est)
        n_prompts = max(n_prompts, len(cv.get("per_prompt") or []))
    fits = {
        CONDITION_LABELS.get(c, c): None if f is None else ConvergenceResult.from_dict(f)
        for c, f in (results.get("fits") or {}).items()
    }
    first: Mapping[str, Any] = next(iter(results["curves"].values()), {})
    title = (
        f"{results['target_model']} vs P₋ = {results['neg_model']} — {results['behavior']} "
        f"({results['format']}); {n_prompts} prompts, {results['estimator']} "
        f"{first.get('n_samples', '?')}×{n_tokens} tok"
    )
    ref = {CONDITION_LABELS[c]: v for c, v in (reference or {}).items() if c in CONDITION_LABELS}
    return plot_convergence(
        curves,
        fits,
        path=path,
        title=title,
        note=note,
        reference=ref,
        reference_label=reference_label,
    )


__all__ = [
    "ALIGN",
    "CONDITIONS",
    "CONDITION_LABELS",
    "NO_ALIGN",
    "ConvergenceSettings",
    "convergence_curves",
    "convergence_figure",
    "fit_curves",
    "lengths_from_fit",
    "run_convergence",
    "summary_lines",
]
