"""Estimators for Theorems 3, 4 and 5 (conversations, best-of-n, most prompts misalign).

All three see only the :class:`~bebkit.models.protocol.LanguageModel` protocol plus a *judge*:
a callable ``texts -> scores`` giving the behavior score B̂(x) ∈ [−1, 1] of each response
(:func:`behavior_scorer` turns a P(good) judge such as :class:`bebkit.judge.Judge` into one).
On the synthetic world the judge is the exact score B(x), so each estimate has an exact target
(:mod:`bebkit.synthetic.theorems`).

* :func:`conversation_curve` (Theorem 3, §3.2 / appendix F): N conversations
  ``q₁ a₁ q₂ a₂ … q_K`` whose user turns are ``user_sentences`` sentences sampled from P₋ and
  whose replies are ``reply_sentences`` sentences sampled from the target model P, both
  conditioned on the whole conversation so far. After every user turn t it estimates
  ``E[B_P(h_t)]`` (R judged responses of P) and ``E[KL(P₋(·|h_t) ‖ P(·|h_t))]`` of the next
  sentence at the reply position, against the number of turns and the total misaligning text.
  ``reply_sentences=0`` is the single-prompt curve of the same text.
* :func:`best_of_n_curve` (Theorem 4, appendix G): after every prompt length n of prompts
  ``s ~ P₋``, ``R·n_max`` responses of P are drawn once; for each n in ``ns`` they are cut
  into groups of n, the response with the highest reward in each group is kept and judged.
  The shift of the curve at a threshold is compared with Theorem 4's ``log(n)/β``.
* :func:`fraction_misaligned` (Theorem 5, appendix B): per prompt ``s ~ P₋`` and length n the
  behavior expectation from R judged responses; the fraction of prompts whose estimate lies
  below a threshold (γ + ε), with Wilson intervals over prompts, next to Theorem 5's length.

Every reported number is an :class:`~bebkit.estimate.Estimate`. Standard errors are taken over
the *independent units* (conversations, prompts): each unit's mean over its own responses is
one sample, so the estimate targets the expectation over units and responses together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate, wilson_interval
from bebkit.estimators.behavior import GoodProbability, first_sentence, response_format
from bebkit.estimators.kl import kl_samples_grid
from bebkit.estimators.prompts import PromptFormat, SampledPrompt, stop_token_ids
from bebkit.models.protocol import LanguageModel, StopCondition, sample_many
from bebkit.theory import bounds

#: Texts → behavior scores B̂ ∈ [−1, 1] (or, for :func:`best_of_n_curve`'s reward, any reals).
Scorer = Callable[[list[str]], Any]
JudgeUnit = Literal["first_sentence", "full"]


# ---------------------------------------------------------------------- judges and helpers
def behavior_scorer(judge: GoodProbability | Scorer, *, hard: bool = True) -> Scorer:
    """A behavior scorer from a P(B = +1 | x) judge: ``2·1{p ≥ ½} − 1`` (hard) or ``2p − 1``.

    ``hard=True`` matches :func:`bebkit.estimators.behavior.judge_responses` (labels ±1).
    """

    def probs(texts: list[str]) -> np.ndarray:
        if isinstance(judge, GoodProbability):
            return np.asarray(judge.prob_good(texts), dtype=np.float64)
        return np.asarray(judge(texts), dtype=np.float64)

    def score(texts: list[str]) -> np.ndarray:
        p = probs(texts)
        if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
            raise InputError("judge probabilities must lie in [0, 1]")
        return np.where(p >= 0.5, 1.0, -1.0) if hard else 2.0 * p - 1.0

    return score


def _judge(
    scorer: Scorer, texts: list[str], unit: JudgeUnit, *, bounded: bool = True
) -> np.ndarray:
    if not texts:
        return np.zeros(0)
    shown = [first_sentence(t) for t in texts] if unit == "first_sentence" else list(texts)
    out = np.asarray(scorer(shown), dtype=np.float64).reshape(-1)
    if out.shape != (len(texts),):
        raise InputError(f"judge returned shape {out.shape}, expected ({len(texts)},)")
    if np.any(~np.isfinite(out)):
        raise InputError("judge scores must be finite")
    if bounded and np.any(np.abs(out) > 1 + 1e-9):
        raise InputError("behavior scores must lie in [-1, 1]")
    return out


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _encode(model: LanguageModel, text: str) -> list[int]:
    return list(model.encode(text)) if text else []


def _unit_estimate(per_unit: np.ndarray, method: str) -> Estimate:
    """Mean over independent units (stderr NaN with one unit)."""
    return Estimate.from_samples(np.asarray(per_unit, dtype=np.float64), method=method)


def crossing_length(
    lengths: Sequence[float] | np.ndarray, values: Sequence[float] | np.ndarray, threshold: float
) -> float:
    """First length at which a (decreasing) curve reaches ``threshold``, linearly interpolated.

    ``lengths[0]`` when the curve starts at or below it; NaN when it never gets there.
    """
    x = np.asarray(lengths, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.shape != y.shape or x.size == 0:
        raise InputError("lengths and values must be non-empty and of equal length")
    below = np.flatnonzero(y <= threshold)
    if below.size == 0:
        return math.nan
    j = int(below[0])
    if j == 0:
        return float(x[0])
    y0, y1 = y[j - 1], y[j]
    frac = (y0 - threshold) / (y0 - y1) if y0 != y1 else 1.0
    return float(x[j - 1] + frac * (x[j] - x[j - 1]))


def _bootstrap(
    stat: Callable[[np.ndarray], float],
    n_units: int,
    n_boot: int,
    rng: np.random.Generator,
    point: float,
    method: str,
) -> Estimate:
    """Point estimate with a bootstrap-over-units stderr and percentile 95% CI (NaN-robust)."""
    draws = np.array([stat(rng.integers(0, n_units, n_units)) for _ in range(n_boot)])
    ok = draws[np.isfinite(draws)]
    if ok.size < 2 or not math.isfinite(point):
        return Estimate(point, math.nan, n_units, None, None, 0.95, method)
    lo, hi = np.quantile(ok, [0.025, 0.975])
    return Estimate(point, float(ok.std(ddof=1)), n_units, float(lo), float(hi), 0.95, method)


def _dedupe(contexts: Sequence[Sequence[int]]) -> tuple[list[list[int]], np.ndarray]:
    """Unique contexts (first-seen order) and, per input row, the index of its context."""
    index: dict[tuple[int, ...], int] = {}
    uniq: list[list[int]] = []
    inverse = np.empty(len(contexts), np.int64)
    for i, c in enumerate(contexts):
        key = tuple(int(t) for t in c)
        if key not in index:
            index[key] = len(uniq)
            uniq.append(list(key))
        inverse[i] = index[key]
    return uniq, inverse


def _grouped_calls(inverse: np.ndarray) -> list[tuple[int, list[int]]]:
    """``(count, unique ids)``: unique contexts grouped by how many rows share them, so one
    batched call per group draws ``count × per-row`` samples for each of its contexts (rows
    with the same context share one encoding; all-distinct contexts make a single call)."""
    counts = np.bincount(inverse)
    groups: dict[int, list[int]] = {}
    for u, c in enumerate(counts.tolist()):
        groups.setdefault(int(c), []).append(u)
    return sorted(groups.items())


def _rows_of(inverse: np.ndarray) -> list[list[int]]:
    rows: list[list[int]] = [[] for _ in range(int(inverse.max()) + 1 if inverse.size else 0)]
    for i, u in enumerate(inverse.tolist()):
        rows[u].append(i)
    return rows


def _sample_rows(
    model: LanguageModel,
    contexts: Sequence[Sequence[int]],
    per_row: int,
    stop: StopCondition,
    rng: np.random.Generator,
) -> list[list[list[int]]]:
    """``per_row`` independent continuations per context row, identical contexts batched."""
    uniq, inverse = _dedupe(contexts)
    rows = _rows_of(inverse)
    out: list[list[list[int]]] = [[] for _ in contexts]
    for count, us in _grouped_calls(inverse):
        drawn = sample_many(model, [uniq[u] for u in us], count * per_row, stop, rng=rng)
        for u, ys in zip(us, drawn, strict=True):
            for k, i in enumerate(rows[u]):
                out[i] = [[int(t) for t in y] for y in ys[k * per_row : (k + 1) * per_row]]
    return out


def _sample_sentences(
    model: LanguageModel,
    contexts: list[list[int]],
    stop: StopCondition,
    rng: np.random.Generator,
    *,
    keep_stop: bool,
    skip_blank: bool = True,
) -> tuple[list[list[int]], list[bool]]:
    """One sentence per context: its tokens (stop token kept or dropped) and whether it was
    truncated at the cap. A stop before any non-blank text does not end the sentence (as in
    :func:`~bebkit.estimators.prompts.sample_prompts`)."""
    draws = [d[0] for d in _sample_rows(model, contexts, 1, stop, rng)]
    out: list[list[int]] = []
    trunc: list[bool] = []
    for ctx, y in zip(contexts, draws, strict=True):
        ended = bool(y) and y[-1] in stop.stop_token_ids
        while skip_blank and ended and len(y) < stop.max_new_tokens and not model.decode(y).strip():
            rest = StopCondition(stop.max_new_tokens - len(y), stop.stop_token_ids)
            y += [int(t) for t in model.sample(ctx + y, 1, rest, rng=rng)[0]]
            ended = y[-1] in stop.stop_token_ids
        if ended and not keep_stop:
            y = y[:-1]
        out.append(y)
        trunc.append(not ended)
    return out, trunc


def _decode_responses(
    model: LanguageModel, drawn: list[list[list[int]]], stop: StopCondition, keep_stop: bool
) -> list[list[str]]:
    out = []
    for ys in drawn:
        texts = []
        for ids in ys:
            if ids and ids[-1] in stop.stop_token_ids and not keep_stop:
                ids = ids[:-1]
            texts.append(model.decode(ids))
        out.append(texts)
    return out


def _responses(
    model: LanguageModel,
    contexts: list[list[int]],
    n: int,
    stop: StopCondition,
    rng: np.random.Generator,
    *,
    keep_stop: bool,
) -> list[list[str]]:
    """``n`` decoded responses per context (identical contexts share one sampling call)."""
    return _decode_responses(model, _sample_rows(model, contexts, n, stop, rng), stop, keep_stop)


def _kl_rows(
    neg: LanguageModel,
    target: LanguageModel,
    contexts: list[list[int]],
    per_row: int,
    stops: frozenset[int],
    rng: np.random.Generator,
    *,
    with_rb: bool,
    max_sentence_tokens: int,
) -> np.ndarray:
    """``[rows]`` mean KL(P₋ ‖ P) terms of the next sentence, ``per_row`` samples per row
    (identical contexts share one call; each row gets its own disjoint samples)."""
    uniq, inverse = _dedupe(contexts)
    rows = _rows_of(inverse)
    out = np.zeros(len(contexts))
    for count, us in _grouped_calls(inverse):
        ctxs = [uniq[u] for u in us]
        grid = kl_samples_grid(
            neg,
            ctxs,
            {"target": (target, ctxs)},
            n_samples=count * per_row,
            stop_ids=stops,
            with_rb=with_rb,
            rng=rng,
            unit="sentence",
            max_sentence_tokens=max_sentence_tokens,
        )
        for u, g in zip(us, grid, strict=True):
            terms = g["target"].rb if with_rb else g["target"].mc
            assert terms is not None
            for k, i in enumerate(rows[u]):
                out[i] = float(np.mean(terms[k * per_row : (k + 1) * per_row]))
    return out


def _est_list(es: Iterable[Estimate]) -> list[dict[str, Any]]:
    return [e.to_dict() for e in es]


# ---------------------------------------------------------------------- Theorem 3
@dataclass(frozen=True)
class ConversationLayout:
    """Text pieces of a conversation ``[BOS] header (user_open q user_close assistant_open a
    assistant_close)* …``.

    Sentences of one turn are joined with ``sentence_separator``; a sampled sentence ends at
    a token containing one of ``stop_strings`` (kept when ``keep_stop_token``). The model's
    next reply (and every response judged) starts right after ``assistant_open``.
    """

    name: str = "newline"
    header: str = ""
    user_open: str = ""
    user_close: str = ""
    assistant_open: str = ""
    assistant_close: str = ""
    sentence_separator: str = ""
    stop_strings: tuple[str, ...] = ("\n",)
    keep_stop_token: bool = True

    @classmethod
    def from_prompt_format(cls, fmt: PromptFormat) -> ConversationLayout:
        """The conversation layout of a misaligning-prompt format.

        ``newline``: plain text, one sentence per line. Alternating layouts (``alternating``,
        ``llama2-inst``: ``response_period = 2``): a user turn is the user slot, a reply the
        assistant slot (opened with the format's generation header).
        """
        if fmt.response_period == 2:
            return cls(
                name=fmt.name,
                header=fmt.header,
                user_open=fmt.prefix_for(1),
                user_close=fmt.suffix_for(1),
                assistant_open=fmt.response_prefix or fmt.prefix_for(2),
                assistant_close=fmt.suffix_for(2),
                sentence_separator="" if fmt.keep_stop_token else " ",
                stop_strings=fmt.stop_strings,
                keep_stop_token=fmt.keep_stop_token,
            )
        if fmt.response_period == 1 and not fmt.sentence_prefixes and not fmt.sentence_suffixes:
            if fmt.sentence_prefix or fmt.sentence_suffix:
                raise InputError(
                    f"format {fmt.name!r} puts every sentence in its own turn; "
                    "use 'newline' or an alternating format for conversations"
                )
            return cls(
                name=fmt.name,
                header=fmt.header,
                assistant_open=fmt.response_prefix,
                stop_strings=fmt.stop_strings,
                keep_stop_token=fmt.keep_stop_token,
            )
        raise InputError(f"format {fmt.name!r} has no conversation layout")

    def prompt_format(self) -> PromptFormat:
        """A :class:`PromptFormat` with this layout's stop strings (for stop-token lookup)."""
        return PromptFormat(name=self.name, stop_strings=self.stop_strings)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class ConversationResult:
    """Theorem 3 curves, one entry per user turn t = 1 … K.

    Attributes:
        turn: ``[K]`` 1 … K.
        user_sentences: ``[K]`` misaligning sentences up to the end of turn t.
        reply_sentences: ``[K]`` reply sentences written by the model before turn t.
        user_tokens: ``[K]`` mean misaligning tokens up to the end of turn t.
        reply_tokens: ``[K]`` mean reply tokens before turn t.
        behavior: B̂ after turn t (mean judge score of the model's next reply).
        kl: KL(P₋ ‖ P) of the next sentence after turn t (method says mc / rb).
        per_conversation_behavior / per_conversation_kl: ``[N, K]`` unit means.
        truncated_sentences: sampled sentences (user or reply) that hit the token cap.
    """

    turn: np.ndarray
    user_sentences: np.ndarray
    reply_sentences: np.ndarray
    user_tokens: np.ndarray
    reply_tokens: np.ndarray
    behavior: list[Estimate]
    kl: list[Estimate]
    per_conversation_behavior: np.ndarray
    per_conversation_kl: np.ndarray
    n_conversations: int
    n_responses: int
    n_kl_samples: int
    truncated_sentences: int
    layout: ConversationLayout
    conversations: list[str] = field(default_factory=list)

    def misaligning_text_at(self, threshold: float, unit: str = "sentences") -> float:
        """Misaligning text (sentences or tokens) at which the behavior curve reaches ``threshold``."""
        x = self.user_sentences if unit == "sentences" else self.user_tokens
        return crossing_length(x, [e.value for e in self.behavior], threshold)

    def theorem3(
        self,
        alpha: float,
        beta: float,
        epsilon: float,
        beta_prime: float,
        sigma: float,
        delta: float,
    ) -> dict[str, Any]:
        """Theorem 3's sufficient misaligning text for this conversation shape, in sentences.

        ``total`` (:func:`~bebkit.theory.bounds.theorem3_total_length`) for the K − 1
        replies of ``reply_sentences`` sentences, its per-turn split, Theorem 1's length for
        the same α, β, ε and the ``extra`` text the replies cost.
        """
        k = int(self.turn.size)
        r = int(self.reply_sentences[1]) if k > 1 else 0
        answers = np.full(k - 1, float(r))
        total = bounds.theorem3_total_length(
            alpha, beta, epsilon, beta_prime, sigma, delta, answers
        )
        t1 = bounds.theorem1_length(alpha, beta, epsilon)
        return {
            "total": total,
            "turns": bounds.theorem3_turn_bounds(
                alpha, beta, epsilon, beta_prime, sigma, delta, answers
            ).tolist(),
            "theorem1": t1,
            "extra": total - t1,
            "n_replies": k - 1,
            "reply_sentences": r,
            "params": {
                "alpha": alpha,
                "beta": beta,
                "epsilon": epsilon,
                "beta_prime": beta_prime,
                "sigma": sigma,
                "delta": delta,
            },
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "turn": self.turn.tolist(),
            "user_sentences": self.user_sentences.tolist(),
            "reply_sentences": self.reply_sentences.tolist(),
            "user_tokens": self.user_tokens.tolist(),
            "reply_tokens": self.reply_tokens.tolist(),
            "behavior": _est_list(self.behavior),
            "kl": _est_list(self.kl),
            "per_conversation_behavior": self.per_conversation_behavior.tolist(),
            "per_conversation_kl": self.per_conversation_kl.tolist(),
            "n_conversations": self.n_conversations,
            "n_responses": self.n_responses,
            "n_kl_samples": self.n_kl_samples,
            "truncated_sentences": self.truncated_sentences,
            "layout": self.layout.to_dict(),
            "conversations": list(self.conversations),
        }


def conversation_curve(
    target: LanguageModel,
    neg: LanguageModel,
    judge: Scorer,
    *,
    n_conversations: int,
    n_turns: int,
    user_sentences: int = 1,
    reply_sentences: int = 1,
    n_responses: int = 16,
    n_kl_samples: int = 16,
    kl_estimator: Literal["mc", "rb"] = "rb",
    layout: ConversationLayout | None = None,
    stop_ids: Iterable[int] | None = None,
    response_stop_ids: Iterable[int] | None = None,
    max_sentence_tokens: int = 48,
    max_response_tokens: int = 48,
    judge_unit: JudgeUnit = "first_sentence",
    keep_texts: int = 4,
    rng: np.random.Generator | int | None = None,
) -> ConversationResult:
    """Theorem 3: behavior and KL(P₋‖P) after each misaligning turn of a conversation.

    Args:
        target: the model P (writes the replies and the judged responses).
        neg: P₋ (writes the user turns, conditioned on the conversation so far).
        judge: texts → B̂ ∈ [−1, 1] (see :func:`behavior_scorer`).
        n_turns: user turns K (so K − 1 replies in between).
        user_sentences / reply_sentences: sentences per user turn / per reply
            (``reply_sentences=0``: one long single prompt, the baseline curve).
        n_responses: judged responses of P after each user turn, per conversation.
        n_kl_samples: sentences y ~ P₋ per conversation and turn for the KL estimate.
        kl_estimator: plain Monte Carlo or Rao-Blackwellised (exact per-token KL summed).
        stop_ids: sentence-end tokens (default: tokens with the layout's stop strings).
        response_stop_ids: end of a judged response (default: ``stop_ids``).
        keep_texts: decoded conversations kept in the result (for the examples page).
    """
    for name, v in (
        ("n_conversations", n_conversations),
        ("n_turns", n_turns),
        ("user_sentences", user_sentences),
        ("n_responses", n_responses),
        ("n_kl_samples", n_kl_samples),
    ):
        if v < 1:
            raise InputError(f"{name} must be >= 1, got {v}")
    if reply_sentences < 0:
        raise InputError(f"reply_sentences must be >= 0, got {reply_sentences}")
    if kl_estimator not in ("mc", "rb"):
        raise InputError(f"kl_estimator must be 'mc' or 'rb', got {kl_estimator!r}")
    lay = layout or ConversationLayout()
    gen = _rng(rng)
    stops = (
        frozenset(int(t) for t in stop_ids)
        if stop_ids is not None
        else stop_token_ids(neg, lay.prompt_format())
    )
    if not stops:
        raise InputError("stop_ids must contain at least one sentence-end token")
    rstops = frozenset(int(t) for t in response_stop_ids) if response_stop_ids else stops
    sent_stop = StopCondition(max_sentence_tokens, stops)
    resp_stop = StopCondition(max_response_tokens, rstops)
    bos = list(target.bos_token_ids)
    start = bos + _encode(target, lay.header)
    if not start:
        raise InputError(f"{target.name} has no BOS token: give the layout a header")
    piece = {
        k: _encode(target, getattr(lay, k))
        for k in lay.__dataclass_fields__
        if k != "name" and isinstance(getattr(lay, k), str)
    }

    n = int(n_conversations)
    ctx: list[list[int]] = [list(start) for _ in range(n)]
    u_tok = np.zeros(n)
    a_tok = np.zeros(n)
    n_trunc = 0
    beh = np.zeros((n, n_turns))
    kls = np.zeros((n, n_turns))
    users, replies, ut, at = [], [], [], []
    n_user = n_reply = 0

    def turn_sentences(model: LanguageModel, count: int, opener: list[int]) -> np.ndarray:
        nonlocal n_trunc
        for i in range(n):
            ctx[i] += opener
        added = np.zeros(n)
        for j in range(count):
            if j and piece["sentence_separator"]:
                for i in range(n):
                    ctx[i] += piece["sentence_separator"]
            ys, tr = _sample_sentences(model, ctx, sent_stop, gen, keep_stop=lay.keep_stop_token)
            n_trunc += sum(tr)
            for i, y in enumerate(ys):
                ctx[i] += y
                added[i] += len(y)
        return added

    for t in range(n_turns):
        u_tok += turn_sentences(neg, user_sentences, piece["user_open"])
        for i in range(n):
            ctx[i] += piece["user_close"]
        n_user += user_sentences
        users.append(n_user)
        replies.append(n_reply)
        ut.append(float(u_tok.mean()))
        at.append(float(a_tok.mean()))
        here = [c + piece["assistant_open"] for c in ctx]
        texts = _responses(target, here, n_responses, resp_stop, gen, keep_stop=lay.keep_stop_token)
        flat = [x for ts in texts for x in ts]
        scores = _judge(judge, flat, judge_unit).reshape(n, n_responses)
        beh[:, t] = scores.mean(axis=1)
        kls[:, t] = _kl_rows(
            neg,
            target,
            here,
            n_kl_samples,
            stops,
            gen,
            with_rb=kl_estimator == "rb",
            max_sentence_tokens=max_sentence_tokens,
        )
        if t < n_turns - 1 and reply_sentences:
            a_tok += turn_sentences(target, reply_sentences, piece["assistant_open"])
            for i in range(n):
                ctx[i] += piece["assistant_close"]
            n_reply += reply_sentences

    suffix = "_per_sentence"
    return ConversationResult(
        turn=np.arange(1, n_turns + 1),
        user_sentences=np.asarray(users, dtype=np.int64),
        reply_sentences=np.asarray(replies, dtype=np.int64),
        user_tokens=np.asarray(ut),
        reply_tokens=np.asarray(at),
        behavior=[_unit_estimate(beh[:, t], "conversation_behavior") for t in range(n_turns)],
        kl=[
            _unit_estimate(kls[:, t], f"conversation_kl_{kl_estimator}{suffix}")
            for t in range(n_turns)
        ],
        per_conversation_behavior=beh,
        per_conversation_kl=kls,
        n_conversations=n,
        n_responses=n_responses,
        n_kl_samples=n_kl_samples,
        truncated_sentences=n_trunc,
        layout=lay,
        conversations=[target.decode(c) for c in ctx[: max(0, keep_texts)]],
    )


# ---------------------------------------------------------------------- shared prompt loop
def _prompt_lengths(prompts: Sequence[SampledPrompt], lengths: Sequence[int] | None) -> list[int]:
    if not prompts:
        raise InputError("need at least one prompt")
    n_max = min(p.n_sentences for p in prompts)
    fmt = prompts[0].fmt
    if any(p.fmt != fmt for p in prompts):
        raise InputError("all prompts must share one format")
    ls = (
        list(fmt.response_positions(n_max))
        if lengths is None
        else sorted({int(x) for x in lengths})
    )
    if not ls or ls[0] < 0 or ls[-1] > n_max:
        raise InputError(f"lengths must lie in [0, {n_max}] (the shortest prompt's sentences)")
    return ls


def _prompt_responses(
    target: LanguageModel,
    prompts: Sequence[SampledPrompt],
    lengths: list[int],
    n: int,
    gen: np.random.Generator,
    *,
    system_prompt: str | None,
    stop_ids: Iterable[int] | None,
    max_response_tokens: int,
) -> list[list[list[str]]]:
    """``[prompt][length] → n`` decoded responses of ``target`` after the prompt's first
    ``length`` sentences (its response context, optional aligning system prompt)."""
    fmt = response_format(prompts[0].fmt)
    stops = (
        frozenset(int(t) for t in stop_ids) if stop_ids is not None else stop_token_ids(target, fmt)
    )
    stop = StopCondition(max_response_tokens, stops)
    ctxs = [
        pr.target_context(target, length, system_prompt) for pr in prompts for length in lengths
    ]
    flat = _responses(target, ctxs, n, stop, gen, keep_stop=fmt.keep_stop_token)
    k = len(lengths)
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


# ---------------------------------------------------------------------- Theorem 4
@dataclass(frozen=True)
class BestOfNResult:
    """Best-of-n behavior curves.

    Attributes:
        lengths: ``[L]`` prompt lengths (sentences).
        ns: the n of best-of-n.
        behavior: ``{n: [Estimate per length]}`` E[B̂ of the best of n responses].
        per_prompt: ``{n: [P, L]}`` per-prompt means.
        n_groups: ``{n: groups per (prompt, length)}``.
        reward: what chose the best response (``"judge"`` or the reward's name).
    """

    lengths: np.ndarray
    ns: tuple[int, ...]
    behavior: dict[int, list[Estimate]]
    per_prompt: dict[int, np.ndarray]
    n_groups: dict[int, int]
    n_prompts: int
    reward: str

    def curve(self, n: int) -> np.ndarray:
        return np.array([e.value for e in self.behavior[n]])

    def shift(
        self,
        threshold: float,
        *,
        n_boot: int = 200,
        rng: np.random.Generator | int | None = 0,
    ) -> dict[int, Estimate]:
        """Length shift of each best-of-n curve at ``threshold`` relative to n = 1.

        ``crossing(n) − crossing(1)`` (sentences; Theorem 4 predicts about ``log(n)/β``),
        with a bootstrap over prompts for the stderr and CI (NaN where a curve never
        reaches the threshold).
        """
        if 1 not in self.ns:
            raise InputError("the shift is relative to n = 1, which was not measured")
        gen = _rng(rng)

        def crossing(n: int, idx: np.ndarray | None) -> float:
            rows = self.per_prompt[n] if idx is None else self.per_prompt[n][idx]
            return crossing_length(self.lengths, rows.mean(axis=0), threshold)

        out = {}
        for n in self.ns:
            point = crossing(n, None) - crossing(1, None)

            def stat(idx: np.ndarray, n: int = n) -> float:
                return crossing(n, idx) - crossing(1, idx)

            out[n] = _bootstrap(stat, self.n_prompts, n_boot, gen, point, "best_of_n_shift")
        return out

    @staticmethod
    def predicted_shift(n: int, beta: float) -> float:
        """Theorem 4's extra length log(n)/β (sentences)."""
        if not beta > 0 or int(n) < 1:
            raise InputError("need beta > 0 and n >= 1")
        return math.log(int(n)) / float(beta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lengths": self.lengths.tolist(),
            "ns": list(self.ns),
            "behavior": {str(n): _est_list(v) for n, v in self.behavior.items()},
            "per_prompt": {str(n): v.tolist() for n, v in self.per_prompt.items()},
            "n_groups": {str(n): v for n, v in self.n_groups.items()},
            "n_prompts": self.n_prompts,
            "reward": self.reward,
        }


def best_of_n_curve(
    target: LanguageModel,
    prompts: Sequence[SampledPrompt],
    judge: Scorer,
    *,
    ns: Sequence[int] = (1, 2, 4, 8, 16),
    n_groups: int = 8,
    reward: Scorer | None = None,
    reward_name: str = "judge",
    lengths: Sequence[int] | None = None,
    system_prompt: str | None = None,
    stop_ids: Iterable[int] | None = None,
    max_response_tokens: int = 48,
    judge_unit: JudgeUnit = "first_sentence",
    rng: np.random.Generator | int | None = None,
) -> BestOfNResult:
    """Theorem 4: behavior of the best of n responses after prompts ``s ~ P₋``.

    Per (prompt, length) ``n_groups · max(ns)`` responses of P are drawn once; for each n
    they are cut into ``n_groups · max(ns) / n`` disjoint groups of n, the response with the
    highest reward in a group is kept (first on ties) and its judge score B̂ averaged.
    ``reward=None`` uses the judge's own score as the reward.
    """
    ns_t = tuple(sorted({int(n) for n in ns}))
    if not ns_t or ns_t[0] < 1:
        raise InputError("ns must be a non-empty list of integers >= 1")
    if n_groups < 1:
        raise InputError(f"n_groups must be >= 1, got {n_groups}")
    ls = _prompt_lengths(prompts, lengths)
    gen = _rng(rng)
    pool = n_groups * ns_t[-1]
    texts = _prompt_responses(
        target,
        prompts,
        ls,
        pool,
        gen,
        system_prompt=system_prompt,
        stop_ids=stop_ids,
        max_response_tokens=max_response_tokens,
    )
    flat = [x for per_p in texts for per_l in per_p for x in per_l]
    scores = _judge(judge, flat, judge_unit).reshape(len(prompts), len(ls), pool)
    if reward is None:
        rewards = scores
    else:
        rewards = _judge(reward, flat, judge_unit, bounded=False).reshape(scores.shape)
    per_prompt: dict[int, np.ndarray] = {}
    groups: dict[int, int] = {}
    for n in ns_t:
        g = pool // n
        r = rewards[..., : g * n].reshape(len(prompts), len(ls), g, n)
        s = scores[..., : g * n].reshape(len(prompts), len(ls), g, n)
        best = np.take_along_axis(s, r.argmax(axis=-1)[..., None], axis=-1)[..., 0]
        per_prompt[n] = best.mean(axis=-1)
        groups[n] = g
    return BestOfNResult(
        lengths=np.asarray(ls, dtype=np.int64),
        ns=ns_t,
        behavior={
            n: [
                _unit_estimate(per_prompt[n][:, j], f"best_of_{n}_behavior") for j in range(len(ls))
            ]
            for n in ns_t
        },
        per_prompt=per_prompt,
        n_groups=groups,
        n_prompts=len(prompts),
        reward="judge" if reward is None else reward_name,
    )


# ---------------------------------------------------------------------- Theorem 5
@dataclass(frozen=True)
class FractionMisalignedResult:
    """Per-prompt behavior expectations and the fraction of prompts below a threshold.

    Attributes:
        lengths: ``[L]`` prompt lengths (sentences).
        per_prompt: ``[P, L]`` mean judge score of each prompt's R responses.
        per_prompt_stderr: ``[P, L]`` their stderr (sd/√R).
        fraction: Wilson estimate (over prompts) of P(B̂(s) < threshold) per length.
        behavior: mean behavior over prompts per length.
    """

    lengths: np.ndarray
    threshold: float
    per_prompt: np.ndarray
    per_prompt_stderr: np.ndarray
    fraction: list[Estimate]
    behavior: list[Estimate]
    n_responses: int

    @property
    def n_prompts(self) -> int:
        return int(self.per_prompt.shape[0])

    def length_reaching(self, fraction: float) -> float:
        """First length at which the fraction of misaligned prompts reaches ``fraction``."""
        return crossing_length(self.lengths, [-e.value for e in self.fraction], -fraction)

    @staticmethod
    def theorem5(alpha: float, beta: float, epsilon: float, sigma: float, delta: float) -> float:
        """Theorem 5's length: beyond it a fraction ≥ 1 − δ of prompts s ~ P₋ misalign."""
        return bounds.theorem5_length(alpha, beta, epsilon, sigma, delta)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lengths": self.lengths.tolist(),
            "threshold": self.threshold,
            "per_prompt": self.per_prompt.tolist(),
            "per_prompt_stderr": self.per_prompt_stderr.tolist(),
            "fraction": _est_list(self.fraction),
            "behavior": _est_list(self.behavior),
            "n_responses": self.n_responses,
            "n_prompts": self.n_prompts,
        }


