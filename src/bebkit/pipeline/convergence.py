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
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bebkit.checkpoint import Checkpoint
from bebkit.errors import InputError
from bebkit.estimators.behavior import ALIGN, NO_ALIGN
from bebkit.estimators.kl import KLCurve, kl_curves
from bebkit.estimators.prompts import (
    NEWLINE,
    PromptFormat,
    SampledPrompt,
    condition_contexts,
)
from bebkit.fits.convergence import ConvergenceResult, fit_convergence
from bebkit.fits.derived import delta_estimate, fit_curve_data
from bebkit.models.protocol import LanguageModel
from bebkit.pipeline.experiments_common import (
    MARKER_LAYOUTS,
    PAPER_LABEL,
    KLSettings,
    aligning_prompt_field,
    check_conditions,
    check_nonblank,
    conditions_field,
    fmt_ci,
    kl_files,
    kl_options,
    kl_progress,
    kl_sample_text,
    markers_as_sentences,
    n_counting,
    paper_kl,
    prompts_file_field,
    results_head,
    run_on_components,
    sample_misaligning_prompts,
    say,
    theorem2_field,
    write_run_record,
)
from bebkit.pipeline.registry import EstimateField, Experiment, Result, RunContext, register
from bebkit.reporting.kl_figures import convergence_figure


class ConvergenceSettings(KLSettings):
    """Settings of :func:`run_convergence` (paper: 10 prompts × 10 markers, 64 × 8 tokens)."""

    QUICK: ClassVar[Mapping[str, Any]] = {**KLSettings.QUICK, "n_sentences": 7}

    n_sentences: int = Field(
        19,
        ge=1,
        description="sentences per prompt (19 = the paper's 10 '[/INST]' markers in the "
        "alternating layout, where marker k closes sentence 2k-1)",
    )

    conditions: tuple[str, ...] = conditions_field()
    aligning_prompt: str = aligning_prompt_field(min_length=1)
    n_linear: int = Field(
        3, ge=2, description="points of the straight-line fit (the paper: first 3 sentences)"
    )
    epsilon: float = Field(0.1, gt=0, lt=1, description="Theorem 1/2 epsilon")
    delta: float = Field(0.1, gt=0, lt=1, description="Theorem 2 delta")
    beta_prime: float | None = theorem2_field("beta_prime")
    sigma: float | None = theorem2_field("sigma")
    s0_sentences: float | None = theorem2_field("s0_sentences")
    prompts_file: str | None = prompts_file_field()

    _conditions = field_validator("conditions")(check_conditions)
    _aligning = field_validator("aligning_prompt")(check_nonblank)


def convergence_curves(
    neg: LanguageModel,
    target: LanguageModel,
    prompts: list[SampledPrompt],
    settings: ConvergenceSettings,
    *,
    rng: np.random.Generator,
    log: Callable[[str], None] | None = None,
    stop_ids: Any = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, KLCurve]:
    """``KL(P₋‖P_LLM)(n)`` per condition, one P₋ continuation set per (prompt, n)."""
    s = settings
    targets = {c: (target, s.aligning_prompt if c == ALIGN else None) for c in s.conditions}
    # KL of the model's reply, read where the layout hands the turn to the model (every n for
    # newline / user turns; n = 0 and odd n in the alternating layout).
    ns = prompts[0].fmt.response_positions(min(p.n_sentences for p in prompts))
    return kl_curves(
        neg,
        targets,
        prompts,
        ns=ns,
        **kl_options(s),
        stop_ids=stop_ids,
        rng=rng,
        direction="neg||model",
        progress=kl_progress(log, len(prompts) * len(ns)),
        checkpoint=checkpoint,
    )


