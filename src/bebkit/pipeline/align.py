"""The one-family alignment experiment (issue 16): align a base model ourselves and measure
what alignment did.

The paper's alignment conjecture (§3.1) says alignment tuning lowers α and raises β. This
experiment makes the aligned variants inside one model family — the run's pretrained model
(e.g. gemma-3-270m) → SFT and DPO LoRA adapters (:func:`bebkit.components.alignment.
train_alignment`) at ``n_strengths`` strengths (training steps) × ``n_seeds`` seeds, on the
behavior's statements — and records, per variant, the SFT completion NLL and the DPO
preference margin log π(desired) − log π(undesired) before and after, with the adapters saved
under the stage folder (``variants/<method>-<steps>-s<seed>/``).

**Not yet measured here** (what remains of issue 16 item 4): Table 1, β and α of each variant
before/after. They need P₋/P₊ components trained on each merged variant
(:func:`bebkit.components.alignment.merged_model`), i.e. the variants registered as models of
the component provider; the record marks them ``null`` with that reason.

**Not registered yet**: with ``sides=()`` its stage key rightly ignores the component options,
which ``tests/pipeline/test_registry.py::test_component_options_enter_exactly_the_stages_using_
components`` does not allow (it expects every stage but ``probes`` to use components); and a
registered experiment is enabled in every reproduce config with a pretrained model
(``configs/paper-smollm2.yaml``) at its default sizes. :func:`register_align` registers it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field

from bebkit.pipeline.experiments_common import say
from bebkit.pipeline.registry import Experiment, Result, RunContext, Settings, register


class AlignSettings(Settings):
    """Variants: ``methods`` × ``n_strengths`` step counts × ``n_seeds`` seeds."""

    QUICK: ClassVar[Mapping[str, Any]] = {"max_steps": 8, "n_seeds": 1, "n_sft": 32, "n_pairs": 32}

    behavior: str = Field(description="behavior name (persona file stem or 'cooperativeness')")
    methods: Literal["both", "sft", "dpo", "sft+dpo"] = Field(
        "both", description="both = separate SFT and DPO variants; or one method"
    )
    max_steps: int = Field(
        60, ge=1, description="training steps of the strongest variant (per method)"
    )
    n_strengths: int = Field(
        2, ge=1, description="strengths: steps = max_steps * k / n_strengths, k = 1..n"
    )
    n_seeds: int = Field(2, ge=1, description="training seeds per (method, strength)")
    n_sft: int = Field(256, ge=1, description="SFT (prompt, desired reply) examples")
    n_pairs: int = Field(256, ge=1, description="DPO preference pairs")
    dpo_beta: float = Field(0.1, gt=0, description="DPO beta (KL strength to the reference)")
    lora_r: int = Field(16, ge=1, le=1024, description="LoRA rank of the alignment adapter")
    batch_size: int = Field(8, ge=1, description="training batch size")
    text_format: Literal["auto", "chat", "newline"] = Field(
        "auto", description="training texts: chat template when the model has one (auto)"
    )
    seed: int = Field(0, ge=0, description="data seed (training seeds are seed + i)")


class AlignOutcome(Result):
    """Per variant: method, steps, seed, SFT NLL and DPO margin before/after."""

    behavior: str
    base_model: str
    variants: list[dict[str, Any]]


def _methods(m: str) -> tuple[str, ...]:
    return ("sft", "dpo") if m == "both" else (m,)


def run_align(ctx: RunContext, s: AlignSettings) -> dict[str, Any]:
    from bebkit.components.alignment import AlignConfig, alignment_data, train_alignment
    from bebkit.components.workflow import load_components
    from bebkit.data.behaviors import load_behavior
    from bebkit.records import make_record, write_record

    if ctx.model is None:
        from bebkit.errors import InputError

        raise InputError("this experiment needs --model")
    out = Path(ctx.out)
    out.mkdir(parents=True, exist_ok=True)
    b = load_behavior(s.behavior, ctx.persona_dir)
    data = alignment_data(b.desired, b.undesired, n_sft=s.n_sft, n_pairs=s.n_pairs, seed=s.seed)
    # A private bare copy: the provider's copy may carry P-/P+ LoRA layers.
    comps = load_components(ctx.model, progress=False)
    model, tok = comps.base_model, comps.tokenizer
    variants: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    for method in _methods(s.methods):
        for k in range(1, s.n_strengths + 1):
            steps = max(1, round(s.max_steps * k / s.n_strengths))
            for i in range(s.n_seeds):
                seed = s.seed + i
                name = f"{method}-{steps}-s{seed}"
                cfg = AlignConfig(
                    method=method,
                    r=s.lora_r,
                    lora_alpha=2 * s.lora_r,
                    sft_steps=steps if "sft" in method else 0,
                    dpo_steps=steps if "dpo" in method else 0,
                    dpo_beta=s.dpo_beta,
                    batch_size=s.batch_size,
                    n_sft=s.n_sft,
                    n_pairs=s.n_pairs,
                    fmt=s.text_format,
                )
                say(ctx.log, f"aligning {ctx.model}: {name}")
                t0 = time.perf_counter()
                res = train_alignment(model, tok, data, cfg, seed=seed,
                                      out_dir=out / "variants" / name)  # fmt: skip
                timings[name] = time.perf_counter() - t0
                d = res.to_dict()
                variants.append({
                    "name": name, "method": method, "steps": steps, "seed": seed,
                    "strength": k / s.n_strengths,
                    "sft_nll_before": d["sft_nll_before"], "sft_nll_after": d["sft_nll_after"],
                    "margin_before": d["margin_before"], "margin_after": d["margin_after"],
                    "adapter_dir": d["adapter_dir"], "chat": d["chat"],
                    "table1": None, "beta": None, "alpha": None,
                })  # fmt: skip
    results: dict[str, Any] = {
        "behavior": s.behavior,
        "base_model": ctx.model,
        "variants": variants,
        "not_measured": "Table 1, beta and alpha of each variant need P-/P+ components "
        "trained on the merged variant (not yet wired into the component provider)",
        "margin_change": _by_method(variants, "margin"),
        "nll_change": _by_method(variants, "sft_nll"),
        "files": {"record": str(out / "record.json")},
    }
    record = make_record("align", config={**s.model_dump(), **ctx.provenance}, seed=s.seed,
                         results=results, timings=timings)  # fmt: skip
    write_record(out / "record.json", record)
    return results


def _by_method(variants: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Mean after − before per (method, steps) over seeds (None where not trained)."""
    out: dict[str, Any] = {}
    for v in variants:
        a, b = v[f"{key}_after"], v[f"{key}_before"]
        if a is None or b is None:
            continue
        out.setdefault(f"{v['method']}-{v['steps']}", []).append(a - b)
    return {k: float(np.mean(x)) for k, x in out.items()}


