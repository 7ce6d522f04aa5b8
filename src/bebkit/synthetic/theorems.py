"""Exact reference values for the Theorem 3, 4 and 5 estimators on a synthetic world.

Everything here is an expectation over *all* sentence sequences, computed by enumeration
(S^L sequences, so keep S and L small), against which the Monte-Carlo estimators of
:mod:`bebkit.estimators.theorems` are tested:

* :func:`conversation_exact` — a conversation q₁ a₁ q₂ … q_K whose user turns are sampled from
  P₋ and whose replies are sampled from the model P, both conditioned on everything so far
  (Theorem 3, :meth:`World.conversation`): ``E[B_P(h_t)]`` and ``E[KL(P₋(·|h_t) ‖ P(·|h_t))]``
  right after every user turn t.
* :func:`prompt_expectation` — ``E_{s~P₋, |s|=n}[f(s)]`` for any per-prompt quantity, e.g. the
  best-of-n behavior :meth:`World.best_of_n_behavior` (Theorem 4).
* :func:`fraction_misaligned_exact` — ``P_{s~P₋, |s|=n}(B_P(s) < threshold)`` (Theorem 5), or,
  for a world with scores ±1, the probability that the *estimated* behavior of R judged
  responses falls below the threshold (so a finite-R estimator has an exact target).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import binom

from bebkit.errors import InputError
from bebkit.synthetic.world import ModelSpec, World


@dataclass(frozen=True)
class ConversationExact:
    """Exact conversation curves, one entry per user turn t = 1 … K.

    Attributes:
        user_sentences: ``[K]`` misaligning (user) sentences up to and including turn t.
        reply_sentences: ``[K]`` model-reply sentences before turn t's end.
        behavior: ``[K]`` E[B_P(h_t)] over conversations h_t (behavior of the next reply).
        kl: ``[K]`` E[KL(P₋(·|h_t) ‖ P(·|h_t))] of the next sentence.
    """

    user_sentences: np.ndarray
    reply_sentences: np.ndarray
    behavior: np.ndarray
    kl: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k).tolist() for k in self.__dataclass_fields__}


def conversation_roles(n_turns: int, user_sentences: int, reply_sentences: int) -> list[bool]:
    """Roles (True = user / P₋) of the sentences of q₁ a₁ … q_K (K = ``n_turns`` user turns)."""
    if n_turns < 1 or user_sentences < 1 or reply_sentences < 0:
        raise InputError("need n_turns >= 1, user_sentences >= 1 and reply_sentences >= 0")
    roles: list[bool] = []
    for t in range(n_turns):
        roles += [True] * user_sentences
        if t < n_turns - 1:
            roles += [False] * reply_sentences
    return roles


def _sequence_logprob(
    world: World, seqs: np.ndarray, roles: list[bool], user: ModelSpec, model: ModelSpec
) -> np.ndarray:
    """``[N]`` log-probability of each full sequence when role-True sentences come from
    ``user`` and the others from ``model``, each conditioned on the whole history."""
    n, length = seqs.shape
    if length == 0:
        return np.zeros(n)
    lu = world.next_sentence_log_dists(seqs, user)[:, :length, :]
    lm = world.next_sentence_log_dists(seqs, model)[:, :length, :]
    rows = np.arange(n)[:, None]
    cols = np.arange(length)[None, :]
    pick_u = lu[rows, cols, seqs]
    pick_m = lm[rows, cols, seqs]
    steps = np.where(np.asarray(roles, dtype=bool)[None, :], pick_u, pick_m)
    return np.asarray(steps.sum(axis=1), dtype=np.float64)


def conversation_exact(
    world: World,
    n_turns: int,
    user_sentences: int,
    reply_sentences: int,
    *,
    user: ModelSpec = "neg",
    model: ModelSpec = None,
    limit: int = 2_000_000,
) -> ConversationExact:
    """Exact Theorem 3 curves by enumerating every conversation of the given shape."""
    roles = conversation_roles(n_turns, user_sentences, reply_sentences)
    seqs = world.enumerate_sequences(len(roles), limit=limit)
    w = np.exp(_sequence_logprob(world, seqs, roles, user, model))
    behavior = world.behavior(seqs, model)  # [N, L+1]
    kl = world.next_sentence_kl(seqs, user, model)  # [N, L+1]
    at, users, replies = [], [], []
    pos, n_user, n_reply = 0, 0, 0
    for t in range(n_turns):
        pos += user_sentences
        n_user += user_sentences
        at.append(pos)
        users.append(n_user)
        replies.append(n_reply)
        if t < n_turns - 1:
            pos += reply_sentences
            n_reply += reply_sentences
    idx = np.asarray(at)
    return ConversationExact(
        user_sentences=np.asarray(users, dtype=np.int64),
        reply_sentences=np.asarray(replies, dtype=np.int64),
        behavior=np.asarray(w @ behavior[:, idx], dtype=np.float64),
        kl=np.asarray(w @ np.where(w[:, None] > 0, kl[:, idx], 0.0), dtype=np.float64),
    )


def prompt_expectation(
    world: World,
    length: int,
    fn: Callable[[np.ndarray], np.ndarray],
    *,
    sampler: ModelSpec = "neg",
    limit: int = 2_000_000,
) -> float:
    """``Σ_s sampler(s) · fn(s)`` over all prompts of ``length`` sentences.

    ``fn`` maps the ``[N, length]`` array of all prompts to ``[N]`` values (e.g.
    ``lambda s: world.best_of_n_behavior(s, 4)``).
    """
    seqs = world.enumerate_sequences(int(length), limit=limit)
    w = np.exp(world.sequence_logprob(seqs, sampler))
    vals = np.asarray(fn(seqs), dtype=np.float64)
    if vals.shape != (seqs.shape[0],):
        raise InputError(f"fn returned shape {vals.shape}, expected ({seqs.shape[0]},)")
    return float(np.sum(np.where(w > 0, w * vals, 0.0)))


def estimated_below_probability(
    behavior: np.ndarray, threshold: float, n_responses: int
) -> np.ndarray:
    """P(mean of R judged ±1 scores < threshold) when E[score] = ``behavior`` (elementwise).

    The mean of R scores B̂ ∈ {−1, +1} is 2k/R − 1 with k ~ Binomial(R, (1 + B)/2), so it is
    below t iff k < R(t + 1)/2.
    """
    r = int(n_responses)
    if r < 1:
        raise InputError(f"n_responses must be >= 1, got {n_responses}")
    c = r * (float(threshold) + 1.0) / 2.0
    k_max = math.ceil(c - 1e-9) - 1
    p_good = np.clip((np.asarray(behavior, dtype=np.float64) + 1.0) / 2.0, 0.0, 1.0)
    if k_max < 0:
        return np.zeros_like(p_good)
    return np.asarray(binom.cdf(k_max, r, p_good), dtype=np.float64)


def fraction_misaligned_exact(
    world: World,
    length: int,
    threshold: float,
    *,
    n_responses: int | None = None,
    model: ModelSpec = None,
    sampler: ModelSpec = "neg",
    limit: int = 2_000_000,
) -> float:
    """Theorem 5's quantity ``P_{s~P₋}(B_P(s) < threshold)`` over prompts of ``length`` sentences.

    With ``n_responses`` = R: the probability that the mean judge score of R responses is
    below the threshold — the exact target of an estimator that judges R responses per prompt
    (needs scores ±1).
    """

    def below(seqs: np.ndarray) -> np.ndarray:
        b = world.behavior(seqs, model)[:, -1]
        if n_responses is None:
            return np.asarray(b < threshold, dtype=np.float64)
        if not np.all(np.isin(world.scores, (-1.0, 1.0))):
            raise InputError("the finite-R version needs a world whose scores are all ±1")
        return estimated_below_probability(b, threshold, n_responses)

    return prompt_expectation(world, length, below, sampler=sampler, limit=limit)


__all__ = [
    "ConversationExact",
    "conversation_exact",
    "conversation_roles",
    "estimated_below_probability",
    "fraction_misaligned_exact",
    "prompt_expectation",
]
