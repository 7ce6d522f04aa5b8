"""Theorem 3 / 4 / 5 estimators against exact values on the synthetic world (within 4·stderr)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimators.prompts import LLAMA2_INST, NEWLINE, sample_prompts
from bebkit.estimators.theorems import (
    ConversationLayout,
    behavior_scorer,
    best_of_n_curve,
    conversation_curve,
    crossing_length,
    fraction_misaligned,
)
from bebkit.synthetic import World, world_from_params
from bebkit.synthetic.theorems import (
    conversation_exact,
    estimated_below_probability,
    fraction_misaligned_exact,
    prompt_expectation,
)


def _world(markov: bool = True) -> World:
    return world_from_params(0.05, 0.6, gamma=-0.5, n_sentences=4, markov=markov, seed=2)


def _signed(w: World) -> World:
    return World(
        scores=np.sign(w.scores),
        log_weights=w.log_weights,
        log_cond=w.log_cond,
        negative=w.negative,
        markov=w.markov,
        alphabet_size=w.alphabet_size,
    )


def _judge(world: World) -> Any:
    """The world's exact behavior B(x) of a response sentence (its letter code + '.')."""
    lm = world.language_model()

    def judge(texts: list[str]) -> np.ndarray:
        out = []
        for t in texts:
            sentences, _ = world.split_sentences([0, *lm.encode(t)])
            assert len(sentences) == 1, t
            out.append(world.scores[sentences[0]])
        return np.asarray(out)

    return judge


def _within(est: Any, exact: float, k: float = 4.0) -> None:
    """|estimate − exact| ≤ k·stderr; a zero stderr (every unit gave the same value, e.g. the
    best of 16 is always the top sentence) needs the exact value within 1e-3."""
    assert math.isfinite(est.stderr), est
    assert abs(est.value - exact) <= max(k * est.stderr, 1e-3 if est.stderr == 0 else 0), (
        est,
        exact,
    )


def _m(world: World) -> int:
    return world.codec.code_length + 1


# ---------------------------------------------------------------------- Theorem 3
@pytest.mark.parametrize("reply", [1, 0])
def test_conversation_matches_exact(reply: int) -> None:
    world = _world()
    neg, mix = world.component_model("neg"), world.language_model()
    res = conversation_curve(
        mix,
        neg,
        _judge(world),
        n_conversations=120,
        n_turns=3,
        user_sentences=1,
        reply_sentences=reply,
        n_responses=8,
        n_kl_samples=8,
        stop_ids=world.sentence_end_token_ids,
        max_sentence_tokens=_m(world),
        max_response_tokens=_m(world),
        rng=7,
    )
    exact = conversation_exact(world, 3, 1, reply)
    assert res.user_sentences.tolist() == exact.user_sentences.tolist() == [1, 2, 3]
    assert res.reply_sentences.tolist() == exact.reply_sentences.tolist()
    assert res.reply_sentences.tolist() == [0, reply, 2 * reply]
    for t in range(3):
        _within(res.behavior[t], exact.behavior[t])
        _within(res.kl[t], exact.kl[t])
    assert res.truncated_sentences == 0
    assert res.user_tokens.tolist() == [_m(world) * t for t in (1, 2, 3)]
    d = res.to_dict()
    assert len(d["behavior"]) == 3 and d["layout"]["name"] == "newline"
    assert len(d["conversations"]) == 4


def test_conversation_replies_slow_misalignment_exactly() -> None:
    """Theorem 3's premise on the exact world: the model's own replies (evidence for P₊) keep
    the behavior higher than the same misaligning text without replies."""
    world = _world()
    with_r = conversation_exact(world, 3, 1, 2)
    without = conversation_exact(world, 3, 1, 0)
    assert np.all(with_r.behavior[1:] > without.behavior[1:])
    assert np.all(with_r.kl[1:] > without.kl[1:])


def test_conversation_mc_kl_and_theorem3_bound() -> None:
    world = _world(markov=False)
    neg, mix = world.component_model("neg"), world.language_model()
    res = conversation_curve(
        mix,
        neg,
        _judge(world),
        n_conversations=200,
        n_turns=2,
        user_sentences=1,
        reply_sentences=1,
        n_responses=2,
        n_kl_samples=8,
        kl_estimator="mc",
        stop_ids=world.sentence_end_token_ids,
        max_sentence_tokens=_m(world),
        max_response_tokens=_m(world),
        rng=3,
    )
    exact = conversation_exact(world, 2, 1, 1)
    for t in range(2):
        _within(res.kl[t], exact.kl[t])
    assert res.kl[0].method == "conversation_kl_mc_per_sentence"
    p = world.params()
    b = res.theorem3(p.alpha, p.beta, 0.1, p.beta_prime, p.sigma_pos, 0.1)
    assert b["n_replies"] == 1 and b["reply_sentences"] == 1
    assert b["extra"] > 0
    assert math.isclose(sum(b["turns"]), b["total"])
    assert math.isclose(b["total"] - b["extra"], b["theorem1"])


def test_conversation_layout_from_formats() -> None:
    lay = ConversationLayout.from_prompt_format(LLAMA2_INST)
    assert (lay.header, lay.user_close, lay.assistant_close) == ("[INST]", "[/INST]", "[INST]")
    assert lay.sentence_separator == " " and not lay.keep_stop_token
    assert ConversationLayout.from_prompt_format(NEWLINE) == ConversationLayout()


def test_conversation_validates() -> None:
    world = _world()
    lm = world.language_model()
    with pytest.raises(InputError):
        conversation_curve(lm, lm, _judge(world), n_conversations=0, n_turns=1)
    with pytest.raises(InputError):
        conversation_curve(lm, lm, _judge(world), n_conversations=1, n_turns=1, kl_estimator="x")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- Theorem 4
