"""Benchmark 3: the model's raw forward throughput on this machine vs what bebkit's stages get.

Ceiling: ``model(input_ids[B, T])`` under ``torch.inference_mode`` for a few shapes, float32
and bf16 (a bf16 copy of the model), tokens/s = B·T / time — no sampling, no log-softmax, no
Python bookkeeping. A second ceiling is the KV-cached decode step (B rows, one token each,
after a prefix), the hardware limit of any ancestral sampler.

Stages (float32, as bebkit computes every reported log-prob):

* KL: :func:`~bebkit.estimators.kl.kl_samples` (P's scored sampling pass + the target's
  scoring pass) on one prefix, plain MC and with the Rao-Blackwell per-step KL; and
  :func:`~bebkit.estimators.kl.kl_curve` over every prefix of the benchmark's prompts — the
  stage as the pipeline runs it (prefixes decoded together in groups of up to 128 rows);
* log-ratio: :func:`~bebkit.estimators.logratio.log_ratio_trajectories` (one batched
  ``sequence_logprobs`` per model);
* response sampling: ``sample`` of responses from the target after a misaligning prompt
  (what :mod:`bebkit.estimators.behavior` does before judging them).

The KL curve and the log-ratio are timed again on the opt-in bf16 path
(:meth:`~bebkit.components.adapters.ComponentSet.inference_copy`), against the bf16 ceiling:
issue #15 asks for each precision's stage against its own ceiling.
"""

from __future__ import annotations

import copy
from functools import partial
from typing import Any

from benchmarks.common import BenchContext, BenchResult, Goal, kl_tokens, timed


