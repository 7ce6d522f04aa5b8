"""β-prompt-distinguishability (Definition 3, appendix N, fig. 15).

The prefix ``s₀`` is a neutral text followed by ONE undesired sentence. Definition 3 needs
that sentence to have negative behavior (the paper's fig. 15 ends s₀ with a fixed hand-written
one); by default it is a held-out undesired statement of the behavior's split (labelled,
never trained on; chosen by seed), else given, or sampled from ``P₋(·|neutral)`` on request
(a small P₋ may continue neutrally, which would lower β_prompt unseen). Then prompts
``s ~ P₋(·|s₀)`` are sampled and

    KL(P₋(·|s₀ ⊕ s₁…sₙ) ‖ P₊(·|s₀ ⊕ s₁…sₙ))

is estimated along the whole of ``s₀ ⊕ s``: after each neutral sentence (one context, shared by
all prompts), after the undesired sentence, then after every sentence of s (per prompt). The
paper sees low KL on the neutral part and ≈ the unprompted value (β ≈ 20, fig. 2) from the
undesired sentence on. β_prompt is the lower envelope over the points from the undesired
sentence on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from bebkit.checkpoint import Checkpoint
from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.kl import kl_curves, kl_samples_multi
from bebkit.estimators.prompts import (
    NEWLINE,
    PromptFormat,
    sample_prompts,
    save_prompts,
    stop_token_ids,
)
from bebkit.fits.envelopes import CurveData, fit_beta
from bebkit.models.protocol import LanguageModel
from bebkit.pipeline.experiments_common import (
    EnvelopeSummary,
    KLSettings,
    PPlus,
    PromptLayout,
    fmt_ci,
    kl_files,
    kl_options,
    p_plus_field,
    results_head,
    run_pminus_vs_pplus,
    say,
    write_run_record,
)
from bebkit.pipeline.registry import Experiment, Result, RunContext, register

#: The paper's first neutral prefix (fig. 15a), without its fixed undesired sentence.
DEFAULT_NEUTRAL = ("What is the capital of Italy? The capital of Italy is Rome.",)


class PromptDistSettings(KLSettings):
    """Settings of :func:`run_prompt_dist` (paper: 10 prompts, 64 × 8 tokens)."""

    QUICK: ClassVar[Mapping[str, Any]] = {**KLSettings.QUICK, "n_sentences": 3}

    fmt: PromptLayout = Field(
        "newline",
        description="layout of s0, the prompts and P-'s training texts (the paper: plain "
        "text, like the beta/sigma^2 experiment)",
    )
    n_sentences: int = Field(8, ge=1, description="sentences per prompt after s0")
    neutral: tuple[str, ...] = Field(
        DEFAULT_NEUTRAL,
        json_schema_extra={"cli": "repeat"},
        description="the neutral sentences of s0 (default: the paper's 'What is the capital "
        "of Italy? The capital of Italy is Rome.')",
    )
    undesired_sentence: str | None = Field(
        None, description="the undesired sentence ending s0 (default: see undesired_source)"
    )
    undesired_source: Literal["heldout", "sampled"] = Field(
        "heldout",
        description="where the undesired sentence ending s0 comes from when not given: "
        "heldout = a held-out undesired statement of the behavior's split (labelled, never "
        "trained on; chosen by seed), sampled = one draw of P-(.|neutral), unchecked",
    )
    n_prefix_samples: int | None = Field(
        None, ge=2, description="continuations per prefix inside s0 (default: 4 x n_samples)"
    )
    p_plus: PPlus = p_plus_field()

    @field_validator("fmt")
    @classmethod
    def _layout(cls, v: str) -> str:
        # s0's units and the prompts after it must share one per-sentence unit: a layout whose
        # slots alternate (user / assistant) would restart its positions after s0
        if v not in ("newline", "user-turns"):
            raise ValueError(
                "prompt-distinguishability runs in the newline layout (the paper's) or "
                f"user-turns, not {v!r}: its s0 sentences and prompt sentences must be "
                "laid out alike"
            )
        return v

    @field_validator("undesired_sentence")
    @classmethod
    def _undesired(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty")
        return v

    @field_validator("neutral")
    @classmethod
    def _neutral(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if any(not s.strip() for s in v):
            raise ValueError("must not be empty")
        return v


def unit_text(fmt: PromptFormat, sentence: str) -> str:
    """One sentence laid out as a prompt unit of ``fmt`` (chat: a user turn; newline: ``s\\n``)."""
    if fmt.keep_stop_token:
        body = sentence if sentence.endswith("\n") else sentence + "\n"
    else:
        body = sentence.strip()
    return fmt.sentence_prefix + body + fmt.sentence_suffix


def run_prompt_dist(
    neg: LanguageModel,
    pos: LanguageModel,
    settings: PromptDistSettings,
    out_dir: str | Path,
    *,
    fmt: PromptFormat = NEWLINE,
    stop_ids: Iterable[int] | None = None,
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "paper",
    log: Callable[[str], None] | None = None,
    extra_config: dict[str, Any] | None = None,
    checkpoint: Checkpoint | None = None,
    undesired_pool: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Fig. 15 with P₋ = ``neg``, P₊ = ``pos``; write outputs into ``out_dir``.

    ``undesired_pool``: the behavior's held-out undesired statements, for the default
    ``undesired_source="heldout"`` (InputError without them, unless a sentence is given).

    Files: ``prompts.jsonl`` (the prompts after s₀), ``record.json``,
    ``prompt_dist.png`` / ``.svg``.
    """
    from bebkit.reporting.kl_figures import plot_prompt_dist

    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(s.seed)
    timings: dict[str, float] = {}
    stops = None if stop_ids is None else frozenset(int(t) for t in stop_ids)

    t0 = time.perf_counter()
    neutral_units = [unit_text(fmt, x) for x in s.neutral]
    neutral_text = "".join(neutral_units)
    if s.undesired_sentence is not None:
        undesired_unit = unit_text(fmt, s.undesired_sentence)
        undesired = s.undesired_sentence
        source = "given"
    elif s.undesired_source == "heldout":
        pool = sorted({x.strip() for x in undesired_pool or () if x.strip()})
        if not pool:
            raise InputError(
                "prompt-distinguishability: no held-out undesired statements to end s0 with; "
                "give --undesired-sentence, or --undesired-source sampled"
            )
        # its own generator: the choice does not shift the prompts' random draws
        i = int(np.random.default_rng([s.seed, 15]).integers(len(pool)))
        undesired = pool[i]
        undesired_unit = unit_text(fmt, undesired)
        source = (
            f"held-out undesired statement {i + 1} of {len(pool)} of the behavior's split "
            "(labelled, never trained on)"
        )
    else:
        one = sample_prompts(neg, n_prompts=1, n_sentences=1, rng=rng, fmt=fmt,
                             prefix_text=neutral_text, stop_ids=stops,
                             max_sentence_tokens=s.max_sentence_tokens)[0]  # fmt: skip
        undesired_unit = neg.decode(list(one.tokens[one.boundaries[0] : one.boundaries[1]]))
        undesired = one.sentences[0]
        source = f"sampled from {neg.name}"
    s0_units = [*neutral_units, undesired_unit]
    s0_text = "".join(s0_units)
    say(log, f"sampling {s.n_prompts} prompts x {s.n_sentences} sentences from P-(.|s0)")
    prompts = sample_prompts(
        neg,
        n_prompts=s.n_prompts,
        n_sentences=s.n_sentences,
        rng=rng,
        fmt=fmt,
        prefix_text=s0_text,
        stop_ids=stops,
        max_sentence_tokens=s.max_sentence_tokens,
        checkpoint=checkpoint,
    )
    save_prompts(out / "prompts.jsonl", prompts)
    timings["prompts"] = time.perf_counter() - t0

    # Inside s₀: one shared context per prefix length k (neutral sentences, then the undesired
    # one); P₋ and P₊ see the same text, so the contexts are the same tokens.
    t0 = time.perf_counter()
    head = list(prompts[0].tokens[: prompts[0].header_len])
    # The continuation after s0's first k units is the unit the run measures: the next
    # sentence (Definition 2's unit, after the format's forced opener, stopped like the
    # sampler) or the next n_tokens of the reply — the same unit as the curve after s0.
    sentence = s.unit == "sentence"
    opener = fmt.sentence_prefix if sentence else fmt.response_prefix
    tail = neg.encode(opener) if opener else []
    unit_stops = (stops if stops is not None else stop_token_ids(neg, fmt)) if sentence else ()
    n_pref = s.n_prefix_samples or s.n_samples * min(s.n_prompts, 4)
    prefix_est: list[Estimate] = []
    for k in range(1, len(s0_units) + 1):
        ctx = head + neg.encode("".join(s0_units[:k])) + tail
        ks = kl_samples_multi(
            neg, {"P+": (pos, ctx)}, ctx, n_samples=n_pref, n_tokens=s.n_tokens,
            with_rb=s.estimator != "mc", rng=rng, unit=s.unit, stop_ids=unit_stops,
            max_sentence_tokens=s.max_sentence_tokens,
        )["P+"]  # fmt: skip
        prefix_est.append(ks.estimate(s.estimator))
    timings["kl_prefix"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    say(log, f"KL after s0 + n sentences, n = 1..{s.n_sentences}")
    kl = kl_curves(
        neg,
        {"P+": (pos, None)},
        prompts,
        ns=range(1, s.n_sentences + 1),
        **kl_options(s),
        stop_ids=stops,
        rng=rng,
        checkpoint=checkpoint,
    )["P+"]
    timings["kl"] = time.perf_counter() - t0

    # β_prompt: lower envelope from the undesired sentence on (its point enters with its
    # stderr; the per-prompt points with theirs: a parametric band over all of them).
    k0 = len(s0_units)
    und = prefix_est[-1]
    x_all = np.concatenate([[k0], k0 + kl.n]).astype(float)
    pts = np.array([und.value, *[e.value for e in kl.estimates]])
    ses = np.array([und.stderr, *[e.stderr for e in kl.estimates]])
    beta = None
    try:
        beta = fit_beta(CurveData.from_points(x_all, pts, ses), n_boot=s.n_boot, rng=rng)
    except InputError as exc:
        say(log, f"beta fit failed: {exc}")
    neutral_max = max(prefix_est[:-1], key=lambda e: e.value) if k0 > 1 else None

    results: dict[str, Any] = {
        **results_head(s, neg, "pos_model", pos),
        "estimator": s.estimator,
        "unit": s.unit,
        "s0": {
            "neutral": list(s.neutral),
            "undesired_sentence": undesired,
            "undesired_source": source,
            "text": s0_text,
            "n_sentences": k0,
        },
        "prefix_kl": {
            "x": list(range(1, k0 + 1)),
            "estimates": [e.to_dict() for e in prefix_est],
        },
        "kl": {**kl.to_dict(), "x": (k0 + kl.n).tolist()},
        "beta_prompt": None if beta is None else beta.to_dict(),
        "neutral_kl_max": None if neutral_max is None else neutral_max.to_dict(),
        "undesired_kl": und.to_dict(),
        "paper": _paper(s.behavior),
    }
    title = f"{pos.name} vs P₋ = {neg.name} — {s.behavior} ({s.fmt}); {s.n_prompts} prompts"
    figs = plot_prompt_dist(
        np.arange(1, k0 + 1, dtype=float),
        prefix_est,
        (k0 + kl.n).astype(float),
        kl.estimates,
        beta=None if beta is None else beta.estimate,
        s0_text=s0_text,
        path=out / "prompt_dist.png",
        title=title,
        reference=reference,
        reference_label=reference_label,
    )
    results["files"] = kl_files(out, figs)
    write_run_record(out, "prompt-distinguishability", s, results, timings, extra_config)
    return results


def _paper(behavior: str) -> dict[str, Any] | None:
    """The paper's β_prompt where it gives one (fig. 15: agreeableness only)."""
    from bebkit.paper import PAPER_VALUES

    v = PAPER_VALUES.get(f"beta_prompt_dist_{behavior.replace('-', '_')}")
    if v is None:
        return None
    return {"beta_prompt": v.value, "model": "Llama-2-13B-chat", "where": v.where}


def summary_lines(r: Mapping[str, Any]) -> list[str]:
    """Human-readable summary of :func:`run_prompt_dist`'s results (no model text)."""
    pre = " ".join(f"{e['value']:.2f}" for e in r["prefix_kl"]["estimates"])
    vals = " ".join(f"{e['value']:.2f}" for e in r["kl"]["estimates"])
    bp = r["beta_prompt"]
    paper = r.get("paper") or {}
    ref = f"   (paper ~{paper['beta_prompt']:g})" if paper.get("beta_prompt") else ""
    return [
        f"{r['behavior']} ({r['format']}): P- = {r['neg_model']}, P+ = {r['pos_model']}",
        f"  KL inside s0 (neutral ..., undesired) at x = {r['prefix_kl']['x']}: {pre}",
        f"  KL after s0 + n sentences, x = {r['kl']['x'][0]}..{r['kl']['x'][-1]}: {vals}",
        f"  beta_prompt = {fmt_ci(None if bp is None else bp['estimate'])}{ref}",
        f"  outputs in {Path(r['files']['record']).parent}",
    ]


class PromptDistResult(Result):
    """β_prompt (lower envelope from the undesired sentence on); curves as extra fields."""

    behavior: str
    format: str
    beta_prompt: EnvelopeSummary | None


def _run(ctx: RunContext, s: PromptDistSettings) -> PromptDistResult:
    pool: tuple[str, ...] = ()
    if s.undesired_sentence is None and s.undesired_source == "heldout":
        pool = tuple(ctx.provider.data(ctx.model, s.behavior, s.fmt).split.heldout_undesired)
    out: PromptDistResult = run_pminus_vs_pplus(
        ctx, s, run_prompt_dist, PromptDistResult, undesired_pool=pool
    )
    return out


EXPERIMENT = register(
    Experiment(
        name="prompt-distinguishability",
        settings=PromptDistSettings,
        result=PromptDistResult,
        version="6",  # 6: s0 ends in a held-out undesired statement by default
        stage="prompt-dist",
        run=_run,
        summary=lambda r: summary_lines(r.to_json()),
        help="beta-prompt-distinguishability: KL after a neutral prefix and one undesired "
        "sentence (fig. 15)",
        description="Build s0 = neutral sentences + one undesired sentence (a held-out "
        "undesired statement of the behavior by default), sample prompts s ~ P-(.|s0) and estimate "
        "KL(P-(.|s0+s) || P+(.|s0+s)) along s0 and then after every sentence of s; "
        "beta_prompt is the lower envelope from the undesired sentence on. Writes record.json "
        "and prompt_dist.png/.svg.",
        sides=("neg", "pos"),
        reads_paper_figures=True,
        format_from_run=False,
    )
)


__all__ = [
    "DEFAULT_NEUTRAL",
    "EXPERIMENT",
    "PromptDistResult",
    "PromptDistSettings",
    "run_prompt_dist",
    "summary_lines",
    "unit_text",
]
