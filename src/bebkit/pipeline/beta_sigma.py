"""β, β′ and σ² of a component pair (§4.1, fig. 2 / 8, appendix L.1).

1. sample ``max(n_prompts, n_var_prompts)`` prompts ``s ~ P₋`` of N sentences;
2. ``KL(P₋‖P₊ | s₁…sₙ)`` for n = 0 … N on the first ``n_prompts`` (Definition 2);
3. ``r(n) = log P₋(s₁…sₙ) − log P₊(s₁…sₙ)`` on all prompts (one scoring pass per model) and
   ``Var_{s~P₋}[r(n)]`` with bootstrap CIs (Definition 4);
4. β = lower envelope of the KL curve, β′ = upper envelope, σ² = smallest slope of a line
   through the origin above the variance (:mod:`bebkit.fits.envelopes`), over n ≥ ``fit_n_min``;
5. the ratios σ/β and β′/β of the P₋ direction, as the paper's §4.1 reads them off fig. 2
   (β ≈ 20, β′ ≈ 30, σ² ≈ 50 ⇒ σ/β ≈ 0.35, β′/β ≈ 1.5); Theorems 2–3 themselves consume the
   P₊ direction's β′₊ (envelope from n = 0) and σ₊ (Lemma 4), recorded beside them;
6. write ``prompts.jsonl``, ``record.json`` and ``beta_sigma.png`` / ``.svg``.

P₊ is the aligned model itself (adapters off), as the authors did, or a P₊ adapter.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field

from bebkit.checkpoint import Checkpoint
from bebkit.estimate import Estimate
from bebkit.estimators.kl import directional_kl_curve, kl_curves
from bebkit.estimators.logratio import directional_log_ratio
from bebkit.estimators.prompts import NEWLINE, PromptFormat, sample_prompts, save_prompts
from bebkit.fits.derived import fit_curve_data, ratio_estimate
from bebkit.fits.envelopes import fit_beta, fit_beta_prime, fit_sigma2
from bebkit.models.protocol import LanguageModel
from bebkit.pipeline.experiments_common import (
    EnvelopeSummary,
    KLSettings,
    PPlus,
    PromptLayout,
    fmt_ci,
    kl_files,
    kl_options,
    kl_progress,
    kl_sample_text,
    p_plus_field,
    results_head,
    run_pminus_vs_pplus,
    say,
    write_run_record,
)
from bebkit.pipeline.registry import EstimateField, Experiment, Result, RunContext, register


class BetaSigmaSettings(KLSettings):
    """Sizes of :func:`run_beta_sigma` (paper: 10 prompts × 15 sentences, 30 for the variance)."""

    QUICK: ClassVar[Mapping[str, Any]] = {**KLSettings.QUICK, "n_var_prompts": 8}

    fmt: PromptLayout = Field(
        "newline",
        description="layout of the prompts and of P-'s training texts; the paper uses the "
        "newline P- for beta/sigma^2 so the model stays strong enough to act as P+ (app. J)",
    )
    n_sentences: int = Field(15, ge=1, description="sentences per prompt")
    n_var_prompts: int = Field(
        30, ge=3, description="prompts for the variance (the KL uses the first n_prompts)"
    )
    p_plus: PPlus = p_plus_field()


class BetaSigmaResult(Result):
    """β, β′ (envelopes of KL(P₋‖P₊)), σ² (variance slope) and σ; curves as extra fields."""

    behavior: str
    format: str
    beta: EnvelopeSummary
    beta_prime: EnvelopeSummary
    sigma2: EnvelopeSummary
    sigma: EstimateField
    beta_prime_pos: EnvelopeSummary | None = None
    sigma2_pos: EnvelopeSummary | None = None
    sigma_pos: EstimateField | None = None


def run_beta_sigma(
    neg: LanguageModel,
    pos: LanguageModel,
    settings: BetaSigmaSettings,
    out_dir: str | Path,
    *,
    fmt: PromptFormat = NEWLINE,
    stop_ids: Iterable[int] | None = None,
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "paper",
    log: Callable[[str], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Estimate β, β′, σ² of (P₋ = ``neg``, P₊ = ``pos``); write outputs into ``out_dir``.

    ``stop_ids`` are the sentence-end tokens for prompt sampling (default: the format's).
    Returns the results dict (also in ``record.json``). ``checkpoint`` keeps the prompt
    sets' sentence rounds and each prompt's KL row, so a killed run resumes where it stopped.
    """
    from bebkit.reporting.kl_figures import plot_beta_sigma

    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(s.seed)
    timings: dict[str, float] = {}

    n_all = max(s.n_prompts, s.n_var_prompts)
    timings["prompts"] = 0.0
    sampled = []
    # Prompts s ~ P₋, then the P₊ direction's (Lemma 4, Theorems 2–3): prompts s ~ P₊ for
    # KL(P₊‖P₋) and Var log P₊/P₋.
    for model, file, side in ((neg, "prompts.jsonl", "neg"), (pos, "prompts_pos.jsonl", "pos")):
        t0 = time.perf_counter()
        say(log, f"sampling {n_all} prompts x {s.n_sentences} sentences from {model.name}")
        sampled.append(
            sample_prompts(
                model,
                n_prompts=n_all,
                n_sentences=s.n_sentences,
                rng=rng,
                fmt=fmt,
                stop_ids=stop_ids,
                max_sentence_tokens=s.max_sentence_tokens,
                checkpoint=checkpoint,
                checkpoint_name=f"prompts-{side}",
            )
        )
        save_prompts(out / file, sampled[-1])
        timings["prompts"] += time.perf_counter() - t0
    prompts, pos_prompts = sampled

    t0 = time.perf_counter()
    say(log, f"log-ratio trajectories of {n_all} prompts per direction (one pass per model)")
    roles = {"neg": neg, "pos": pos}
    traj = directional_log_ratio(roles, prompts, direction="neg||pos", label="log P-/P+")
    var = traj.variance(n_boot=s.n_boot, rng=rng)
    traj_pos = directional_log_ratio(roles, pos_prompts, direction="pos||neg", label="log P+/P-")
    var_pos = traj_pos.variance(n_boot=s.n_boot, rng=rng)
    timings["variance"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ns = range(0, s.n_sentences + 1)
    total = s.n_prompts * (s.n_sentences + 1)
    say(log, f"KL with {kl_sample_text(s)} at {total} prefixes")
    progress = kl_progress(log, total)
    common: dict[str, Any] = {"ns": ns, **kl_options(s), "stop_ids": stop_ids, "rng": rng}
    kl = kl_curves(
        neg, {"P+": (pos, None)}, prompts[: s.n_prompts], progress=progress,
        direction="neg||pos", checkpoint=checkpoint, checkpoint_name="kl-neg", **common,
    )["P+"]  # fmt: skip
    say(log, "KL(P+ || P-) on prompts from P+ (Lemma 4)")
    kl_pos = directional_kl_curve(
        roles, pos_prompts[: s.n_prompts], direction="pos||neg", checkpoint=checkpoint,
        checkpoint_name="kl-pos", **common,
    )  # fmt: skip
    timings["kl"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    n_min = s.fit_n_min if s.fit_n_min <= s.n_sentences else 0
    kl_data, kl_fit_data = fit_curve_data(kl, n_min)
    beta = fit_beta(kl_data, n_min=n_min, n_boot=s.n_boot, rng=rng)
    beta_prime = fit_beta_prime(kl_data, n_min=n_min, n_boot=s.n_boot, rng=rng)
    sigma2 = fit_sigma2(traj, n_min=max(1, n_min), n_boot=s.n_boot, rng=rng)
    sigma = _sqrt_estimate(sigma2.estimate)
    pos_data, pos_fit_data = fit_curve_data(kl_pos, 0)
    # Lemma 4's β′ bounds every term of E_{s₀~P₊} log P₊(s₀)/P₋(s₀) = Σ_{i<|s₀|} E KL_i,
    # the first sentence's (empty prefix, i = 0) included: its envelope starts at n = 0.
    # fit_n_min (the paper's plotted range, n ≥ 1) is the P₋ direction's, for parity only.
    beta_prime_pos = fit_beta_prime(pos_data, n_min=0, n_boot=s.n_boot, rng=rng)
    sigma2_pos = fit_sigma2(traj_pos, n_min=max(1, n_min), n_boot=s.n_boot, rng=rng)
    sigma_pos = _sqrt_estimate(sigma2_pos.estimate)
    timings["fit"] = time.perf_counter() - t0

    kl_est = kl.estimates
    results: dict[str, Any] = {
        **results_head(s, neg, "pos_model", pos),
        "p_plus": s.p_plus,
        "estimator": s.estimator,
        "unit": s.unit,
        "kl": kl.to_dict(),
        "log_ratio": {
            "n": traj.n.tolist(),
            "values": traj.values.tolist(),
            "mean": [e.to_dict() for e in traj.mean()],
            "variance": [e.to_dict() for e in var],
            "increments": [e.to_dict() for e in traj.increments()],
            "forced_tokens": "excluded",
        },
        "kl_fit_data": kl_fit_data,
        "pos_fit_data": pos_fit_data,
        "pos_direction": {
            "kl": kl_pos.to_dict(),
            "log_ratio": {
                "n": traj_pos.n.tolist(),
                "mean": [e.to_dict() for e in traj_pos.mean()],
                "variance": [e.to_dict() for e in var_pos],
                "increments": [e.to_dict() for e in traj_pos.increments()],
            },
        },
        "positivity": _positivity(traj.values).to_dict(),
        "beta_prime_pos": beta_prime_pos.to_dict(),
        "sigma2_pos": sigma2_pos.to_dict(),
        "sigma_pos": sigma_pos.to_dict(),
        "estimands": {
            "beta": "lower envelope over n of KL(P-||P+ | s_n), s ~ P-, per "
            + ("sentence" if s.unit == "sentence" else f"{s.n_tokens} tokens")
            + " (Definition 2; Theorem 1)",
            "beta_prime": "upper envelope of the same P- direction curve (NOT Lemma 4's beta')",
            "sigma2": "through-origin slope above Var_{s~P-}[log P-(s)/P+(s)], sampled tokens "
            "only (Theorem 5's sigma)",
            "beta_prime_pos": "upper envelope over n >= 0 (the empty prefix included) of "
            "KL(P+||P- | s_n), s ~ P+ (Lemma 4 eq. 54: Theorems 2 and 3)",
            "sigma2_pos": "slope above Var_{s~P+}[log P+(s)/P-(s)] (Lemma 4 eq. 55: Theorems 2, 3)",
        },
        "beta": beta.to_dict(),
        "beta_prime": beta_prime.to_dict(),
        "sigma2": sigma2.to_dict(),
        "sigma": sigma.to_dict(),
        "sigma_over_beta": ratio_estimate(sigma, beta.estimate).to_dict(),
        "beta_prime_over_beta": ratio_estimate(beta_prime.estimate, beta.estimate).to_dict(),
        "ratio_note": "ratios by the delta method on the log scale treating numerator and "
        "denominator as independent (they share prompts, so the CI is approximate)",
        "paper": {
            "beta": 20.0,
            "beta_prime": 30.0,
            "sigma2": 50.0,
            "sigma_over_beta": 0.35,
            "beta_prime_over_beta": 1.5,
            "model": "Llama-2-13B-chat, agreeableness (fig. 2)",
        },
        "truncated_prompt_sentences": int(sum(sum(p.truncated) for p in prompts)),
    }
    title = (
        f"{pos.name} vs P₋ = {neg.name} — {s.behavior} ({s.fmt}); "
        f"{s.n_prompts} prompts for KL ({s.estimator}, {s.n_samples}×{s.n_tokens} tok), "
        f"{n_all} for the variance"
    )
    figs = plot_beta_sigma(
        kl.n.astype(float),
        kl_est,
        traj.n.astype(float),
        var,
        beta=beta.estimate,
        beta_prime=beta_prime.estimate,
        sigma2=sigma2.estimate,
        path=out / "beta_sigma.png",
        title=title,
        reference=reference,
        reference_label=reference_label,
    )
    results["files"] = kl_files(out, figs)
    write_run_record(out, "beta-sigma", s, results, timings, extra_config)
    return results


def _positivity(values: np.ndarray) -> Estimate:
    """Definition 6 on P₋'s own sentences: the share with P₊(sₙ|s₍<ₙ₎) < P₋(sₙ|s₍<ₙ₎), i.e. a
    positive per-sentence log-ratio increment (Wilson CI over all sampled sentences; every
    P₋ sentence is taken as negative — the judge is not applied here)."""
    from dataclasses import replace

    from bebkit.estimate import wilson_interval

    inc = np.diff(np.asarray(values, dtype=np.float64), axis=1)
    inc = inc[np.isfinite(inc)]
    return replace(
        wilson_interval(int((inc > 0).sum()), int(inc.size)),
        method="share of P- sentences with log P-(s|prefix) > log P+(s|prefix) (Wilson)",
    )


def _sqrt_estimate(e: Estimate) -> Estimate:
    """σ = √σ² with delta-method stderr and the CI mapped through √ (monotone)."""
    v = math.sqrt(max(e.value, 0.0))
    se = e.stderr / (2 * v) if v > 0 else float("nan")
    lo = None if e.ci_low is None else math.sqrt(max(e.ci_low, 0.0))
    hi = None if e.ci_high is None else math.sqrt(max(e.ci_high, 0.0))
    return Estimate(v, se, e.n, lo, hi, e.ci_level, f"sqrt({e.method})")


def summary_lines(r: Mapping[str, Any]) -> list[str]:
    """Human-readable summary of :func:`run_beta_sigma`'s results."""
    kl = r["kl"]
    vals = " ".join(f"{e['value']:.2f}" for e in kl["estimates"])
    var = " ".join(f"{e['value']:.1f}" for e in r["log_ratio"]["variance"])
    p = r["paper"]
    return [
        f"{r['behavior']} ({r['format']}): P- = {r['neg_model']}, P+ = {r['pos_model']}",
        f"  KL(P-||P+)(n) n={kl['n'][0]}..{kl['n'][-1]} [{r['estimator']}]: {vals}",
        f"  Var[log P-/P+](n): {var}",
        f"  beta   = {fmt_ci(r['beta']['estimate'])}   (paper ~{p['beta']:g})",
        f"  beta'  = {fmt_ci(r['beta_prime']['estimate'])}   (paper ~{p['beta_prime']:g})",
        f"  sigma2 = {fmt_ci(r['sigma2']['estimate'])}   (paper ~{p['sigma2']:g})",
        f"  sigma/beta = {fmt_ci(r['sigma_over_beta'])}, beta'/beta = "
        f"{fmt_ci(r['beta_prime_over_beta'])}   (paper {p['sigma_over_beta']:g}, "
        f"{p['beta_prime_over_beta']:g})",
        f"  outputs in {Path(r['files']['record']).parent}",
    ]


def _run(ctx: RunContext, s: BetaSigmaSettings) -> BetaSigmaResult:
    out: BetaSigmaResult = run_pminus_vs_pplus(ctx, s, run_beta_sigma, BetaSigmaResult)
    return out


EXPERIMENT = register(
    Experiment(
        name="beta-sigma",
        settings=BetaSigmaSettings,
        result=BetaSigmaResult,
        version="5",  # 5: beta_prime_pos's envelope includes the empty prefix (Lemma 4)
        run=_run,
        summary=lambda r: summary_lines(r.to_json()),
        help="estimate beta, beta' and sigma^2 of P- vs P+ (fig. 2 / 8)",
        description="Sample prompts s ~ P- (the LoRA component), estimate KL(P-(.|s) || "
        "P+(.|s)) after every sentence n and Var_{s~P-}[log P-(s)/P+(s)] vs n (bootstrap CIs), "
        "and read beta (lower envelope), beta' (upper envelope) and sigma^2 (through-origin "
        "upper envelope slope) off them. P+ is the model itself with adapters off (as the "
        "authors did) or the P+ adapter. Writes record.json and beta_sigma.png/.svg.",
        sides=("neg", "pos"),
        reads_paper_figures=True,
        format_from_run=False,
    )
)

__all__ = ["EXPERIMENT", "BetaSigmaResult", "BetaSigmaSettings", "run_beta_sigma", "summary_lines"]
