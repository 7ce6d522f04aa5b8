"""Benchmark 7: where the time of one KL estimate goes (cProfile of ``kl_samples``).

Written so that a missed speed goal comes with its explanation: the table groups the
profile of one plain-MC :func:`~bebkit.estimators.kl.kl_samples` call (the longest prefix,
``sizes.n_samples`` continuations) into dense matmuls, attention, sampling, adapter switching,
KV-cache copies and the rest.
"""

from __future__ import annotations

import cProfile
import pstats
from typing import Any

from benchmarks.common import BenchContext, BenchResult

#: (label, how, match): "tt" sums own time of functions whose name contains ``match``;
#: "ct" takes the cumulative time of the first matching function.
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("dense matmuls (torch linear: base + LoRA)", "tt", "torch._C._nn.linear"),
    ("attention (sdpa)", "tt", "scaled_dot_product_attention"),
    ("token sampling (hf._draw: float64 CDF inversion)", "ct", "_draw"),
    ("log_softmax / logsumexp", "tt", "log_softmax"),
    ("adapter switching (ComponentSet._apply)", "ct", "_apply"),
    ("KV-cache replication (_select_cache)", "ct", "_select_cache"),
)


def run(ctx: BenchContext) -> BenchResult:
    from bebkit.estimators.kl import kl_samples

    sz = ctx.sizes
    p, q = ctx.p_neg, ctx.q_target
    pr = ctx.prompts[0]
    n = max(sz.ns)
    pre, qpre = pr.context(p, n), pr.target_context(q, n, None)
    prof = cProfile.Profile()
    prof.enable()
    kl_samples(p, q, pre, q_prefix=qpre, n_samples=sz.n_samples, n_tokens=sz.n_tokens, rng=1)
    prof.disable()
    report: Any = pstats.Stats(prof)
    stats: dict[Any, Any] = report.stats
    total = max(ct for (_cc, _nc, _tt, ct, _callers) in stats.values())
    rows: list[list[Any]] = []
    accounted = 0.0
    for label, how, match in GROUPS:
        hits = [(v[2], v[3]) for k, v in stats.items() if match in k[2]]
        secs = (
            sum(tt for tt, _ in hits) if how == "tt" else max((ct for _, ct in hits), default=0.0)
        )
        accounted += secs
        rows.append([label, secs, 100 * secs / total])
    rows.append(
        [
            "everything else (Python, HF/PEFT glue, tensor copies)",
            total - accounted,
            100 * (total - accounted) / total,
        ]
    )
    return BenchResult(
        name="profile",
        title="7. Profile of one KL estimate (cProfile, plain MC)",
        headers=["where", "seconds", "% of call"],
        rows=rows,
        notes=[
            f"`kl_samples` with prefix {len(pre)} tokens, {sz.n_samples} × {sz.n_tokens} tokens, "
            f"total {total:.2f} s; float32, {ctx.num_threads} torch thread(s)."
        ],
        data={"total_s": total, "groups": {r[0]: r[1] for r in rows}},
    )