def forward_throughput(model: Any, batch: int, length: int, vocab: int, reps: int) -> float:
    """Tokens/s of ``model(input_ids[batch, length])`` (best of ``reps`` after one warm-up)."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, length), generator=gen)
    best = float("inf")
    with torch.inference_mode():
        model(input_ids=ids[:1, : min(length, 8)])  # warm-up (first-call allocations)
        for _ in range(reps):
            _, s = timed(lambda: model(input_ids=ids))
            best = min(best, s)
    return batch * length / best


def decode_throughput(model: Any, batch: int, prefix: int, steps: int, vocab: int) -> float:
    """Tokens/s of ``steps`` KV-cached single-token steps on ``batch`` rows after ``prefix``."""
    import torch

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (batch, prefix), generator=gen)
    from bebkit.models.hf import cache_arg_name, returned_cache

    arg = cache_arg_name(model)  # as HFLanguageModel passes it (``cache`` since transformers 5.x)
    with torch.inference_mode():
        out = model(input_ids=ids, use_cache=True)
        cache = returned_cache(out, arg)
        tok = out.logits[:, -1].argmax(-1, keepdim=True)

        def loop() -> None:
            nonlocal cache, tok
            for _ in range(steps):
                o = model(input_ids=tok, use_cache=True, **{arg: cache})
                cache = returned_cache(o, arg)
                tok = o.logits[:, -1].argmax(-1, keepdim=True)

        _, s = timed(loop)
    return batch * steps / s


def run(ctx: BenchContext) -> BenchResult:
    import torch

    from bebkit.estimators.kl import kl_curve, kl_samples
    from bebkit.estimators.logratio import log_ratio_trajectories
    from bebkit.models.protocol import StopCondition

    sz = ctx.sizes
    comps = ctx.components
    vocab = int(ctx.p_neg.vocab_size)
    rows: list[list[Any]] = []
    ceiling: dict[str, float] = {}
    with comps.activated("base"):
        models = {"float32": comps.torch_model}
        models["bf16"] = copy.deepcopy(comps.torch_model).to(torch.bfloat16)
        for dt, m in models.items():
            for b, t in sz.ceiling_shapes:
                tps = forward_throughput(m, b, t, vocab, sz.ceiling_reps)
                ceiling[f"{dt} {b}×{t}"] = tps
                rows.append([f"ceiling: forward {b}×{t}", dt, tps, "", ""])
        dec_b = max(1, min(sz.n_samples, 32))
        dec_steps = max(2, sz.n_tokens - 1)
        dec = decode_throughput(models["float32"], dec_b, 64, dec_steps, vocab)
        rows.append([f"ceiling: decode {dec_b} rows × {dec_steps} steps", "float32", dec, "", ""])
        # Response sampling decodes `response_samples` rows: its ceiling is a decode step at
        # that batch size (fewer rows per step read the same weights for fewer tokens).
        dec_r = decode_throughput(
            models["float32"], sz.response_samples, 64, max(2, sz.response_tokens - 1), vocab
        )
        rows.append(
            [
                f"ceiling: decode {sz.response_samples} rows × {max(2, sz.response_tokens - 1)} steps",
                "float32",
                dec_r,
                "",
                "",
            ]
        )
        del models["bf16"]
    best32 = max(v for k, v in ceiling.items() if k.startswith("float32"))
    best16 = max(v for k, v in ceiling.items() if k.startswith("bf16"))

    p, q = ctx.p_neg, ctx.q_target
    pr = ctx.prompts[0]
    n = max(sz.ns)
    pre, qpre = pr.context(p, n), pr.target_context(q, n, None)
    stage: dict[str, float] = {}
    for with_rb in (False, True):
        _, s = timed(
            partial(
                kl_samples,
                p,
                q,
                pre,
                q_prefix=qpre,
                n_samples=sz.n_samples,
                n_tokens=sz.n_tokens,
                with_rb=with_rb,
                rng=ctx.seed,
            )
        )
        tok = kl_tokens([len(pre)], sz.n_samples, sz.n_tokens)
        stage["kl_rb" if with_rb else "kl_mc"] = tok / s
    # the stage as the pipeline runs it: every prefix of every prompt, decoded in groups
    curve_lens = [len(pr2.context(p, n2)) for pr2 in ctx.prompts for n2 in sz.ns]
    curve_tok = kl_tokens(curve_lens, sz.n_samples, sz.n_tokens)
    for tag, (pp, qq) in {"": (p, q), "_bf16": ctx.half}.items():
        # warm-up: a bf16 copy's first call pays one-off allocations
        kl_curve(pp, qq, ctx.prompts[:1], ns=sz.ns[:1], n_samples=2, n_tokens=2, rng=ctx.seed)
        _, s = timed(
            lambda pp=pp, qq=qq: kl_curve(
                pp, qq, ctx.prompts, ns=sz.ns, n_samples=sz.n_samples, n_tokens=sz.n_tokens,
                rng=ctx.seed,
            )
        )  # fmt: skip
        stage[f"kl_curve{tag}"] = curve_tok / s
        traj, s = timed(lambda pp=pp, qq=qq: log_ratio_trajectories(pp, qq, ctx.prompts))
        lr_tokens = 2 * sum(pr2.boundaries[traj.n[-1]] for pr2 in ctx.prompts)
        stage[f"logratio{tag}"] = lr_tokens / s
    stop = StopCondition(sz.response_tokens, ctx.stop_ids)
    import numpy as np

    ys, s = timed(
        lambda: q.sample(qpre, sz.response_samples, stop, rng=np.random.default_rng(ctx.seed))
    )
    stage["sampling"] = (len(qpre) + sum(len(y) for y in ys)) / s
    n_pre = len(curve_lens)
    curve_label = (
        f"stage: KL curve mc ({n_pre} prefixes × {sz.n_samples}×{sz.n_tokens} tok, grouped)"
    )
    lr_label = f"stage: log-ratio trajectories ({len(ctx.prompts)} prompts, 2 models)"
    labels = {
        "kl_mc": f"stage: KL mc, one prefix ({sz.n_samples}×{sz.n_tokens} tok, prefix {len(pre)})",
        "kl_rb": "stage: KL rb, one prefix (same, per-step KL against P₋)",
        "kl_curve": curve_label,
        "logratio": lr_label,
        "kl_curve_bf16": curve_label,
        "logratio_bf16": lr_label,
        "sampling": f"stage: response sampling ({sz.response_samples} × ≤{sz.response_tokens} tok)",
    }
    # The KL stage is part decode (P's N·(T−1) sampled tokens), part full-sequence forward
    # (prefixes, the target's scoring pass): its matching ceiling is that mix, timed at the
    # decode and forward ceilings.
    n_dec = sz.n_samples * (sz.n_tokens - 1)
    n_fwd = kl_tokens([len(pre)], sz.n_samples, sz.n_tokens) - n_dec
    kl_mix = (n_dec + n_fwd) / (n_dec / dec + n_fwd / best32)
    # the curve decodes its prefixes' rows together (up to 128 per group, kl_samples_grid):
    # its decode ceiling is a decode step at that many rows
    from bebkit.estimators.kl import _layout

    # kl_samples_grid's own rule (groups never span prompts: one prompt's prefixes at a time)
    how, size = _layout(p, sz.n_tokens, sz.n_samples, False)
    curve_rows = size if how == "chunks" else min(len(sz.ns), size) * sz.n_samples
    with ctx.components.activated("base"):
        dec_c = decode_throughput(comps.torch_model, curve_rows, 64, dec_steps, vocab)
    rows.append(
        [f"ceiling: decode {curve_rows} rows × {dec_steps} steps", "float32", dec_c, "", ""]
    )
    n_dec_c = n_pre * n_dec
    curve_mix = curve_tok / (n_dec_c / dec_c + (curve_tok - n_dec_c) / best32)
    matching = {
        "kl_mc": kl_mix,
        "kl_rb": kl_mix,
        "kl_curve": curve_mix,
        "logratio": best32,
        "sampling": dec_r,
    }
    for k, v in stage.items():
        if k.endswith("_bf16"):
            # against its own precision's forward ceiling (no bf16 decode ceiling is measured)
            rows.append([labels[k], "bf16", v, 100 * v / best16, ""])
        else:
            rows.append([labels[k], "float32", v, 100 * v / best32, 100 * v / matching[k]])
    # the goal is on the stages as the pipeline runs them, each against its precision's ceiling
    worst_fwd = min(stage["kl_curve"], stage["logratio"]) / best32
    worst_16 = min(stage["kl_curve_bf16"], stage["logratio_bf16"]) / best16
    return BenchResult(
        name="ceiling",
        title="3. Throughput ceiling vs bebkit's stages",
        headers=[
            "what",
            "dtype",
            "tokens/s",
            "% of best forward (its dtype)",
            "% of matching ceiling",
        ],
        rows=rows,
        goals=[
            Goal(
                "worst of KL curve / log-ratio stage vs fp32 forward ceiling",
                100 * worst_fwd,
                70.0,
                unit="%",
            ),
            Goal(
                "worst of KL curve / log-ratio stage (bf16 path) vs bf16 forward ceiling",
                100 * worst_16,
                70.0,
                unit="%",
            ),
            Goal(
                f"response sampling vs decode ceiling at its {sz.response_samples} rows",
                100 * stage["sampling"] / dec_r,
                70.0,
                unit="%",
            ),
        ],
        notes=[
            f"best forward ceiling: float32 {best32:.0f} tok/s, bf16 {best16:.0f} tok/s "
            f"({best16 / best32:.2f}× float32); {ctx.num_threads} torch thread(s).",
            "KL tokens = P's sampling pass, which also scores P (prefix + N·(T−1) decode tokens), "
            "+ the target's scoring pass (prefix + N·(T−1)). Matching ceilings: KL = that mix "
            f"of decode and forward tokens at the decode ({dec:.0f}) and best forward "
            f"({best32:.0f} tok/s) ceilings = {kl_mix:.0f} tok/s; response sampling = a decode "
            f"step at its {sz.response_samples} rows ({dec_r:.0f} tok/s; vs the {dec_b}-row "
            f"decode ceiling it reaches {100 * stage['sampling'] / dec:.0f} %). The KL curve's "
            f"matching ceiling is the same mix over its {n_pre} prefixes: {curve_mix:.0f} tok/s.",
            "The bf16 rows' % column is against the bf16 forward ceiling; against the float32 "
            f"one the KL curve reaches {100 * stage['kl_curve_bf16'] / best32:.0f} % and the "
            f"log-ratio {100 * stage['logratio_bf16'] / best32:.0f} %.",
        ],
        data={
            "ceiling": ceiling,
            "decode": dec,
            "decode_response_rows": dec_r,
            "kl_matching_ceiling": kl_mix,
            "kl_curve_matching_ceiling": curve_mix,
            "decode_curve_rows": dec_c,
            "stages": stage,
        },
    )
