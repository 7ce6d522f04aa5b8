"""Monte-Carlo estimators of the conditional KL divergence between two protocol models.

The quantity of Definition 2 (β-distinguishability) and of Lemma 5 / eq. 7 (convergence):

    KL(P‖Q | s) = E_{y~P(·|s)}[log P(y|s) − log Q(y|s)]

where the continuation ``y`` is, by ``unit``:

* ``"sentence"`` — the NEXT SENTENCE of the prompt, Definition 2's unit: P's context is the
  prompt after n sentences plus the format's forced opener of sentence n+1 (a chat user-turn
  header; nothing for the newline format), and ``y`` is sampled until a sentence/turn-end
  token (kept) or ``max_sentence_tokens`` (then counted as *truncated*). The stopping rule
  is the prompt sampler's (:func:`~bebkit.estimators.prompts.sample_prompts`, including its
  ``skip_blank``: a stop token before any non-blank text does not end the sentence), so the
  continuation is distributed as the prompt's own next sentence. It is a stopping time, so
  the chain rule below still holds with a random length.
* ``"tokens"`` — a fixed ``n_tokens`` tokens after the format's *response* header (optionally
  stopped at a sentence end, ``until_sentence_end``): the model's reply, the unit of the
  authors' code (appendix L.1, 8 tokens). It truncates long sentences and runs past the end
  of short ones, so it is NOT Definition 2's per-sentence KL; kept for comparison with the
  paper's figures.

Two estimators, both reported per ``unit``:

* :func:`kl_mc` — plain Monte Carlo ``(1/N) Σ_i Σ_t log P(y⁽ⁱ⁾_t|·)/Q(y⁽ⁱ⁾_t|·)`` (the
  paper's, appendix L.1, but scoring *every* generated token: the authors' code skipped the
  first one);
* :func:`kl_rao_blackwell` — along each sampled path, sum the *exact* next-token KL over the
  whole vocabulary at every realised step (up to and including the step that emitted the
  stop token): by the chain rule ``KL(P‖Q|s) = E_{y~P}[Σ_{t≤τ} KL(P(·|s,y<t) ‖ Q(·|s,y<t))]``
  for any stopping time τ. Same expectation, lower variance; the first step (identical
  context for every sample) is then exact. An optional control variate uses the zero-mean
  martingale ``Σ_t (log P(y_t|·)/Q(y_t|·) − KL_t)`` that comes for free from the same passes.

Direction: :func:`directional_kl_curve` names which model is sampled and which is the
reference (``"neg||pos"``: β of Definition 2 over s ~ P₋; ``"pos||neg"``: β′ of Lemma 4 over
s₀ ~ P₊, consumed by Theorems 2 and 3; ``"neg||model"``: the convergence curve of Lemma 5;
see :data:`bebkit.estimators.logratio.DIRECTIONS`).

Cost: P is sampled once per prefix by :func:`~bebkit.models.protocol.sample_scored`, which
returns ``log P(y_t | ·)`` (and, for Rao-Blackwell, ``P(· | ·)``) from the sampling pass itself
— P's own continuations are never re-scored — and each target Q scores them with one
``continuation_logprobs`` call that also computes the per-step KL against P's distributions
(``reference=``), so no ``[N, T, V]`` array of Q is built. Continuations have variable
lengths; every per-token array is zero (log-probs, step KL) beyond each row's length, so the
sums mask past the stop. Full distributions are float32 and memory-capped by sampling in row
chunks.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from bebkit.checkpoint import Checkpoint
from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.logratio import DIRECTIONS, direction_models, prompt_layout
from bebkit.estimators.prompts import (
    SampledPrompt,
    blank_token_ids,
    prompt_reads,
    stop_token_ids,
)
from bebkit.models.protocol import (
    ContinuationScores,
    LanguageModel,
    StopCondition,
    TokenIds,
    continuation_logprobs_many,
    reference_step_kl,
    sample_scored_many,
)

Estimator = Literal["mc", "rb", "rb_cv"]
#: ``"sentence"``: KL of the next prompt sentence (Definition 2); ``"tokens"``: of a fixed
#: number of tokens of the model's reply (the authors' appendix L.1 protocol).
Unit = Literal["tokens", "sentence"]
#: Default cap of a per-sentence continuation (= the prompt sampler's default).
DEFAULT_MAX_SENTENCE_TOKENS = 48
#: Default cap on one ``[N, T, V]`` array of P's distributions kept for the Rao-Blackwell
#: terms (8 B per entry assumed, for the float32 array and the scoring pass's copies). It
#: sets how many rows are sampled together: with SmolLM2 (V = 49k) and 48-token sentences,
#: 256 MiB allowed 14 rows per draw and 2 GiB allows 113 (a prefix's 64 samples at once):
#: 1.74× faster per sample in a profile of two 180–250-token prefixes; with the decode cache's
#: preallocated room, 1.86× (benchmark 10, benchmarks/RESULTS-sentence.md).
#: ``BEBKIT_DIST_BUDGET_MB`` overrides it on smaller machines.
_DIST_BUDGET_BYTES = 2048 * 2**20
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
        unit: ``"sentence"`` or ``"tokens"`` (what one continuation is).
        max_tokens: the cap (``max_sentence_tokens`` or ``n_tokens``).
        truncated: ``[N]`` (sentence unit) continuations that hit the cap without a stop
            token — their KL is that of a sentence prefix, an underestimate; None otherwise.
    """

    mc: np.ndarray
    rb: np.ndarray | None
    lengths: np.ndarray
    unit: str = "tokens"
    max_tokens: int = 0
    truncated: np.ndarray | None = None

    @property
    def n_truncated(self) -> int:
        """Continuations that hit the cap before a sentence end (0 for the token unit)."""
        return 0 if self.truncated is None else int(np.count_nonzero(self.truncated))

    def estimate(self, estimator: Estimator = "mc") -> Estimate:
        """Turn the per-sample terms into an :class:`Estimate` (mean ± sd/√N).

        The method names the unit: ``kl_mc_per_sentence`` or ``kl_mc_per_8_tokens``.
        """
        suffix = _unit_suffix(self.unit, self.max_tokens)
        if estimator == "mc":
            return Estimate.from_samples(self.mc, method="kl_mc" + suffix)
        if self.rb is None:
            raise InputError("Rao-Blackwell terms were not computed (with_rb=False)")
        if estimator == "rb":
            return Estimate.from_samples(self.rb, method="kl_rao_blackwell" + suffix)
        if estimator == "rb_cv":
            return replace(
                _control_variate(
                    self.rb.astype(np.float64),
                    self.mc.astype(np.float64) - self.rb.astype(np.float64),
                ),
                method="kl_rao_blackwell_cv" + suffix,
            )
        raise InputError(f"estimator must be one of mc, rb, rb_cv, got {estimator!r}")


