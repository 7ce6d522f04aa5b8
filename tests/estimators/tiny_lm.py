"""A tiny exact protocol model for estimator tests: small vocabulary, enumerable continuations.

Token 0 is the sentence end ``"\\n"``, tokens 1 … V−2 are letters, token V−1 is BOS ``"^"``
(never generated: log-prob −inf, which also exercises the 0·log 0 handling). The next-token
logits are a fixed pseudo-random function of the last ``order`` tokens and the position
(mod 3), seeded; ``perturb`` mixes in a second seeded table so that two models are close.
Every protocol call is counted in ``calls``. :class:`ScoredTinyLM` adds the optional
``sample_scored`` extension (samples + their exact scores in one call); plain :class:`TinyLM`
exercises the generic fallback (``sample`` then ``continuation_logprobs``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from bebkit.models.protocol import (
    ContinuationScores,
    StopCondition,
    check_prefix,
    reference_step_kl,
)

LETTERS = "\nabcdefghijklmnop"


class TinyLM:
    def __init__(
        self,
        vocab_size: int = 5,
        seed: int = 0,
        *,
        order: int = 2,
        scale: float = 1.5,
        perturb_seed: int | None = None,
        perturb: float = 0.0,
        name: str = "tiny",
    ) -> None:
        self._v = vocab_size
        self._seed = seed
        self._order = order
        self._scale = scale
        self._pseed = perturb_seed
        self._perturb = perturb
        self._name = name
        self.calls: Counter[str] = Counter()
        self._table = lru_cache(maxsize=None)(self._logprobs_uncached)

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return self._v

    @property
    def bos_token_ids(self) -> list[int]:
        return [self._v - 1]

    def encode(self, text: str) -> list[int]:
        return [LETTERS.index(c) for c in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join("^" if int(i) == self._v - 1 else LETTERS[int(i)] for i in ids)

    # ------------------------------------------------------------------ exact distribution
    def _logits(self, seed: int, key: tuple[int, ...]) -> np.ndarray:
        rng = np.random.default_rng([seed, *key])
        return rng.standard_normal(self._v) * self._scale

    def _logprobs_uncached(self, ctx: tuple[int, ...]) -> np.ndarray:
        tail = ctx[-self._order :]
        key = (len(ctx) % 3, len(tail), *tail)
        z = self._logits(self._seed, key)
        if self._pseed is not None:
            z = z + self._perturb * self._logits(self._pseed, key)
        z[self._v - 1] = -np.inf
        z = z - np.max(z)
        return z - np.log(np.sum(np.exp(z)))

    def logprobs(self, ctx: Sequence[int]) -> np.ndarray:
        return np.asarray(self._table(tuple(int(t) for t in ctx)))

    # ------------------------------------------------------------------ protocol
    def next_token_logprobs(self, prefixes: Sequence[Sequence[int]]) -> np.ndarray:
        self.calls["next_token_logprobs"] += 1
        return np.stack([self.logprobs(check_prefix(p)) for p in prefixes])

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        self.calls["sequence_logprobs"] += 1
        out = []
        for s in sequences:
            s = [int(t) for t in s]
            out.append(np.array([self.logprobs(s[:t])[s[t]] for t in range(1, len(s))]))
        return out

    def continuation_logprobs(
        self,
        prefix: Sequence[int],
        continuations: Sequence[Sequence[int]],
        *,
        with_dists: bool = False,
        reference: np.ndarray | None = None,
    ) -> ContinuationScores:
        self.calls["continuation_logprobs"] += 1
        pre = check_prefix(prefix)
        t_max = max((len(y) for y in continuations), default=0)
        n = len(continuations)
        tok = np.zeros((n, t_max))
        keep = with_dists or reference is not None
        dists = np.zeros((n, t_max, self._v)) if keep else None
        for i, y in enumerate(continuations):
            for t, v in enumerate(y):
                d = self.logprobs(pre + [int(x) for x in y[:t]])
                tok[i, t] = d[int(v)]
                if dists is not None:
                    dists[i, t] = d
        lengths = np.array([len(y) for y in continuations])
        step_kl = None
        if reference is not None and dists is not None:
            step_kl = reference_step_kl(np.asarray(reference), dists, lengths)
        return ContinuationScores(tok, lengths, dists if with_dists else None, step_kl)

    def sample(
        self,
        prefix: Sequence[int],
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> list[list[int]]:
        self.calls["sample"] += 1
        assert temperature == 1.0 and top_k is None and top_p is None
        return self._draw(prefix, n, stop, rng)

    def _draw(
        self, prefix: Sequence[int], n: int, stop: StopCondition, rng: np.random.Generator
    ) -> list[list[int]]:
        pre = check_prefix(prefix)
        out = []
        for _ in range(n):
            y: list[int] = []
            while len(y) < stop.max_new_tokens:
                p = np.exp(self.logprobs(pre + y))
                v = int(rng.choice(self._v, p=p / p.sum()))
                y.append(v)
                if v in stop.stop_token_ids:
                    break
            out.append(y)
        return out


class ScoredTinyLM(TinyLM):
    """:class:`TinyLM` with ``sample_scored``: one call returns samples and their exact scores."""

    def sample_scored(
        self,
        prefix: Sequence[int],
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        with_dists: bool = False,
    ) -> tuple[list[list[int]], ContinuationScores]:
        self.calls["sample_scored"] += 1
        ys = self._draw(prefix, n, stop, rng)
        pre = check_prefix(prefix)
        t_max = max((len(y) for y in ys), default=0)
        tok = np.zeros((n, t_max))
        dists = np.zeros((n, t_max, self._v)) if with_dists else None
        for i, y in enumerate(ys):
            for t, v in enumerate(y):
                d = self.logprobs(pre + y[:t])
                tok[i, t] = d[v]
                if dists is not None:
                    dists[i, t] = d
        return ys, ContinuationScores(tok, np.array([len(y) for y in ys]), dists)
