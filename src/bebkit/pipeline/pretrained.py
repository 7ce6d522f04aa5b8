"""KL convergence on a pretrained (unaligned) model (appendix M, fig. 13b / 14b).

The same measurement as :mod:`bebkit.pipeline.convergence` — ``KL(P₋‖P_pre | s₁…sₙ)`` for
prompts ``s ~ P₋``, newline format, no aligning prompt — with P₋ a LoRA adapter of the
pretrained model itself, then the ratio ``β_aligned / β_pretrained`` (the paper: ≈ 5 for
Llama-2-13B-chat vs Llama-2-13B, "RLHF … increases distinguishability").

The ratio compares β per sentence of both curves fitted over ONE sentence window
(:func:`bebkit.fits.convergence.matched_windows`): the aligned curve of an alternating layout
is read at n = 1, 3, 5, …, the pretrained one at every n, and a KL curve flattens with n, so
fits over each curve's own points (the aligned line on sentences 1–5, the pretrained one on
1–3; the whole curves over 1–19 and 1–10) would bias the ratio (≈ 0.8 for equal β).

Our bundled pair (SmolLM2-135M-Instruct vs Gemma-3-270M) are two *different model families*,
so the ratio mixes family and alignment effects; the record and the figure say so.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from bebkit.checkpoint import Checkpoint
from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.behavior import NO_ALIGN
from bebkit.estimators.kl import KLCurve
from bebkit.estimators.prompts import NEWLINE, PromptFormat
from bebkit.fits.convergence import ConvergenceResult, fit_convergence, matched_windows
from bebkit.fits.derived import estimate_from_dict, fit_curve_data, ratio_estimate
from bebkit.models.protocol import LanguageModel
from bebkit.pipeline.convergence import (
    ConvergenceOutcome,
    ConvergenceSettings,
    run_convergence,
    summary_lines,
)
from bebkit.pipeline.experiments_common import (
    PromptLayout,
    paper_kl,
    run_on_components,
)
from bebkit.pipeline.registry import Experiment, RunContext, register

FAMILY_NOTE = (
    "aligned and pretrained models here are different model families; "
    "β_aligned/β_pretrained mixes family and alignment effects (the paper compares "
    "Llama-2-13B-chat with its own base model)"
)


class PretrainedSettings(ConvergenceSettings):
    """Settings of :func:`run_pretrained` (newline format, one condition: no aligning prompt)."""

    QUICK: ClassVar[Mapping[str, Any]] = {**ConvergenceSettings.QUICK, "n_sentences": 4}

    fmt: PromptLayout = Field(
        "newline", description="prompt layout and the P- adapter's training format"
    )
    conditions: tuple[str, ...] = Field((NO_ALIGN,), description="only 'none' (no system turn)")
    n_sentences: int = Field(10, ge=1, description="sentences per prompt")

    @field_validator("conditions")
    @classmethod
    def _one_condition(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if tuple(v) != (NO_ALIGN,):
            raise ValueError("the pretrained experiment has the single condition 'none'")
        return tuple(v)

    same_family: bool | None = Field(
        None,
        description="the aligned model is this base model's own aligned version (default: "
        "decided from the two models' names, e.g. Llama-2-13b-chat-hf vs Llama-2-13b-hf)",
    )


def same_family_names(aligned: str | None, pretrained: str | None) -> bool:
    """Whether two model names are one family's aligned and base versions: equal once the
    usual instruction-tuning suffixes are removed (``Llama-2-13b-chat-hf`` / ``Llama-2-13b-hf``,
    ``gemma-3-270m-it`` / ``gemma-3-270m``)."""
    import re

    if not aligned or not pretrained:
        return False

    def stem(name: str) -> str:
        s = name.rsplit("/", 1)[-1].lower()
        s = re.sub(r"[-_](hf|gguf|q\d\w*)$", "", s)
        s = re.sub(r"[-_](chat|instruct|it|sft|rlhf|dpo)(?=$|[-_])", "", s)
        return re.sub(r"[-_](hf)$", "", s)

    return stem(aligned) == stem(pretrained)


def matched_ratio(
    aligned: KLCurve,
    pretrained: KLCurve,
    settings: ConvergenceSettings,
    *,
    rng: Any,
) -> dict[str, Any]:
    """``β_aligned / β_pretrained`` per fit, both fitted over one sentence window
    (:func:`matched_windows`), bootstrap over prompts as the curves' own fits; the two models'
    prompts are independent, so the ratio's CI combines the two (delta method on the log)."""
    w, lin = matched_windows(
        [aligned.n.tolist(), pretrained.n.tolist()],
        n_min=settings.fit_n_min,
        n_linear=settings.n_linear,
    )
    fits = {}
    for name, cv in (("aligned", aligned), ("pretrained", pretrained)):
        n_boot = settings.n_boot if cv.per_prompt.shape[0] >= 3 else 0
        data, _ = fit_curve_data(cv, settings.fit_n_min)
        fits[name] = fit_convergence(
            data, n_min=settings.fit_n_min, n_max=w, linear_max=lin, n_boot=n_boot, rng=rng
        )
    ratios: dict[str, Any] = {}
    betas: dict[str, Any] = {}
    for m in ("floored", "lemma5", "linear"):
        fa, fp = getattr(fits["aligned"], m), getattr(fits["pretrained"], m)
        if fa is None or fp is None:
            continue
        ratios[m] = ratio_estimate(fa.beta, fp.beta).to_dict()
        betas[m] = {"aligned": fa.beta.to_dict(), "pretrained": fp.beta.to_dict()}
    return {
        "beta_ratio": ratios,
        "window": {
            "whole_curve": [settings.fit_n_min, w],
            "straight_line": [settings.fit_n_min, lin],
        },
        "window_betas": betas,
    }