def fit_curves(
    curves: Mapping[str, KLCurve], settings: ConvergenceSettings, *, rng: np.random.Generator
) -> tuple[dict[str, ConvergenceResult | None], dict[str, str]]:
    """Lemma 5 + straight-line fits per condition (bootstrap over prompts when ≥ 3 prompts)."""
    fits: dict[str, ConvergenceResult | None] = {}
    errors: dict[str, str] = {}
    for c, cv in curves.items():
        n_boot = settings.n_boot if cv.per_prompt.shape[0] >= 3 else 0
        data, _ = fit_curve_data(cv, settings.fit_n_min)
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
    prompted: bool = False,
    unprompted: ConvergenceResult | None = None,
) -> dict[str, Any]:
    """Theorem 1 (and 2) lengths at the Lemma 5 and straight-line fits, delta-method CIs.

    Theorem 1: ``(log 1/α + log 1/ε + log 4)/β`` at this curve's own fit. Theorem 2:
    ``(log 1/α + log 1/ε + log 4)/β + (β′/β)|s₀| + (σ/β)√(|s₀|/δ) + 1`` with α and β of the
    UNPROMPTED model: ``res`` itself, or for a ``prompted`` curve (with s₀) the same fit of
    ``unprompted``, the curve without s₀ (none: no Theorem 2 length). The aligned curve's own intercept already holds s₀'s effect
    (≈ log 1/α + log P₊(s₀)/P₋(s₀)), which Theorem 2's s₀ terms bound (Lemma 4); taking it
    would count s₀ twice. β′, σ are taken as known (their uncertainty is not propagated).
    """
    from bebkit.theory import theorem1_length, theorem2_length

    eps, dlt = settings.epsilon, settings.delta
    base = unprompted if prompted else res
    out: dict[str, Any] = {"epsilon": eps, "delta": dlt, "s0_sentences": s0_len,
                           "beta_prime": beta_prime, "sigma": sigma,
                           "theorem2_alpha_beta_from": "the curve without s0" if prompted
                           else "this curve"}  # fmt: skip
    bp, sg, s0 = float(beta_prime or 0), float(sigma or 0), float(s0_len or 0)
    models = [("floored", res.floored), ("lemma5", res.lemma5), ("linear", res.linear)]
    for name, fit in ((m, f) for m, f in models if f is not None):
        part: dict[str, Any] = {"n_star": fit.n_star.to_dict()}
        for key, f in (("theorem1", fit), ("theorem2", getattr(base, name, None))):
            if key == "theorem2" and (beta_prime is None or sigma is None or s0_len is None):
                continue
            if f is None:
                part[f"{key}_note"] = f"no {name} fit of the unprompted curve"
                continue
            a, b, n = f.log_inv_alpha.value, f.beta.value, f.beta.n
            if not (b > 0 and 0 < math.exp(-a) < 1):
                # α = e^{−a} must lie in (0, 1) and β > 0 for the theorems' lengths to exist.
                part[f"{key}_note"] = (
                    f"no {key} length: fitted log 1/alpha = {a:.3g}, beta = {b:.3g}"
                )
                continue
            cov = np.asarray(f.cov)[:2, :2]  # (log 1/α, β); the floor does not enter
            if key == "theorem1":
                length = lambda x, y: theorem1_length(math.exp(-x), y, eps)  # noqa: E731
            else:
                length = lambda x, y: theorem2_length(  # noqa: E731
                    math.exp(-x), y, eps, bp, sg, dlt, s0
                )
            part[key] = delta_estimate(
                length, a, b, cov, n=n, method=f"{key}_{name}_delta"
            ).to_dict()
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
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Run fig. 3a / 11 with P₋ = ``neg`` and P_LLM = ``target``; write outputs to ``out_dir``.

    ``reference`` maps a condition to the paper's ``(n, KL)``. ``extra_results`` may add to
    the results before the record is written (used by the pretrained experiment).
    Files: ``prompts.jsonl``, ``record.json``, ``<kind>.png`` / ``.svg``.
    """
    from bebkit.pipeline.misalign import count_sentences

    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(s.seed)
    timings: dict[str, float] = {}

    prompts = sample_misaligning_prompts(
        neg, s, fmt, rng, out, timings, log, stop_ids=stop_ids, checkpoint=checkpoint
    )

    t0 = time.perf_counter()
    say(log, f"KL(P- || {target.name}) [{', '.join(s.conditions)}], {kl_sample_text(s)} "
             f"({s.estimator})")  # fmt: skip
    curves = convergence_curves(
        neg, target, prompts, s, rng=rng, log=log, stop_ids=stop_ids, checkpoint=checkpoint
    )
    timings["kl"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    fits, errors = fit_curves(curves, s, rng=rng)
    s0 = s.s0_sentences if s.s0_sentences is not None else count_sentences(s.aligning_prompt)
    lengths = {
        c: lengths_from_fit(
            f,
            s,
            s0_len=s0 if c == ALIGN else None,  # no s0: Theorem 2 is Theorem 1 (+1)
            beta_prime=s.beta_prime,
            sigma=s.sigma,
            # Theorem 2 bounds P(·|s₀) with the unprompted model's α, β (see above)
            prompted=c == ALIGN,
            unprompted=fits.get(NO_ALIGN),
        )
        for c, f in fits.items()
        if f is not None
    }
    timings["fit"] = time.perf_counter() - t0

    kl_falls = {c: _falls(cv) for c, cv in curves.items()}
    results: dict[str, Any] = {
        **results_head(s, neg, "target_model", target),
        "estimator": s.estimator,
        "conditions": list(s.conditions),
        "curves": {c: cv.to_dict() for c, cv in curves.items()},
        "fits": {c: (None if f is None else f.to_dict()) for c, f in fits.items()},
        "fit_errors": errors,
        "lengths": lengths,
        "kl_falls": kl_falls,
        "fit_data": {c: fit_curve_data(cv, s.fit_n_min)[1] for c, cv in curves.items()},
        "s0_sentences": s0,
        "truncated_prompt_sentences": int(sum(sum(p.truncated) for p in prompts)),
        "unit": s.unit,
        "n_counting": n_counting(s.fmt) + _n0_note(s),
        "condition_contexts": condition_contexts(fmt, s.aligning_prompt),
        "extrapolation": _extrapolation(curves, s, rng),
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
    results["files"] = kl_files(out, figs)
    write_run_record(out, kind, s, results, timings, extra_config)
    return results


def _n0_note(s: ConvergenceSettings) -> str:
    """What the n = 0 point of a per-sentence curve measures where the layout alternates: the
    next sentence there is the prompt's first (user-slot) sentence, not the model's reply."""
    if s.unit != "sentence" or s.fmt not in MARKER_LAYOUTS:
        return ""
    return (
        " At n = 0 the per-sentence KL is that of the prompt's first sentence (the user's "
        "opening message), not of a reply; the fits use n >= "
        f"{s.fit_n_min}."
    )


def _extrapolation(
    curves: Mapping[str, KLCurve], s: ConvergenceSettings, rng: np.random.Generator
) -> dict[str, Any]:
    """Which law predicts the rest of the curve from its first half best (fit on n ≤ k,
    normalised RMSE on n > k): the floored Lemma 5 law, the power law of many-shot
    jailbreaking and the Bayesian in-context-learning law (bebkit.fits.laws)."""
    from bebkit.fits.laws import extrapolation_scores

    out: dict[str, Any] = {}
    for c, cv in curves.items():
        n = [x for x in cv.n.tolist() if x >= s.fit_n_min]
        if len(n) < 5:
            out[c] = {"error": f"needs >= 5 points from n = {s.fit_n_min}, has {len(n)}"}
            continue
        k = n[len(n) // 2 - 1]
        try:
            out[c] = extrapolation_scores(cv, k, n_min=s.fit_n_min, rng=rng).to_dict()
        except (InputError, ArithmeticError, ValueError) as exc:
            out[c] = {"error": f"{type(exc).__name__}: {exc}"}
    return out


def _falls(cv: KLCurve) -> dict[str, Any]:
    """Does the KL fall with n? First-vs-last difference with its CI and the OLS slope sign.

    Both ends are measured on the same prompts, so the difference's stderr is that of the
    per-prompt differences (paired: sd(d_p)/√P); treating the two ends as independent would
    add the between-prompt spread twice and hide a fall every prompt shows. With one prompt,
    the two Monte-Carlo stderrs (independent continuation sets) are combined instead.
    """
    est = cv.estimates
    i = 1 if len(est) > 1 else 0
    first, last = est[i], est[-1]
    diff = first.value - last.value
    pp = np.asarray(cv.per_prompt, dtype=float)
    if pp.ndim == 2 and pp.shape[0] >= 2:
        d = pp[:, i] - pp[:, -1]
        diff = float(np.mean(d))
        se, method = float(np.std(d, ddof=1) / math.sqrt(d.size)), "paired_prompt_difference"
    else:
        se = (
            math.sqrt(first.stderr**2 + last.stderr**2) if math.isfinite(first.stderr) else math.nan
        )
        method = "first_minus_last_normal"
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
            "method": method,
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
    if r.get("beta_ratio"):
        for m, e in r["beta_ratio"].items():
            if isinstance(e, dict) and "value" in e:
                lines.append(
                    f"  beta_aligned / beta_pretrained [{m}] = {fmt_ci(e)} (per sentence; the "
                    "paper's: `bebkit report`, from its curves)"
                )
    lines.append(f"  outputs in {Path(r['files']['record']).parent}")
    return lines


class FitSummary(BaseModel):
    """One fitted model of a condition (Lemma 5, floored or straight line) as stored."""

    model_config = ConfigDict(extra="allow")
    log_inv_alpha: EstimateField
    beta: EstimateField
    n_star: EstimateField


class ConditionFits(BaseModel):
    """The fits of one condition's KL curve."""

    model_config = ConfigDict(extra="allow")
    lemma5: FitSummary
    linear: FitSummary
    floored: FitSummary | None = None

    @property
    def default(self) -> FitSummary:
        """The whole-curve fit to report, as :attr:`ConvergenceResult.default`."""
        return self.floored if self.floored is not None else self.lemma5

    @property
    def default_kind(self) -> str:
        return "floored" if self.floored is not None else "lemma5"


