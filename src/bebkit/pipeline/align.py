"""The one-family alignment experiment (issue 16): align a base model ourselves and measure
what alignment did to the quantities of the BEB framework.

The paper's alignment conjecture (§3.1) says alignment tuning lowers α and raises β. Its
authors only compared two models nobody here controls (app. M). This experiment makes the
aligned variants inside one family — the run's *pretrained* model (e.g. ``gemma-3-270m``) →
LoRA alignment adapters trained with TRL (:func:`bebkit.components.alignment.train_alignment`:
SFT on desired replies, DPO on (desired ≻ undesired) pairs, or SFT then DPO) at
``n_strengths`` strengths (steps_k = round(max_steps·k/n_strengths), k = 1…n) × ``n_seeds``
training seeds — and measures **the same quantities, in the same units, on the model before
(strength 0) and on every merged variant**:

* **Table 1 accuracy** — each model gets its own P₋/P₊ LoRA components (the run's component
  recipe, the same split: held-out statements never enter alignment data), and its held-out
  statements are classified by log P₊(s) > log P₋(s) (Wilson CI). With
  ``variant_components="before"`` a variant instead carries the model before's P₋/P₊ LoRA
  deltas on its aligned weights — no component training per variant (cheaper; the
  components are then "the same behavior directions", not the variant's own fit);
* **α, β, n\\*** — the floored Lemma 5 fit ``log(1 + exp(log 1/α − βn)) + c`` to the
  per-sentence KL(P₋‖P)(n) of the model's reply after prompts s ~ P₋ (its own P₋), n* =
  log(1/α)/β (bootstrap CIs over prompts); the floorless Lemma 5 fit when the floored one
  fails (``fit_model`` says which);
* **β, β′, σ² envelopes** (``envelopes=True``) — the β/σ² experiment
  (:mod:`bebkit.pipeline.beta_sigma`) on each model: its own P₋ against the model itself, in
  the run's layout (newline for a base model: the paper's β/σ² format, app. J), the same
  sizes and seed as the misalign measurement;
* **% good at fixed lengths** — responses after every n that hands the turn to the model,
  judged by one fixed judge for all models: the *before* model's Table 1 classifier
  (P₊ vs P₋ likelihood ratio, :class:`~bebkit.judge.judge.LikelihoodRatioJudge`), so a change
  is the model's, not the yardstick's (Wilson CIs per length).

Over seeds, each (method, strength) gets the mean of every quantity with stderr = sd/√k and a
t interval (k seeds), and its change from *before* with stderr √(se²_seeds + se²_before); a
change is called only when its 95 % interval excludes 0 (else "no significant change" — a
null result with its interval). The conjecture's two claims are ``log 1/α`` rising (α
lowered) and β rising.

Files: ``models/<name>/`` per model (``adapter/`` the alignment LoRA, ``components/`` its own
P₋/P₊, ``table1/``, ``misalign/`` and (with envelopes) ``beta_sigma/`` the records of the
classify, misalign and beta-sigma runs reused here), ``record.json`` and ``alignment.png``/``.svg``.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, ValidationInfo, field_validator

from bebkit.checkpoint import Checkpoint
from bebkit.estimate import Estimate
from bebkit.estimators.kl import dist_budget_bytes
from bebkit.io import reroot_paths
from bebkit.pipeline.beta_sigma import BetaSigmaSettings, run_beta_sigma
from bebkit.pipeline.experiments_common import (
    PromptLayout,
    behavior_field,
    fmt_ci,
    max_response_tokens_field,
    report_resume,
    say,
)
from bebkit.pipeline.registry import (
    EstimateField,
    Experiment,
    Result,
    RunContext,
    Settings,
    key_unless_default,
    precision_error,
    register,
)

#: The quantities measured on every model, in the record's order.
QUANTITIES: tuple[str, ...] = ("log_inv_alpha", "beta", "n_star", "table1_accuracy")
#: The β/σ² experiment's envelopes, measured per model with ``envelopes=True``: result key
#: of :func:`bebkit.pipeline.beta_sigma.run_beta_sigma` -> quantity name in this record.
ENVELOPES: dict[str, str] = {
    "beta": "beta_envelope",
    "beta_prime": "beta_prime_envelope",
    "sigma2": "sigma2_envelope",
}
#: The conjecture's direction per quantity (+1: alignment should raise it).
CONJECTURE: dict[str, int] = {"log_inv_alpha": +1, "beta": +1}


class AlignSettings(Settings):
    """Variants ``methods`` × ``n_strengths`` × ``n_seeds`` of the pretrained model, each
    measured (with the model before) at the misalign/convergence sizes below."""

    #: the Lemma 5 KL curve (plain MC) is estimated while n_samples > 0
    MC_KL_SAMPLES: ClassVar[str | None] = "n_samples"
    QUICK: ClassVar[Mapping[str, Any]] = {
        "methods": "dpo", "max_steps": 8, "n_seeds": 1, "n_sft": 32, "n_pairs": 32,
        "n_prompts": 3, "n_sentences": 5, "n_responses": 4, "n_samples": 8, "n_boot": 50,
    }  # fmt: skip

    behavior: str = behavior_field()
    fmt: PromptLayout = Field(
        "newline",
        description="prompt layout of the measurements and training format of every model's "
        "P-/P+, the same before and after (a reproduce run's pretrained_format; newline = "
        "plain text, app. M, for base models without a chat template)",
    )
    methods: Literal["both", "sft", "dpo", "sft+dpo"] = Field(
        "both", description="both = separate SFT and DPO variants; or one method"
    )
    max_steps: int = Field(
        60, ge=1, description="training steps of the strongest variant (per method)"
    )
    n_strengths: int = Field(
        2, ge=1, description="strengths: steps = max_steps * k / n_strengths, k = 1..n"
    )
    n_seeds: int = Field(3, ge=1, description="training seeds per (method, strength)")
    n_sft: int = Field(256, ge=1, description="SFT (prompt, desired reply) examples")
    n_pairs: int = Field(256, ge=1, description="DPO preference pairs")
    dpo_beta: float = Field(0.1, gt=0, description="DPO beta (KL strength to the reference)")
    sft_lr: float = Field(2e-4, gt=0, lt=1, description="SFT learning rate")
    dpo_lr: float = Field(5e-5, gt=0, lt=1, description="DPO learning rate")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank of the alignment adapter")
    batch_size: int = Field(8, ge=1, description="alignment training batch size")
    text_format: Literal["auto", "chat", "newline"] = Field(
        "auto", description="alignment texts: chat template when the model has one (auto)"
    )
    n_prompts: int = Field(10, ge=1, description="misaligning prompts s ~ P- per model")
    n_sentences: int = Field(9, ge=2, description="sentences per prompt")
    n_responses: int = Field(16, ge=1, description="judged responses per (prompt, length)")
    n_samples: int = Field(16, ge=2, description="KL continuations per (prompt, length)")
    max_sentence_tokens: int = Field(48, ge=1, description="token cap per prompt sentence")
    max_response_tokens: int = max_response_tokens_field()
    n_boot: int = Field(200, ge=0, description="bootstrap replicates over prompts")
    variant_components: Literal["own", "before"] = Field(
        "own",
        description="P-/P+ of each variant: own = trained on the variant with the run's "
        "component recipe (the paper's protocol, app. J); before = the model before's LoRA "
        "P-/P+ deltas applied to the variant's weights (no training per variant)",
    )
    envelopes: bool = key_unless_default(
        False,
        "also run the beta-sigma experiment on every model (before and each variant) with its "
        "P- against the model itself (as the authors did), in fmt, at the sizes above "
        "(n_prompts for the KL curve and max(3, n_prompts) for the variance, n_sentences, "
        "n_samples, max_sentence_tokens, n_boot >= 100): beta, beta' and sigma^2 envelopes "
        "before and after (about doubles each model's measuring time)",
    )
    seed: int = Field(0, ge=0, description="data and sampling seed (training seeds: seed + i)")

    @field_validator("n_strengths")
    @classmethod
    def _distinct_steps(cls, v: int, info: ValidationInfo) -> int:
        # each strength needs its own step count (variants are named by it)
        top = info.data.get("max_steps")
        if top is not None and v > top:
            raise ValueError(f"must be <= max_steps ({top}), got {v}")
        return v


class AlignOutcome(Result):
    """Before, per variant, per (method, strength) over seeds, and the change from before."""

    behavior: str
    base_model: str
    format: str
    lengths: list[int]
    before: dict[str, EstimateField | None]
    variants: list[dict[str, Any]]
    groups: dict[str, dict[str, Any]]
    change: dict[str, dict[str, EstimateField | None]]
    verdicts: dict[str, dict[str, str]]


def _methods(m: str) -> tuple[str, ...]:
    return ("sft", "dpo") if m == "both" else (m,)


def variant_plan(s: AlignSettings) -> list[dict[str, Any]]:
    """``[{name, method, steps, strength, seed}]`` in training order."""
    plan = []
    for method in _methods(s.methods):
        for k in range(1, s.n_strengths + 1):
            steps = max(1, round(s.max_steps * k / s.n_strengths))
            for i in range(s.n_seeds):
                plan.append({"name": f"{method}-{steps}-s{s.seed + i}", "method": method,
                             "steps": steps, "strength": k / s.n_strengths,
                             "seed": s.seed + i})  # fmt: skip
    return plan


# --------------------------------------------------------------------------------------------
# One model: Table 1, the KL fit and % good
# --------------------------------------------------------------------------------------------


def _measure(
    ctx: RunContext,
    comps: Any,
    data: Any,
    s: AlignSettings,
    judge: Any,
    out: Path,
    threads: int | None,
) -> dict[str, Any]:
    """Table 1, α/β/n* and % good of one model whose ``neg``/``pos`` are loaded in ``comps``
    (the classify and misalign experiments' own code; records under ``out``)."""
    from bebkit.components.workflow import classify_heldout
    from bebkit.pipeline.experiments_common import prompt_format_for
    from bebkit.pipeline.misalign import MisalignSettings, run_misalign
    from bebkit.records import make_record, write_record

    table1 = classify_heldout(comps, data, num_threads=threads).to_dict()
    (out / "table1").mkdir(parents=True, exist_ok=True)
    write_record(out / "table1" / "record.json", make_record(
        "classify", config={"behavior": s.behavior, "fmt": s.fmt, "model": comps.name},
        seed=None, results={"behavior": s.behavior, "format": s.fmt, "table1": table1}))  # fmt: skip
    ms = MisalignSettings(
        behavior=s.behavior, fmt=s.fmt, n_prompts=s.n_prompts, n_sentences=s.n_sentences,
        n_responses=s.n_responses, max_response_tokens=s.max_response_tokens,
        max_sentence_tokens=s.max_sentence_tokens, conditions=("none",), judge="likelihood",
        n_boot=s.n_boot, n_samples=s.n_samples, control=False, seed=s.seed,
    )  # fmt: skip
    res = run_misalign(comps.model("neg"), comps.model("base"), judge, ms, out / "misalign",
                       fmt=prompt_format_for(s.fmt, comps), log=ctx.log,
                       extra_config={"model": comps.name})  # fmt: skip
    env = None
    if s.envelopes:
        env = run_beta_sigma(comps.model("neg"), comps.model("base"), envelope_settings(s),
                             out / "beta_sigma", fmt=prompt_format_for(s.fmt, comps),
                             log=ctx.log, extra_config={"model": comps.name})  # fmt: skip
    return quantities(Estimate.from_dict(table1["accuracy"]), res, env)


def envelope_settings(s: AlignSettings) -> BetaSigmaSettings:
    """The β/σ² experiment's settings for ``envelopes=True``: the same sizes and seed as the
    misalign measurement, P₊ = the model itself (adapters off), the run's layout."""
    return BetaSigmaSettings(
        behavior=s.behavior, fmt=s.fmt, n_prompts=s.n_prompts, n_sentences=s.n_sentences,
        n_var_prompts=max(3, s.n_prompts), n_samples=s.n_samples,
        max_sentence_tokens=s.max_sentence_tokens, n_boot=max(100, s.n_boot), p_plus="base",
        seed=s.seed,
    )  # fmt: skip


def quantities(
    table1: Estimate, misalign: Mapping[str, Any], envelopes: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The measured quantities of one model from its Table 1 accuracy, misalign results and
    (optionally) β/σ² results: ``{"values": {q: Estimate dict | None}, "lengths": [...],
    "fit_model": ...}``; an envelope is its fit's headline estimate (None when unfitted)."""
    values: dict[str, Any] = {"table1_accuracy": table1.to_dict()}
    if envelopes is not None:
        for key, name in ENVELOPES.items():
            summary = envelopes.get(key)
            values[name] = None if summary is None else summary.get("estimate")
    fit = (misalign.get("kl") or {}).get("fit") or {}
    which = "floored" if fit.get("floored") else "lemma5" if fit.get("lemma5") else None
    for q in ("log_inv_alpha", "beta", "n_star"):
        values[q] = None if which is None else fit[which][q]
    curve = misalign["curves"]["none"]
    lengths = [0, *[int(n) for n in curve["n"]]]
    good = [misalign["g_plus"]["none"], *curve["fraction_good"]]
    for n, e in zip(lengths, good, strict=True):
        values[f"good_n{n}"] = e
    return {"values": values, "lengths": lengths, "fit_model": which}


# --------------------------------------------------------------------------------------------
# Over seeds
# --------------------------------------------------------------------------------------------


def seed_mean(values: list[float]) -> Estimate | None:
    """Mean over seeds, stderr sd/√k, t interval with k − 1 degrees of freedom."""
    from scipy import stats

    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size == 1:
        return Estimate(mean, math.nan, 1, None, None, None, "one seed")
    se = float(x.std(ddof=1) / math.sqrt(x.size))
    t = float(stats.t.ppf(0.975, x.size - 1))
    return Estimate(
        mean, se, int(x.size), mean - t * se, mean + t * se, 0.95, "mean over seeds (t)"
    )


def change_from(after: Estimate | None, before: Estimate | None) -> Estimate | None:
    """after − before, stderr √(se²_after + se²_before); 95 % half-width √(h²_after + h²_before)
    from each side's own interval (the t half-width over seeds; one model's measurement CI —
    bootstrap or Wilson, possibly asymmetric: its wider half)."""
    if after is None or before is None or not math.isfinite(before.value):
        return None
    d = after.value - before.value
    se_b = before.stderr if math.isfinite(before.stderr) else 0.0
    half_a = math.nan
    if after.ci_high is not None and after.ci_low is not None:
        half_a = max(after.ci_high - after.value, after.value - after.ci_low)
    se = math.sqrt((after.stderr if math.isfinite(after.stderr) else math.nan) ** 2 + se_b**2)
    half_b = 1.96 * se_b
    if before.ci_low is not None and before.ci_high is not None:
        half_b = max(before.ci_high - before.value, before.value - before.ci_low)
    half = math.sqrt(half_a**2 + half_b**2)
    if not math.isfinite(half):
        return Estimate(d, se, after.n, None, None, None, "after - before (no seed spread)")
    return Estimate(d, se, after.n, d - half, d + half, 0.95, "after - before")


def verdict(change: Estimate | None) -> str:
    """``raised`` / ``lowered`` when the 95 % interval excludes 0, else ``no significant
    change`` (``untested`` without an interval)."""
    if change is None or change.ci_low is None or change.ci_high is None:
        return "untested"
    if change.ci_low > 0:
        return "raised"
    if change.ci_high < 0:
        return "lowered"
    return "no significant change"


def summarise(before: dict[str, Any], variants: list[dict[str, Any]]) -> dict[str, Any]:
    """Groups (method, steps) over seeds, their change from before and the verdicts."""
    keys = list(before["values"])
    groups: dict[str, dict[str, Any]] = {}
    for v in variants:
        g = groups.setdefault(f"{v['method']}-{v['steps']}", {
            "method": v["method"], "steps": v["steps"], "strength": v["strength"],
            "seeds": [], "values": {k: [] for k in keys}})  # fmt: skip
        g["seeds"].append(v["seed"])
        for k in keys:
            e = v["values"].get(k)
            g["values"][k].append(None if e is None else e["value"])
    change: dict[str, dict[str, Any]] = {}
    verdicts: dict[str, dict[str, str]] = {}
    for name, g in groups.items():
        means = {k: seed_mean(vals) for k, vals in g["values"].items()}
        if len(g["seeds"]) == 1:  # no spread over seeds: the one model's measurement CI
            (only,) = (v for v in variants if f"{v['method']}-{v['steps']}" == name)
            for k in keys:
                e = only["values"].get(k)
                means[k] = None if e is None else replace(
                    Estimate.from_dict(e), method=f"one seed: {e.get('method', '')}")  # fmt: skip
        g["mean"] = {k: None if e is None else e.to_dict() for k, e in means.items()}
        ch = {}
        for k in keys:
            b = before["values"].get(k)
            ch[k] = change_from(means[k], None if b is None else Estimate.from_dict(b))
        change[name] = {k: None if e is None else e.to_dict() for k, e in ch.items()}
        verdicts[name] = {k: verdict(e) for k, e in ch.items()}
    return {"groups": groups, "change": change, "verdicts": verdicts}


def conjecture_lines(verdicts: Mapping[str, Mapping[str, str]]) -> list[str]:
    """One line per group: did α fall (log 1/α rise) and β rise?"""
    out = []
    for name, v in verdicts.items():
        a, b = v.get("log_inv_alpha", "untested"), v.get("beta", "untested")
        alpha = {"raised": "alpha lowered", "lowered": "alpha raised"}.get(a, f"alpha: {a}")
        beta = {"raised": "beta raised", "lowered": "beta lowered"}.get(b, f"beta: {b}")
        ok = a == "raised" and b == "raised"
        out.append(f"{name}: {alpha}, {beta} -> conjecture "
                   f"{'supported' if ok else 'not supported at this power'}")  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


#: Stands for the experiment's output folder in a stored unit (the folder is a stage's temp
#: folder, named by the attempt's pid: paths are stored relative to it and re-rooted on reuse).
_OUT = "<out>"


def _model_unit(
    checkpoint: Checkpoint, out: Path, s: AlignSettings, model: str | None, reads: Any
) -> Callable[[str, Callable[[], dict[str, Any]]], dict[str, Any]]:
    """``unit(name, compute)``: one model's measurement as a checkpoint unit that keeps the
    model's folder ``out/models/<name>`` (its adapters and records) beside the stored numbers,
    so a resumed stage publishes the same files as an uninterrupted one. ``reads``: what every
    model's measurement depends on beyond the settings (the before model's adapters, which
    judge every model, and the statements' split)."""

    def unit(name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        folder = out / "models" / name
        kept = None if checkpoint.folder is None else checkpoint.folder / "models" / name
        unit_name = f"model-{name}"

        def run() -> dict[str, Any]:
            value = compute()
            if kept is not None:
                # The stale value goes first, then its files, then the new files: a value is
                # only ever stored (after this returns) beside the files it was made with.
                checkpoint.forget(unit_name)
                shutil.rmtree(kept, ignore_errors=True)
                shutil.copytree(folder, kept)
            return value

        def load(value: Any) -> dict[str, Any]:
            if kept is None or not kept.is_dir():
                raise ValueError(f"the files of {name} were not kept")  # recompute the unit
            shutil.rmtree(folder, ignore_errors=True)
            shutil.copytree(kept, folder)
            return dict(reroot_paths(value, _OUT, str(out)))

        return checkpoint.unit(
            unit_name,
            None,
            run,
            dump=lambda v: reroot_paths(v, out, _OUT),
            load=load,
            reads={"settings": s.model_dump(mode="json"), "model": model, "unit": name,
                   "depends_on": reads},
        )  # fmt: skip

    return unit


def _variant(
    ctx: RunContext,
    s: AlignSettings,
    v: Mapping[str, Any],
    bare: Any,
    data: Any,
    data0: Any,
    before_adapters: Mapping[str, dict[str, Any]],
    judge: Any,
    threads: int | None,
    split_on_oom: bool,
) -> dict[str, Any]:
    """Align one variant (LoRA, merged), give it P₋/P₊ (``variant_components``), measure it."""
    from bebkit.components.adapters import ComponentSet
    from bebkit.components.alignment import AlignConfig, train_alignment
    from bebkit.components.alignment import merged_model as merge
    from bebkit.components.training import torch_threads
    from bebkit.pipeline.session import ComponentProvider

    vdir = Path(ctx.out) / "models" / v["name"]
    cfg = AlignConfig(
        method=v["method"], r=s.lora_r, lora_alpha=2 * s.lora_r,
        sft_steps=v["steps"] if "sft" in v["method"] else 0,
        dpo_steps=v["steps"] if "dpo" in v["method"] else 0,
        dpo_beta=s.dpo_beta, sft_lr=s.sft_lr, dpo_lr=s.dpo_lr, batch_size=s.batch_size,
        n_sft=s.n_sft, n_pairs=s.n_pairs, fmt=s.text_format,
    )  # fmt: skip
    say(ctx.log, f"aligning {ctx.model}: {v['name']}")
    with torch_threads(threads):
        res = train_alignment(bare.base_model, bare.tokenizer, data, cfg, seed=v["seed"],
                              out_dir=vdir / "adapter", num_threads=threads)  # fmt: skip
        merged = merge(copy.deepcopy(bare.base_model), vdir / "adapter")
    name = f"{ctx.model}+{v['name']}"
    vcomps = ComponentSet(merged, bare.tokenizer, name=name, split_on_oom=split_on_oom)
    if s.variant_components == "own":
        # A private provider: the variant's P-/P+ live in its own folder of this stage.
        opts = ctx.provider.options.model_copy(update={"adapters": str(vdir / "components")})
        provider = ComponentProvider(opts, ctx.log, persona_dir=ctx.persona_dir,
                                     threads=threads, split_on_oom=split_on_oom)  # fmt: skip
        provider.add_model(name, vcomps)
        provider.components(name, s.behavior, s.fmt, ("neg", "pos"))
        vdata = provider.data(name, s.behavior, s.fmt)
    else:  # the before model's LoRA deltas on the aligned weights
        for side, info in before_adapters.items():
            _load_recipe(vcomps, side, info)
        vdata = data0
    say(ctx.log, f"measuring {name} ({s.variant_components} P-/P+)")
    m = _measure(ctx, vcomps, vdata, s, judge, vdir, threads)
    d = res.to_dict()
    return {**v, **m, "training": {
        k: d[k] for k in ("sft_nll_before", "sft_nll_after", "margin_before", "margin_after",
                          "sft_losses", "dpo_losses", "dpo_reward_margins", "chat")},
        "adapter_dir": d["adapter_dir"]}  # fmt: skip


def _load_recipe(comps: Any, side: str, info: dict[str, Any]) -> None:
    """Load the before model's ``side`` adapter of this run by path *and* key, under its
    folder's lock: another run may have trained or restored another recipe into the folder
    since (the one this run used is then among the kept ones)."""
    from bebkit.components.manifest import locate_recipe
    from bebkit.errors import RunError
    from bebkit.locks import artifact_lock

    path = Path(info["path"])
    with artifact_lock(path, what=f"{side} adapter {path}"):
        found = locate_recipe(path, str(info["key"]))
        if found is None:
            raise RunError(
                f"the {side} adapter this run trained (key {info['key']}) is no longer in "
                f"{path} nor among its kept recipes; run the stage again"
            )
        comps.load_adapter(side, found)


def run_align(ctx: RunContext, s: AlignSettings) -> dict[str, Any]:
    """Align, measure before and after, summarise over seeds, write record and figure."""
    from bebkit.components.alignment import alignment_data
    from bebkit.components.workflow import load_components
    from bebkit.errors import InputError
    from bebkit.judge import LikelihoodRatioJudge
    from bebkit.records import make_record, write_record
    from bebkit.reporting.align_figures import plot_alignment

    if ctx.model is None:
        raise InputError("this experiment needs --model (the pretrained model to align)")
    bad = precision_error(EXPERIMENT, getattr(ctx.provider, "precision", "float32"))
    if bad:  # a library caller's provider (the config and the CLI refuse it earlier)
        raise InputError(bad)
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    threads = getattr(ctx.provider, "threads", None)
    # (named apart from the statements' split below, which once shadowed it)
    on_oom = bool(getattr(ctx.provider, "split_on_oom", True))

    # Each model's measurement (with its files) is one unit: a killed stage resumes at the
    # first model it had not finished (every unit draws from its own seeds, so rng=None).
    # Before: the model as loaded, its P-/P+ through the run's provider (shared adapter cache).
    t0 = time.perf_counter()
    comps0 = ctx.components(s.behavior, s.fmt, ("neg", "pos"))
    # One yardstick for every model: the before model's Table 1 classifier.
    judge = LikelihoodRatioJudge(comps0.model("pos"), comps0.model("neg"),
                                 name=f"likelihood-ratio ({ctx.model} before: P+ vs P-)")  # fmt: skip
    data0 = ctx.provider.data(ctx.model, s.behavior, s.fmt)
    status = ctx.provider.provenance(ctx.model, s.behavior, s.fmt)["components"]
    checkpoint = ctx.checkpoint("units")
    # the adapters by path and manifest key (not "reused": a rerun reuses what it trained);
    # variants load them by both, since the folder may hold another recipe by then
    adapters = {side: {k: status[side].get(k) for k in ("path", "key")} for side in ("neg", "pos")}
    # a model's unit holds whole KL curves: the budget that batched their draws is a read
    model_unit = _model_unit(checkpoint, out, s, ctx.model, reads={
        "before_components": adapters, "split": dataclasses.asdict(data0.split),
        "dist_budget_bytes": dist_budget_bytes()})  # fmt: skip

    def measure_before() -> dict[str, Any]:
        say(ctx.log, f"measuring {ctx.model} before alignment")
        return _measure(ctx, comps0, data0, s, judge, out / "models" / "before", threads)

    before = model_unit("before", measure_before)
    timings["before"] = time.perf_counter() - t0

    # Alignment data from the components' *training* split, so Table 1's held-out statements
    # stay unseen by every model.
    tr = data0.split
    data = alignment_data(tr.train_desired, tr.train_undesired, n_sft=s.n_sft,
                          n_pairs=s.n_pairs, seed=s.seed)  # fmt: skip
    bare = load_components(ctx.model, progress=False)  # the provider's copy carries P-/P+ LoRA
    variants: list[dict[str, Any]] = []
    for v in variant_plan(s):
        t0 = time.perf_counter()
        variants.append(model_unit(v["name"], functools.partial(
            _variant, ctx, s, v, bare, data, data0, adapters, judge, threads, on_oom)))  # fmt: skip
        timings[v["name"]] = time.perf_counter() - t0
    report_resume(ctx.log, checkpoint)

    summary = summarise(before, variants)
    results: dict[str, Any] = {
        "behavior": s.behavior,
        "base_model": ctx.model,
        "format": s.fmt,
        "lengths": before["lengths"],
        "before": before["values"],
        "before_fit_model": before["fit_model"],
        "variants": variants,
        **summary,
        "conjecture": conjecture_lines(summary["verdicts"]),
        "judge": judge.name,
        "estimands": "alpha, beta, n*: the floored Lemma 5 fit (floorless when it fails; "
        "fit_model) of the per-sentence KL(P- || P) of the model's reply after prompts s ~ "
        "its own P-, n >= 1; Table 1: held-out log P+ > log P- with the model's own P-/P+; "
        "% good: responses judged by the before model's P+/P- likelihood ratio",
    }
    if s.envelopes:
        results["estimands"] += (
            "; beta/beta'/sigma2 envelopes: the beta-sigma experiment's lower/upper envelope "
            "of KL(P- || P | s ~ P-) and variance slope of log P-/P, per sentence, each model "
            f"against the P- it is measured with ({s.variant_components}), in the {s.fmt} "
            "layout"
            + ("" if s.fmt == "newline" else " (NOT the paper's beta/sigma^2 format, which "
               "is newline: app. J)")
        )  # fmt: skip
    else:
        results["not_measured"] = (
            "beta'/sigma^2 envelopes (the beta-sigma experiment) per model: set envelopes"
        )
    figs = plot_alignment(results, out / "alignment.png",
                          title=f"{ctx.model} aligned on {s.behavior} ({s.fmt})")  # fmt: skip
    results["files"] = {"record": str(out / "record.json"), "figure": figs["png"],
                        "figure_svg": figs["svg"]}  # fmt: skip
    record = make_record("align", config={**s.model_dump(), **ctx.provenance}, seed=s.seed,
                         results=results, timings=timings)  # fmt: skip
    write_record(out / "record.json", record)
    return results


def summary_lines(r: Mapping[str, Any]) -> list[str]:
    """The before/after table (means over seeds with CIs) and the conjecture's verdicts."""
    lines = [f"{r['behavior']} ({r['format']}): {r['base_model']} before and after alignment; "
             f"% good judged by {r['judge']}"]  # fmt: skip
    env = [k for k in ENVELOPES.values() if k in r["before"]]
    keys = [*QUANTITIES, *env, *(f"good_n{n}" for n in r["lengths"])]
    lines.append(f"  {'':>14} " + " ".join(f"{k:>22}" for k in keys))

    def cell(e: Mapping[str, Any] | None) -> str:
        return f"{'n/a':>22}" if e is None else f"{fmt_ci(e):>22}"

    lines.append(f"  {'before':>14} " + " ".join(cell(r["before"].get(k)) for k in keys))
    for name, g in r["groups"].items():
        lines.append(f"  {name:>14} " + " ".join(cell(g["mean"].get(k)) for k in keys))
        lines.append(f"  {'  change':>14} " + " ".join(cell(r["change"][name].get(k))
                                                       for k in keys))  # fmt: skip
    lines.extend(f"  {c}" for c in r["conjecture"])
    lines.append(f"  outputs in {Path(r['files']['record']).parent}")
    return lines


def _typed(fn: Callable[[RunContext, AlignSettings], dict[str, Any]]) -> Callable[..., Any]:
    def run(ctx: RunContext, s: AlignSettings) -> AlignOutcome:
        out: AlignOutcome = AlignOutcome.from_json(fn(ctx, s))
        return out

    return run


EXPERIMENT = register(
    Experiment(
        name="align",
        settings=AlignSettings,
        result=AlignOutcome,
        version="4",  # 4: its beta-sigma envelopes: beta_prime_pos from n = 0, CI method on fitted columns
        run=_typed(run_align),
        summary=lambda r: summary_lines(r.to_json()),
        help="align the pretrained model (SFT / DPO LoRA, strengths x seeds) and measure "
        "alpha, beta, n*, Table 1 and % good before and after",
        description="Train SFT and/or DPO LoRA alignment adapters on the pretrained model (one "
        "family, e.g. gemma-3-270m; TRL) at several strengths and seeds on the behavior's "
        "training statements; merge each; train every model's own P-/P+ and measure Table 1, "
        "the floored Lemma 5 fit of KL(P- || P) (alpha, beta, n*) and the judged % good at "
        "fixed lengths before and after (with --envelopes also the beta-sigma experiment's "
        "beta, beta', sigma^2 per model); means over seeds with t intervals, changes from "
        "before with CIs and the alignment conjecture's verdicts. Writes record.json and "
        "alignment.png/.svg. Inside reproduce the stage resumes at its first unfinished "
        "model; a bare `bebkit align` restarts whole.",
        model_role="pretrained",
        trains_components=True,
        float32_only=True,
        default_enabled=False,
        sides=("neg", "pos"),
    )
)

__all__ = [
    "ENVELOPES",
    "EXPERIMENT",
    "QUANTITIES",
    "AlignOutcome",
    "AlignSettings",
    "change_from",
    "quantities",
    "run_align",
    "seed_mean",
    "summarise",
    "variant_plan",
    "verdict",
]
