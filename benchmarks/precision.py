"""Benchmark 11: the reduced-precision inference path (bf16) against float32 on the same seeds.

:meth:`~bebkit.components.adapters.ComponentSet.inference_copy` casts the base weights and the
LoRA adapters to bf16; every log-softmax stays float32 (:mod:`bebkit.models.hf`). Two checks of
the quantities bebkit reports, each on the bundled model with the benchmark's P₋ / target:

* **KL per sentence** (what β, β′ and the convergence curves are made of):
  :func:`~bebkit.estimators.kl.kl_samples_grid` with the Rao-Blackwell terms, newline prefixes
  of the embedded behavior's statements, the same seed in both precisions (each draws from its
  own P₋). The comparison is paired by prefix — the prefixes' spread is shared by both — and
  passes when the mean difference is within the float32 estimate's own stderr over prefixes
  (the issue's "within their stderr"); the paired difference's own stderr says whether a bias
  is detectable at all.
* **log-ratio trajectories** ``r(n) = log P₋(s₁…sₙ) − log Q(s₁…sₙ)`` (σ² and Theorem 2's
  inputs): prompts sampled once from the float32 P₋, scored by both precisions — a paired
  comparison, so the bias of bf16 is measured directly against the estimator's stderr over
  prompts.

The path is recommended only when both checks pass; otherwise it stays off (the default) and the
disagreement stands here. Speed is each precision's wall time for the same KL work.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.blank_skip import _newline_prefixes
from benchmarks.common import BenchContext, BenchResult, Goal


def _kl(p: Any, q: Any, prefixes: Any, n: int, stops: Any, seed: int) -> dict[str, Any]:
    from bebkit.estimators.kl import kl_samples_grid

    # warm-up (first-call allocations, per-tokenizer scans) so neither precision pays for it
    kl_samples_grid(p, prefixes[:1], {"q": (q, prefixes[:1])}, n_samples=2, unit="sentence",
                    stop_ids=stops, rng=np.random.default_rng(seed), max_sentence_tokens=4)  # fmt: skip
    t0 = time.perf_counter()
    out = kl_samples_grid(
        p,
        prefixes,
        {"q": (q, prefixes)},
        n_samples=n,
        unit="sentence",
        stop_ids=stops,
        with_rb=True,
        rng=np.random.default_rng(seed),
        max_sentence_tokens=24,
    )
    secs = time.perf_counter() - t0
    # one mean per prefix: the prefixes are the independent units (samples share a prefix)
    per = np.array([float(np.mean(o["q"].rb)) for o in out])
    mc = np.array([float(np.mean(o["q"].mc)) for o in out])
    se = float(per.std(ddof=1) / np.sqrt(per.size)) if per.size > 1 else float("nan")
    return {
        "seconds": secs,
        "per_prefix": per,
        "kl": float(per.mean()),
        "se": se,
        "mc": float(mc.mean()),
        "n_prefixes": int(per.size),
        "n_samples": n,
    }


def run(ctx: BenchContext) -> BenchResult:
    from bebkit.data.behaviors import load_behavior
    from bebkit.estimators.logratio import log_ratio_trajectories
    from bebkit.estimators.prompts import NEWLINE, sample_prompts, stop_token_ids

    n_prefixes, n_samples, n_lr_prompts, n_lr_sentences = ctx.sizes.precision
    comps = ctx.components
    models = {
        "float32": (comps.model("neg"), comps.model(ctx.target)),
        "bf16": ctx.half,
    }
    p32 = models["float32"][0]
    texts = list(load_behavior("cooperativeness").undesired)
    prefixes = _newline_prefixes(p32, texts, n_prefixes, 14)
    stops = stop_token_ids(p32, NEWLINE)

    kl = {name: _kl(p, q, prefixes, n_samples, stops, ctx.seed) for name, (p, q) in models.items()}
    d_pre = kl["bf16"].pop("per_prefix") - kl["float32"].pop("per_prefix")  # paired by prefix
    d_kl = float(d_pre.mean())
    se_dkl = float(d_pre.std(ddof=1) / np.sqrt(d_pre.size))
    se_kl = kl["float32"]["se"]

    prompts = sample_prompts(
        p32,
        n_prompts=n_lr_prompts,
        n_sentences=n_lr_sentences,
        rng=np.random.default_rng(ctx.seed + 1),
        fmt=NEWLINE,
        stop_ids=stops,
        max_sentence_tokens=24,
    )
    lr: dict[str, Any] = {}
    for name, (p, q) in models.items():
        t0 = time.perf_counter()
        r = log_ratio_trajectories(p, q, prompts).values  # [prompts, n + 1]
        lr[name] = {"values": r, "seconds": time.perf_counter() - t0}
    r32, r16 = lr["float32"]["values"], lr["bf16"]["values"]
    last32, last16 = r32[:, -1], r16[:, -1]
    se_r = float(last32.std(ddof=1) / np.sqrt(last32.size))
    diff = last16 - last32
    d_r = float(diff.mean())
    se_d = float(diff.std(ddof=1) / np.sqrt(diff.size))
    # σ² per sentence: the variance of the one-sentence log-ratio increments (prompts and
    # positions pooled); reported, not a pass/fail check
    inc32, inc16 = np.diff(r32, axis=1), np.diff(r16, axis=1)
    s2_32, s2_16 = float(inc32.var(ddof=1)), float(inc16.var(ddof=1))

    kl_ok = abs(d_kl) <= se_kl
    lr_ok = abs(d_r) <= se_r  # paired: the bias must sit inside the estimator's own stderr
    speed = kl["float32"]["seconds"] / kl["bf16"]["seconds"]
    rows = [
        [
            name,
            f"{kl[name]['kl']:.3f} ± {kl[name]['se']:.3f}",
            f"{kl[name]['mc']:.3f}",
            f"{kl[name]['seconds']:.1f}",
            f"{float(lr[name]['values'][:, -1].mean()):.3f} ± {se_r:.3f}",
            f"{(s2_32 if name == 'float32' else s2_16):.3f}",
            f"{lr[name]['seconds']:.1f}",
        ]
        for name in models
    ]
    notes = [
        f"KL: {len(prefixes)} newline prefixes of 14 `cooperativeness` statements × {n_samples} "
        f"sentences (cap 24 tokens) from each precision's own P₋ against `{ctx.target}`, seed "
        f"{ctx.seed}; ± is the stderr over prefixes. bf16 − float32, paired by prefix = "
        f"{d_kl:+.3f} ± {se_dkl:.3f} nats against float32's stderr {se_kl:.3f} "
        f"(|Δ|/se = {abs(d_kl) / se_kl:.2f}).",
        f"log-ratio: {n_lr_prompts} prompts × {n_lr_sentences} sentences sampled once from the "
        f"float32 P₋, scored by both; r(n = {n_lr_sentences}) bf16 − float32 (paired) = "
        f"{d_r:+.4f} ± {se_d:.4f} nats (max |Δ| {float(np.abs(diff).max()):.4f}) against the "
        f"estimator's stderr over prompts {se_r:.3f}; σ² per sentence {s2_32:.3f} (float32) vs "
        f"{s2_16:.3f} (bf16).",
        f"speed: the same KL work takes {speed:.2f}× less time in bf16; {ctx.num_threads} "
        "torch thread(s). bf16 is fast only on CPUs with native bf16 (AVX512-BF16 / AMX); on "
        "an AVX2-only CPU torch emulates it.",
        "verdict: "
        + (
            "both checks pass — the bf16 path may be used (`precision: bfloat16`)."
            if kl_ok and lr_ok
            else "a check fails — the bf16 path stays off; the disagreement is the numbers above."
        ),
    ]
    # A bias that is detectable does not shrink with more samples while the stderr does: say
    # from how many prompts / prefixes on it would exceed the estimate's stderr.
    for what, d, se_pair, se, n in (
        ("KL", d_kl, se_dkl, se_kl, len(prefixes)),
        ("log-ratio", d_r, se_d, se_r, n_lr_prompts),
    ):
        if abs(d) > 2 * se_pair:
            notes.append(
                f"{what}: the bf16 bias {d:+.3f} is detectable ({abs(d) / se_pair:.1f} paired "
                f"stderrs); it stays while the stderr shrinks as 1/√n, so from about "
                f"{n * (se / abs(d)) ** 2:,.0f} prompts on it would exceed the stderr — "
                "compare such runs in float32."
            )
    return BenchResult(
        name="precision",
        title="11. bf16 inference path vs float32 (same seeds)",
        headers=[
            "precision",
            "KL per sentence (rb)",
            "KL (mc)",
            "KL s",
            "r(n) mean",
            "σ² per sentence",
            "log-ratio s",
        ],
        rows=rows,
        notes=notes,
        goals=[
            Goal(
                "bf16 KL bias within float32's stderr (|Δ|/se)",
                abs(d_kl) / se_kl,
                1.0,
                higher_is_better=False,
                unit="",
            ),
            Goal(
                "bf16 log-ratio bias within the estimator's stderr (|Δ|/se)",
                abs(d_r) / se_r,
                1.0,
                higher_is_better=False,
                unit="",
            ),
        ],
        data={
            "kl": kl,
            "d_kl": d_kl,
            "se_d_kl": se_dkl,
            "se_kl": se_kl,
            "d_logratio": d_r,
            "se_d": se_d,
            "se_logratio": se_r,
            "sigma2": {"float32": s2_32, "bf16": s2_16},
            "speedup": speed,
            "kl_ok": kl_ok,
            "logratio_ok": lr_ok,
        },
    )