def _unit_suffix(unit: str, max_tokens: int) -> str:
    if unit == "sentence":
        return "_per_sentence"
    return f"_per_{max_tokens}_tokens" if max_tokens else ""


#: Revisions of an estimator's definition that change its numbers; they enter the cache key of
#: every stage run with that estimator (``Settings.key_material``), so a stage cached under an
#: older definition is recomputed. rb_cv 2: leave-one-out coefficient, jackknife stderr.
#: mc 2: a curve's prefixes are sampled in groups of up to ``_GROUP_ROWS`` rows (before, one
#: prefix per group): the same estimator, but the generator's draws land in other rows.
ESTIMATOR_REVISIONS: dict[str, str] = {"rb_cv": "2", "mc": "2"}

#: rb_cv needs this many samples: at n = 3 the leave-one-out slope through two points has no
#: finite mean, at n = 4 no finite variance; below it the estimate is plain ``rb``.
CV_MIN_SAMPLES = 5
#: above this many samples the jackknife deletes blocks (``_JACKKNIFE_BLOCKS`` of them) rather
#: than single samples, keeping the stderr O(n·blocks) instead of O(n²)
_JACKKNIFE_MAX_SINGLE = 512
_JACKKNIFE_BLOCKS = 64


def _loo_adjusted(g: np.ndarray, d: np.ndarray) -> np.ndarray:
    """``g_i − c₋ᵢ·d_i`` with ``c₋ᵢ = Cov(g, d)/Var(d)`` over the samples other than i (n ≥ 3)."""
    n = g.size
    m = n - 1
    # sums over j ≠ i from the totals, O(n) for all i at once; on data centred first, so that
    # the leave-one-out variance of a control that is constant on the other n − 1 samples (a
    # repeated continuation) comes out 0 rather than a rounding residue that makes c₋ᵢ huge
    gc, dc = g - g.mean(), d - d.mean()
    sg, sd = gc.sum() - gc, dc.sum() - dc
    sgd, sdd = float(gc @ dc) - gc * dc, float(dc @ dc) - dc * dc
    cov = sgd - sg * sd / m
    var = sdd - sd * sd / m
    # The zero-variance test's scale includes d_i, so strictly c₋ᵢ is not a function of the
    # other samples alone; it only differs when d_i lies ~3·10⁴ sd from them (then c₋ᵢ = 0).
    tiny = 1e-9 * max(float(dc @ dc), 1e-300)
    c = np.divide(cov, var, out=np.zeros(n), where=var > tiny)
    return g - c * d  # E[d] = 0 is known exactly, so d itself (not d − d̄) is subtracted


def _control_variate(g: np.ndarray, d: np.ndarray) -> Estimate:
    """``mean_i(g_i − c₋ᵢ·d_i)`` with ``E[d] = 0`` and a leave-one-out coefficient
    ``c₋ᵢ = Cov(g, d)/Var(d)`` over the other n − 1 samples; jackknife stderr.

    Why leave-one-out: with one ``c`` fitted on all samples, ``E[c·d̄] = Cov(c, d̄) ≠ 0`` and the
    estimate carries an O(1/n) bias (``benchmarks/cv_bias.py``: up to 1.8× an estimate's own
    sd at n = 4 on exact synthetic worlds). ``c₋ᵢ`` is independent of ``d_i``, so
    ``E[c₋ᵢ d_i] = E[c₋ᵢ]·E[d_i] = 0``: unbiased wherever the mean exists, which needs
    n ≥ 5 in general (``CV_MIN_SAMPLES``; fewer samples give plain ``rb``). A bias does not
    average away over prompts and prefixes; noise does. Why the jackknife: the adjusted terms
    share data through the c₋ᵢ, and the old residual sd/√n reported 0.01–0.94 of the true
    spread at n = 64 on those worlds; the delete-one jackknife of the whole estimator reports
    0.61–1.21 of it — still too small in worlds with a few distinct continuations, where
    rb_cv's intervals are anti-conservative (``rb`` has no such problem: it is the default).
    """
    n = g.size
    g = np.asarray(g, dtype=np.float64)
    d = np.asarray(d, dtype=np.float64)
    if n < CV_MIN_SAMPLES or not (np.isfinite(g).all() and np.isfinite(d).all()):
        # too few samples for a coefficient with finite moments, or an infinite KL term
        # (the mean is then infinite whatever c is; rb says so without inf − inf = NaN)
        return Estimate.from_samples(g, method="kl_rao_blackwell_cv")
    value = float(_loo_adjusted(g, d).mean())
    if n <= _JACKKNIFE_MAX_SINGLE:
        blocks = [np.array([j]) for j in range(n)]
    else:  # delete-a-block jackknife: samples are iid, so contiguous blocks will do
        blocks = np.array_split(np.arange(n), _JACKKNIFE_BLOCKS)
    k = len(blocks)
    theta = np.empty(k)
    for j, blk in enumerate(blocks):
        keep = np.ones(n, dtype=bool)
        keep[blk] = False
        theta[j] = _loo_adjusted(g[keep], d[keep]).mean()
    se = math.sqrt((k - 1) / k * float(((theta - theta.mean()) ** 2).sum()))
    return Estimate(value, se, n, value - 1.96 * se, value + 1.96 * se, 0.95, "kl_rao_blackwell_cv")