def aligned_betas_from_record(record: Mapping[str, Any]) -> dict[str, Estimate]:
    """β of a ``bebkit convergence`` record (condition ``none``), per fit ``lemma5`` / ``linear``."""
    res = record.get("results", record)
    if record.get("kind") not in (None, "convergence"):
        raise InputError(f"expected a convergence record, got kind {record.get('kind')!r}")
    fit = (res.get("fits") or {}).get(NO_ALIGN)
    if not fit:
        raise InputError("the convergence record has no fit for condition 'none'")
    return {m: estimate_from_dict(fit[m]["beta"]) for m in ("lemma5", "linear") if m in fit}


def run_pretrained(
    neg: LanguageModel,
    pretrained: LanguageModel,
    settings: PretrainedSettings,
    out_dir: str | Path,
    *,
    aligned_beta: Mapping[str, Estimate] | None = None,
    aligned_curve: KLCurve | None = None,
    aligned_model: str | None = None,
    fmt: PromptFormat = NEWLINE,
    stop_ids: Any = None,
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "paper",
    same_family: bool = False,
    log: Callable[[str], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
) -> dict[str, Any]:
    """Fig. 13b with P₋ = ``neg`` (adapter of ``pretrained``); β ratio vs ``aligned_beta``.

    With ``aligned_curve`` (the aligned model's KL curve without an aligning prompt) the ratio
    is fitted over one sentence window (:func:`matched_ratio`); else ``aligned_beta`` maps a
    fit (``lemma5`` / ``linear``) to the aligned model's β as fitted on its own points (e.g.
    from :func:`aligned_betas_from_record`), and the record says the windows may differ.
    Files as :func:`run_convergence` (``pretrained.png``).
    """
    if settings.conditions != (NO_ALIGN,):
        raise InputError("the pretrained experiment uses the single condition 'none'")
    note = "" if same_family else "note: " + FAMILY_NOTE

    def add_ratio(results: dict[str, Any], fits: dict[str, ConvergenceResult | None]) -> None:
        results["aligned_model"] = aligned_model
        results["same_family"] = same_family
        results["family_note"] = None if same_family else FAMILY_NOTE
        # the paper's "about 5" compares a per-marker β (chat curve) with a per-sentence one
        # (base curve); its per-sentence value comes from bebkit's fits on the authors'
        # curves (the report's paper column), so no typed number is recorded here
        results["paper_beta_ratio"] = (
            "see the report: bebkit's fits on the authors' fig. 3a / 13b curves, per sentence"
        )
        fit = fits.get(NO_ALIGN)
        if aligned_curve is not None and fit is not None:
            own = KLCurve.from_dict(results["curves"][NO_ALIGN])
            try:
                gen = np.random.default_rng([settings.seed, 13])
                results.update(matched_ratio(aligned_curve, own, settings, rng=gen))
                results["beta_ratio_method"] = "one sentence window for both curves"
            except (InputError, ArithmeticError) as exc:
                results["beta_ratio"] = None
                results["beta_ratio_error"] = f"{type(exc).__name__}: {exc}"
            return
        if aligned_beta is None or fit is None:
            results["beta_ratio"] = None
            return
        results["beta_ratio_method"] = "each curve fitted on its own points (windows may differ)"
        ratios: dict[str, Any] = {}
        for m, b_al in aligned_beta.items():
            b_pre = getattr(fit, m).beta
            ratios[m] = ratio_estimate(b_al, b_pre).to_dict()
        results["beta_ratio"] = ratios
        results["aligned_beta"] = {m: e.to_dict() for m, e in aligned_beta.items()}

    return run_convergence(
        neg,
        pretrained,
        settings,
        out_dir,
        fmt=fmt,
        stop_ids=stop_ids,
        kind="pretrained",
        reference=reference,
        reference_label=reference_label,
        note=note,
        log=log,
        extra_config=extra_config,
        extra_results=add_ratio,
        checkpoint=checkpoint,
    )


def _run(ctx: RunContext, s: PretrainedSettings) -> ConvergenceOutcome:
    conv = ctx.input("convergence")
    aligned, aligned_model, curve = None, None, None
    if conv is not None and conv.fits.get(NO_ALIGN) is not None:
        fit = conv.fits[NO_ALIGN]
        aligned = {"lemma5": fit.lemma5.beta, "linear": fit.linear.beta}
        aligned_model = conv.target_model
        curves = conv.to_json().get("curves") or {}
        if curves.get(NO_ALIGN):
            curve = KLCurve.from_dict(curves[NO_ALIGN])
    same = s.same_family
    if same is None:
        same = same_family_names(aligned_model, ctx.model)
    out: ConvergenceOutcome = run_on_components(
        ctx,
        s,
        run_pretrained,
        ConvergenceOutcome,
        aligned_beta=aligned,
        aligned_curve=curve,
        aligned_model=aligned_model,
        reference=paper_kl(ctx.paper_figures, s.behavior, "pretrained"),
        reference_label="paper (Llama-2-13B base)",
        same_family=same,
    )
    return out


EXPERIMENT = register(
    Experiment(
        name="pretrained",
        settings=PretrainedSettings,
        result=ConvergenceOutcome,
        version="6",  # 6: beta ratio over one sentence window; family decided from the names
        run=_run,
        summary=lambda r: summary_lines(r.to_json()),
        help="KL(P- || P_pretrained) vs prompt length on a base model, beta ratio (fig. 13b)",
        description="The convergence experiment on a pretrained (unaligned) model in the "
        "newline format with its own P- adapter (trained or reused): KL(P-(.|s) || P_pre(.|s)) "
        "vs n, Lemma 5 and straight-line fits, and beta_aligned / beta_pretrained with a CI "
        "when a convergence result of the aligned model is given. Writes record.json and "
        "pretrained.png/.svg.",
        sides=("neg",),
        model_role="pretrained",
        reads=("convergence",),
        reads_paper_figures=True,
        default_model="gemma-3-270m",
    )
)

__all__ = [
    "EXPERIMENT",
    "FAMILY_NOTE",
    "PretrainedSettings",
    "aligned_betas_from_record",
    "run_pretrained",
]