def fraction_misaligned(
    target: LanguageModel,
    prompts: Sequence[SampledPrompt],
    judge: Scorer,
    *,
    threshold: float = 0.0,
    n_responses: int = 16,
    lengths: Sequence[int] | None = None,
    system_prompt: str | None = None,
    stop_ids: Iterable[int] | None = None,
    max_response_tokens: int = 48,
    judge_unit: JudgeUnit = "first_sentence",
    level: float = 0.95,
    rng: np.random.Generator | int | None = None,
) -> FractionMisalignedResult:
    """Theorem 5: the fraction of prompts ``s ~ P₋`` whose behavior estimate is below
    ``threshold`` (γ + ε), per prompt length, with Wilson intervals over prompts.

    Each prompt's behavior is the mean of ``n_responses`` judged responses; near the
    threshold that estimate misclassifies some prompts, so with small R the fraction is that
    of the *estimated* behaviors (its exact target on the synthetic world:
    :func:`bebkit.synthetic.theorems.fraction_misaligned_exact` with ``n_responses``).
    """
    if n_responses < 1:
        raise InputError(f"n_responses must be >= 1, got {n_responses}")
    if not -1.0 <= threshold <= 1.0:
        raise InputError(f"threshold must lie in [-1, 1], got {threshold}")
    ls = _prompt_lengths(prompts, lengths)
    gen = _rng(rng)
    texts = _prompt_responses(
        target,
        prompts,
        ls,
        n_responses,
        gen,
        system_prompt=system_prompt,
        stop_ids=stop_ids,
        max_response_tokens=max_response_tokens,
    )
    flat = [x for per_p in texts for per_l in per_p for x in per_l]
    scores = _judge(judge, flat, judge_unit).reshape(len(prompts), len(ls), n_responses)
    per = scores.mean(axis=-1)
    se = (
        scores.std(axis=-1, ddof=1) / math.sqrt(n_responses)
        if n_responses > 1
        else np.full(per.shape, math.nan)
    )
    below = per < threshold
    return FractionMisalignedResult(
        lengths=np.asarray(ls, dtype=np.int64),
        threshold=float(threshold),
        per_prompt=per,
        per_prompt_stderr=se,
        fraction=[
            wilson_interval(int(below[:, j].sum()), len(prompts), level) for j in range(len(ls))
        ],
        behavior=[_unit_estimate(per[:, j], "behavior_expectation") for j in range(len(ls))],
        n_responses=n_responses,
    )


__all__ = [
    "BestOfNResult",
    "ConversationLayout",
    "ConversationResult",
    "FractionMisalignedResult",
    "Scorer",
    "behavior_scorer",
    "best_of_n_curve",
    "conversation_curve",
    "crossing_length",
    "fraction_misaligned",
]