def _prompts(world: World, n: int, length: int, seed: int) -> Any:
    return sample_prompts(
        world.component_model("neg"),
        n_prompts=n,
        n_sentences=length,
        rng=seed,
        stop_ids=world.sentence_end_token_ids,
        max_sentence_tokens=_m(world),
    )


def test_best_of_n_matches_exact() -> None:
    world = _world()
    prompts = _prompts(world, 60, 3, seed=1)
    res = best_of_n_curve(
        world.language_model(),
        prompts,
        _judge(world),
        ns=(1, 2, 4, 8, 16),
        n_groups=4,
        stop_ids=world.sentence_end_token_ids,
        max_response_tokens=_m(world),
        rng=5,
    )
    assert res.lengths.tolist() == [0, 1, 2, 3]
    assert res.n_groups == {1: 64, 2: 32, 4: 16, 8: 8, 16: 4}
    for n in res.ns:
        for j, length in enumerate(res.lengths):
            exact = prompt_expectation(
                world, int(length), lambda s, n=n: world.best_of_n_behavior(s, n)
            )
            _within(res.behavior[n][j], exact)
    # more draws never hurt: the curves are ordered at every length (exactly and measured)
    for j in range(res.lengths.size):
        vals = [res.behavior[n][j].value for n in res.ns]
        assert vals == sorted(vals)
    d = res.to_dict()
    assert d["reward"] == "judge" and set(d["behavior"]) == {"1", "2", "4", "8", "16"}


def test_best_of_n_shift_and_separate_reward() -> None:
    world = _world()
    prompts = _prompts(world, 30, 3, seed=2)
    judge = _judge(world)

    def reverse(texts: list[str]) -> np.ndarray:  # picks the *worst* response
        return -np.asarray(judge(texts))

    res = best_of_n_curve(
        world.language_model(),
        prompts,
        judge,
        ns=(1, 4),
        n_groups=8,
        reward=reverse,
        reward_name="anti-judge",
        stop_ids=world.sentence_end_token_ids,
        max_response_tokens=_m(world),
        rng=6,
    )
    assert res.reward == "anti-judge"
    for j in range(res.lengths.size):
        assert res.behavior[4][j].value <= res.behavior[1][j].value
    shifts = res.shift(threshold=float(np.mean(res.curve(1))), n_boot=50, rng=0)
    assert shifts[1].value == 0.0
    assert res.predicted_shift(4, 0.5) == pytest.approx(math.log(4) / 0.5)


# ---------------------------------------------------------------------- Theorem 5
def test_fraction_misaligned_matches_exact_finite_r() -> None:
    world = _signed(_world())
    prompts = _prompts(world, 250, 3, seed=3)
    res = fraction_misaligned(
        world.language_model(),
        prompts,
        _judge(world),
        threshold=0.0,
        n_responses=5,
        stop_ids=world.sentence_end_token_ids,
        max_response_tokens=_m(world),
        rng=9,
    )
    assert res.n_prompts == 250 and res.per_prompt.shape == (250, 4)
    for j, length in enumerate(res.lengths):
        exact = fraction_misaligned_exact(world, int(length), 0.0, n_responses=5)
        est = res.fraction[j]
        if est.stderr == 0:  # all or none below: the Wilson interval must hold the truth
            assert est.ci_low <= exact <= est.ci_high
        else:
            _within(est, exact)
        assert est.method == "wilson" and est.ci_low <= est.value <= est.ci_high
        b_exact = prompt_expectation(world, int(length), lambda s: world.behavior(s)[:, -1])
        _within(res.behavior[j], b_exact)
    assert res.fraction[-1].value > res.fraction[0].value
    assert res.theorem5(0.05, 0.6, 0.1, 1.0, 0.1) == pytest.approx(
        max(2 * (math.log(20) + math.log(10) + math.log(4)) / 0.6, 4 / (0.36 * 0.1))
    )
    assert len(res.to_dict()["fraction"]) == 4


def test_estimated_below_probability() -> None:
    # R = 4, t = 0: below iff k < 2 (k good answers), P = P(k <= 1)
    p = 0.3
    want = (1 - p) ** 4 + 4 * p * (1 - p) ** 3
    got = estimated_below_probability(np.array([2 * p - 1]), 0.0, 4)
    assert got[0] == pytest.approx(want)
    # the R → ∞ limit is the exact indicator
    world = _signed(_world())
    big = fraction_misaligned_exact(world, 2, 0.0, n_responses=4001)
    lim = fraction_misaligned_exact(world, 2, 0.0)
    assert big == pytest.approx(lim, abs=0.02)


# ---------------------------------------------------------------------- helpers
def test_crossing_length() -> None:
    assert crossing_length([0, 1, 2], [1.0, 0.5, -1.0], 0.0) == pytest.approx(1 + 0.5 / 1.5)
    assert crossing_length([0, 1], [-0.5, -1.0], 0.0) == 0.0
    assert math.isnan(crossing_length([0, 1], [1.0, 0.5], 0.0))


def test_behavior_scorer() -> None:
    def probs(texts: list[str]) -> np.ndarray:
        return np.array([0.2, 0.5, 0.9])[: len(texts)]

    assert behavior_scorer(probs)(["a", "b", "c"]).tolist() == [-1.0, 1.0, 1.0]
    assert behavior_scorer(probs, hard=False)(["a", "b", "c"]) == pytest.approx([-0.6, 0.0, 0.8])
