"""Token-level view of a synthetic world: an exact :class:`~bebkit.models.protocol.LanguageModel`.

Every sentence x gets a fixed code of m content tokens (its base-A digits, A = alphabet size,
m = ⌈log_A S⌉) followed by the sentence-end token; token 0 is BOS, token 1 the sentence end
``"."`` and tokens 2 … A+1 the content letters ``"a", "b", …``. The codes are prefix-free, so
the token-level mixture is exact:

    P(x_t | x_<t) = Σ_k w_k(x_<t) P_k(x_t | x_<t),   w_k(x_<t) ∝ w_k P_k(x_<t),
    P_k(v | complete sentences s, partial code p) = M_k(p ⊕ v | s) / M_k(p | s),

where M_k(p | s) = Σ_{x: code(x) starts with p} P_k(x | s) is the probability mass of the
sentences whose code starts with p. Hence the token-level probability of a sentence sequence
equals its sentence-level probability. Tokens a world can never emit at a position (BOS after
the start, an unused code, END inside a code) get log-probability −inf (probability exactly 0);
a sequence that contains one has total log-probability −inf.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
from scipy.special import logsumexp

from bebkit.errors import InputError
from bebkit.models.protocol import (
    ContinuationScores,
    StopCondition,
    TokenIds,
    check_prefix,
    reference_step_kl,
)

if TYPE_CHECKING:
    from bebkit.models.protocol import LanguageModel
    from bebkit.synthetic.world import World

BOS = 0
END = 1
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"


class SentenceCodec:
    """Sentence index ↔ token ids (fixed-length base-A codes + END), with the code trie."""

    def __init__(self, n_sentences: int, alphabet_size: int = 4) -> None:
        if not 2 <= alphabet_size <= len(_LETTERS):
            raise InputError(f"alphabet_size must be in [2, {len(_LETTERS)}], got {alphabet_size}")
        if n_sentences < 1:
            raise InputError("need at least one sentence")
        self.n_sentences = int(n_sentences)
        self.alphabet_size = int(alphabet_size)
        m = 1
        while alphabet_size**m < n_sentences:
            m += 1
        self.code_length = m
        self.vocab_size = 2 + alphabet_size
        # Trie nodes: depth d ∈ [0, m], prefix value p < A^d; node id = offset[d] + p.
        self.offsets = np.cumsum([0] + [alphabet_size**d for d in range(m + 1)])
        self.n_nodes = int(self.offsets[-1])
        self.sentinel = self.n_nodes  # an impossible node (zero mass)
        depth = np.zeros(self.n_nodes + 1, np.int64)
        value = np.zeros(self.n_nodes + 1, np.int64)
        child = np.full((self.n_nodes + 1, alphabet_size), self.sentinel, np.int64)
        for d in range(m + 1):
            for p in range(alphabet_size**d):
                node = int(self.offsets[d]) + p
                depth[node], value[node] = d, p
                if d < m:
                    child[node] = self.offsets[d + 1] + p * alphabet_size + np.arange(alphabet_size)
        depth[self.sentinel] = -1
        self.depth, self.value, self.child = depth, value, child

    @property
    def sentence_end_token_ids(self) -> frozenset[int]:
        return frozenset({END})

    def code(self, sentence: int) -> list[int]:
        """Content tokens of a sentence (base-A digits, most significant first)."""
        if not 0 <= sentence < self.n_sentences:
            raise InputError(f"sentence index must be in [0, {self.n_sentences}), got {sentence}")
        a, m = self.alphabet_size, self.code_length
        return [2 + (sentence // a ** (m - 1 - i)) % a for i in range(m)]

    def encode_sentences(self, sentences: Sequence[int], bos: bool = True) -> list[int]:
        out = [BOS] if bos else []
        for x in sentences:
            out += [*self.code(int(x)), END]
        return out

    def split_sentences(self, tokens: Sequence[int]) -> tuple[list[int], list[int]]:
        """(complete sentences, index of each END token); a leading BOS is skipped.

        Raises :class:`InputError` on tokens that cannot be produced by the codec.
        """
        toks = [int(t) for t in tokens]
        i = 1 if toks and toks[0] == BOS else 0
        sentences: list[int] = []
        ends: list[int] = []
        digits: list[int] = []
        a = self.alphabet_size
        for pos in range(i, len(toks)):
            t = toks[pos]
            if t == END:
                if len(digits) != self.code_length:
                    raise InputError(f"sentence end at position {pos} inside a code")
                x = 0
                for dgt in digits:
                    x = x * a + dgt
                if x >= self.n_sentences:
                    raise InputError(f"unused code at position {pos}")
                sentences.append(x)
                ends.append(pos)
                digits = []
            elif 2 <= t < 2 + a and len(digits) < self.code_length:
                digits.append(t - 2)
            else:
                raise InputError(f"token {t} at position {pos} is impossible here")
        return sentences, ends

    def log_masses(self, log_cond: np.ndarray) -> np.ndarray:
        """``[K, C, n_nodes + 1]``: log M_k(p | c) for every trie node p (sentinel = −inf)."""
        k, c, s = log_cond.shape
        a, m = self.alphabet_size, self.code_length
        padded = np.full((k, c, a**m), -np.inf)
        padded[..., :s] = log_cond
        out = np.full((k, c, self.n_nodes + 1), -np.inf)
        for d in range(m + 1):
            block = padded.reshape(k, c, a**d, a ** (m - d))
            out[..., self.offsets[d] : self.offsets[d + 1]] = logsumexp(block, axis=-1)
        return out

    def token_text(self, t: int) -> str:
        if t == BOS:
            return "<s>"
        if t == END:
            return "."
        if 2 <= t < 2 + self.alphabet_size:
            return _LETTERS[t - 2]
        raise InputError(f"token id {t} out of range [0, {self.vocab_size})")


@dataclass
class _State:
    """Batched decoding state: log joint of the prefix per component, context, trie node."""

    joint: np.ndarray  # [B, K] log w_k + log P_k(prefix)
    ctx: np.ndarray  # [B] sentence context (0 = start, 1 + last sentence)
    node: np.ndarray  # [B] trie node of the partial code
    dead: np.ndarray  # [B] prefix has probability zero

    def take(self, idx: np.ndarray) -> _State:
        return _State(
            self.joint[idx].copy(),
            self.ctx[idx].copy(),
            self.node[idx].copy(),
            self.dead[idx].copy(),
        )


class SyntheticLM:
    """A world's mixture (any component weights) as an exact token-level LanguageModel.

    Build through :meth:`World.language_model` / :meth:`World.component_model`.
    """

    def __init__(self, world: World, log_weights: np.ndarray, name: str) -> None:
        self.world = world
        self.log_weights = np.asarray(log_weights, dtype=np.float64)
        self._name = name
        self.codec = world.codec

    # ------------------------------------------------------------------ protocol properties
    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return self.codec.vocab_size

    @property
    def bos_token_ids(self) -> list[int]:
        return [BOS]

    @property
    def sentence_end_token_ids(self) -> frozenset[int]:
        return self.codec.sentence_end_token_ids

    def encode(self, text: str) -> list[int]:
        """Letters → content tokens, ``"."`` → END; whitespace ignored; no special tokens."""
        out: list[int] = []
        for ch in text:
            if ch.isspace():
                continue
            if ch == ".":
                out.append(END)
                continue
            idx = _LETTERS.find(ch)
            if idx < 0 or idx >= self.codec.alphabet_size:
                raise InputError(f"character {ch!r} is not in this world's alphabet")
            out.append(2 + idx)
        return out

    def decode(self, ids: TokenIds) -> str:
        return "".join(self.codec.token_text(int(t)) for t in ids)

    def encode_sentences(self, sentences: Sequence[int], bos: bool = True) -> list[int]:
        return self.codec.encode_sentences(sentences, bos=bos)

    # ------------------------------------------------------------------ exact machinery
    @cached_property
    def _log_mass(self) -> np.ndarray:
        return self.codec.log_masses(self.world.log_cond)

    def _init_state(self, b: int) -> _State:
        k = self.log_weights.size
        return _State(
            joint=np.broadcast_to(self.log_weights, (b, k)).copy(),
            ctx=np.zeros(b, np.int64),
            node=np.zeros(b, np.int64),
            dead=np.zeros(b, bool),
        )

    def _component_cond(self, st: _State) -> np.ndarray:
        """``[B, K, V]`` log P_k(v | prefix) for every component (−inf where impossible)."""
        codec = self.codec
        lm = self._log_mass  # [K, C, N+1]
        b = st.ctx.size
        k = lm.shape[0]
        out = np.full((b, k, codec.vocab_size), -np.inf)
        leaf = codec.depth[st.node] == codec.code_length
        inner = ~leaf & ~st.dead
        if inner.any():
            ctx, node = st.ctx[inner], st.node[inner]
            denom = lm[:, ctx, node]  # [K, b']
            num = lm[:, ctx[:, None], codec.child[node]]  # [K, b', A]
            with np.errstate(invalid="ignore"):
                cond = num - denom[..., None]
            cond = np.where(np.isfinite(denom)[..., None], cond, -np.inf)
            out[inner, :, 2:] = np.moveaxis(cond, 0, 1)
        leaf_live = leaf & ~st.dead
        out[leaf_live, :, END] = 0.0
        return out

    @staticmethod
    def _mix(st: _State, comp: np.ndarray) -> np.ndarray:
        """``[B, V]`` log Σ_k w_k(prefix) P_k(v | prefix)."""
        with np.errstate(invalid="ignore"):
            post = st.joint - logsumexp(st.joint, axis=1, keepdims=True)
        post = np.where(np.isnan(post), -np.inf, post)
        return np.asarray(logsumexp(post[:, :, None] + comp, axis=1), dtype=np.float64)

    def _advance(self, st: _State, comp: np.ndarray, tok: np.ndarray, active: np.ndarray) -> None:
        """Consume token ``tok[b]`` for the rows in ``active`` (updates ``st`` in place)."""
        codec = self.codec
        rows = np.flatnonzero(active)
        if rows.size == 0:
            return
        t = tok[rows]
        valid = (t >= 0) & (t < codec.vocab_size)
        tc = np.clip(t, 0, codec.vocab_size - 1)
        step = comp[rows, :, tc]  # [r, K]
        st.joint[rows] = st.joint[rows] + step
        impossible = ~valid | ~np.isfinite(logsumexp(st.joint[rows], axis=1))
        is_end = t == END
        leaf_nodes = st.node[rows]
        sent = codec.value[leaf_nodes]
        new_ctx = np.where(is_end, sent + 1, st.ctx[rows])
        content = (t >= 2) & (t < codec.vocab_size)
        child = codec.child[leaf_nodes, np.clip(t - 2, 0, codec.alphabet_size - 1)]
        new_node = np.where(is_end, 0, np.where(content, child, codec.sentinel))
        st.ctx[rows] = np.where(impossible, st.ctx[rows], new_ctx)
        st.node[rows] = np.where(impossible, st.node[rows], new_node)
        st.dead[rows] |= impossible

    def _run(self, seqs: Sequence[Sequence[int]]) -> tuple[_State, list[np.ndarray]]:
        """Consume whole sequences (first token = BOS context) in lockstep.

        Returns the final state and, per sequence, log P(x_t | x_<t) for t ≥ 1.
        """
        lists = [[int(t) for t in s] for s in seqs]
        for s in lists:
            if not s or s[0] != BOS:
                raise InputError("every sequence must start with the BOS token 0")
        b = len(lists)
        st = self._init_state(b)
        lens = np.array([len(s) for s in lists], np.int64)
        t_max = int(lens.max()) if b else 0
        tok = np.full((b, max(t_max, 1)), -1, np.int64)
        for i, s in enumerate(lists):
            tok[i, : len(s)] = s
        lps = np.zeros((b, max(t_max - 1, 0)))
        for t in range(1, t_max):
            active = lens > t
            comp = self._component_cond(st)
            mix = self._mix(st, comp)
            tt = tok[:, t]
            vals = np.where(
                active & (tt >= 0) & (tt < self.vocab_size),
                mix[np.arange(b), np.clip(tt, 0, self.vocab_size - 1)],
                -np.inf,
            )
            vals = np.where(st.dead, -np.inf, vals)
            lps[:, t - 1] = np.where(active, vals, 0.0)
            self._advance(st, comp, tt, active & ~st.dead)
        return st, [lps[i, : max(lens[i] - 1, 0)].copy() for i in range(b)]

    def _prefix_state(self, prefixes: Sequence[TokenIds]) -> _State:
        ps = [check_prefix(p) for p in prefixes]
        st, _ = self._run(ps)
        if st.dead.any():
            bad = int(np.flatnonzero(st.dead)[0])
            raise InputError(f"prefix {bad} has probability zero under {self.name}")
        return st

    # ------------------------------------------------------------------ protocol methods
    def sequence_logprobs(self, sequences: Sequence[TokenIds]) -> list[np.ndarray]:
        """Per sequence: ``[log P(x_t | x_<t) for t = 1 … len−1]`` (exact; −inf = impossible)."""
        if len(sequences) == 0:
            return []
        _, lps = self._run(sequences)
        return lps

    def next_token_logprobs(self, prefixes: Sequence[TokenIds]) -> np.ndarray:
        """``[B, V]`` exact log P(· | prefix_b)."""
        st = self._prefix_state(prefixes)
        return self._mix(st, self._component_cond(st))

    def continuation_logprobs(
        self,
        prefix: TokenIds,
        continuations: Sequence[TokenIds],
        *,
        with_dists: bool = False,
        reference: np.ndarray | None = None,
    ) -> ContinuationScores:
        """``log P(y_t | s, y_<t)`` for every continuation (prefix state computed once).

        With ``reference`` also the exact per-step ``KL(R(·|h_t) ‖ P(·|h_t))`` (``step_kl``).
        """
        base = self._prefix_state([prefix])
        n = len(continuations)
        conts = [[int(t) for t in y] for y in continuations]
        lengths = np.array([len(y) for y in conts], np.int64)
        t_max = int(lengths.max()) if n else 0
        st = base.take(np.zeros(n, np.int64))
        tok = np.full((n, t_max), -1, np.int64)
        for i, y in enumerate(conts):
            tok[i, : len(y)] = y
        lps = np.zeros((n, t_max))
        keep = with_dists or reference is not None
        dists = np.full((n, t_max, self.vocab_size), -np.inf) if keep else None
        for t in range(t_max):
            active = lengths > t
            comp = self._component_cond(st)
            mix = self._mix(st, comp)
            if dists is not None:
                dists[:, t, :] = mix
            tt = tok[:, t]
            ok = active & (tt >= 0) & (tt < self.vocab_size) & ~st.dead
            vals = np.where(ok, mix[np.arange(n), np.clip(tt, 0, self.vocab_size - 1)], -np.inf)
            lps[:, t] = np.where(active, vals, 0.0)
            self._advance(st, comp, tt, active & ~st.dead)
        step_kl = None
        if reference is not None and dists is not None:
            step_kl = reference_step_kl(np.asarray(reference), dists, lengths)
        return ContinuationScores(
            token_logprobs=lps,
            lengths=lengths,
            dists=dists if with_dists else None,
            step_kl=step_kl,
        )

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
        """``n`` exact ancestral continuations; the posterior always follows the true P."""
        return self._sample(prefix, n, stop, rng, temperature, top_k, top_p, None)

    def sample_scored(
        self,
        prefix: TokenIds,
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        with_dists: bool = False,
    ) -> tuple[list[list[int]], ContinuationScores]:
        """:meth:`sample` at temperature 1 plus the exact log-probs (and distributions) it drew from."""
        rec: dict[str, np.ndarray] = {
            "lp": np.zeros((n, stop.max_new_tokens)),
        }
        if with_dists:
            rec["dists"] = np.full((n, stop.max_new_tokens, self.vocab_size), -np.inf)
        ys = self._sample(prefix, n, stop, rng, 1.0, None, None, rec)
        lengths = np.array([len(y) for y in ys], np.int64)
        width = int(lengths.max()) if n else 0
        dists = rec["dists"][:, :width] if with_dists else None
        return ys, ContinuationScores(rec["lp"][:, :width], lengths, dists)

    def _sample(
        self,
        prefix: TokenIds,
        n: int,
        stop: StopCondition,
        rng: np.random.Generator,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        rec: dict[str, np.ndarray] | None,
    ) -> list[list[int]]:
        if temperature <= 0:
            raise InputError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise InputError(f"top_k must be >= 1, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {top_p}")
        base = self._prefix_state([prefix])
        st = base.take(np.zeros(n, np.int64))
        out: list[list[int]] = [[] for _ in range(n)]
        active = np.ones(n, bool)
        stops = np.array(sorted(stop.stop_token_ids), np.int64)
        for step in range(stop.max_new_tokens):
            if not active.any():
                break
            comp = self._component_cond(st)
            logits = self._mix(st, comp)
            probs = _shape_distribution(logits, temperature, top_k, top_p)
            tok = np.full(n, -1, np.int64)
            rows = np.flatnonzero(active)
            cum = np.cumsum(probs[rows], axis=1)
            u = rng.random(rows.size) * cum[:, -1]
            tok[rows] = np.minimum((cum < u[:, None]).sum(axis=1), self.vocab_size - 1)
            if rec is not None:
                # temperature 1, no truncation: `logits` is exactly the distribution drawn from
                rec["lp"][rows, step] = logits[rows, tok[rows]]
                if "dists" in rec:
                    rec["dists"][rows, step] = logits[rows]
            self._advance(st, comp, tok, active)
            for r in rows:
                out[r].append(int(tok[r]))
            active &= ~np.isin(tok, stops)
        return out


def _shape_distribution(
    logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
) -> np.ndarray:
    """Probabilities after temperature, top-k and nucleus (top-p) filtering, row-normalised."""
    z = logits / temperature
    z = z - np.max(z, axis=1, keepdims=True)
    p = np.exp(z)
    if top_k is not None and top_k < p.shape[1]:
        kth = -np.sort(-p, axis=1)[:, top_k - 1 : top_k]
        p = np.where(p >= kth, p, 0.0)
    p = p / p.sum(axis=1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-p, axis=1, kind="stable")
        sp = np.take_along_axis(p, order, axis=1)
        before = np.cumsum(sp, axis=1) - sp  # mass strictly before each token
        keep_sorted = before < top_p  # keep until the nucleus reaches top_p
        keep = np.zeros_like(keep_sorted)
        np.put_along_axis(keep, order, keep_sorted, axis=1)
        p = np.where(keep, p, 0.0)
        p = p / p.sum(axis=1, keepdims=True)
    return np.asarray(p, dtype=np.float64)


# ====================================================================== exact helpers
def exact_kl(
    p_model: LanguageModel,
    q_model: LanguageModel,
    prefix_tokens: TokenIds,
    n_tokens: int | None = None,
    *,
    n_sentences: int | None = None,
    stop_token_ids: frozenset[int] | None = None,
    max_paths: int = 1_000_000,
) -> float:
    """KL(P(·|s) ‖ Q(·|s)) over the next ``n_tokens`` tokens (or ``n_sentences`` sentences).

    KL = Σ_y P(y|s) [log P(y|s) − log Q(y|s)], summed over every continuation y with
    P(y|s) > 0 by enumerating the token tree through ``next_token_logprobs`` (works for any
    LanguageModel with a small vocabulary). In sentence mode a path ends after its
    ``n_sentences``-th stop token (default: the models' ``sentence_end_token_ids``).
    """
    if (n_tokens is None) == (n_sentences is None):
        raise InputError("give exactly one of n_tokens and n_sentences")
    if n_sentences is not None:
        if stop_token_ids is None:
            stop_token_ids = getattr(p_model, "sentence_end_token_ids", None)
        if not stop_token_ids:
            raise InputError("sentence mode needs stop_token_ids")
        stops = np.array(sorted(stop_token_ids), np.int64)
        target = int(n_sentences)
        max_depth = 10_000
    else:
        stops = np.zeros(0, np.int64)
        target = 0
        max_depth = int(n_tokens or 0)
    prefix = check_prefix(prefix_tokens)
    frontier: list[list[int]] = [prefix]
    lp = np.zeros(1)
    lq = np.zeros(1)
    done = np.zeros(1, np.int64)  # sentences completed on each path
    total = 0.0
    depth = 0
    while frontier and depth < max_depth:
        dp = p_model.next_token_logprobs(frontier)
        dq = q_model.next_token_logprobs(frontier)
        rows, toks = np.nonzero(np.isfinite(dp))
        if rows.size > max_paths:
            raise InputError(f"more than {max_paths} paths: use a shorter horizon")
        new_lp = lp[rows] + dp[rows, toks]
        new_lq = lq[rows] + dq[rows, toks]
        new_done = done[rows] + np.isin(toks, stops)
        depth += 1
        finished = (
            (new_done >= target)
            if n_sentences is not None
            else np.full(rows.size, depth >= max_depth)
        )
        if finished.any():
            w = np.exp(new_lp[finished])
            with np.errstate(invalid="ignore"):
                diff = new_lp[finished] - new_lq[finished]
            total += float(np.sum(np.where(w > 0, w * diff, 0.0)))
        keep = np.flatnonzero(~finished)
        frontier = [[*frontier[rows[i]], int(toks[i])] for i in keep]
        lp, lq, done = new_lp[keep], new_lq[keep], new_done[keep]
    return total


def _world_and_weights(model: LanguageModel) -> tuple[World, np.ndarray]:
    if not isinstance(model, SyntheticLM):
        raise InputError("exact log-ratio moments need synthetic models")
    return model.world, model.log_weights


def exact_log_ratio_moments(
    p_model: LanguageModel,
    q_model: LanguageModel,
    n_sentences: int,
    prefix_tokens: TokenIds | None = None,
    sampler: LanguageModel | None = None,
) -> tuple[float, float]:
    """Exact (mean, variance) of log P(s|s₀)/Q(s|s₀) over n-sentence s ~ sampler(·|s₀).

    ``sampler`` defaults to P (Definition 4 / the paper's Fig. 2b use prompts from P₋). The
    token-level log-probability of a whole sentence sequence equals the sentence-level one,
    so the sum runs over all S^n sentence sequences of the shared world.
    """
    world, lw_p = _world_and_weights(p_model)
    world_q, lw_q = _world_and_weights(q_model)
    lw_s = lw_p
    if sampler is not None:
        world_s, lw_s = _world_and_weights(sampler)
        if world_s is not world:
            raise InputError("all models must come from the same world")
    if world_q is not world:
        raise InputError("p_model and q_model must come from the same world")
    prefix: list[int] = []
    if prefix_tokens is not None:
        toks = [int(t) for t in prefix_tokens]
        prefix, _ = world.split_sentences(toks)
        has_bos = bool(toks) and toks[0] == BOS
        if world.encode_sentences(prefix, bos=has_bos) != toks:
            raise InputError("prefix must end at a sentence boundary")
    return world.log_ratio_moments(lw_p, lw_q, n_sentences, prefix, sampler=lw_s)


def exact_log_ratio_variance(
    p_model: LanguageModel,
    q_model: LanguageModel,
    n_sentences: int,
    prefix_tokens: TokenIds | None = None,
    sampler: LanguageModel | None = None,
) -> float:
    """Var_{s~sampler(·|s₀)}[log P(s|s₀) − log Q(s|s₀)] over n sentences (Definition 4, eq. 6)."""
    return exact_log_ratio_moments(p_model, q_model, n_sentences, prefix_tokens, sampler)[1]


__all__ = [
    "BOS",
    "END",
    "SentenceCodec",
    "SyntheticLM",
    "exact_kl",
    "exact_log_ratio_moments",
    "exact_log_ratio_variance",
]