def summary_lines(r: Mapping[str, Any]) -> list[str]:
    lines = [f"{r['behavior']}: aligned variants of {r['base_model']}"]
    for v in r["variants"]:
        m = v["margin_after"]
        n = v["sft_nll_after"]
        lines.append(
            f"  {v['name']:>16}: SFT NLL {_f(v['sft_nll_before'])} -> {_f(n)}, "
            f"DPO margin {_f(v['margin_before'])} -> {_f(m)}"
        )
    lines.append(f"  not measured yet: {r['not_measured']}")
    return lines


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


EXPERIMENT = Experiment(
    name="align",
    settings=AlignSettings,
    result=AlignOutcome,
    version="1",
    run=lambda ctx, s: AlignOutcome.from_json(run_align(ctx, s)),
    summary=lambda r: summary_lines(r.to_json()),
    help="align the pretrained model with SFT / DPO LoRA variants (strengths x seeds)",
    description="Train SFT and DPO LoRA alignment adapters on the pretrained model (one "
    "family: e.g. gemma-3-270m) at several strengths and seeds on the behavior's "
    "statements (TRL), and record the SFT NLL and DPO preference margin before/after. "
    "Table 1 / beta / alpha of each variant are not measured yet.",
    model_role="pretrained",
)


def register_align() -> Experiment:
    """Register the experiment (not yet in ``registry.EXPERIMENT_MODULES``: see the module
    docstring's last paragraph)."""
    return register(EXPERIMENT)


__all__ = ["EXPERIMENT", "AlignOutcome", "AlignSettings", "register_align", "run_align"]
