"""Monte-Carlo estimators of the conditional KL divergence between two protocol models.

The quantity of Definition 2 (β-distinguishability) and of Lemma 5 / eq. 7 (convergence):

    KL(P‖Q | s) = E_{y~P(·|s)}[log P(y|s) − log Q(y|s)]

where ``y`` is a continuation of ``n_tokens`` tokens, or up to the first sentence end
(``until_sentence_end``; a stopping time, so the chain rule still holds). Two estimators:

* :func:`kl_mc` — plain Monte Carlo (the paper's, appendix L.1, but scoring *every*
  generated token: the authors' code skipped the first one);
* :func:`kl_rao_blackwell` — along each sampled path, sum the *exact* next-token KL over the
  whole vocabulary: by the chain rule ``KL(P‖Q|s) = E_{y~P}[Σ_t KL(P(·|s,y<t) ‖ Q(·|s,y<t))]``.
  Same expectation, lower variance; the first step (identical context for every sample) is
  then exact. An optional control variate uses the zero-mean martingale
  ``Σ_t (log P(y_t|·)/Q(y_t|·) − KL_t)`` that comes for free from the same forward passes.

Cost: P is sampled once per prefix by :func:`~bebkit.models.protocol.sample_scored`, which
returns ``log P(y_t | ·)`` (and, for Rao-Blackwell, ``P(· | ·)``) from the sampling pass itself
— P's own continuations are never re-scored — and each target Q scores them with one
``continuation_logprobs`` call that also computes the per-step KL against P's distributions
(``reference=``), so no ``[N, T, V]`` array of Q is built. Full distributions are float32 and
memory-capped by sampling in row chunks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.prompts import SampledPrompt
from bebkit.models.protocol import (
    LanguageModel,
    StopCondition,
    TokenIds,
    continuation_logprobs_many,
    reference_step_kl,
    sample_scored_many,
)

Estimator = Literal["mc", "rb", "rb_cv"]
_DIST_BUDGET_BYTES = 256 * 2**20  # cap on one [N, T, V] dists array (8 B per entry assumed)
_GROUP_ROWS = 128  # most sampled rows (all prefixes of a group) decoded and scored together


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


@dataclass(frozen=True)
class KLSamples:
    """Per-sample terms of the KL estimators for one prefix.

    Attributes:
        mc: ``[N]`` ``log P(y⁽ⁱ⁾|s) − log Q(y⁽ⁱ⁾|s_Q)`` (plain Monte Carlo terms).
        rb: ``[N]`` ``Σ_t KL(P(·|s,y<t) ‖ Q(·|s_Q,y<t))`` along each path, or None.
        lengths: ``[N]`` tokens per continuation.
    """

    mc: np.ndarray
    rb: np.ndarray | None
    lengths: np.ndarray

    def estimate(self, estimator: Estimator = "mc") -> Estimate:
        """Turn the per-sample terms into an :class:`Estimate` (mean ± sd/√N)."""
        if estimator == "mc":
            return Estimate.from_samples(self.mc, method="kl_mc")
        if self.rb is None:
            raise InputError("Rao-Blackwell terms were not computed (with_rb=False)")
        if estimator == "rb":
            return Estimate.from_samples(self.rb, method="kl_rao_blackwell")
        if estimator == "rb_cv":
            return _control_variate(self.rb, self.mc - self.rb)
        raise InputError(f"estimator must be one of mc, rb, rb_cv, got {estimator!r}")


def _control_variate(g: np.ndarray, d: np.ndarray) -> Estimate:
    """``mean(g) − c·mean(d)`` with ``E[d] = 0`` and the variance-optimal ``c = Cov(g,d)/Var(d)``.

    The stderr is the residual sd (n − 2 degrees of freedom, one for c) over √n. Estimating c
    from the same samples adds an O(1/n) bias, negligible next to the stderr.
    """
    n = g.size
    if n < 3:
        return Estimate.from_samples(g, method="kl_rao_blackwell_cv")
    dc = d - d.mean()
    var_d = float(dc @ dc)
    c = float((g - g.mean()) @ dc) / var_d if var_d > 0 else 0.0
    adj = g - c * d  # E[d] = 0 is known exactly, so d itself (not d − d̄) is subtracted
    value = float(adj.mean())
    resid = adj - value
    se = math.sqrt(float(resid @ resid) / (n - 2) / n)
    return Estimate(value, se, n, value - 1.96 * se, value + 1.96 * se, 0.95, "kl_rao_blackwell_cv")


def step_kl(dists_p: np.ndarray, dists_q: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[N, T]`` exact next-token ``KL(P(·|h)‖Q(·|h)) = Σ_v P(v|h)(log P(v|h) − log Q(v|h))``.

    Zero beyond each path's length; a token with P = 0 contributes 0, with P > 0 = Q: +inf.
    (numpy, float64; the estimators get the same numbers from ``continuation_logprobs(...,
    reference=)`` without materialising Q's distributions.)
    """
    return reference_step_kl(dists_p, dists_q, lengths)


