"""Token-level view: exact conditionals, sequence probabilities, KL and sampling."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import logsumexp
from scipy.stats import chisquare

from bebkit.errors import InputError
from bebkit.models.protocol import LanguageModel, StopCondition
from bebkit.synthetic.lm import END, exact_kl, exact_log_ratio_moments, exact_log_ratio_variance
from bebkit.synthetic.world import random_world


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    return random_world(29, n_sentences=7, n_components=3, alpha=0.2, markov=True, alphabet_size=3)


def test_protocol_and_codec(world) -> None:  # type: ignore[no-untyped-def]
    lm = world.language_model()
    assert isinstance(lm, LanguageModel)
    assert lm.vocab_size == 5 and lm.bos_token_ids == [0]
    toks = world.encode_sentences([6, 0, 3])
    assert world.split_sentences(toks) == ([6, 0, 3], [3, 6, 9])
    assert lm.encode(lm.decode(toks[1:])) == toks[1:]
    assert lm.sentence_end_token_ids == frozenset({END})


def test_conditionals_sum_to_one(world) -> None:  # type: ignore[no-untyped-def]
    lm = world.language_model()
    full = world.encode_sentences([2, 5, 1])
    prefixes = [full[:i] for i in range(1, len(full) + 1)]
    lp = lm.next_token_logprobs(prefixes)
    np.testing.assert_allclose(logsumexp(lp, axis=1), 0.0, atol=1e-12)
    comp = world.component_model(2).next_token_logprobs(prefixes)
    np.testing.assert_allclose(logsumexp(comp, axis=1), 0.0, atol=1e-12)
    assert np.isneginf(lp[:, 0]).all()  # BOS never reappears


@pytest.mark.parametrize("model", [None, 0, "pos", "neg"])
def test_token_sequence_probability_equals_sentence_level(world, model) -> None:  # type: ignore[no-untyped-def]
    lm = world.language_model(model)
    seqs = [[3, 1, 4], [0], [6, 6, 2, 5]]
    got = [v.sum() for v in lm.sequence_logprobs([world.encode_sentences(s) for s in seqs])]
    want = [world.sequence_logprob([s], model)[0] for s in seqs]
    np.testing.assert_allclose(got, want, rtol=1e-10)
    # an unused code or a misplaced END has probability zero
    bad = lm.sequence_logprobs([[0, 4, 4, END], [0, END]])
    assert np.isneginf(bad[0].sum()) and np.isneginf(bad[1].sum())


def test_continuation_logprobs_match_sequence_logprobs(world) -> None:  # type: ignore[no-untyped-def]
    lm = world.language_model()
    prefix = world.encode_sentences([4])
    conts = [world.encode_sentences([1, 2], bos=False), world.encode_sentences([0], bos=False)[:2]]
    sc = lm.continuation_logprobs(prefix, conts, with_dists=True)
    for i, y in enumerate(conts):
        full = lm.sequence_logprobs([prefix + y])[0]
        np.testing.assert_allclose(sc.token_logprobs[i, : len(y)], full[len(prefix) - 1 :])
        assert sc.dists is not None
        np.testing.assert_allclose(sc.dists[i, 0], lm.next_token_logprobs([prefix])[0], rtol=1e-12)
    assert sc.lengths.tolist() == [6, 2]


def test_exact_kl_by_enumeration_matches_sentence_level(world) -> None:  # type: ignore[no-untyped-def]
    neg, mix = world.component_model(0), world.language_model()
    prefix_s = [5, 2]
    prefix = world.encode_sentences(prefix_s)
    one = exact_kl(neg, mix, prefix, n_sentences=1)
    assert one == pytest.approx(world.sequence_kl(0, None, prefix_s, 1), rel=1e-9)
    assert exact_kl(neg, mix, prefix, n_tokens=3) == pytest.approx(one, rel=1e-9)
    two = exact_kl(neg, mix, prefix, n_sentences=2)
    assert two == pytest.approx(world.sequence_kl(0, None, prefix_s, 2), rel=1e-9)
    # between two components the n-sentence KL is the sum of conditional KLs (chain rule)
    pos = world.component_model(2)
    assert exact_kl(neg, pos, [0], n_sentences=1) == pytest.approx(
        float(world.conditional_kl(0, 2)[0]), rel=1e-9
    )


def test_exact_log_ratio_variance(world) -> None:  # type: ignore[no-untyped-def]
    neg, pos = world.component_model("neg0"), world.component_model("pos1")
    mean, var = exact_log_ratio_moments(neg, pos, 2)
    seqs = world.enumerate_sequences(2)
    lp = world.sequence_logprob(seqs, 0)
    r = lp - world.sequence_logprob(seqs, 2)
    p = np.exp(lp)
    assert mean == pytest.approx(float(p @ r))
    assert var == pytest.approx(float(p @ (r - p @ r) ** 2))
    pre = world.encode_sentences([3])
    assert exact_log_ratio_variance(neg, pos, 1, pre) == pytest.approx(
        world.log_ratio_moments(0, 2, 1, prefix=[3])[1]
    )
    with pytest.raises(InputError):
        exact_log_ratio_variance(neg, pos, 1, pre[:-1])


def test_sampling_frequencies_and_stop_tokens(world) -> None:  # type: ignore[no-untyped-def]
    lm = world.language_model()
    prefix = world.encode_sentences([1])
    rng = np.random.default_rng(7)
    n = 20_000
    out = lm.sample(prefix, n, StopCondition(10, lm.sentence_end_token_ids), rng=rng)
    assert all(y[-1] == END and len(y) == 3 for y in out)
    sent = np.array([world.split_sentences(y)[0][0] for y in out])
    expected = n * np.exp(world.next_sentence_logprobs([[1]])[0])
    assert chisquare(np.bincount(sent, minlength=7), expected).pvalue > 1e-3
    # max_new_tokens stops early; top_k = 1 is greedy and deterministic
    short = lm.sample(prefix, 5, StopCondition(2), rng=rng)
    assert all(len(y) == 2 for y in short)
    g1 = lm.sample(prefix, 3, StopCondition(9), rng=np.random.default_rng(0), top_k=1)
    g2 = lm.sample(prefix, 3, StopCondition(9), rng=np.random.default_rng(1), top_k=1)
    assert g1 == g2 and g1[0] == g1[1]
    p1 = lm.sample(prefix, 50, StopCondition(3), rng=rng, top_p=1e-9)
    assert len({tuple(y) for y in p1}) == 1
    same_a = lm.sample(prefix, 4, StopCondition(6), rng=np.random.default_rng(5), temperature=0.7)
    same_b = lm.sample(prefix, 4, StopCondition(6), rng=np.random.default_rng(5), temperature=0.7)
    assert same_a == same_b


def test_impossible_prefix_raises(world) -> None:  # type: ignore[no-untyped-def]
    lm = world.language_model()
    with pytest.raises(InputError):
        lm.next_token_logprobs([[0, END]])
    with pytest.raises(InputError):
        lm.sequence_logprobs([[2, 3]])


@pytest.mark.parametrize("with_dists", [False, True])
def test_sample_scored_matches_sample_and_continuation_logprobs(world, with_dists) -> None:  # type: ignore[no-untyped-def]
    from bebkit.models.protocol import ScoredSampler, reference_step_kl

    lm = world.language_model()
    assert isinstance(lm, ScoredSampler)
    prefix = world.encode_sentences([4])
    stop = StopCondition(12, lm.sentence_end_token_ids)
    ys, sc = lm.sample_scored(prefix, 30, stop, rng=np.random.default_rng(3), with_dists=with_dists)
    assert ys == lm.sample(prefix, 30, stop, rng=np.random.default_rng(3))
    ref = lm.continuation_logprobs(prefix, ys, with_dists=True)
    np.testing.assert_array_equal(sc.lengths, ref.lengths)
    np.testing.assert_allclose(sc.token_logprobs, ref.token_logprobs, rtol=1e-12, atol=1e-12)
    if with_dists:
        assert sc.dists is not None and ref.dists is not None
        for i, y in enumerate(ys):
            np.testing.assert_array_equal(sc.dists[i, : len(y)], ref.dists[i, : len(y)])
        # per-step KL against a reference equals the numpy formula on full distributions
        other = world.component_model(0)
        full = other.continuation_logprobs(prefix, ys, with_dists=True)
        got = other.continuation_logprobs(prefix, ys, reference=sc.dists)
        assert got.dists is None and got.step_kl is not None and full.dists is not None
        np.testing.assert_allclose(
            got.step_kl, reference_step_kl(sc.dists, full.dists, full.lengths), rtol=1e-12
        )