class ConvergenceOutcome(Result):
    """KL(P₋‖P_LLM)(n) per condition and its fits; curves and lengths as extra fields."""

    behavior: str
    format: str
    target_model: str
    conditions: list[str]
    fits: dict[str, ConditionFits | None]


def theorem2_inputs(ctx: RunContext, s: Any) -> dict[str, float | None]:
    """β′ and σ for Theorem 2: the settings' values, else the beta-sigma result's P₊-direction
    ones (Lemma 4: β′ bounds KL(P₊‖P₋) over s₀ ~ P₊, σ² is Var_{P₊} log P₊/P₋) — never the
    P₋-direction envelope and variance, which are Theorem 1's and Theorem 5's."""
    bs = ctx.input("beta-sigma")
    bp, sg = s.beta_prime, s.sigma
    if bs is not None and bs.beta_prime_pos is not None and bs.sigma_pos is not None:
        if bp is None and bs.beta_prime_pos.estimate.value >= 0:
            bp = float(bs.beta_prime_pos.estimate.value)
        if sg is None and bs.sigma_pos.value >= 0:
            sg = float(bs.sigma_pos.value)
    return {"beta_prime": bp, "sigma": sg}


def _run(ctx: RunContext, s: ConvergenceSettings) -> ConvergenceOutcome:
    ref = markers_as_sentences(paper_kl(ctx.paper_figures, s.behavior, "convergence"), s.fmt)
    out: ConvergenceOutcome = run_on_components(
        ctx,
        s,
        run_convergence,
        ConvergenceOutcome,
        settings=s.model_copy(update=theorem2_inputs(ctx, s)),
        reference={c: v for c, v in ref.items() if c in s.conditions},
        reference_label=PAPER_LABEL,
    )
    return out