def step_kl(dists_p: np.ndarray, dists_q: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[N, T]`` exact next-token ``KL(P(·|h)‖Q(·|h)) = Σ_v P(v|h)(log P(v|h) − log Q(v|h))``.

    Zero beyond each path's length; a token with P = 0 contributes 0, with P > 0 = Q: +inf.
    (numpy, float64; the estimators get the same numbers from ``continuation_logprobs(...,
    reference=)`` without materialising Q's distributions.)
    """
    return reference_step_kl(dists_p, dists_q, lengths)


def dist_budget_bytes() -> int:
    """The memory budget of one distributions array: ``$BEBKIT_DIST_BUDGET_MB`` MiB if set
    (a positive integer), else :data:`_DIST_BUDGET_BYTES`."""
    raw = os.environ.get("BEBKIT_DIST_BUDGET_MB", "").strip()
    if not raw:
        return _DIST_BUDGET_BYTES
    try:
        mb = int(raw)
    except ValueError:
        mb = 0
    if mb < 1:
        raise InputError(f"BEBKIT_DIST_BUDGET_MB must be a positive integer (MiB), got {raw!r}")
    return mb * 2**20


def _dist_chunk(model: LanguageModel, t_max: int) -> int:
    """Rows per ``[rows, t_max, V]`` distributions chunk under the memory budget."""
    return max(1, dist_budget_bytes() // (t_max * int(model.vocab_size) * 8))


def _layout(p: LanguageModel, t_max: int, n_samples: int, with_rb: bool) -> tuple[str, int]:
    """How :func:`kl_samples_grid` lays out its draws: ``("chunks", rows)`` — each prefix's
    samples in chunks of ``rows`` (the distributions budget holds fewer than ``n_samples``
    rows) — or ``("groups", k)`` — ``k`` prefixes' samples drawn together. The layout decides
    which random draws land in which row, so it is part of a stored row's key."""
    # Without Rao-Blackwell terms no distributions are kept, so nothing limits a group but
    # _GROUP_ROWS (a prefix with more samples is one group of its own). Until revision 2 of
    # "mc" this was n_samples: one prefix per group, the decode steps never shared.
    dist_rows = _dist_chunk(p, t_max) if with_rb else max(n_samples, _GROUP_ROWS)
    if n_samples > dist_rows:
        return "chunks", dist_rows
    return "groups", max(1, min(_GROUP_ROWS, dist_rows) // n_samples)


def _check_sizes(n_samples: int, n_tokens: int) -> None:
    if n_samples < 2:
        raise InputError(f"n_samples must be >= 2, got {n_samples}")
    if n_tokens < 1:
        raise InputError(f"n_tokens must be >= 1, got {n_tokens}")


def _stop_condition(
    unit: str, n_tokens: int, max_sentence_tokens: int, stop_ids: Iterable[int]
) -> StopCondition:
    """The sampler's stopping rule for a unit (validated)."""
    stops = frozenset(int(t) for t in stop_ids)
    if unit == "tokens":
        return StopCondition(n_tokens, stops)
    if unit != "sentence":
        raise InputError(f"unit must be 'tokens' or 'sentence', got {unit!r}")
    if max_sentence_tokens < 1:
        raise InputError(f"max_sentence_tokens must be >= 1, got {max_sentence_tokens}")
    if not stops:
        raise InputError("unit='sentence' needs stop_ids (sentence/turn-end token ids)")
    return StopCondition(max_sentence_tokens, stops)


def _is_blank_stop(model: LanguageModel, y: Sequence[int], stop: StopCondition) -> bool:
    """A continuation that stopped on a stop token before any non-blank text (and has room)."""
    return (
        bool(y)
        and y[-1] in stop.stop_token_ids
        and len(y) < stop.max_new_tokens
        and not model.decode(list(y)).strip()
    )


def _extend_blank(
    p: LanguageModel,
    prefixes: Sequence[list[int]],
    drawn: list[tuple[list[list[int]], ContinuationScores]],
    stop: StopCondition,
    rng: np.random.Generator,
    with_dists: bool,
) -> list[tuple[list[list[int]], ContinuationScores]]:
    """Keep sampling rows that stopped on a blank "sentence" (``sample_prompts``' skip_blank).

    The rule "stop at the first stop token after some non-blank text, or at the cap" is a
    stopping time on the sampled path, so the joined rows are exact draws of the next
    sentence and their log-probs / distributions are P's own (concatenated per row).
    """
    pieces: dict[tuple[int, int], list[tuple[list[int], np.ndarray, np.ndarray | None]]] = {}
    pending: list[tuple[int, int]] = []
    for k, (ys, sc) in enumerate(drawn):
        for i, y in enumerate(ys):
            if _is_blank_stop(p, y, stop):
                n_y = len(y)
                d = sc.dists[i, :n_y] if (with_dists and sc.dists is not None) else None
                pieces[(k, i)] = [(list(y), np.asarray(sc.token_logprobs[i, :n_y]), d)]
                pending.append((k, i))
    if not pending:
        return drawn
    while pending:
        # rows with the same remaining budget share one batched call (1 draw per prefix)
        by_rest: dict[int, list[tuple[int, int]]] = {}
        for key in pending:
            used = sum(len(y) for y, _, _ in pieces[key])
            by_rest.setdefault(stop.max_new_tokens - used, []).append(key)
        pending = []
        for rest, keys in sorted(by_rest.items()):
            ctxs = [prefixes[k] + [t for y, _, _ in pieces[(k, i)] for t in y] for k, i in keys]
            more = sample_scored_many(
                p, ctxs, 1, StopCondition(rest, stop.stop_token_ids), rng=rng, with_dists=with_dists
            )
            for key, (ys2, sc2) in zip(keys, more, strict=True):
                y2 = ys2[0]
                d2 = sc2.dists[0, : len(y2)] if (with_dists and sc2.dists is not None) else None
                pieces[key].append((list(y2), np.asarray(sc2.token_logprobs[0, : len(y2)]), d2))
                joined = [t for y, _, _ in pieces[key] for t in y]
                if _is_blank_stop(p, joined, stop):
                    pending.append(key)
    out: list[tuple[list[list[int]], ContinuationScores]] = []
    for k, (ys, sc) in enumerate(drawn):
        rows = [key for key in pieces if key[0] == k]
        if not rows:
            out.append((ys, sc))
            continue
        new_ys = [list(y) for y in ys]
        for _, i in rows:
            new_ys[i] = [t for y, _, _ in pieces[(k, i)] for t in y]
        lengths = np.array([len(y) for y in new_ys], dtype=np.int64)
        width = int(lengths.max())
        lp = np.zeros((len(new_ys), width))
        lp[:, : sc.token_logprobs.shape[1]] = sc.token_logprobs
        dists = None
        if with_dists and sc.dists is not None:
            # rows beyond a path's length are undefined; −inf keeps them inert (prob 0)
            dists = np.full((len(new_ys), width, sc.dists.shape[2]), -np.inf, sc.dists.dtype)
            dists[:, : sc.dists.shape[1]] = sc.dists
        for _, i in rows:
            lp[i] = 0.0
            lp[i, : lengths[i]] = np.concatenate([x for _, x, _ in pieces[(k, i)]])
            if dists is not None:
                dists[i, : lengths[i]] = np.concatenate(
                    [d for _, _, d in pieces[(k, i)] if d is not None]
                )
        out.append((new_ys, ContinuationScores(lp, lengths, dists)))
    return out


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
    unit: Unit = "tokens",
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    skip_blank: bool = True,
) -> list[dict[str, KLSamples]]:
    """Per prefix ``s_k``: ``y ~ P(·|s_k)`` once, and per target ``j`` the terms of
    ``KL(P(·|s_k) ‖ Q_j(·|s_{j,k}))``.

    ``targets`` maps a label to ``(Q_j, [s_{j,k} for every k])``. MC terms
    ``log P(y|s_k) − log Q_j(y|s_{j,k})`` take ``log P`` from the sampling pass; RB terms
    ``Σ_t KL(P(·|s_k,y<t) ‖ Q_j(·|s_{j,k},y<t))`` come from Q_j's scoring pass against P's
    distributions.

    ``unit="tokens"``: ``n_tokens`` tokens, or fewer when ``stop_ids`` is given (stopped after
    a stop token, kept). ``unit="sentence"``: the prefixes must end where a sentence starts
    (after the format's forced opener); ``y`` stops after a token of ``stop_ids`` (required,
    kept) — with ``skip_blank`` only once some non-blank text was sampled, like the prompt
    sampler — or after ``max_sentence_tokens`` tokens, and ``KLSamples.truncated`` marks the
    capped rows. ``n_tokens`` is ignored in the sentence unit.

    Cost: prefixes are sampled and scored in groups of about ``_GROUP_ROWS`` rows (models
    with ``sample_scored_many`` / ``continuation_logprobs_many`` decode a group's rows
    together; others loop). With ``with_rb`` a group also keeps P's ``[rows, T, V]``
    distributions under the memory budget, and a prefix with more samples than the budget
    allows is sampled in row chunks (same rng stream, one prefix encoding per chunk).
    """
    _check_sizes(n_samples, n_tokens)
    stop = _stop_condition(unit, n_tokens, max_sentence_tokens, stop_ids)
    if unit == "sentence" and skip_blank:
        # the sampler keeps going past a lone newline where it can (one batched pass);
        # _extend_blank below continues the rows of a model that stopped there anyway
        stop = replace(stop, blank_token_ids=blank_token_ids(p))
    pres = [[int(t) for t in pre] for pre in prefixes]
    for label, (_, qpres) in targets.items():
        if len(qpres) != len(pres):
            raise InputError(f"target {label!r} needs one context per prefix")
    gen = _rng(rng)
    # units of work: (prefix indices, rows per prefix)
    how, size = _layout(p, stop.max_new_tokens, n_samples, with_rb)
    units: list[tuple[list[int], int]] = []
    if how == "chunks":
        for k in range(len(pres)):
            units += [([k], min(size, n_samples - d)) for d in range(0, n_samples, size)]
    else:
        for i in range(0, len(pres), size):
            units.append((list(range(i, min(i + size, len(pres)))), n_samples))
    mc: list[dict[str, list[np.ndarray]]] = [{j: [] for j in targets} for _ in pres]
    rb: list[dict[str, list[np.ndarray]]] = [{j: [] for j in targets} for _ in pres]
    lengths: list[list[np.ndarray]] = [[] for _ in pres]
    trunc: list[list[np.ndarray]] = [[] for _ in pres]
    for ks, m in units:
        group = [pres[k] for k in ks]
        drawn = sample_scored_many(p, group, m, stop, rng=gen, with_dists=with_rb)
        if unit == "sentence" and skip_blank:
            drawn = _extend_blank(p, group, drawn, stop, gen, with_rb)
        for k, (ys, sp) in zip(ks, drawn, strict=True):
            if min(len(y) for y in ys) < 1:
                raise InputError(f"{p.name} sampled an empty continuation")
            if with_rb and sp.dists is None:
                raise InputError(f"{p.name} returned no dists for with_dists=True")
            lengths[k].append(np.asarray(sp.lengths, dtype=np.int64))
            ended = [y[-1] in stop.stop_token_ids for y in ys]
            trunc[k].append(~np.asarray(ended, dtype=bool))
        refs = [sp.dists for _, sp in drawn] if with_rb else None
        for label, (q, qpres) in targets.items():
            scored = continuation_logprobs_many(
                q,
                [[int(t) for t in qpres[k]] for k in ks],
                [ys for ys, _ in drawn],
                references=refs,
            )
            for k, (_, sp), sq in zip(ks, drawn, scored, strict=True):
                # token_logprobs are 0 beyond each row's length: totals mask past the stop
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
                unit=unit,
                max_tokens=stop.max_new_tokens,
                truncated=np.concatenate(trunc[k]) if unit == "sentence" else None,
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
    unit: Unit = "tokens",
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    skip_blank: bool = True,
) -> dict[str, KLSamples]:
    """``y ~ P(·|prefix)`` once; per target ``j``: terms of ``KL(P(·|prefix) ‖ Q_j(·|prefix_j))``.

    ``targets`` maps a label to ``(Q_j, Q_j's context)``; :func:`kl_samples_grid` with one
    prefix (same ``unit`` semantics).
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
        unit=unit,
        max_sentence_tokens=max_sentence_tokens,
        skip_blank=skip_blank,
    )[0]


def _unit_stops(
    unit: str, until_sentence_end: bool, stop_ids: Iterable[int] | None
) -> frozenset[int]:
    stops: frozenset[int] = frozenset()
    if until_sentence_end or unit == "sentence":
        stops = frozenset(int(t) for t in (stop_ids or ()))
        if not stops:
            raise InputError(
                "until_sentence_end / unit='sentence' need stop_ids (sentence-end token ids)"
            )
    return stops


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
    unit: Unit = "tokens",
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    skip_blank: bool = True,
) -> KLSamples:
    """Sample ``y ~ P(·|prefix)`` and score it under P (``prefix``) and Q (``q_prefix``).

    ``q_prefix`` (default: ``prefix``) lets the target model see a different context for the
    same continuation, e.g. with an aligning system prompt (Theorem 2, fig. 3a). Token unit:
    with ``until_sentence_end`` the continuation stops after a token of ``stop_ids`` (kept)
    or ``n_tokens`` tokens. Sentence unit (``unit="sentence"``, ``stop_ids`` required): one
    whole sentence, capped at ``max_sentence_tokens`` (see :func:`kl_samples_grid`). P's
    scores come from its sampling pass (:func:`kl_samples_multi`).
    """
    _check_sizes(n_samples, n_tokens)
    stops = _unit_stops(unit, until_sentence_end, stop_ids)
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
        unit=unit,
        max_sentence_tokens=max_sentence_tokens,
        skip_blank=skip_blank,
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
    unit: Unit = "tokens",
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    skip_blank: bool = True,
) -> Estimate:
    """Plain Monte Carlo ``KL(P‖Q|s) ≈ (1/N) Σ_i [log P(y⁽ⁱ⁾|s) − log Q(y⁽ⁱ⁾|s)]``, ``y⁽ⁱ⁾ ~ P(·|s)``.

    The estimator of appendix L.1 (64 samples of 8 tokens: ``unit="tokens"``), with every
    token scored; ``unit="sentence"`` gives Definition 2's per-sentence KL.
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
        unit=unit,
        max_sentence_tokens=max_sentence_tokens,
        skip_blank=skip_blank,
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
    unit: Unit = "tokens",
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    skip_blank: bool = True,
) -> Estimate:
    """Rao-Blackwellised ``KL(P‖Q|s) ≈ (1/N) Σ_i Σ_{t≤τᵢ} KL(P(·|s,y⁽ⁱ⁾_<t) ‖ Q(·|s,y⁽ⁱ⁾_<t))``.

    Unbiased by the chain rule (each log-ratio term replaced by its conditional expectation
    given the path so far; τᵢ = the realised length, a stopping time); with
    ``control_variate`` the zero-mean ``Σ_t [log P/Q(y_t) − KL_t]`` is subtracted with the
    optimal coefficient.
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
        unit=unit,
        max_sentence_tokens=max_sentence_tokens,
        skip_blank=skip_blank,
    ).estimate("rb_cv" if control_variate else "rb")


@dataclass(frozen=True)
class KLCurve:
    """``KL(P‖Q | s₁…sₙ)`` for prefix lengths ``n`` over several prompts ``s ~ P``.

    Attributes:
        n: ``[K]`` prefix lengths (sentences).
        per_prompt: ``[P, K]`` per-prompt KL estimates (mean over continuations).
        per_prompt_stderr: ``[P, K]`` their Monte-Carlo stderrs.
        n_samples: continuations per (prompt, n).
        method: ``"mc"``, ``"rb"`` or ``"rb_cv"``.
        label: free text.
        unit: ``"sentence"`` (KL of the next prompt sentence, Definition 2) or ``"tokens"``
            (KL of ``max_tokens`` tokens of the reply, appendix L.1's protocol).
        max_tokens: the continuation cap (``max_sentence_tokens`` or ``n_tokens``).
        n_truncated: ``[P, K]`` continuations per cell that hit the cap before a sentence end
            (sentence unit; zeros otherwise).
        direction: ``"a||b"`` of :data:`~bebkit.estimators.logratio.DIRECTIONS` when stated.
    """

    n: np.ndarray
    per_prompt: np.ndarray
    per_prompt_stderr: np.ndarray
    n_samples: int
    method: str
    label: str = ""
    unit: str = "tokens"
    max_tokens: int = 0
    n_truncated: np.ndarray | None = None
    direction: str = ""

    @property
    def estimates(self) -> list[Estimate]:
        """Pooled ``E_{s~P}[KL(P‖Q|s)]`` per n (method names the unit).

        Two-stage sampling: the sd of the per-prompt means over prompts already contains
        both the prompt-to-prompt spread and the continuation noise, so stderr = sd/√P and
        ``n`` counts prompts. With one prompt, the within-prompt stderr is used.
        """
        out = []
        n_prompts = self.per_prompt.shape[0]
        suffix = _unit_suffix(self.unit, self.max_tokens)
        for j in range(self.n.size):
            col = self.per_prompt[:, j]
            if n_prompts >= 2:
                e = Estimate.from_samples(col, method=f"kl_{self.method}_pooled{suffix}")
            else:
                v, se = float(col[0]), float(self.per_prompt_stderr[0, j])
                e = Estimate(
                    v, se, self.n_samples, v - 1.96 * se, v + 1.96 * se, 0.95, self.method + suffix
                )
            out.append(e)
        return out

    @property
    def means(self) -> np.ndarray:
        return np.asarray(self.per_prompt.mean(axis=0), dtype=np.float64)

    @property
    def stderrs(self) -> np.ndarray:
        return np.array([e.stderr for e in self.estimates], dtype=np.float64)

    @property
    def truncated_total(self) -> int:
        """Continuations over the whole curve that hit the cap (sentence unit)."""
        return 0 if self.n_truncated is None else int(np.sum(self.n_truncated))

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "method": self.method,
            "unit": self.unit,
            "max_tokens": self.max_tokens,
            "direction": self.direction,
            "uses": DIRECTIONS.get(self.direction, ""),
            "n_samples": self.n_samples,
            "n": self.n.tolist(),
            "estimates": [e.to_dict() for e in self.estimates],
            "per_prompt": self.per_prompt.tolist(),
            "per_prompt_stderr": self.per_prompt_stderr.tolist(),
            "n_truncated": None if self.n_truncated is None else self.n_truncated.tolist(),
            "truncated_total": self.truncated_total,
            "continuations_total": int(self.per_prompt.size * self.n_samples),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> KLCurve:
        """The curve :meth:`to_dict` wrote (its derived fields are recomputed, not read)."""
        trunc = d.get("n_truncated")
        return cls(
            n=np.asarray(d["n"], dtype=np.int64),
            per_prompt=np.asarray(d["per_prompt"], dtype=np.float64),
            per_prompt_stderr=np.asarray(d["per_prompt_stderr"], dtype=np.float64),
            n_samples=int(d["n_samples"]),
            method=str(d["method"]),
            label=str(d.get("label", "")),
            unit=str(d.get("unit", "tokens")),
            max_tokens=int(d.get("max_tokens", 0)),
            n_truncated=None if trunc is None else np.asarray(trunc, dtype=np.int64),
            direction=str(d.get("direction", "")),
        )


def _encode(model: LanguageModel, text: str) -> list[int]:
    return list(model.encode(text)) if text else []


def sentence_opener(
    prompt: SampledPrompt, model: LanguageModel, n: int, system_prompt: str | None = None
) -> list[int]:
    """The forced tokens between the n-sentence prefix and the SAMPLED tokens of sentence n+1.

    Read off the prompt itself where it has a sentence n+1 (its sampled span,
    :func:`~bebkit.estimators.logratio.prompt_layout`, in the view of ``system_prompt``) —
    exact for per-position openers (alternating user/assistant layouts) and for a system
    prompt rendered inside the first turn — and the format's opener of position n+1 after
    the last sentence.
    """
    toks, bounds, spans = prompt_layout(prompt, model, system_prompt)
    if n < prompt.n_sentences:
        return list(toks[bounds[n] : spans[n][0]])
    fmt = prompt.fmt
    return _encode(
        model, fmt.prefix_for(n + 1) if hasattr(fmt, "prefix_for") else fmt.sentence_prefix
    )


def sentence_contexts(
    prompt: SampledPrompt, p: LanguageModel, q: LanguageModel, n: int, system_prompt: str | None
) -> tuple[list[int], list[int]]:
    """``(P's, Q's)`` contexts whose continuation is sentence n+1 of the prompt.

    ``prefix(n) ⊕ opener`` for P (its own header: the text it sampled the prompt in). Q sees
    its target view with the same body and the next sentence's opener: with ``system_prompt``
    the aligning system turn replaces the format header (Theorem 2's aligning prefix);
    without one Q sees P's text, except where the chat template would insert a default system
    prompt (SmolLM2's "You are a helpful AI assistant…"): the prompt-free condition is then
    an empty system turn, exactly as :meth:`SampledPrompt.target_context` (the token unit)
    and the behavior-expectation responses read it — one "no aligning prompt" everywhere.
    """
    if not 0 <= n <= prompt.n_sentences:
        raise InputError(f"n must be in [0, {prompt.n_sentences}], got {n}")
    p_ctx = list(prompt.tokens[: prompt.boundaries[n]]) + sentence_opener(prompt, p, n)
    system = target_system(prompt, system_prompt)
    if system is None:
        return p_ctx, list(p_ctx)
    toks, bounds, _ = prompt_layout(prompt, q, system)
    return p_ctx, list(toks[: bounds[n]]) + sentence_opener(prompt, q, n, system)


def target_system(prompt: SampledPrompt, system_prompt: str | None) -> str | None:
    """The system text of the target's view: ``system_prompt``, or for the prompt-free
    condition ``""`` (an empty system turn) when the format's template would otherwise insert
    a default system prompt, else None (the prompt's own text)."""
    fmt = getattr(prompt, "fmt", None)
    if system_prompt is None and getattr(fmt, "none_as_empty_system", False):
        return ""
    return system_prompt


def kl_curves(
    p: LanguageModel,
    targets: Mapping[str, tuple[LanguageModel, str | None]],
    prompts: Sequence[SampledPrompt],
    *,
    ns: Iterable[int] | None = None,
    estimator: Estimator = "mc",
    unit: Unit = "tokens",
    n_samples: int = 64,
    n_tokens: int = 8,
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    until_sentence_end: bool = False,
    stop_ids: Iterable[int] | None = None,
    skip_blank: bool = True,
    rng: np.random.Generator | int | None = None,
    direction: str = "",
    progress: Callable[[int, int], None] | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_name: str = "kl",
) -> dict[str, KLCurve]:
    """``KL(P(·|sₙ) ‖ Q_j(·|s′ₙ))`` for every target j, prompt and prefix length n in ``ns``.

    ``targets`` maps a label to ``(Q_j, system_prompt or None)``; ``s′ₙ`` is Q_j's view with
    the system prompt replacing the format header. One P-sample set per (prompt, n), shared
    by all targets; the prefix lengths of one prompt are sampled and scored together
    (:func:`kl_samples_grid`).

    ``unit="sentence"``: the continuation is sentence n+1 of the prompt
    (:func:`sentence_contexts`), stopped by ``stop_ids`` — default: the prompt format's stop
    tokens (:func:`~bebkit.estimators.prompts.stop_token_ids`, as the sampler used) — with
    the cap ``max_sentence_tokens`` and ``n_truncated`` counted. ``unit="tokens"``: the
    reply after the format's response header, ``n_tokens`` tokens (``until_sentence_end``:
    stopped at ``stop_ids``).

    ``checkpoint``: each prompt's row is a unit ``<checkpoint_name>-<i>`` (keyed by the
    prompt's tokens, the prefix lengths, the targets and the sizes), so a killed run resumes
    at the first unfinished prompt with the generator where it stood (:mod:`bebkit.checkpoint`).
    """
    if not prompts:
        raise InputError("kl_curve needs at least one prompt")
    if not targets:
        raise InputError("need at least one target model")
    if estimator not in ("mc", "rb", "rb_cv"):
        raise InputError(f"estimator must be one of mc, rb, rb_cv, got {estimator!r}")
    if unit not in ("tokens", "sentence"):
        raise InputError(f"unit must be 'tokens' or 'sentence', got {unit!r}")
    n_max = min(pr.n_sentences for pr in prompts)
    n_list = list(range(n_max + 1)) if ns is None else sorted({int(n) for n in ns})
    if not n_list or n_list[0] < 0 or n_list[-1] > n_max:
        raise InputError(f"ns must lie in [0, {n_max}] (the shortest prompt)")
    gen = _rng(rng)
    shape = (len(prompts), len(n_list))
    vals = {k: np.empty(shape) for k in targets}
    ses = {k: np.empty(shape) for k in targets}
    n_trunc = np.zeros(shape, dtype=np.int64)
    cap = max_sentence_tokens if unit == "sentence" else n_tokens
    total, done = len(prompts) * len(n_list), 0
    ckpt = checkpoint or Checkpoint(None)
    sizes = {
        "estimator": estimator, "unit": unit, "n_samples": n_samples, "n_tokens": n_tokens,
        "max_sentence_tokens": max_sentence_tokens, "until_sentence_end": until_sentence_end,
        "stop_ids": None if stop_ids is None else sorted(int(t) for t in stop_ids),
        "skip_blank": skip_blank, "ns": n_list, "p": p.name,
        # the rows sampled together set how the generator's draws are laid out: a stored
        # unit is reused only under the same layout, so a resumed curve is one layout's
        "layout": list(_layout(p, cap, n_samples, estimator != "mc")),
        "targets": {k: [q.name, system] for k, (q, system) in targets.items()},
    }  # fmt: skip

    def row(pr: SampledPrompt) -> dict[str, Any]:
        """One prompt's KL at every n, for every target (the unit a checkpoint stores)."""
        if unit == "sentence":
            stops = (
                frozenset(int(t) for t in stop_ids)
                if stop_ids is not None
                else stop_token_ids(p, pr.fmt)
            )
            ctx = {
                k: [sentence_contexts(pr, p, q, n, system) for n in n_list]
                for k, (q, system) in targets.items()
            }
            p_ctx = next(iter(ctx.values()))
            pres = [c[0] for c in p_ctx]
            grid = {k: (targets[k][0], [c[1] for c in cs]) for k, cs in ctx.items()}
        else:
            stops = _unit_stops(unit, until_sentence_end, stop_ids)
            pres = [pr.context(p, n) for n in n_list]
            grid = {
                k: (q, [pr.target_context(q, n, system) for n in n_list])
                for k, (q, system) in targets.items()
            }
        # all prefix lengths of a prompt in one grid: their rows share decode batches
        cells = kl_samples_grid(
            p,
            pres,
            grid,
            n_samples=n_samples,
            n_tokens=n_tokens,
            stop_ids=stops,
            with_rb=estimator != "mc",
            rng=gen,
            unit=unit,
            max_sentence_tokens=max_sentence_tokens,
            skip_blank=skip_blank,
        )
        out: dict[str, Any] = {
            "values": {k: [0.0] * len(cells) for k in targets},
            "stderrs": {k: [0.0] * len(cells) for k in targets},
            "n_truncated": [0] * len(cells),
        }
        for j, cell in enumerate(cells):
            for k, ks in cell.items():
                est = ks.estimate(estimator)
                out["values"][k][j], out["stderrs"][k][j] = est.value, est.stderr
                out["n_truncated"][j] = int(ks.n_truncated)
        return out

    for i, pr in enumerate(prompts):
        got = ckpt.unit(
            f"{checkpoint_name}-{i}",
            gen,
            functools.partial(row, pr),
            dump=lambda r: r,
            load=lambda r: r,
            reads={**prompt_reads(pr), **sizes},
        )
        for k in targets:
            # None is a NaN stored as JSON (to_jsonable); float() of a fresh value is exact
            vals[k][i] = [np.nan if v is None else float(v) for v in got["values"][k]]
            ses[k][i] = [np.nan if v is None else float(v) for v in got["stderrs"][k]]
        n_trunc[i] = got["n_truncated"]
        done += len(n_list)
        if progress is not None:
            progress(done, total)
    return {
        k: KLCurve(
            n=np.asarray(n_list, dtype=np.int64),
            per_prompt=vals[k],
            per_prompt_stderr=ses[k],
            n_samples=n_samples,
            method=estimator,
            label=k,
            unit=unit,
            max_tokens=cap,
            n_truncated=n_trunc.copy(),
            direction=direction,
        )
        for k in targets
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
    unit: Unit = "tokens",
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    skip_blank: bool = True,
    direction: str = "",
    checkpoint: Checkpoint | None = None,
) -> KLCurve:
    """``KL(P(·|sₙ) ‖ Q(·|s′ₙ))`` for every prompt and every prefix length ``n`` in ``ns``.

    ``sₙ`` is the prompt after ``n`` sentences — plus the format's response header
    (``unit="tokens"``, the reply) or the next sentence's forced opener (``unit="sentence"``,
    Definition 2's unit) — and ``s′ₙ`` the same for the target model, with ``system_prompt``
    replacing the format header (Theorem 2's aligning prefix, fig. 3a / 11). Fig. 2 is
    ``kl_curve(P₋, P₊, …)``, fig. 3a ``kl_curve(P₋, P_LLM, …)``; :func:`directional_kl_curve`
    names the direction. One target of :func:`kl_curves`.
    """
    curve = kl_curves(
        p,
        {"q": (q, system_prompt)},
        prompts,
        ns=ns,
        estimator=estimator,
        unit=unit,
        n_samples=n_samples,
        n_tokens=n_tokens,
        max_sentence_tokens=max_sentence_tokens,
        until_sentence_end=until_sentence_end,
        stop_ids=stop_ids,
        skip_blank=skip_blank,
        rng=rng,
        direction=direction,
        checkpoint=checkpoint,
    )["q"]
    return replace(curve, label=label)


def directional_kl_curve(
    models: Mapping[str, LanguageModel],
    prompts: Sequence[SampledPrompt],
    *,
    direction: str,
    estimator: Estimator = "rb",
    unit: Unit = "sentence",
    ns: Iterable[int] | None = None,
    n_samples: int = 64,
    n_tokens: int = 8,
    max_sentence_tokens: int = DEFAULT_MAX_SENTENCE_TOKENS,
    stop_ids: Iterable[int] | None = None,
    skip_blank: bool = True,
    system_prompt: str | None = None,
    require_source: bool = True,
    rng: np.random.Generator | int | None = None,
    checkpoint: Checkpoint | None = None,
    checkpoint_name: str = "kl",
) -> KLCurve:
    """Per-sentence ``KL(P_a ‖ P_b | sₙ)`` over prompts ``s ~ P_a`` for ``direction = "a||b"``.

    ``models`` maps roles (``"neg"``, ``"pos"``, ``"model"``) to models; the prompts must be
    samples of ``P_a`` (checked on ``SampledPrompt.source`` with ``require_source``). What
    each direction feeds (paper 001):

    * ``"neg||pos"`` — β of Definition 2 (min over n / the envelope's lower line): Theorem 1,
      and with prompts ending in a negative sentence Definition 3's β for Theorems 2–3;
    * ``"pos||neg"`` — β′: its max over n upper-bounds ``E_{s₀~P₊}[log P₊(s₀)/P₋(s₀)]/|s₀|``
      (Lemma 4 eq. 54), the aligning prompt's cost in Theorem 2 and each answer's in
      Theorem 3;
    * ``"neg||model"`` — the convergence curve of Lemma 5 / eq. 7 (fig. 3a, 11; with
      ``system_prompt`` the aligned model of Theorem 2's experiment).

    The result carries ``direction`` and ``unit`` (default ``"sentence"``).
    """
    first, second = direction_models(models, prompts, direction, require_source=require_source)
    return kl_curves(
        first,
        {direction: (second, system_prompt)},
        prompts,
        ns=ns,
        estimator=estimator,
        unit=unit,
        n_samples=n_samples,
        n_tokens=n_tokens,
        max_sentence_tokens=max_sentence_tokens,
        stop_ids=stop_ids,
        skip_blank=skip_blank,
        rng=rng,
        direction=direction,
        checkpoint=checkpoint,
        checkpoint_name=checkpoint_name,
    )[direction]
