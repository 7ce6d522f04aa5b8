"""Shared pieces of the KL experiments of §4.1–4.2 and appendices L, M, N.

* :class:`KLSettings` — the sizes every KL experiment shares (prompts, sentences,
  continuations, estimator, bootstrap), frozen and validated;
* :func:`paper_kl` / :func:`prompt_format_for` — the paper's curves and the prompt layout an
  experiment overlays and samples in;
* :func:`fmt_ci` — the one estimate formatter of the console summaries;
* settings fields that several experiments share, each written once (:func:`behavior_field`,
  :func:`conditions_field`, :func:`aligning_prompt_field`, :func:`theorem2_field`, ...), and
  their validators (:func:`check_conditions`, :func:`check_nonblank`).

The KL curves themselves are :func:`bebkit.estimators.kl.kl_curves` (several targets from one
P-sample set); the derived quantities (delta-method lengths, ratios) live in
:mod:`bebkit.fits.derived`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bebkit.estimate import Estimate
from bebkit.estimators.behavior import CONDITIONS
from bebkit.estimators.kl import ESTIMATOR_REVISIONS, Estimator
from bebkit.estimators.prompts import DEFAULT_ALIGNING_PROMPT
from bebkit.pipeline.registry import EstimateField, Settings

_Z95 = 1.959963984540054


#: Prompt layouts of the misaligning experiments (bebkit.estimators.prompts.prompt_format).
PromptLayout = Literal["alternating", "chat", "user-turns", "llama2-inst", "newline"]


class EnvelopeSummary(BaseModel):
    """An envelope fit (bebkit.fits.envelopes) as stored in a result: its headline estimate is
    typed, the rest kept as JSON."""

    model_config = ConfigDict(extra="allow")
    estimate: EstimateField


def behavior_field() -> Any:
    """The required ``behavior`` field every per-behavior experiment has."""
    return Field(description="behavior name (persona file stem or 'cooperativeness')")


def conditions_field() -> Any:
    """The ``conditions`` field of the experiments with and without the aligning prompt."""
    return Field(CONDITIONS, description="comma list of 'none' (no aligning prompt) and 'aligned'")


def aligning_prompt_field(
    description: str = "system prompt of the 'aligned' condition (default: bebkit's own)",
    **kwargs: Any,
) -> Any:
    """The aligning system prompt (validate with :func:`check_nonblank`)."""
    return Field(DEFAULT_ALIGNING_PROMPT, description=description, **kwargs)


def check_conditions(v: tuple[str, ...]) -> tuple[str, ...]:
    """Validator of :func:`conditions_field`: known conditions, each at most once."""
    if not v or any(c not in CONDITIONS for c in v):
        raise ValueError(f"must list 'none' and/or 'aligned', got {','.join(v)!r}")
    if len(set(v)) != len(v):
        raise ValueError(f"must not repeat a condition, got {','.join(v)!r}")
    return v


def check_nonblank(v: str) -> str:
    """Validator of a text field (the aligning prompt) that must not be blank."""
    if not v.strip():
        raise ValueError("must not be empty")
    return v


def max_sentence_tokens_field(what: str = "misaligning sentence") -> Any:
    return Field(48, ge=1, description=f"token cap per {what}")


def max_response_tokens_field() -> Any:
    return Field(32, ge=1, description="response token cap")


#: Help of Theorem 2's parameter overrides (:func:`theorem2_field`).
_THEOREM2 = {
    "beta_prime": "beta' for Theorem 2 (default: from a beta-sigma result)",
    "sigma": "sigma for Theorem 2 (default: from a beta-sigma result)",
    "s0_sentences": "|s0| in sentences (default: counted in the aligning prompt)",
}


def theorem2_field(name: Literal["beta_prime", "sigma", "s0_sentences"]) -> Any:
    """An optional override of one of Theorem 2's inputs (``None``: measured / counted)."""
    return Field(None, ge=0, description=_THEOREM2[name])


def seed_field(description: str = "sampling seed") -> Any:
    return Field(0, ge=0, description=description)


