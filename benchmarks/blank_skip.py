"""Benchmark 8: per-sentence KL with the sampler skipping lone newlines natively vs the old
row-by-row resumption (the newline layout of β/σ², where most sampled "sentences" begin with a
blank newline).

Both paths implement the same stopping rule ("stop at the first sentence end after some
non-blank text, or at the cap"), so they draw from the same distribution; the table shows the
time of each and, as a check of that claim, the mean sentence length and the KL estimate with
their standard errors under each path.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from benchmarks.common import BenchContext, BenchResult


def _newline_prefixes(p: Any, texts: list[str], n: int, k: int) -> list[list[int]]:
    """``n`` plain-text prefixes of ``k`` statements each, one per line, ending at a line
    start (where a per-sentence KL continuation begins)."""
    bos = list(p.bos_token_ids)
    out = []
    for i in range(n):
        sents = [texts[(i * k + j) % len(texts)] for j in range(k)]
        out.append(bos + p.encode("\n".join(sents) + "\n"))
    return out


def run(ctx: BenchContext) -> BenchResult:
    import bebkit.estimators.kl as kl
    from bebkit.estimators.prompts import NEWLINE, stop_token_ids

    sz = ctx.sizes
    p, q = ctx.p_neg, ctx.q_target
    texts = ctx.train_texts or ["I like helping people.", "I always share my things."]
    pres = _newline_prefixes(p, texts, max(2, sz.n_prompts), 3)
    stops = stop_token_ids(p, NEWLINE)
    rows: list[list[Any]] = []
    data: dict[str, Any] = {}
    real_blank_ids = kl.blank_token_ids
    for label, native in (("native (StopCondition.blank_token_ids)", True),
                          ("resumed row by row (old)", False)):  # fmt: skip
        kl.blank_token_ids = real_blank_ids if native else (lambda _m: frozenset())
        try:
            t0 = time.perf_counter()
            out = kl.kl_samples_grid(
                p, pres, {"q": (q, pres)}, n_samples=sz.n_samples, unit="sentence",
                stop_ids=stops, rng=np.random.default_rng(ctx.seed),
            )  # fmt: skip
            secs = time.perf_counter() - t0
        finally:
            kl.blank_token_ids = real_blank_ids
        lengths = np.concatenate([o["q"].lengths for o in out]).astype(np.float64)
        terms = np.concatenate([o["q"].mc for o in out])
        se_len = lengths.std(ddof=1) / np.sqrt(lengths.size)
        se_kl = terms.std(ddof=1) / np.sqrt(terms.size)
        rows.append([label, secs, f"{lengths.mean():.2f} ± {se_len:.2f}",
                     f"{terms.mean():.3f} ± {se_kl:.3f}", int(terms.size)])  # fmt: skip
        data[label] = {"seconds": secs, "mean_len": float(lengths.mean()), "se_len": se_len,
                       "kl": float(terms.mean()), "se_kl": se_kl, "n": int(terms.size)}  # fmt: skip
    speedup = rows[1][1] / rows[0][1] if rows[0][1] > 0 else float("nan")
    return BenchResult(
        name="blank",
        title="8. Per-sentence KL, newline layout: native blank skipping vs row-by-row resumption",
        headers=["sampler", "seconds", "sentence length (tokens)", "KL(P₋‖Q) per sentence", "n"],
        rows=rows,
        notes=[
            f"{len(pres)} newline prefixes × {sz.n_samples} sentences; same seed; speed-up "
            f"{speedup:.2f}×; {ctx.num_threads} torch thread(s). The two paths follow one "
            "stopping rule, so lengths and KL must agree within their standard errors."
        ],
        data={"speedup": speedup, **data},
    )
