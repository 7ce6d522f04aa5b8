"""Benchmark 10: per-sentence Rao-Blackwellised KL at long prefixes (the β/σ² and convergence
cells of a paper-sized run): the sampler as of wave 4 vs now.

Old: P's distributions for the Rao-Blackwell terms under a 256 MiB budget — 14 rows of a
48-token sentence at SmolLM2's 49k vocabulary, so a prefix's samples were drawn 14 at a time —
and a KV cache that ``torch.cat``-copies itself at every decode step. New: a 2 GiB budget
(``BEBKIT_DIST_BUDGET_MB``; a prefix's 64 samples decode together) and decode caches with
preallocated room (one column written per step). Both draw exact samples from P with the same
stopping rule, only laid out differently over the generator, so sentence lengths and KL must
agree within their standard errors; the preallocated cache alone is bit-identical
(``tests/models/test_hf.py``).
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from benchmarks.blank_skip import _newline_prefixes
from benchmarks.common import BenchContext, BenchResult

OLD_BUDGET = 256 * 2**20


def run(ctx: BenchContext) -> BenchResult:
    import bebkit.estimators.kl as kl
    import bebkit.models.hf as hf
    from bebkit.estimators.prompts import NEWLINE, stop_token_ids

    sz = ctx.sizes
    p, q = ctx.p_neg, ctx.q_target
    from bebkit.data.behaviors import load_behavior

    # plain statements of bebkit's own embedded behavior: prompt-like sentences of ~10 tokens
    texts = list(load_behavior("cooperativeness").undesired)
    pres = _newline_prefixes(p, texts, max(2, sz.n_prompts), 14)
    stops = stop_token_ids(p, NEWLINE)
    rows: list[list[Any]] = []
    data: dict[str, Any] = {}
    real_room, real_budget = hf._with_decode_room, kl._DIST_BUDGET_BYTES
    env_budget = os.environ.pop("BEBKIT_DIST_BUDGET_MB", None)  # each path sets its own
    for label, new in (("now: 2 GiB budget, preallocated decode cache", True),
                       ("wave 4: 256 MiB budget, concatenating cache", False)):  # fmt: skip
        if not new:
            hf._with_decode_room = lambda cache, extra: cache  # type: ignore[assignment]
            kl._DIST_BUDGET_BYTES = OLD_BUDGET
        try:
            rows_per_draw = min(kl._dist_chunk(p, kl.DEFAULT_MAX_SENTENCE_TOKENS), sz.n_samples)
            t0 = time.perf_counter()
            out = kl.kl_samples_grid(
                p, pres, {"q": (q, pres)}, n_samples=sz.n_samples, unit="sentence",
                stop_ids=stops, with_rb=True, rng=np.random.default_rng(ctx.seed),
            )  # fmt: skip
            secs = time.perf_counter() - t0
        finally:
            hf._with_decode_room, kl._DIST_BUDGET_BYTES = real_room, real_budget
        lengths = np.concatenate([o["q"].lengths for o in out]).astype(np.float64)
        rb = np.concatenate([o["q"].rb for o in out if o["q"].rb is not None])
        se_len = lengths.std(ddof=1) / np.sqrt(lengths.size)
        se_kl = rb.std(ddof=1) / np.sqrt(rb.size)
        rows.append([label, rows_per_draw, secs, f"{lengths.mean():.2f} ± {se_len:.2f}",
                     f"{rb.mean():.3f} ± {se_kl:.3f}", int(rb.size)])  # fmt: skip
        data["new" if new else "old"] = {
            "seconds": secs, "rows_per_draw": rows_per_draw, "mean_len": float(lengths.mean()),
            "se_len": se_len, "kl": float(rb.mean()), "se_kl": se_kl, "n": int(rb.size),
        }  # fmt: skip
    if env_budget is not None:
        os.environ["BEBKIT_DIST_BUDGET_MB"] = env_budget
    speedup = rows[1][2] / rows[0][2] if rows[0][2] > 0 else float("nan")
    lens = [len(x) for x in pres]
    return BenchResult(
        name="sentence_kl",
        title="10. Per-sentence Rao-Blackwell KL at long prefixes: wave 4 sampler vs now",
        headers=[
            "sampler",
            "rows per draw",
            "seconds",
            "sentence length (tokens)",
            "KL(P₋‖Q) per sentence (rb)",
            "n",
        ],
        rows=rows,
        notes=[
            f"{len(pres)} newline prefixes of 14 statements of `cooperativeness` ({min(lens)}–{max(lens)} tokens) × "
            f"{sz.n_samples} sentences (cap {kl.DEFAULT_MAX_SENTENCE_TOKENS} tokens), P₋ "
            f"against `{ctx.target}`; same seed; speed-up {speedup:.2f}×; {ctx.num_threads} "
            "torch thread(s). The layouts differ, so lengths and KL must agree within their "
            "standard errors, not exactly."
        ],
        data={"speedup": speedup, **data},
    )