class KLSettings(Settings):
    """Sizes shared by every KL experiment (the paper's defaults: app. L.1).

    ``n_samples`` continuations of ``n_tokens`` tokens per (prompt, n); every generated token
    is scored (the authors' code skipped the first). ``estimator`` ``rb`` (Rao-Blackwell, the
    default) sums the exact next-token KL along each path; ``mc`` is the paper's plain mean.
    """

    QUICK: ClassVar[Mapping[str, Any]] = {
        "n_prompts": 3, "n_sentences": 4, "n_samples": 16, "n_boot": 200,
    }  # fmt: skip

    behavior: str = behavior_field()
    fmt: PromptLayout = Field(
        "alternating",
        description="prompt layout (and the P- adapter's training format): alternating = "
        "sentences alternate between the user's and the assistant's turn of the model's own "
        "chat template, as the authors' [INST] prompts (alias chat); user-turns = one user "
        "turn per sentence; llama2-inst = the authors' literal strings; newline = plain text",
    )
    n_prompts: int = Field(10, ge=1, description="prompts s ~ P- for the KL curve")
    n_sentences: int = Field(10, ge=1, description="sentences per prompt")
    n_samples: int = Field(64, ge=2, description="continuations per (prompt, n)")
    unit: Literal["sentence", "tokens"] = Field(
        "sentence",
        description="KL continuation: sentence = the next sentence, stopped at a sentence or "
        "turn end (Definition 2's unit; capped at max_sentence_tokens, truncations counted); "
        "tokens = a fixed n_tokens (the authors' 8)",
    )
    n_tokens: int = Field(8, ge=1, description="tokens per continuation with unit=tokens")
    estimator: Estimator = Field(
        "rb",
        description="KL estimator: rb = Rao-Blackwellised (exact next-token KL summed along "
        "each path), rb_cv = with a leave-one-out control variate (jackknife stderr; plain rb "
        "below 5 samples), mc = the paper's plain Monte Carlo",
        json_schema_extra={"key_revisions": dict(ESTIMATOR_REVISIONS)},
    )
    max_sentence_tokens: int = max_sentence_tokens_field(
        "prompt sentence and per continuation sentence"
    )
    n_boot: int = Field(1000, ge=100, description="bootstrap replicates for CIs")
    fit_n_min: int = Field(1, ge=0, description="fit over prompt lengths n >= this (paper: 1)")
    seed: int = seed_field()


def kl_sample_text(s: KLSettings) -> str:
    """What one KL sample is, for logs: the next sentence (capped) or a fixed token count."""
    if s.unit == "sentence":
        return f"{s.n_samples} next sentences (<= {s.max_sentence_tokens} tokens)"
    return f"{s.n_samples} continuations x {s.n_tokens} tokens"


def kl_options(s: KLSettings) -> dict[str, Any]:
    """The options of :func:`~bebkit.estimators.kl.kl_curves` that a KL experiment's settings
    fix (estimator, continuation unit and sizes)."""
    return {
        "estimator": s.estimator,
        "unit": s.unit,
        "n_samples": s.n_samples,
        "n_tokens": s.n_tokens,
        "max_sentence_tokens": s.max_sentence_tokens,
    }