EXPERIMENT = register(
    Experiment(
        name="convergence",
        settings=ConvergenceSettings,
        result=ConvergenceOutcome,
        version="6",  # 6: the prompt-free target sees the empty system turn (as misalign); paired kl_falls
        run=_run,
        summary=lambda r: summary_lines(r.to_json()),
        help="KL(P- || P_LLM) vs prompt length with and without an aligning prompt (fig. 3a)",
        description="Sample prompts s ~ P- (alternating layout: sentences alternate between the "
        "user's and the assistant's turn, as the authors' [INST] prompts), estimate the "
        "per-sentence KL(P-(.|s) || P_LLM(.|s)) of the model's reply wherever the turn passes "
        "to it, with and without the aligning system prompt, and fit the floored Lemma 5 curve "
        "log(1 + exp(log 1/alpha - beta n)) + c, the floorless one, the paper's straight line "
        "and the competing power and Bayesian-ICL laws: alpha, beta, n* = log(1/alpha)/beta "
        "and Theorem 1/2 lengths with CIs. Writes record.json and convergence.png/.svg.",
        sides=("neg",),
        reads=("beta-sigma",),
        reads_paper_figures=True,
    )
)


__all__ = [
    "EXPERIMENT",
    "ConvergenceOutcome",
    "ConvergenceSettings",
    "convergence_curves",
    "fit_curves",
    "lengths_from_fit",
    "run_convergence",
    "summary_lines",
]