def _dist_chunk(model: LanguageModel, t_max: int) -> int:
    """Rows per ``[rows, t_max, V]`` distributions chunk under the memory budget."""
    return max(1, _DIST_BUDGET_BYTES // (t_max * int(model.vocab_size) * 8))


def _check_sizes(n_samples: int, n_tokens: int) -> None:
    if n_samples < 2:
        raise InputError(f"n_samples must be >= 2, got {n_samples}")
    if n_tokens < 1:
        raise InputError(f"n_tokens must be >= 1, got {n_tokens}")


def kl_samples_grid(
    p: LanguageModel,
    prefixes: Sequence[TokenIds],
    targets: Mapping[str, tuple[LanguageModel, Sequence[TokenIds]]],
    *,
    n_samples: int = 64,
    n_tokens: int = 8,
    stop_ids: Iterable[int] = (),
    with_rb: bool = False,
    rng: np.random.Generator | int | None = None,
) -> list[dict[str, KLSamples]]:
    """Per prefix ``s_k``: ``y ~ P(·|s_k)`` once, and per target ``j`` the terms of
    ``KL(P(·|s_k) ‖ Q_j(·|s_{j,k}))``.

    ``targets`` maps a label to ``(Q_j, [s_{j,k} for every k])``. MC terms
    ``log P(y|s_k) − log Q_j(y|s_{j,k})`` take ``log P`` from the sampling pass; RB terms
    ``Σ_t KL(P(·|s_k,y<t) ‖ Q_j(·|s_{j,k},y<t))`` come from Q_j's scoring pass against P's
    distributions. With ``stop_ids`` a continuation stops after a stop token (kept) or
    ``n_tokens`` tokens.

    Cost: prefixes are sampled and scored in groups of about ``_GROUP_ROWS`` rows (models
    with ``sample_scored_many`` / ``continuation_logprobs_many`` decode a group's rows
    together; others loop). With ``with_rb`` a group also keeps P's ``[rows, T, V]``
    distributions under the memory budget, and a prefix with more samples than the budget
    allows is sampled in row chunks (same rng stream, one prefix encoding per chunk).
    """
    _check_sizes(n_samples, n_tokens)
    pres = [[int(t) for t in pre] for pre in prefixes]
    for label, (_, qpres) in targets.items():
        if len(qpres) != len(pres):
            raise InputError(f"target {label!r} needs one context per prefix")
    stop = StopCondition(n_tokens, frozenset(int(t) for t in stop_ids))
    gen = _rng(rng)
    # units of work: (prefix indices, rows per prefix)
    dist_rows = _dist_chunk(p, n_tokens) if with_rb else n_samples
    units: list[tuple[list[int], int]] = []
    if n_samples > dist_rows:
        for k in range(len(pres)):
            units += [([k], min(dist_rows, n_samples - d)) for d in range(0, n_samples, dist_rows)]
    else:
        per = max(1, min(_GROUP_ROWS, dist_rows) // n_samples)
        for i in range(0, len(pres), per):
            units.append((list(range(i, min(i + per, len(pres)))), n_samples))
    mc: list[dict[str, list[np.ndarray]]] = [{j: [] for j in targets} for _ in pres]
    rb: list[dict[str, list[np.ndarray]]] = [{j: [] for j in targets} for _ in pres]
    lengths: list[list[np.ndarray]] = [[] for _ in pres]
    for ks, m in units:
        drawn = sample_scored_many(p, [pres[k] for k in ks], m, stop, rng=gen, with_dists=with_rb)
        for k, (ys, sp) in zip(ks, drawn, strict=True):
            if min(len(y) for y in ys) < 1:
                raise InputError(f"{p.name} sampled an empty continuation")
            if with_rb and sp.dists is None:
                raise InputError(f"{p.name} returned no dists for with_dists=True")
            lengths[k].append(np.asarray(sp.lengths, dtype=np.int64))
        refs = [sp.dists for _, sp in drawn] if with_rb else None
        for label, (q, qpres) in targets.items():
            scored = continuation_logprobs_many(
                q,
                [[int(t) for t in qpres[k]] for k in ks],
                [ys for ys, _ in drawn],
                references=refs,
            )
            for k, (_, sp), sq in zip(ks, drawn, scored, strict=True):
                mc[k][label].append(np.asarray(sp.totals - sq.totals, dtype=np.float64))
                if with_rb:
                    if sq.step_kl is None:
                        raise InputError(f"{q.name} returned no step_kl for a reference")
                    rb[k][label].append(np.asarray(sq.step_kl, dtype=np.float64).sum(axis=1))
    return [
        {
            j: KLSamples(
                mc=np.concatenate(mc[k][j]),
                rb=np.concatenate(rb[k][j]) if with_rb else None,
                lengths=np.concatenate(lengths[k]),
            )
            for j in targets
        }
        for k in range(len(pres))
    ]


def kl_samples_multi(
    p: LanguageModel,
    targets: Mapping[str, tuple[LanguageModel, TokenIds]],
    prefix: TokenIds,
    *,
    n_samples: int = 64,
    n_tokens: int = 8,
    stop_ids: Iterable[int] = (),
    with_rb: bool = False,
    rng: np.random.Generator | int | None = None,
) -> dict[str, KLSamples]:
    """``y ~ P(·|prefix)`` once; per target ``j``: terms of ``KL(P(·|prefix) ‖ Q_j(·|prefix_j))``.

    ``targets`` maps a label to ``(Q_j, Q_j's context)``; :func:`kl_samples_grid` with one
    prefix.
    """
    grid = {label: (q, [qpre]) for label, (q, qpre) in targets.items()}
    return kl_samples_grid(
        p,
        [prefix],
        grid,
        n_samples=n_samples,
        n_tokens=n_tokens,
        stop_ids=stop_ids,
        with_rb=with_rb,
        rng=rng,
    )[0]


def kl_samples(
    p: LanguageModel,
    q: LanguageModel,
    prefix: TokenIds,
    *,
    q_prefix: TokenIds | None = None,
    n_samples: int = 64,
    n_tokens: int = 8,
    until_sentence_end: bool = False,
    stop_ids: Iterable[int] | None = None,
    with_rb: bool = False,
    rng: np.random.Generator | int | None = None,
) -> KLSamples:
    """Sample ``y ~ P(·|prefix)`` and score it under P (``prefix``) and Q (``q_prefix``).

    ``q_prefix`` (default: ``prefix``) lets the target model see a different context for the
    same continuation, e.g. with an aligning system prompt (Theorem 2, fig. 3a). With
    ``until_sentence_end`` the continuation stops after a token of ``stop_ids`` (kept) or
    ``n_tokens`` tokens. P's scores come from its sampling pass (:func:`kl_samples_multi`).
    """
    _check_sizes(n_samples, n_tokens)
    stops: frozenset[int] = frozenset()
    if until_sentence_end:
        stops = frozenset(int(t) for t in (stop_ids or ()))
        if not stops:
            raise InputError("until_sentence_end needs stop_ids (sentence-end token ids)")
    qpre = prefix if q_prefix is None else q_prefix
    out = kl_samples_multi(
        p,
        {"q": (q, qpre)},
        prefix,
        n_samples=n_samples,
        n_tokens=n_tokens,
        stop_ids=stops,
        with_rb=with_rb,
        rng=rng,
    )
    return out["q"]


def kl_mc(
    p: LanguageModel,
    q: LanguageModel,
    prefix: TokenIds,
    *,
    q_prefix: TokenIds | None = None,
    n_samples: int = 64,
    n_tokens: int = 8,
    until_sentence_end: bool = False,
    stop_ids: Iterable[int] | None = None,
    rng: np.random.Generator | int | None = None,
) -> Estimate:
    """Plain Monte Carlo ``KL(P‖Q|s) ≈ (1/N) Σ_i [log P(y⁽ⁱ⁾|s) − log Q(y⁽ⁱ⁾|s)]``, ``y⁽ⁱ⁾ ~ P(·|s)``.

    The estimator of appendix L.1 (64 samples of 8 tokens), with every token scored.
    """
    return kl_samples(
        p,
        q,
        prefix,
        q_prefix=q_prefix,
        n_samples=n_samples,
        n_tokens=n_tokens,
        until_sentence_end=until_sentence_end,
        stop_ids=stop_ids,
        rng=rng,
    ).estimate("mc")


def kl_rao_blackwell(
    p: LanguageModel,
    q: LanguageModel,
    prefix: TokenIds,
    *,
    q_prefix: TokenIds | None = None,
    n_samples: int = 64,
    n_tokens: int = 8,
    until_sentence_end: bool = False,
    stop_ids: Iterable[int] | None = None,
    control_variate: bool = False,
    rng: np.random.Generator | int | None = None,
) -> Estimate:
    """Rao-Blackwellised ``KL(P‖Q|s) ≈ (1/N) Σ_i Σ_t KL(P(·|s,y⁽ⁱ⁾_<t) ‖ Q(·|s,y⁽ⁱ⁾_<t))``.

    Unbiased by the chain rule (each log-ratio term replaced by its conditional expectation
    given the path so far); with ``control_variate`` the zero-mean
    ``Σ_t [log P/Q(y_t) − KL_t]`` is subtracted with the optimal coefficient.
    """
    return kl_samples(
        p,
        q,
        prefix,
        q_prefix=q_prefix,
        n_samples=n_samples,
        n_tokens=n_tokens,
        until_sentence_end=until_sentence_end,
        stop_ids=stop_ids,
        with_rb=True,
        rng=rng,
    ).estimate("rb_cv" if control_variate else "rb")


@dataclass(frozen=True)
class KLCurve:
    """``KL(P‖Q | s₁…sₙ)`` for prefix lengths ``n`` over several prompts ``s ~ P₋``.

    Attributes:
        n: ``[K]`` prefix lengths (sentences).
        per_prompt: ``[P, K]`` per-prompt KL estimates (mean over continuations).
        per_prompt_stderr: ``[P, K]`` their Monte-Carlo stderrs.
        n_samples: continuations per (prompt, n).
        method: ``"mc"``, ``"rb"`` or ``"rb_cv"``.
    """

    n: np.ndarray
    per_prompt: np.ndarray
    per_prompt_stderr: np.ndarray
    n_samples: int
    method: str
    label: str = ""

    @property
    def estimates(self) -> list[Estimate]:
        """Pooled ``E_{s~P₋}[KL(P‖Q|s)]`` per n.

        Two-stage sampling: the sd of the per-prompt means over prompts already contains
        both the prompt-to-prompt spread and the continuation noise, so stderr = sd/√P and
        ``n`` counts prompts. With one prompt, the within-prompt stderr is used.
        """
        out = []
        n_prompts = self.per_prompt.shape[0]
        for j in range(self.n.size):
            col = self.per_prompt[:, j]
            if n_prompts >= 2:
                e = Estimate.from_samples(col, method=f"kl_{self.method}_pooled")
            else:
                v, se = float(col[0]), float(self.per_prompt_stderr[0, j])
                e = Estimate(v, se, self.n_samples, v - 1.96 * se, v + 1.96 * se, 0.95, self.method)
            out.append(e)
        return out

    @property
    def means(self) -> np.ndarray:
        return np.asarray(self.per_prompt.mean(axis=0), dtype=np.float64)

    @property
    def stderrs(self) -> np.ndarray:
        return np.array([e.stderr for e in self.estimates], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "n_samples": self.n_samples,
            "n": self.n.tolist(),
            "estimates": [e.to_dict() for e in self.estimates],
            "per_prompt": self.per_prompt.tolist(),
            "per_prompt_stderr": self.per_prompt_stderr.tolist(),
        }


def kl_curve(
    p: LanguageModel,
    q: LanguageModel,
    prompts: Sequence[SampledPrompt],
    *,
    ns: Iterable[int] | None = None,
    estimator: Estimator = "mc",
    n_samples: int = 64,
    n_tokens: int = 8,
    until_sentence_end: bool = False,
    stop_ids: Iterable[int] | None = None,
    system_prompt: str | None = None,
    rng: np.random.Generator | int | None = None,
    label: str = "",
) -> KLCurve:
    """``KL(P(·|sₙ) ‖ Q(·|s′ₙ))`` for every prompt and every prefix length ``n`` in ``ns``.

    ``sₙ`` is the prompt after ``n`` sentences (plus the format's response header) and
    ``s′ₙ`` the same for the target model, with ``system_prompt`` replacing the format
    header (Theorem 2's aligning prefix, fig. 3a / 11). Fig. 2 is ``kl_curve(P₋, P₊, …)``,
    fig. 3a ``kl_curve(P₋, P_LLM, …)``. Each (prompt, n) is one prefix: sampled once and
    scored once per model; the prefix lengths of one prompt are sampled and scored together
    (:func:`kl_samples_grid`).
    """
    if not prompts:
        raise InputError("kl_curve needs at least one prompt")
    if estimator not in ("mc", "rb", "rb_cv"):
        raise InputError(f"estimator must be one of mc, rb, rb_cv, got {estimator!r}")
    n_max = min(pr.n_sentences for pr in prompts)
    n_list = list(range(n_max + 1)) if ns is None else sorted({int(n) for n in ns})
    if not n_list or n_list[0] < 0 or n_list[-1] > n_max:
        raise InputError(f"ns must lie in [0, {n_max}] (the shortest prompt)")
    gen = _rng(rng)
    vals = np.empty((len(prompts), len(n_list)))
    ses = np.empty_like(vals)
    stops: frozenset[int] = frozenset()
    if until_sentence_end:
        stops = frozenset(int(t) for t in (stop_ids or ()))
        if not stops:
            raise InputError("until_sentence_end needs stop_ids (sentence-end token ids)")
    for i, pr in enumerate(prompts):
        # all prefix lengths of a prompt in one grid: their rows share decode batches
        cells = kl_samples_grid(
            p,
            [pr.context(p, n) for n in n_list],
            {"q": (q, [pr.target_context(q, n, system_prompt) for n in n_list])},
            n_samples=n_samples,
            n_tokens=n_tokens,
            stop_ids=stops,
            with_rb=estimator != "mc",
            rng=gen,
        )
        for j, cell in enumerate(cells):
            est = cell["q"].estimate(estimator)
            vals[i, j], ses[i, j] = est.value, est.stderr
    return KLCurve(
        n=np.asarray(n_list, dtype=np.int64),
        per_prompt=vals,
        per_prompt_stderr=ses,
        n_samples=n_samples,
        method=estimator,
        label=label,
    )
