"""HFLanguageModel against manual computations on tiny random Llama / GPT-2 models."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from conftest import make_llama, make_tokenizer
from scipy import stats

torch = pytest.importorskip("torch")

from bebkit.models.hf import HFLanguageModel, _sampling_probs  # noqa: E402
from bebkit.models.protocol import LanguageModel, StopCondition  # noqa: E402

SEQS = [
    [2, 4, 6, 7, 8, 30, 10],
    [2, 5],
    [2, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 28],
    [2],
    [2, 20, 21, 22],
]


def manual_logprobs(model: Any, seq: list[int]) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0].double()
    lp = torch.log_softmax(logits, dim=-1)
    return lp[torch.arange(len(seq) - 1), torch.tensor(seq[1:])].numpy()


def test_is_language_model(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, name="tiny")
    assert isinstance(lm, LanguageModel)
    assert lm.name == "tiny"
    assert lm.vocab_size == len(tiny_tokenizer)
    assert lm.bos_token_ids == [2]
    ids = lm.encode("the cat sat.")
    assert ids == [4, 6, 8, 28]
    assert lm.decode(ids) == "the cat sat ."


def test_sequence_logprobs_matches_manual(tiny_model: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer)
    got = lm.sequence_logprobs([SEQS[0]])[0]
    assert got.dtype == np.float64 and got.shape == (len(SEQS[0]) - 1,)
    np.testing.assert_allclose(got, manual_logprobs(tiny_model, SEQS[0]), atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_sequence_logprobs_padding_invariance(
    tiny_model: Any, tiny_tokenizer: Any, padding_side: str
) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=8, padding_side=padding_side)
    batched = lm.sequence_logprobs(SEQS)
    assert [len(b) for b in batched] == [max(len(s) - 1, 0) for s in SEQS]
    for seq, b in zip(SEQS, batched, strict=True):
        single = lm.sequence_logprobs([seq])[0]
        np.testing.assert_allclose(b, single, atol=1e-5)
        if len(seq) > 1:
            np.testing.assert_allclose(b, manual_logprobs(tiny_model, seq), atol=1e-5)
    # Small batches (several forward passes, different padding) give the same numbers.
    lm.batch_size = 2
    for b, s in zip(batched, lm.sequence_logprobs(SEQS), strict=True):
        np.testing.assert_allclose(b, s, atol=1e-5)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_next_token_logprobs(tiny_model: Any, tiny_tokenizer: Any, padding_side: str) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, padding_side=padding_side)
    prefixes = [s for s in SEQS]
    out = lm.next_token_logprobs(prefixes)
    assert out.shape == (len(prefixes), lm.vocab_size)
    np.testing.assert_allclose(np.exp(out).sum(axis=1), 1.0, atol=1e-6)
    for row, p in zip(out, prefixes, strict=True):
        with torch.no_grad():
            ref = torch.log_softmax(tiny_model(torch.tensor([p])).logits[0, -1].double(), -1)
        np.testing.assert_allclose(row, ref.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="at least one token"):
        lm.next_token_logprobs([[]])


def test_continuation_logprobs_equals_sequence_logprobs(
    tiny_model: Any, tiny_tokenizer: Any
) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=2)
    prefix = [2, 4, 6, 8, 9, 10]
    conts = [[11, 12, 28], [5], [], [13, 14, 15, 16, 17, 29], [7, 30]]
    scores = lm.continuation_logprobs(prefix, conts, with_dists=True)
    assert scores.token_logprobs.shape == (5, 6)
    np.testing.assert_array_equal(scores.lengths, [3, 1, 0, 6, 2])
    full = lm.sequence_logprobs([prefix + c for c in conts])
    for i, c in enumerate(conts):
        expect = full[i][len(prefix) - 1 :]
        np.testing.assert_allclose(scores.token_logprobs[i, : len(c)], expect, atol=1e-5)
        assert np.all(scores.token_logprobs[i, len(c) :] == 0)
        np.testing.assert_allclose(scores.totals[i], expect.sum(), atol=1e-5)
    assert scores.dists is not None
    assert scores.dists.shape == (5, 6, lm.vocab_size)
    first = lm.next_token_logprobs([prefix])[0]
    for i, c in enumerate(conts):
        d = scores.dists[i, : len(c)]
        np.testing.assert_allclose(np.exp(d).sum(axis=-1), 1.0, atol=1e-6)
        np.testing.assert_allclose(
            d[np.arange(len(c)), c], scores.token_logprobs[i, : len(c)], atol=1e-12
        )
        if c:
            np.testing.assert_allclose(d[0], first, atol=1e-5)
            # Later rows are the next-token distributions after prefix + y_<t.
            t = len(c) - 1
            ref = lm.next_token_logprobs([prefix + c[:t]])[0]
            np.testing.assert_allclose(d[t], ref, atol=1e-5)


def test_continuation_logprobs_encodes_prefix_once(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=3)
    prefix = [2, *range(4, 24)]  # 21 tokens
    conts = [[5, 6, 7, 8]] * 7
    lengths: list[tuple[int, int]] = []
    hook = tiny_llama.register_forward_pre_hook(
        lambda _m, _a, kw: lengths.append(tuple(kw["input_ids"].shape)), with_kwargs=True
    )
    try:
        lm.continuation_logprobs(prefix, conts)
    finally:
        hook.remove()
    # One pass over the prefix, then ceil(7 / 3) = 3 passes over 3 continuation tokens each.
    assert lengths == [(1, 21), (3, 3), (3, 3), (1, 3)]


def test_continuation_logprobs_empty(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer)
    s = lm.continuation_logprobs([2, 4], [])
    assert s.token_logprobs.shape == (0, 0) and s.lengths.shape == (0,)
    s = lm.continuation_logprobs([2, 4], [[], []], with_dists=True)
    assert s.token_logprobs.shape == (2, 0) and np.all(s.totals == 0)


def _chi2_pvalue(counts: Counter[Any], probs: dict[Any, float], n: int) -> float:
    """Chi-square goodness of fit on the outcomes with expected count ≥ 5, plus one bin for
    everything else (expected mass 1 − Σ of those outcomes' probabilities)."""
    big = [k for k, p in probs.items() if n * p >= 5]
    obs = [counts.get(k, 0) for k in big]
    exp = [n * probs[k] for k in big]
    obs.append(n - sum(obs))
    exp.append(n - sum(exp))
    return float(stats.chisquare(obs, exp).pvalue)


def test_sampling_first_token_matches_distribution(tiny_model: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=512)
    prefix = [2, 4, 6]
    n = 3000
    ys = lm.sample(prefix, n, StopCondition(max_new_tokens=1), rng=np.random.default_rng(0))
    assert len(ys) == n and all(len(y) == 1 for y in ys)
    p = np.exp(lm.next_token_logprobs([prefix])[0])
    pval = _chi2_pvalue(Counter(y[0] for y in ys), dict(enumerate(p)), n)
    assert pval > 1e-3


def test_sampling_two_tokens_matches_joint(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    """Pairs (y₁, y₂) ~ P(y₁|s)·P(y₂|s,y₁): checks the KV cache is reused correctly."""
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=1000)
    prefix = [2, 5, 7]
    n = 4000
    ys = lm.sample(prefix, n, StopCondition(max_new_tokens=2), rng=np.random.default_rng(1))
    counts = Counter(tuple(y) for y in ys)
    pairs = sorted(counts, key=lambda k: -counts[k])[:40]
    scores = lm.continuation_logprobs(prefix, [list(k) for k in pairs])
    probs = dict(zip(pairs, np.exp(scores.totals), strict=True))
    assert _chi2_pvalue(counts, probs, n) > 1e-3


def test_sampling_stop_condition(tiny_model: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=7)
    stop_ids = frozenset(range(4, 20))  # about half the vocabulary: most rows stop early
    stop = StopCondition(max_new_tokens=6, stop_token_ids=stop_ids)
    ys = lm.sample([2, 4], 50, stop, rng=np.random.default_rng(3))
    assert len(ys) == 50
    lengths = Counter(len(y) for y in ys)
    assert len(lengths) > 1  # both early stops and budget stops occurred
    for y in ys:
        assert 1 <= len(y) <= 6
        assert not any(t in stop_ids for t in y[:-1])
        if len(y) < 6:
            assert y[-1] in stop_ids


def test_sampling_deterministic_by_seed(tiny_model: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=4)
    stop = StopCondition(max_new_tokens=5, stop_token_ids=frozenset({28}))
    a = lm.sample([2, 4], 10, stop, rng=np.random.default_rng(42))
    b = lm.sample([2, 4], 10, stop, rng=np.random.default_rng(42))
    c = lm.sample([2, 4], 10, stop, rng=np.random.default_rng(43))
    assert a == b
    assert a != c


def test_sampling_top_k_one_is_greedy(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer)
    prefix = [2, 9]
    greedy = []
    ctx = list(prefix)
    for _ in range(4):
        t = int(np.argmax(lm.next_token_logprobs([ctx])[0]))
        greedy.append(t)
        ctx.append(t)
    stop = StopCondition(max_new_tokens=4)
    rng = np.random.default_rng(0)
    assert lm.sample(prefix, 3, stop, rng=rng, top_k=1) == [greedy] * 3
    assert lm.sample(prefix, 3, stop, rng=rng, top_p=1e-6) == [greedy] * 3
    with pytest.raises(ValueError):
        lm.sample(prefix, 1, stop, rng=rng, temperature=0)


def test_sampling_probs_filters() -> None:
    logp = torch.log_softmax(torch.tensor([[3.0, 2.0, 1.0, 0.0]]), dim=-1)
    p = _sampling_probs(logp, 1.0, None, None)
    torch.testing.assert_close(p, logp.exp())
    p = _sampling_probs(logp, 1.0, 2, None)
    assert (p[0, 2:] == 0).all() and abs(float(p.sum()) - 1) < 1e-6
    q = logp.exp()[0]
    p = _sampling_probs(logp, 1.0, None, float(q[0] + 0.01))  # needs the top two tokens
    assert (p[0, :2] > 0).all() and (p[0, 2:] == 0).all()
    hot = _sampling_probs(logp, 2.0, None, None)
    torch.testing.assert_close(hot, torch.softmax(logp / 2.0, dim=-1))


def test_hidden_states(tiny_model: Any, tiny_tokenizer: Any) -> None:
    for side in ("right", "left"):
        lm = HFLanguageModel(tiny_model, tiny_tokenizer, padding_side=side)
        texts = ["the cat sat .", "a dog", "we ran on the big red mat !"]
        hs = lm.hidden_states(texts, layers=(-1, "middle", 0))
        assert set(hs) == {-1, "middle", 0}
        assert hs[-1].shape == (3, 32) and hs[-1].dtype == np.float32
        for i, t in enumerate(texts):
            ids = [2, *lm.encode(t)]
            with torch.no_grad():
                ref = tiny_model(torch.tensor([ids]), output_hidden_states=True).hidden_states
            np.testing.assert_allclose(hs[-1][i], ref[-1][0, -1].numpy(), atol=1e-5)
            np.testing.assert_allclose(hs["middle"][i], ref[1][0, -1].numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="layer"):
        lm.hidden_states(["a"], layers=(99,))


def test_peft_model_switching(tiny_tokenizer: Any) -> None:
    peft = pytest.importorskip("peft")
    base = make_llama(seed=5)
    ref = HFLanguageModel(base, tiny_tokenizer).sequence_logprobs(SEQS)
    cfg = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    pm = peft.get_peft_model(make_llama(seed=5), cfg).eval()
    lm = HFLanguageModel(pm, tiny_tokenizer, batch_size=2)
    assert lm.vocab_size == len(tiny_tokenizer)
    with_adapter = lm.sequence_logprobs(SEQS)
    assert not np.allclose(with_adapter[0], ref[0], atol=1e-4)
    with pm.disable_adapter():
        without = lm.sequence_logprobs(SEQS)
        scores = lm.continuation_logprobs(SEQS[2][:5], [SEQS[2][5:]])
    for a, b in zip(without, ref, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(scores.token_logprobs[0], ref[2][4:], atol=1e-5)
    # Back on the adapter: nothing from the disabled call was cached.
    np.testing.assert_allclose(lm.sequence_logprobs(SEQS)[0], with_adapter[0], atol=1e-6)
    ys = lm.sample([2, 4], 4, StopCondition(max_new_tokens=3), rng=np.random.default_rng(0))
    assert len(ys) == 4


def test_bf16_model_logprobs_are_float32_normalised(tiny_tokenizer: Any) -> None:
    model = make_llama(seed=2).to(torch.bfloat16)
    lm = HFLanguageModel(model, tiny_tokenizer)
    out = lm.next_token_logprobs([[2, 4, 6]])
    assert out.dtype == np.float64
    # log_softmax done in float32: normalisation far tighter than bf16's ~1e-2 resolution.
    assert abs(np.exp(out).sum() - 1) < 1e-5


def test_default_bos_without_bos_token() -> None:
    tok = make_tokenizer()
    tok.bos_token = None
    lm = HFLanguageModel(make_llama(), tok)
    assert lm.bos_token_ids == []
    lm = HFLanguageModel(make_llama(), tok, bos_token_ids=[3])
    assert lm.bos_token_ids == [3]


@pytest.mark.parametrize("with_dists", [False, True])
def test_sample_scored_equals_sample_then_score(
    tiny_model: Any, tiny_tokenizer: Any, with_dists: bool
) -> None:
    from bebkit.models.protocol import ScoredSampler

    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=4)
    assert isinstance(lm, ScoredSampler)
    prefix = [2, 4, 6, 8]
    stop = StopCondition(max_new_tokens=5, stop_token_ids=frozenset({28, 29, 30}))
    ys, sc = lm.sample_scored(prefix, 10, stop, rng=np.random.default_rng(7), with_dists=with_dists)
    # same draws as the plain sampler with the same rng
    assert ys == lm.sample(prefix, 10, stop, rng=np.random.default_rng(7))
    ref = lm.continuation_logprobs(prefix, ys, with_dists=with_dists)
    np.testing.assert_array_equal(sc.lengths, ref.lengths)
    assert sc.token_logprobs.shape == ref.token_logprobs.shape
    np.testing.assert_allclose(sc.token_logprobs, ref.token_logprobs, atol=1e-5)
    np.testing.assert_allclose(sc.totals, ref.totals, atol=1e-5)
    if with_dists:
        assert sc.dists is not None and ref.dists is not None
        for i, y in enumerate(ys):
            np.testing.assert_allclose(sc.dists[i, : len(y)], ref.dists[i, : len(y)], atol=1e-5)
    else:
        assert sc.dists is None


def test_continuation_step_kl_against_reference(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    from bebkit.models.protocol import reference_step_kl

    other = make_llama(seed=1)  # a second random model: the reference distributions R
    p = HFLanguageModel(other, tiny_tokenizer, batch_size=2)
    q = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=2)
    prefix = [2, 4, 6]
    conts = [[11, 12, 28], [5], [13, 14, 15, 16], [7, 30]]
    rp = p.continuation_logprobs(prefix, conts, with_dists=True)
    assert rp.dists is not None and rp.dists.dtype == np.float32
    got = q.continuation_logprobs(prefix, conts, reference=rp.dists)
    full = q.continuation_logprobs(prefix, conts, with_dists=True)
    assert got.dists is None and got.step_kl is not None and full.dists is not None
    np.testing.assert_allclose(got.token_logprobs, full.token_logprobs, atol=1e-6)
    expect = reference_step_kl(rp.dists.astype(np.float64), full.dists, full.lengths)
    np.testing.assert_allclose(got.step_kl, expect, rtol=1e-5, atol=1e-6)
    assert np.all(got.step_kl[1, 1:] == 0) and np.all(got.step_kl > -1e-6)
    # a model against itself: zero KL at every step
    same = p.continuation_logprobs(prefix, conts, reference=rp.dists)
    assert same.step_kl is not None
    np.testing.assert_allclose(same.step_kl, 0.0, atol=1e-6)
    with pytest.raises(ValueError, match="reference"):
        q.continuation_logprobs(prefix, conts, reference=rp.dists[:2])


def test_kl_terms_zero_probability_conventions() -> None:
    from bebkit.models.hf import _kl_terms

    inf = float("inf")
    ref = torch.log(torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]))
    logq = torch.log(torch.tensor([[0.25, 0.75, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]))
    got = _kl_terms(ref, logq)
    assert got.dtype == torch.float64
    expect0 = 0.5 * np.log(2) + 0.5 * np.log(0.5 / 0.75)
    np.testing.assert_allclose(got[:2].numpy(), [expect0, np.log(2)], rtol=1e-6)
    assert got[2].item() == inf
    # a [1, V] log Q broadcast against several reference rows (step 0 of every path)
    np.testing.assert_allclose(
        _kl_terms(ref[:2], logq[:1]).numpy(), [expect0, np.log(4)], rtol=1e-6
    )


@pytest.mark.parametrize("merge", [True, False], ids=["merged-caches", "padded-pass"])
def test_many_prefixes_match_one_prefix_at_a_time(
    tiny_model: Any, tiny_tokenizer: Any, merge: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left-padded multi-prefix sampling and scoring give the single-prefix numbers."""
    import bebkit.models.hf as hf

    calls: list[bool] = []
    real_merge = hf._merge_left_padded

    def spy(caches: Any, pads: Any) -> Any:
        out = real_merge(caches, pads) if merge else None
        calls.append(out is not None)
        return out

    monkeypatch.setattr(hf, "_merge_left_padded", spy)
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=3, decode_rows=5)
    prefixes = [[2, 4], [2, 4, 6, 8, 9, 10, 11], [2, 5, 6, 7]]
    stop = StopCondition(max_new_tokens=4, stop_token_ids=frozenset({28, 29, 30}))
    groups = lm.sample_scored_many(prefixes, 4, stop, rng=np.random.default_rng(2), with_dists=True)
    assert len(groups) == 3
    refs = []
    for pre, (ys, sc) in zip(prefixes, groups, strict=True):
        assert len(ys) == 4 and all(1 <= len(y) <= 4 for y in ys)
        one = lm.continuation_logprobs(pre, ys, with_dists=True)
        np.testing.assert_array_equal(sc.lengths, one.lengths)
        # the distributions sampled from are those of this prefix (mask + positions right)
        np.testing.assert_allclose(sc.token_logprobs, one.token_logprobs, atol=1e-5)
        assert sc.dists is not None and one.dists is not None
        for i, y in enumerate(ys):
            np.testing.assert_allclose(sc.dists[i, : len(y)], one.dists[i, : len(y)], atol=1e-5)
        refs.append(sc.dists)
    conts = [ys for ys, _ in groups]
    many = lm.continuation_logprobs_many(prefixes, conts, references=refs)
    for pre, ys, ref, got in zip(prefixes, conts, refs, many, strict=True):
        one = lm.continuation_logprobs(pre, ys, reference=ref)
        assert got.step_kl is not None and one.step_kl is not None
        np.testing.assert_allclose(got.token_logprobs, one.token_logprobs, atol=1e-5)
        np.testing.assert_allclose(got.step_kl, one.step_kl, atol=1e-5)
        np.testing.assert_allclose(got.step_kl, 0.0, atol=1e-5)  # same model as the reference
    # prefixes without continuations, and no references at all
    empty = lm.continuation_logprobs_many(prefixes[:2], [[], [[5, 6]]])
    assert empty[0].token_logprobs.shape == (0, 0) and empty[1].step_kl is None
    with pytest.raises(ValueError, match="one list"):
        lm.continuation_logprobs_many(prefixes, conts[:1])
    assert calls and all(c == merge for c in calls)  # the path under test was taken


def test_kl_grid_on_hf_models_matches_exact_enumeration(tiny_tokenizer: Any) -> None:
    """kl_samples_grid (batched prefixes, scored sampling, torch step KL) vs enumeration."""
    from bebkit.estimators.exact import exact_kl_enumerate
    from bebkit.estimators.kl import kl_samples_grid

    p = HFLanguageModel(make_llama(seed=3), tiny_tokenizer, decode_rows=64)
    q = HFLanguageModel(make_llama(seed=4), tiny_tokenizer)
    prefixes = [[2, 4], [2, 4, 6, 8, 9, 10]]
    q_prefixes = [[2, 5, 4], [2, 4, 6, 8, 9, 10]]
    grid = kl_samples_grid(
        p, prefixes, {"q": (q, q_prefixes), "p": (p, prefixes)}, n_samples=300, n_tokens=2,
        with_rb=True, rng=0,
    )  # fmt: skip
    for k, cell in enumerate(grid):
        exact = exact_kl_enumerate(p, q, prefixes[k], q_prefix=q_prefixes[k], n_tokens=2)
        for est in (cell["q"].estimate("mc"), cell["q"].estimate("rb")):
            assert abs(est.value - exact) <= 4 * est.stderr, (k, est, exact)
        # P against itself on the same samples: every term is zero up to float32 rounding
        np.testing.assert_allclose(cell["p"].mc, 0.0, atol=2e-5)
        assert cell["p"].rb is not None
        np.testing.assert_allclose(cell["p"].rb, 0.0, atol=2e-5)


def test_sample_many_greedy_per_prefix(tiny_model: Any, tiny_tokenizer: Any) -> None:
    """Rows of several prefixes decoded together follow their own prefix (top-k = 1: greedy)."""
    lm = HFLanguageModel(tiny_model, tiny_tokenizer, decode_rows=4)
    prefixes = [[2, 4], [2, 4, 6, 8, 9, 10, 11], [2, 5, 6, 7]]
    stop = StopCondition(max_new_tokens=5)
    rng = np.random.default_rng(0)
    many = lm.sample_many(prefixes, 3, stop, rng=rng, top_k=1)
    for pre, ys in zip(prefixes, many, strict=True):
        assert ys == [lm.sample(pre, 1, stop, rng=rng, top_k=1)[0]] * 3
    with pytest.raises(ValueError, match="temperature"):
        lm.sample_many(prefixes, 1, stop, rng=rng, temperature=0)


def test_decode_room_gives_the_plain_cache_numbers(
    tiny_model: Any, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sampling with preallocated KV room (one column written per step) draws the same tokens
    with the same log-probs and distributions as the concatenating cache, across left-padded
    prefixes, row pruning and several decode batches — bit for bit."""
    import bebkit.models.hf as hf

    lm = HFLanguageModel(tiny_model, tiny_tokenizer, batch_size=3, decode_rows=5)
    prefixes = [[2, 4], [2, 4, 6, 8, 9, 10, 11], [2, 5, 6, 7]]
    stop = StopCondition(max_new_tokens=6, stop_token_ids=frozenset({28, 29, 30}))

    def draw() -> list[tuple[list[list[int]], Any]]:
        return lm.sample_scored_many(
            prefixes, 6, stop, rng=np.random.default_rng(11), with_dists=True
        )

    roomy_layers: list[str] = []
    real = hf._with_decode_room

    def spy(cache: Any, extra: int) -> Any:
        out = real(cache, extra)
        roomy_layers.extend(type(layer).__name__ for layer in getattr(out, "layers", []))
        return out

    monkeypatch.setattr(hf, "_with_decode_room", spy)
    roomy = draw()
    if tiny_model.config.model_type == "llama":  # plain DynamicLayer caches get the room
        assert roomy_layers and set(roomy_layers) == {"RoomyLayer"}
    monkeypatch.setattr(hf, "_with_decode_room", lambda cache, extra: cache)
    plain = draw()
    assert any(len(y) == 6 for ys, _ in roomy for y in ys)  # some rows used all the room
    assert any(len(y) < 6 for ys, _ in roomy for y in ys)  # and rows were pruned
    for (ys_r, sc_r), (ys_p, sc_p) in zip(roomy, plain, strict=True):
        assert ys_r == ys_p
        np.testing.assert_array_equal(sc_r.token_logprobs, sc_p.token_logprobs)
        assert sc_r.dists is not None and sc_p.dists is not None
        np.testing.assert_array_equal(sc_r.dists, sc_p.dists)


def test_roomy_layer_grows_past_its_room_and_selects_rows() -> None:
    """Writing past the reserved room doubles the buffer; row selection keeps the contents."""
    from bebkit.models.hf import _roomy_layer

    keys = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    layer = _roomy_layer(keys, -keys, 1)
    new = torch.full((2, 1, 2, 2), 7.0)
    k, v = layer.update(new, -new)
    assert k.shape == (2, 1, 5, 2) and layer.get_seq_length() == 5
    torch.testing.assert_close(k, torch.cat([keys, new], dim=2), rtol=0, atol=0)
    torch.testing.assert_close(v, -torch.cat([keys, new], dim=2), rtol=0, atol=0)
    layer.batch_select_indices(torch.tensor([1]))
    torch.testing.assert_close(layer.keys, torch.cat([keys, new], dim=2)[1:], rtol=0, atol=0)
    layer.crop(-2)
    assert layer.get_seq_length() == 3 and layer.keys.shape == (1, 1, 3, 2)
    with pytest.raises(ValueError, match="negative"):
        layer.crop(1)
    with pytest.raises(TypeError, match="dtype"):  # torch.cat would promote: never cast
        layer.update(new[:1].double(), new[:1].double())
    layer.reset()  # then the layer starts empty, as DynamicLayer's does
    k, _ = layer.update(new[:1, :, :1], new[:1, :, :1])
    assert layer.get_seq_length() == 1
    torch.testing.assert_close(k, new[:1, :, :1], rtol=0, atol=0)
    two = _roomy_layer(keys, -keys, 2)
    two.reorder_cache(torch.tensor([1, 0]))
    torch.testing.assert_close(two.keys, keys.flip(0), rtol=0, atol=0)
    with pytest.raises(NotImplementedError):
        two.offload()


def test_roomy_layer_prunes_rows_in_place() -> None:
    """Pruning finished rows gathers the kept rows into the front of the same buffers
    (no new allocation, no copy of the empty room) with the same contents as indexing."""
    from bebkit.models.hf import _roomy_layer

    keys = torch.randn(5, 2, 4, 3)
    layer = _roomy_layer(keys, 2 * keys, 6)
    new = torch.randn(5, 2, 1, 3)
    layer.update(new, 2 * new)
    want = torch.cat([keys, new], dim=2)
    kptr, vptr = layer._kbuf.data_ptr(), layer._vbuf.data_ptr()
    keep = torch.tensor([0, 2, 3])
    layer.batch_select_indices(keep)
    assert layer._kbuf.data_ptr() == kptr and layer._vbuf.data_ptr() == vptr
    assert layer._kbuf.shape[0] == 3 and layer._kbuf.shape[2] == 4 + 6
    torch.testing.assert_close(layer.keys, want[keep], rtol=0, atol=0)
    torch.testing.assert_close(layer.values, 2 * want[keep], rtol=0, atol=0)
    k, _ = layer.update(new[keep], 2 * new[keep])  # writing on after a pruning
    torch.testing.assert_close(k, torch.cat([want[keep], new[keep]], dim=2), rtol=0, atol=0)
    gathered: list[int] = []  # rows copied per buffer
    real_select = torch.index_select

    def spy(src: Any, dim: int, index: Any) -> Any:
        gathered.append(int(index.numel()))
        return real_select(src, dim, index)

    n = layer.get_seq_length()
    kept = layer._kbuf[:1, :, :n].clone()  # (filled columns only: the room is uninitialised)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch, "index_select", spy)
        layer.batch_select_indices(torch.tensor([0, 2]))  # row 0 stays in place, row 2 moves
        assert gathered == [1, 1]  # one row copied in K and in V, not two
        layer.batch_select_indices(torch.tensor([0, 1]))  # nothing moves: nothing copied
        assert gathered == [1, 1]
    torch.testing.assert_close(layer._kbuf[:1, :, :n], kept, rtol=0, atol=0)
    torch.testing.assert_close(layer.keys[:, :, :5], want[keep][[0, 2]], rtol=0, atol=0)
    layer.batch_select_indices(torch.tensor([1, 0]))  # a permutation reads before writing
    two = want[keep][[2, 0]]
    torch.testing.assert_close(layer.keys[:, :, :5], two, rtol=0, atol=0)
    layer.batch_select_indices(torch.tensor([0, 0, 1, 1]))  # more rows than held: grows
    assert layer.keys.shape[0] == 4
    torch.testing.assert_close(layer.keys[:, :, :5], two[[0, 0, 1, 1]], rtol=0, atol=0)


def test_cache_passed_under_the_releases_name(
    tiny_llama: Any, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Transformers releases that renamed forward's ``past_key_values`` to ``cache`` get
    ``cache`` (no deprecation warning); a model that only knows the old name gets that."""
    import inspect
    import warnings
    from types import SimpleNamespace

    from bebkit.models.hf import returned_cache

    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, decode_rows=4)
    renamed = "cache" in inspect.signature(tiny_llama.forward).parameters
    assert lm._cache_arg == ("cache" if renamed else "past_key_values")
    stop = StopCondition(max_new_tokens=4, stop_token_ids=frozenset({28, 29, 30}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # the old name warns after the rename
        want = lm.sample_scored_many([[2, 4], [2, 5, 6]], 3, stop, rng=np.random.default_rng(3))
        lm.continuation_logprobs_many([[2, 4], [2, 5, 6]], [[[5, 6], [7]], [[8]]])

    seen: list[str] = []

    class OldRelease(torch.nn.Module):
        """The same model behind a forward that only knows ``past_key_values``."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner, self.config = inner, inner.config

        def forward(
            self,
            input_ids: Any = None,
            past_key_values: Any = None,
            logits_to_keep: int = 0,
            **kw: Any,
        ) -> Any:
            seen.append("old" if past_key_values is not None else "none")
            kw[lm._cache_arg] = past_key_values
            out = self.inner(input_ids=input_ids, logits_to_keep=logits_to_keep, **kw)
            cache = out.get(lm._cache_arg)
            return SimpleNamespace(logits=out.logits, past_key_values=cache)

    peft = pytest.importorskip("peft")
    cfg = peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    wrapped = HFLanguageModel(peft.get_peft_model(make_llama(seed=5), cfg).eval(), tiny_tokenizer)
    assert wrapped._cache_arg == lm._cache_arg  # the name comes from the wrapped model
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        wrapped.sample_scored_many([[2, 4]], 3, stop, rng=np.random.default_rng(3))
    # the returned cache is read under the same name (the old field only as a fallback)
    if renamed:
        assert lm._out_cache(SimpleNamespace(cache="new", past_key_values="old")) == "new"
        assert lm._out_cache(SimpleNamespace(cache=None, past_key_values="old")) == "old"
    # the same rule for any caller (benchmark 3's decode ceiling uses it too)
    assert returned_cache(SimpleNamespace(cache="new", past_key_values="old"), "cache") == "new"
    assert returned_cache(SimpleNamespace(cache=None, past_key_values="old"), "cache") == "old"
    assert returned_cache(SimpleNamespace(past_key_values="old"), "past_key_values") == "old"

    old = HFLanguageModel(OldRelease(tiny_llama), tiny_tokenizer, decode_rows=4)
    assert old._cache_arg == "past_key_values"
    got = old.sample_scored_many([[2, 4], [2, 5, 6]], 3, stop, rng=np.random.default_rng(3))
    assert "old" in seen
    for (ys_a, sc_a), (ys_b, sc_b) in zip(want, got, strict=True):
        assert ys_a == ys_b
        np.testing.assert_array_equal(sc_a.token_logprobs, sc_b.token_logprobs)