def kl_progress(log: Callable[[str], None] | None, total: int) -> Callable[[int, int], None]:
    """A ``progress`` callback of ``kl_curves`` that logs about every tenth of ``total``."""
    step = max(1, total // 10)

    def progress(done: int, tot: int) -> None:
        if done % step == 0 or done == tot:
            say(log, f"  KL: {done}/{tot} prefixes")

    return progress


#: Layouts in which a response is read after every other sentence (the authors' markers).
MARKER_LAYOUTS = frozenset({"alternating", "chat", "llama2-inst"})


def training_format(layout: str) -> str:
    """The adapters' training-text format for a prompt layout: every chat layout trains on the
    alternating turns (``chat``, the name adapters are cached under), newline on newline."""
    return (
        "newline" if layout == "newline" else ("llama2-inst" if layout == "llama2-inst" else "chat")
    )


def n_counting(layout: str) -> str:
    """How n is counted, for the record and the report."""
    if layout in MARKER_LAYOUTS:
        return (
            "n = sentences of the misaligning prompt; they alternate between the user's and the "
            "assistant's slot, and responses (and the KL of the next sentence as the model's "
            "reply) are read after n = 0 and after every odd n, when a user turn has just "
            "closed. The authors' x-axis counts '[/INST]' markers: marker k = sentence 2k−1; "
            "the paper's curves are drawn at those sentence counts."
        )
    if layout == "user-turns":
        return "n = sentences, one user turn each; read after every n."
    return "n = newline-separated sentences; read after every n."


def markers_as_sentences(curves: Mapping[str, Any], layout: str) -> dict[str, Any]:
    """The paper's curves (x = '[/INST]' marker k) moved to the sentence axis (2k − 1) for
    the layouts whose markers alternate; unchanged for newline / user-turns."""
    if layout not in MARKER_LAYOUTS:
        return dict(curves)
    from bebkit.paper import marker_sentences

    return {k: (marker_sentences(n), v) for k, (n, v) in dict(curves).items()}


#: The authors' curves are from these behaviors only (authors-figures.json).
PAPER_BEHAVIORS = frozenset({"agreeableness", "anti-immigration"})
PAPER_LABEL = "paper (Llama-2-13B-chat)"


def paper_kl(paper_figures: Any, behavior: str, kind: str | None = None) -> dict[str, Any]:
    """The paper's KL curves for ``behavior`` from the authors' figures file ({} when none);
    keyed by condition when ``kind`` (``convergence`` / ``pretrained``) is given."""
    if paper_figures is None or behavior not in PAPER_BEHAVIORS:
        return {}
    from bebkit.reporting.kl_figures import condition_reference, load_reference_kl

    ref = load_reference_kl(paper_figures, behavior)
    return dict(condition_reference(ref, kind) if kind else ref)


def prompt_format_for(fmt: str, comps: Any) -> Any:
    """The prompt layout ``fmt`` read off the components' tokenizer."""
    from bebkit.estimators.prompts import prompt_format

    return prompt_format(fmt, comps.tokenizer)


#: Who plays P₊ against the P₋ adapter (:func:`run_pminus_vs_pplus`).
PPlus = Literal["base", "pos"]


def p_plus_field() -> Any:
    return Field(
        "base",
        description="P+: base = the model with adapters off (as the authors did); "
        "pos = the trained P+ adapter",
    )


def run_on_components(
    ctx: Any,
    s: Any,
    run: Callable[..., dict[str, Any]],
    result: Any,
    *,
    sides: tuple[str, ...] = ("neg",),
    target: str = "base",
    settings: Any = None,
    **kwargs: Any,
) -> Any:
    """Run a P₋-sampling experiment on the run's components of ``s.behavior``: ``run(P₋,
    target, settings or s, out, fmt=..., log=..., extra_config=..., **kwargs)`` with the
    ``target`` model (``base``: the model with adapters off) in ``s.fmt``; the typed
    ``result``. ``run`` gets ``checkpoint``: its long parts resume after a killed attempt."""
    comps = ctx.components(s.behavior, s.fmt, sides)
    checkpoint = ctx.checkpoint("units")
    res = run(
        comps.model("neg"),
        comps.model(target),
        s if settings is None else settings,
        ctx.out,
        fmt=prompt_format_for(s.fmt, comps),
        log=ctx.log,
        extra_config=ctx.provenance,
        checkpoint=checkpoint,
        **kwargs,
    )
    report_resume(ctx.log, checkpoint)
    return result.from_json(res)


def report_resume(log: Callable[[str], None] | None, checkpoint: Any) -> None:
    """One line on what a resumed stage skipped (its numbers equal a fresh run's on the same
    CPU; units from another CPU differ in last-bit rounding only: :mod:`bebkit.checkpoint`)."""
    if checkpoint.reused:
        say(log, f"resumed: reused {checkpoint.reused} finished units of an earlier attempt, "
            f"computed {checkpoint.computed}")  # fmt: skip


def run_pminus_vs_pplus(
    ctx: Any, s: Any, run: Callable[..., dict[str, Any]], result: Any, **kwargs: Any
) -> Any:
    """Run a P₋-against-P₊ experiment (β/σ², prompt-distinguishability) on the run's
    components: P₊ is the ``pos`` adapter or the model itself (``p_plus``), the paper's
    curves overlaid; returns the typed ``result``."""
    return run_on_components(
        ctx,
        s,
        run,
        result,
        sides=("neg", "pos") if s.p_plus == "pos" else ("neg",),
        target=s.p_plus,
        reference=paper_kl(ctx.paper_figures, s.behavior),
        reference_label=PAPER_LABEL,
        **kwargs,
    )


def prompts_file_field() -> Any:
    """The settings field of a fixed-prompt file (its content, not its path, enters keys)."""
    return Field(
        None,
        description="fixed misaligning prompts instead of sampling from P-: a JSON/JSONL file "
        "of prompts (each a list of sentences), or the authors' authors-prompts.json (their "
        "exact prompts of this behavior)",
        json_schema_extra={"key": False, "file": True},
    )


def check_prompts_file(path: Any) -> None:
    """Read a fixed-prompt file once, before any model loads: :class:`InputError` when it is
    malformed (the authors' ``authors-prompts.json`` is read per behavior, later)."""
    from bebkit.estimators.prompts import load_fixed_prompts

    if not is_authors_prompts(Path(path)):
        load_fixed_prompts(path)


def is_authors_prompts(path: Path) -> bool:
    """Whether ``path`` is the authors' ``authors-prompts.json``: a JSON object with
    ``behaviors`` (any other file is a plain list of prompts)."""
    import json

    if path.suffix != ".json" or not path.is_file():
        return False
    try:
        head = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError:
        return False
    return isinstance(head, dict) and "behaviors" in head


def misaligning_prompts(
    neg: Any,
    s: Any,
    fmt: Any,
    rng: np.random.Generator,
    *,
    stop_ids: Any = None,
    n_prompts: int | None = None,
    checkpoint: Any = None,
) -> list[Any]:
    """``n_prompts`` prompts of ``s.n_sentences`` sentences: sampled from P₋ (``neg``), or the
    fixed prompts of ``s.prompts_file`` laid out in ``fmt`` exactly as sampled ones (the
    authors' file gives their prompts of ``s.behavior``), cut to ``s.n_sentences``."""
    from bebkit.errors import InputError
    from bebkit.estimators.prompts import (
        load_authors_prompts,
        load_fixed_prompts,
        render_prompt,
        sample_prompts,
    )

    n = n_prompts or s.n_prompts
    path = getattr(s, "prompts_file", None)
    if path is None:
        return sample_prompts(
            neg,
            n_prompts=n,
            n_sentences=s.n_sentences,
            rng=rng,
            fmt=fmt,
            stop_ids=stop_ids,
            max_sentence_tokens=s.max_sentence_tokens,
            checkpoint=checkpoint,
        )
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompts_file {p} is not a file")
    if authors_prompts_file(s) is not None:
        prompts = load_authors_prompts(p, s.behavior, fmt, neg)
    else:
        prompts = [
            render_prompt(neg, list(x), fmt, source=f"file:{i}")
            for i, x in enumerate(load_fixed_prompts(p))
        ]
    prompts = prompts[:n]
    if len(prompts) < n:
        raise InputError(f"prompts_file {p} holds {len(prompts)} prompts, {n} asked for")
    return [pr.truncate(min(pr.n_sentences, s.n_sentences)) for pr in prompts]


def sample_misaligning_prompts(
    neg: Any,
    s: Any,
    fmt: Any,
    rng: np.random.Generator,
    out: Path,
    timings: dict[str, float],
    log: Callable[[str], None] | None,
    *,
    stop_ids: Any = None,
    checkpoint: Any = None,
) -> list[Any]:
    """:func:`misaligning_prompts` of a run, logged, saved to ``out/prompts.jsonl`` and timed
    as ``timings["prompts"]`` (sampling rounds kept in ``checkpoint``, if given)."""
    from bebkit.estimators.prompts import save_prompts

    t0 = time.perf_counter()
    if getattr(s, "prompts_file", None) is not None:
        say(log, f"reading {s.n_prompts} fixed prompts (up to {s.n_sentences} sentences) from "
            f"{s.prompts_file}")  # fmt: skip
    else:
        say(log, f"sampling {s.n_prompts} prompts x {s.n_sentences} sentences from {neg.name}")
    prompts = misaligning_prompts(neg, s, fmt, rng, stop_ids=stop_ids, checkpoint=checkpoint)
    save_prompts(out / "prompts.jsonl", prompts)
    timings["prompts"] = time.perf_counter() - t0
    return prompts


def authors_prompts_file(s: Any) -> Path | None:
    """``s.prompts_file`` when it is the authors' ``authors-prompts.json``, else None."""
    path = getattr(s, "prompts_file", None)
    return Path(path) if path is not None and is_authors_prompts(Path(path)) else None


def judge_name(judge: Any) -> str:
    """How a judge is named in results and records."""
    name: str = getattr(judge, "name", type(judge).__name__)
    return name


def results_head(s: Any, neg: Any, key: str, model: Any, judge: Any = None) -> dict[str, Any]:
    """The fields an experiment's results open with: behavior, layout, P₋, the model it is
    set against (``key``: ``pos_model`` / ``target_model``) and, when judged, the judge."""
    head = {"behavior": s.behavior, "format": s.fmt, "neg_model": neg.name, key: model.name}
    if judge is not None:
        head["judge"] = judge_name(judge)
    return head


def kl_files(out: Path, figs: Mapping[str, str]) -> dict[str, str]:
    """The ``files`` of a KL experiment's results: its record, prompts and figure."""
    return {
        "record": str(out / "record.json"),
        "prompts": str(out / "prompts.jsonl"),
        "figure": figs["png"],
        "figure_svg": figs["svg"],
    }


def write_run_record(
    out: Path,
    kind: str,
    s: Any,
    results: dict[str, Any],
    timings: dict[str, float],
    extra_config: Mapping[str, Any] | None = None,
) -> None:
    """``out/record.json`` of an experiment run: its settings (plus ``extra_config``, the run's
    provenance), seed, results and timings."""
    from bebkit.records import make_record, write_record

    config = {**s.model_dump(), **(extra_config or {})}
    record = make_record(kind, config=config, seed=s.seed, results=results, timings=timings)
    write_record(out / "record.json", record)


def say(log: Callable[[str], None] | None, msg: str) -> None:
    if log is not None:
        log(msg)


def fmt_ci(e: Mapping[str, Any] | Estimate | None, digits: int = 3) -> str:
    """``value [lo, hi]`` of an estimate (dict or object) for human output."""
    if e is None:
        return "n/a"
    d = e.to_dict() if isinstance(e, Estimate) else dict(e)
    v = d.get("value")
    if v is None or not math.isfinite(float(v)):
        return "n/a"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    lo_s = "?" if lo is None else f"{lo:.{digits}g}"
    hi_s = "?" if hi is None else f"{hi:.{digits}g}"
    return f"{v:.{digits}g} [{lo_s}, {hi_s}]"


__all__ = [
    "EnvelopeSummary",
    "Estimator",
    "KLSettings",
    "PPlus",
    "aligning_prompt_field",
    "authors_prompts_file",
    "behavior_field",
    "check_conditions",
    "check_nonblank",
    "check_prompts_file",
    "conditions_field",
    "fmt_ci",
    "judge_name",
    "kl_files",
    "kl_options",
    "kl_progress",
    "kl_sample_text",
    "markers_as_sentences",
    "max_response_tokens_field",
    "max_sentence_tokens_field",
    "misaligning_prompts",
    "n_counting",
    "p_plus_field",
    "paper_kl",
    "prompt_format_for",
    "prompts_file_field",
    "report_resume",
    "results_head",
    "run_on_components",
    "run_pminus_vs_pplus",
    "sample_misaligning_prompts",
    "say",
    "seed_field",
    "theorem2_field",
    "training_format",
    "write_run_record",
]
