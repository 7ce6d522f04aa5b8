"""The narrow model protocol every estimator sees: token log-probs and ancestral sampling.

Both the exact synthetic world (:mod:`bebkit.synthetic`) and real Hugging Face models
(:mod:`bebkit.models.hf`) implement :class:`LanguageModel`, so every estimator is tested
against exact answers first and then runs unchanged on real LMs.

Conventions
-----------
* Token sequences are plain ``Sequence[int]``. A *prefix* ``s`` is the conditioning context
  (it starts with the model's BOS token when the model has one); a *continuation* ``y`` is
  scored or sampled after it.
* All returned log-probabilities are natural-log, float64 numpy arrays, computed in float32
  or better (never bf16) because KL and log-ratio estimates are differences of them. Full
  ``[N, T, V]`` distributions may be float32 (a float64 copy of a 49k-token vocabulary is
  201 MB for 64 × 8 tokens and buys no precision: they are computed in float32).
* :class:`ScoredSampler` is an optional extension: a sampler that returns the log-probs it
  already computed while sampling. :func:`sample_scored` uses it when a model has it and
  falls back to ``sample`` + ``continuation_logprobs`` otherwise.
* Sampling is pure ancestral sampling at temperature 1 with no top-k / top-p unless asked:
  the paper's code silently used top-k = 50, which biases every KL estimate upwards.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np

TokenIds = Sequence[int]


@dataclass(frozen=True)
class StopCondition:
    """When to stop a sampled continuation.

    Generation stops after a token in ``stop_token_ids`` (the token is kept, so a sampled
    sentence includes its boundary) or after ``max_new_tokens`` tokens. With
    ``blank_token_ids`` (tokens whose text is whitespace only), a stop token ends a row only
    once the row holds a token outside that set: a lone newline is not a sentence. This is a
    stopping time on the sampled path, so the draws stay exact. A model that ignores it
    stops early on blank rows; callers then continue those rows themselves
    (:func:`bebkit.estimators.kl` and the prompt sampler do), so either way the same rule holds.
    """

    max_new_tokens: int
    stop_token_ids: frozenset[int] = field(default_factory=frozenset)
    blank_token_ids: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class ContinuationScores:
    """Scores of N continuations ``y⁽ⁱ⁾`` after one shared prefix ``s``.

    Attributes:
        token_logprobs: ``[N, T]``; entry ``[i, t] = log P(y⁽ⁱ⁾_t | s, y⁽ⁱ⁾_<t)`` for
            ``t < lengths[i]`` and 0 beyond (T = longest continuation).
        lengths: ``[N]`` number of real tokens of each continuation.
        dists: optional ``[N, T, V]`` full next-token log-distributions
            ``log P(· | s, y⁽ⁱ⁾_<t)`` (float32 or float64; rows beyond ``lengths[i]`` are
            undefined); needed by Rao-Blackwellised estimators, which sum the exact per-step
            KL along a path.
        step_kl: optional ``[N, T]`` float64 ``KL(R(·|h_t) ‖ P(·|h_t))`` against the
            ``reference`` log-distributions R passed to ``continuation_logprobs``, where
            ``h_t = (s, y⁽ⁱ⁾_<t)``; 0 beyond ``lengths[i]``.
    """

    token_logprobs: np.ndarray
    lengths: np.ndarray
    dists: np.ndarray | None = None
    step_kl: np.ndarray | None = None

    @property
    def totals(self) -> np.ndarray:
        """``[N]`` log P(y⁽ⁱ⁾ | s) = Σ_t token_logprobs[i, t]."""
        return np.asarray(self.token_logprobs.sum(axis=1), dtype=np.float64)


@runtime_checkable
class LanguageModel(Protocol):
    """An autoregressive distribution over token sequences.

    ``P(y | s) = Π_t P(y_t | s, y_<t)``. Implementations must make
    :meth:`continuation_logprobs` encode the shared prefix once (KV-cache reuse) and
    :meth:`sample` draw all ``n`` samples from one encoding of the prefix.
    """

    @property
    def name(self) -> str:
        """A short human-readable name (e.g. ``"smollm2-135m-instruct:neg"``)."""
        ...

    @property
    def vocab_size(self) -> int:
        """Size V of the next-token distribution."""
        ...

    @property
    def bos_token_ids(self) -> list[int]:
        """Tokens that start every context (``[]`` when the model has none)."""
        ...

    def encode(self, text: str) -> list[int]:
        """Tokenise text without special tokens."""
        ...

    def decode(self, ids: TokenIds) -> str:
        """Detokenise ids (special tokens kept)."""
        ...

    def sequence_logprobs(self, sequences: Sequence[TokenIds]) -> list[np.ndarray]:
        """For every sequence x: the array ``[log P(x_t | x_<t) for t = 1 … len(x)−1]``.

        The first token is context only (normally BOS). One batched forward pass; the
        cumulative sum read at sentence boundaries gives log P of every prefix at once.
        """
        ...

    def next_token_logprobs(self, prefixes: Sequence[TokenIds]) -> np.ndarray:
        """``[B, V]`` array of ``log P(· | prefix_b)``."""
        ...

    def continuation_logprobs(
        self,
        prefix: TokenIds,
        continuations: Sequence[TokenIds],
        *,
        with_dists: bool = False,
        reference: np.ndarray | None = None,
    ) -> ContinuationScores:
        """``log P(y_t | s, y_<t)`` for every continuation y after the shared prefix s.

        With ``reference`` (``[N, ≥T, V]`` log-distributions R, e.g. another model's
        ``dists`` on the same continuations) also the exact per-step
        ``KL(R(·|h_t) ‖ P(·|h_t))`` in ``step_kl``, computed without returning P's own
        ``[N, T, V]`` distributions.
        """
        ...

    def sample(
        self,
        prefix: TokenIds,
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> list[list[int]]:
        """``n`` independent continuations ``y ~ P(· | s)`` (ancestral, temperature 1 by default)."""
        ...


@runtime_checkable
class ScoredSampler(LanguageModel, Protocol):
    """A :class:`LanguageModel` whose sampler also returns the log-probs of what it sampled.

    An ancestral sampler computes ``log P(· | s, y_<t)`` at every step anyway; returning it
    saves the second pass that re-scores P's own samples (a third of a KL estimate's tokens).
    There are no temperature / top-k / top-p arguments on purpose: the scores are those of P
    itself, so the samples must be exact draws from P.
    """

    def sample_scored(
        self,
        prefix: TokenIds,
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        with_dists: bool = False,
    ) -> tuple[list[list[int]], ContinuationScores]:
        """``n`` continuations ``y ~ P(· | s)`` (temperature 1) and their :class:`ContinuationScores`.

        Same samples as ``sample(prefix, n, stop, rng=rng)`` and the same scores (up to
        float32 rounding) as ``continuation_logprobs(prefix, samples, with_dists=...)``.
        """
        ...


def sample_scored(
    model: LanguageModel,
    prefix: TokenIds,
    n: int,
    stop: StopCondition,
    *,
    rng: np.random.Generator,
    with_dists: bool = False,
) -> tuple[list[list[int]], ContinuationScores]:
    """Samples ``y ~ P(· | s)`` with their scores; one pass when the model is a :class:`ScoredSampler`.

    Fallback for other models: ``sample`` then ``continuation_logprobs`` (two passes).
    """
    method = getattr(model, "sample_scored", None)
    if callable(method):
        ys, sc = method(prefix, n, stop, rng=rng, with_dists=with_dists)
        return [[int(t) for t in y] for y in ys], sc
    ys = [[int(t) for t in y] for y in model.sample(prefix, n, stop, rng=rng)]
    return ys, model.continuation_logprobs(prefix, ys, with_dists=with_dists)


def sample_many(
    model: LanguageModel,
    prefixes: Sequence[TokenIds],
    n: int,
    stop: StopCondition,
    *,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> list[list[list[int]]]:
    """``[model.sample(p, n, stop, …) for p in prefixes]``; one batched call when the model has
    ``sample_many`` (``HFLanguageModel`` decodes the rows of all prefixes together)."""
    method = getattr(model, "sample_many", None)
    if callable(method):
        out = method(prefixes, n, stop, rng=rng, temperature=temperature, top_k=top_k, top_p=top_p)
        return [[[int(t) for t in y] for y in ys] for ys in out]
    return [
        [
            [int(t) for t in y]
            for y in model.sample(
                p, n, stop, rng=rng, temperature=temperature, top_k=top_k, top_p=top_p
            )
        ]
        for p in prefixes
    ]


def sample_scored_many(
    model: LanguageModel,
    prefixes: Sequence[TokenIds],
    n: int,
    stop: StopCondition,
    *,
    rng: np.random.Generator,
    with_dists: bool = False,
) -> list[tuple[list[list[int]], ContinuationScores]]:
    """:func:`sample_scored` for several prefixes; batched when the model has ``sample_scored_many``.

    (``HFLanguageModel`` decodes the rows of all prefixes together; other models loop.)
    """
    method = getattr(model, "sample_scored_many", None)
    if callable(method):
        out = method(prefixes, n, stop, rng=rng, with_dists=with_dists)
        return [([[int(t) for t in y] for y in ys], sc) for ys, sc in out]
    return [sample_scored(model, p, n, stop, rng=rng, with_dists=with_dists) for p in prefixes]


def continuation_logprobs_many(
    model: LanguageModel,
    prefixes: Sequence[TokenIds],
    continuations: Sequence[Sequence[TokenIds]],
    *,
    references: Sequence[np.ndarray | None] | None = None,
) -> list[ContinuationScores]:
    """``continuation_logprobs(prefixes[k], continuations[k], reference=references[k])`` for every k.

    Batched across prefixes when the model has ``continuation_logprobs_many``.
    """
    method = getattr(model, "continuation_logprobs_many", None)
    if callable(method):
        return list(method(prefixes, continuations, references=references))
    refs = list(references) if references is not None else [None] * len(prefixes)
    return [
        model.continuation_logprobs(p, c, reference=r)
        for p, c, r in zip(prefixes, continuations, refs, strict=True)
    ]


def reference_step_kl(reference: np.ndarray, dists: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[N, T]`` exact ``KL(R(·|h)‖P(·|h)) = Σ_v R(v|h)(log R(v|h) − log P(v|h))`` in float64.

    ``reference`` and ``dists`` are ``[N, ≥T, V]`` log-distributions (T = ``dists``' width);
    zero beyond each path's length; a token with R = 0 contributes 0, with R > 0 = P: +inf.
    """
    t = dists.shape[1]
    r = np.asarray(reference[:, :t], dtype=np.float64)
    d = np.asarray(dists, dtype=np.float64)
    pr = np.exp(r)
    with np.errstate(invalid="ignore"):
        terms = np.where(pr > 0, pr * (r - d), 0.0)
    kl = terms.sum(axis=-1)
    mask = np.arange(t)[None, :] < np.asarray(lengths)[:, None]
    return np.where(mask, kl, 0.0)


def check_prefix(prefix: TokenIds) -> list[int]:
    """Validate a prefix is a non-empty sequence of ints (a model needs some context)."""
    p = [int(t) for t in prefix]
    if not p:
        raise ValueError("prefix must contain at least one token (e.g. BOS)")
    return p
