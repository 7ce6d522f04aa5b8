"""KL estimators against exact enumeration (tiny exact models and the synthetic world)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimators.exact import exact_kl_enumerate
from bebkit.estimators.kl import (
    _loo_adjusted,
    kl_curve,
    kl_mc,
    kl_rao_blackwell,
    kl_samples,
    step_kl,
)
from bebkit.estimators.prompts import sample_prompts

from .tiny_lm import ScoredTinyLM, TinyLM


def brute_force_kl(p: TinyLM, q: TinyLM, prefix, q_prefix, n_tokens, stops=()) -> float:
    """Σ_y P(y)[log P(y) − log Q(y)] over every continuation, from products of probabilities."""
    total = 0.0
    v = p.vocab_size
    seen: set[tuple[int, ...]] = set()
    for ys in itertools.product(range(v), repeat=n_tokens):
        y: list[int] = []
        for t in ys:
            y.append(t)
            if t in stops:
                break
        key = tuple(y)
        if key in seen:
            continue
        seen.add(key)
        lp = sum(p.logprobs(list(prefix) + y[:i])[t] for i, t in enumerate(y))
        lq = sum(q.logprobs(list(q_prefix) + y[:i])[t] for i, t in enumerate(y))
        if lp > -np.inf:
            total += math.exp(lp) * (lp - lq)
    return total


@pytest.fixture(params=[TinyLM, ScoredTinyLM], ids=["fallback", "scored"])
def pair(request: pytest.FixtureRequest) -> tuple[TinyLM, TinyLM]:
    """P and Q; P without ``sample_scored`` (generic fallback) or with it (one pass)."""
    p = request.param(5, seed=1, name="p")
    q = TinyLM(5, seed=1, perturb_seed=7, perturb=0.8, name="q")
    return p, q


def test_enumeration_matches_brute_force(pair: tuple[TinyLM, TinyLM]) -> None:
    p, q = pair
    pre = [4, 1, 2]
    for n_tokens, stops in [(1, ()), (3, ()), (3, (0,))]:
        exact = exact_kl_enumerate(p, q, pre, n_tokens=n_tokens, stop_ids=stops)
        brute = brute_force_kl(p, q, pre, pre, n_tokens, stops)
        assert exact == pytest.approx(brute, rel=1e-10, abs=1e-12)
        assert exact > 0
    # different contexts for Q (e.g. an aligning system prompt)
    e = exact_kl_enumerate(p, q, pre, q_prefix=[4, 3], n_tokens=2)
    assert e == pytest.approx(brute_force_kl(p, q, pre, [4, 3], 2), rel=1e-10)


def test_kl_of_a_model_with_itself_is_zero(pair: tuple[TinyLM, TinyLM]) -> None:
    p, _ = pair
    est = kl_rao_blackwell(p, p, [4], n_samples=16, n_tokens=3, rng=0)
    assert est.value == 0.0 and est.stderr == 0.0
    assert kl_mc(p, p, [4], n_samples=16, n_tokens=3, rng=0).value == 0.0


@pytest.mark.parametrize("until_end", [False, True])
def test_mc_and_rb_recover_exact_kl(pair: tuple[TinyLM, TinyLM], until_end: bool) -> None:
    p, q = pair
    pre = [4, 2]
    n_tokens = 3
    stops = (0,) if until_end else ()
    exact = exact_kl_enumerate(p, q, pre, n_tokens=n_tokens, stop_ids=stops)
    kw = dict(n_samples=1500, n_tokens=n_tokens, until_sentence_end=until_end, stop_ids=stops)
    mc = kl_mc(p, q, pre, rng=11, **kw)
    rb = kl_rao_blackwell(p, q, pre, rng=11, **kw)
    cv = kl_rao_blackwell(p, q, pre, rng=11, control_variate=True, **kw)
    for est in (mc, rb, cv):
        assert est.n == 1500
        assert abs(est.value - exact) <= 4 * est.stderr, (est, exact)
    # Same samples (same seed): conditioning on the path can only shrink the spread here.
    assert rb.stderr < mc.stderr
    # The control variate must not widen the spread of the terms it averages beyond the
    # O(1/n) noise of the estimated c₋ᵢ (a sign error in c₋ᵢ would double the control's
    # share instead; where the control is uncorrelated, as with until_end here, it neither
    # helps nor hurts). Its reported stderr is a 64-block
    # jackknife, itself noisy by ~1/√(2·63) ≈ 9 %, so it is compared with the plain
    # sd/√n of the same adjusted terms (which, at n = 1500, the jackknife must match) rather
    # than with rb's stderr at a 1 % tolerance.
    s = kl_samples(p, q, pre, rng=11, with_rb=True, **kw)
    assert s.rb is not None
    assert float(s.rb.mean()) == rb.value  # the same draws as rb above
    adjusted = _loo_adjusted(s.rb, s.mc - s.rb)
    assert float(adjusted.mean()) == pytest.approx(cv.value, rel=1e-12)
    plain_se = float(adjusted.std(ddof=1)) / math.sqrt(adjusted.size)
    assert plain_se <= rb.stderr * 1.01
    assert cv.stderr == pytest.approx(plain_se, rel=0.3)


def test_control_variate_removes_the_correlated_zero_mean_part() -> None:
    from bebkit.estimators.kl import KLSamples

    rng = np.random.default_rng(0)
    d = rng.normal(0.0, 1.0, 200)  # zero-mean control (sample mean ≠ 0)
    rb = 5.0 + 2.0 * d
    est = KLSamples(mc=rb + d, rb=rb, lengths=np.ones(200, int)).estimate("rb_cv")
    # g − c·d with c = 2 is exactly 5: the sample mean of d must not be centred away
    assert est.value == pytest.approx(5.0, abs=1e-9)
    assert est.stderr == pytest.approx(0.0, abs=1e-9)
    assert abs(rb.mean() - 5.0) > 0.01


def test_control_variate_is_unbiased_at_few_samples() -> None:
    """rb_cv over R = 20,000 replicates of n = 8 skewed samples with a known mean μ.

    A coefficient fitted on the same samples correlates with d̄ and biases the estimate by
    O(1/n) (here ≈ −0.10, some 80 replicate-stderrs); the leave-one-out coefficient makes
    E[c₋ᵢ d_i] = 0. Averaged over many prefixes, a bias does not shrink while the noise does.
    """
    from bebkit.estimators.kl import KLSamples

    rng = np.random.default_rng(0)
    r, n, mu = 20_000, 8, 1.0
    vals = np.empty(r)
    for i in range(r):
        d = rng.exponential(1.0, n) - 1.0  # zero-mean, skewed control
        g = mu + 0.5 * d + 0.3 * (d**2 - 1.0) + rng.normal(0.0, 0.2, n)
        vals[i] = KLSamples(mc=g + d, rb=g, lengths=np.ones(n, int)).estimate("rb_cv").value
    se = vals.std(ddof=1) / math.sqrt(r)
    assert abs(vals.mean() - mu) < 4 * se, (vals.mean() - mu, se)
    assert se < 0.005  # the check above can see a bias of 0.02


def test_control_variate_stderr_tracks_its_spread_on_an_exact_world() -> None:
    """300 independent rb_cv estimates of 64 sentences each (a Markov synthetic world where
    corr(g, d) ≈ −0.94): the mean reported stderr must match their spread. The adjusted terms'
    own sd/√n reports ≈ 0.6 of it here; the jackknife tracks it."""
    from bebkit.estimators.kl import KLSamples
    from bebkit.synthetic.world import world_from_params

    w = world_from_params(0.01, 3.0, n_sentences=8, seed=0, markov=True)
    neg, mix = w.component_model("neg"), w.language_model()
    s = kl_samples(neg, mix, w.encode_sentences([1, 4, 2]), n_samples=64 * 300, unit="sentence",
                   with_rb=True, stop_ids=w.sentence_end_token_ids, rng=0)  # fmt: skip
    assert s.rb is not None
    g, d = s.rb.reshape(300, 64), (s.mc - s.rb).reshape(300, 64)
    ests = [KLSamples(mc=g[i] + d[i], rb=g[i], lengths=np.ones(64, int)).estimate("rb_cv")
            for i in range(300)]  # fmt: skip
    spread = float(np.std([e.value for e in ests], ddof=1))
    reported = float(np.mean([e.stderr for e in ests]))
    assert 0.8 < reported / spread < 1.25, (reported, spread)


def test_control_variate_falls_back_to_rb_where_its_moments_do_not_exist() -> None:
    """n < 5: the leave-one-out slope has no finite mean (n = 3) or variance (n = 4), so the
    estimate is rb's exactly; an infinite term gives rb's inf, not inf − inf = NaN."""
    from bebkit.estimators.kl import CV_MIN_SAMPLES, KLSamples

    rng = np.random.default_rng(1)
    for n in range(2, CV_MIN_SAMPLES):
        d = rng.normal(size=n)
        g = 1.0 + d + rng.normal(scale=0.1, size=n)
        k = KLSamples(mc=g + d, rb=g, lengths=np.ones(n, int))
        cv, rb = k.estimate("rb_cv"), k.estimate("rb")
        assert cv.value == rb.value and cv.stderr == rb.stderr
    g = np.array([1.0, np.inf, 2.0, 0.5, 1.5, 0.7])
    k = KLSamples(mc=g + 0.1, rb=g, lengths=np.ones(6, int))
    assert k.estimate("rb_cv").value == np.inf
    # from CV_MIN_SAMPLES on, the coefficient is used: a perfectly correlated control is removed
    d = rng.normal(size=CV_MIN_SAMPLES)
    k = KLSamples(mc=3.0 + 3 * d, rb=3.0 + 2 * d, lengths=np.ones(CV_MIN_SAMPLES, int))
    assert k.estimate("rb_cv").value == pytest.approx(3.0, abs=1e-12)


def test_control_variate_block_jackknife_agrees_with_delete_one() -> None:
    """Above _JACKKNIFE_MAX_SINGLE samples the jackknife deletes blocks (O(n·blocks), not
    O(n²)); on the same data its stderr must agree with the delete-one jackknife's."""
    import bebkit.estimators.kl as kl

    rng = np.random.default_rng(2)
    n = 2000
    d = rng.exponential(size=n) - 1.0
    g = 1.0 + 0.8 * d + rng.normal(scale=0.5, size=n)
    blocked = kl._control_variate(g, d)
    old = kl._JACKKNIFE_MAX_SINGLE
    kl._JACKKNIFE_MAX_SINGLE = n  # force delete-one on the same data
    try:
        single = kl._control_variate(g, d)
    finally:
        kl._JACKKNIFE_MAX_SINGLE = old
    assert blocked.value == single.value
    assert blocked.stderr == pytest.approx(single.stderr, rel=0.25)
    resid = g - 0.8 * d  # the true coefficient's residual: sd/√n is the right scale here
    assert single.stderr == pytest.approx(resid.std(ddof=1) / math.sqrt(n), rel=0.1)


def test_rb_variance_reduction_is_substantial_on_one_token(pair: tuple[TinyLM, TinyLM]) -> None:
    p, q = pair
    # With one token the Rao-Blackwell estimate is the exact KL: zero variance.
    rb = kl_rao_blackwell(p, q, [4, 1], n_samples=50, n_tokens=1, rng=3)
    exact = exact_kl_enumerate(p, q, [4, 1], n_tokens=1)
    assert rb.value == pytest.approx(exact, rel=1e-12)
    assert rb.stderr == pytest.approx(0.0, abs=1e-12)


def test_q_prefix_changes_the_target_context(pair: tuple[TinyLM, TinyLM]) -> None:
    p, q = pair
    exact = exact_kl_enumerate(p, q, [4, 1], q_prefix=[4, 3, 3], n_tokens=2)
    est = kl_rao_blackwell(p, q, [4, 1], q_prefix=[4, 3, 3], n_samples=800, n_tokens=2, rng=5)
    assert abs(est.value - exact) <= 4 * est.stderr


def test_samples_are_seeded_and_calls_are_batched(pair: tuple[TinyLM, TinyLM]) -> None:
    p, q = pair
    a = kl_samples(p, q, [4], n_samples=20, n_tokens=3, with_rb=True, rng=9)
    b = kl_samples(p, q, [4], n_samples=20, n_tokens=3, with_rb=True, rng=9)
    np.testing.assert_array_equal(a.mc, b.mc)
    assert a.rb is not None and b.rb is not None
    np.testing.assert_array_equal(a.rb, b.rb)
    if isinstance(p, ScoredTinyLM):
        # one sampling call that also scores P, one scoring call for Q, per estimate
        assert p.calls["sample_scored"] == 2 and p.calls["sample"] == 0
        assert p.calls["continuation_logprobs"] == 0 and q.calls["continuation_logprobs"] == 2
    else:
        # one sampling call (one prefix encoding) and one scoring call per model per estimate
        assert p.calls["sample"] == 2
        assert p.calls["continuation_logprobs"] == 2 and q.calls["continuation_logprobs"] == 2


def test_step_kl_handles_zero_probabilities() -> None:
    with np.errstate(divide="ignore"):
        lp = np.log(np.array([[[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]))
        lq = np.log(np.array([[[0.25, 0.75, 0.0], [0.5, 0.5, 0.0]]]))
        lq_bad = np.log(np.array([[[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]]))
    out = step_kl(lp, lq, np.array([1]))
    expected = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    np.testing.assert_allclose(out, [[expected, 0.0]])
    assert np.isinf(step_kl(lp, lq_bad, np.array([1]))[0, 0])


def test_input_validation(pair: tuple[TinyLM, TinyLM]) -> None:
    p, q = pair
    with pytest.raises(InputError, match="n_samples"):
        kl_mc(p, q, [4], n_samples=1, rng=0)
    with pytest.raises(InputError, match="stop_ids"):
        kl_mc(p, q, [4], until_sentence_end=True, rng=0)
    s = kl_samples(p, q, [4], n_samples=4, n_tokens=2, rng=0)
    with pytest.raises(InputError, match="Rao-Blackwell"):
        s.estimate("rb")


def test_kl_curve_pools_prompts_and_matches_exact(pair: tuple[TinyLM, TinyLM]) -> None:
    p, q = pair
    prompts = sample_prompts(p, n_prompts=3, n_sentences=2, rng=1, max_sentence_tokens=2)
    p.calls.clear()
    q.calls.clear()
    curve = kl_curve(p, q, prompts, estimator="rb", n_samples=400, n_tokens=2, rng=2)
    assert curve.per_prompt.shape == (3, 3)
    if isinstance(p, ScoredTinyLM):
        # one scored sampling call for P and one score call for Q per (prompt, n)
        assert p.calls["sample_scored"] == 9 and p.calls["continuation_logprobs"] == 0
    else:
        # one sample + one score call for P and one score call for Q per (prompt, n)
        assert p.calls["sample"] == 9 and p.calls["continuation_logprobs"] == 9
    assert q.calls["continuation_logprobs"] == 9
    for i, pr in enumerate(prompts):
        for n in range(3):
            ctx = pr.context(p, n)
            exact = exact_kl_enumerate(p, q, ctx, n_tokens=2)
            est, se = curve.per_prompt[i, n], curve.per_prompt_stderr[i, n]
            assert abs(est - exact) <= 4 * se + 1e-12
    pooled = curve.estimates
    assert len(pooled) == 3 and pooled[0].n == 3
    np.testing.assert_allclose([e.value for e in pooled], curve.per_prompt.mean(axis=0))
    d = curve.to_dict()
    assert d["method"] == "rb" and len(d["estimates"]) == 3
    with pytest.raises(InputError, match="ns must"):
        kl_curve(p, q, prompts, ns=[5], rng=0)


def test_kl_curve_on_synthetic_world_recovers_exact_per_sentence_kl() -> None:
    synthetic = pytest.importorskip("bebkit.synthetic.world")
    from bebkit.synthetic.lm import exact_kl

    world = synthetic.world_from_params(0.05, 1.2, n_sentences=6, markov=True, gamma=-0.1, seed=0)
    neg, pos = world.language_model("neg"), world.language_model("pos")
    stops = world.sentence_end_token_ids
    prompts = sample_prompts(neg, n_prompts=4, n_sentences=3, rng=4, stop_ids=stops)
    curve = kl_curve(
        neg,
        pos,
        prompts,
        estimator="rb",
        n_samples=300,
        n_tokens=16,
        until_sentence_end=True,
        stop_ids=stops,
        rng=5,
    )
    for i, pr in enumerate(prompts):
        for n in range(pr.n_sentences + 1):
            exact = exact_kl(neg, pos, pr.context(neg, n), n_sentences=1)
            est, se = curve.per_prompt[i, n], curve.per_prompt_stderr[i, n]
            assert abs(est - exact) <= 4 * se + 1e-9, (i, n, est, exact, se)
            # β is the min over contexts of the per-sentence KL (Definition 2)
            assert exact >= 1.2 - 1e-9


def _old_kl_samples(p, q, prefix, q_prefix, n_samples, n_tokens, stops, rng):  # type: ignore[no-untyped-def]
    """The previous path: sample, re-score P and Q with full float64 dists, numpy step_kl."""
    from bebkit.models.protocol import StopCondition

    ys = p.sample(prefix, n_samples, StopCondition(n_tokens, frozenset(stops)), rng=rng)
    lengths = np.array([len(y) for y in ys])
    sp = p.continuation_logprobs(list(prefix), ys, with_dists=True)
    sq = q.continuation_logprobs(list(q_prefix), ys, with_dists=True)
    rb = step_kl(np.asarray(sp.dists, float), np.asarray(sq.dists, float), lengths).sum(axis=1)
    return ys, sp.totals - sq.totals, rb


@pytest.mark.parametrize("stops", [(), (0,)])
def test_new_path_equals_old_numbers_on_the_same_samples(
    pair: tuple[TinyLM, TinyLM], stops: tuple[int, ...]
) -> None:
    p, q = pair
    pre, qpre = [4, 2], [4, 3]
    ys, mc_old, rb_old = _old_kl_samples(p, q, pre, qpre, 40, 3, stops, np.random.default_rng(4))
    new = kl_samples(
        p,
        q,
        pre,
        q_prefix=qpre,
        n_samples=40,
        n_tokens=3,
        until_sentence_end=bool(stops),
        stop_ids=stops,
        with_rb=True,
        rng=np.random.default_rng(4),
    )
    # same rng → same samples (both samplers draw identically)
    np.testing.assert_array_equal(new.lengths, [len(y) for y in ys])
    np.testing.assert_allclose(new.mc, mc_old, rtol=1e-12, atol=1e-12)
    assert new.rb is not None
    np.testing.assert_allclose(new.rb, rb_old, rtol=1e-12, atol=1e-12)


def test_kl_samples_multi_shares_one_p_sample_set(pair: tuple[TinyLM, TinyLM]) -> None:
    from bebkit.estimators.kl import kl_samples_multi

    p, q = pair
    q2 = TinyLM(5, seed=2, name="q2")
    out = kl_samples_multi(
        p, {"a": (q, [4]), "b": (q2, [4, 1])}, [4], n_samples=30, n_tokens=2, with_rb=True, rng=8
    )
    single = kl_samples(p, q, [4], n_samples=30, n_tokens=2, with_rb=True, rng=8)
    np.testing.assert_allclose(out["a"].mc, single.mc, rtol=1e-12)
    assert out["a"].rb is not None and single.rb is not None
    np.testing.assert_allclose(out["a"].rb, single.rb, rtol=1e-12)
    np.testing.assert_array_equal(out["a"].lengths, out["b"].lengths)
    assert q2.calls["continuation_logprobs"] == 1


def test_rb_samples_in_memory_chunks(
    pair: tuple[TinyLM, TinyLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    import bebkit.estimators.kl as kl

    p, q = pair
    full = kl_samples(p, q, [4], n_samples=25, n_tokens=3, with_rb=True, rng=6)
    # a budget of 7 rows of [3, V] float64 → 4 chunks; every sample still exact
    monkeypatch.setattr(kl, "_DIST_BUDGET_BYTES", 7 * 3 * p.vocab_size * 8)
    q.calls.clear()
    chunked = kl_samples(p, q, [4], n_samples=25, n_tokens=3, with_rb=True, rng=6)
    assert chunked.mc.shape == (25,) and chunked.rb is not None and full.rb is not None
    assert q.calls["continuation_logprobs"] == 4
    exact = exact_kl_enumerate(p, q, [4], n_tokens=3)
    for est in (chunked.estimate("rb"), full.estimate("rb")):
        assert abs(est.value - exact) <= 4 * est.stderr


def test_synthetic_sample_scored_path_equals_fallback() -> None:
    """SyntheticLM's scored sampler and the generic fallback give the same terms."""
    from bebkit.synthetic.world import random_world

    world = random_world(3, n_sentences=5, n_components=2, alpha=0.3, markov=True)
    neg, pos = world.component_model(0), world.language_model()
    stops = world.sentence_end_token_ids
    pre = world.encode_sentences([1])

    class Fallback:
        """``neg`` without its ``sample_scored`` (forces sample + continuation_logprobs)."""

        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self._m = inner

        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            if name == "sample_scored":
                raise AttributeError(name)
            return getattr(self._m, name)

    kw = dict(n_samples=50, n_tokens=12, until_sentence_end=True, stop_ids=stops, with_rb=True)
    a = kl_samples(neg, pos, pre, rng=2, **kw)
    b = kl_samples(Fallback(neg), pos, pre, rng=2, **kw)
    np.testing.assert_allclose(a.mc, b.mc, rtol=1e-10, atol=1e-12)
    assert a.rb is not None and b.rb is not None
    np.testing.assert_allclose(a.rb, b.rb, rtol=1e-10, atol=1e-12)


def test_kl_samples_grid_matches_exact_per_prefix(pair: tuple[TinyLM, TinyLM]) -> None:
    from bebkit.estimators.kl import kl_samples_grid

    p, q = pair
    prefixes, q_prefixes = [[4], [4, 1, 2], [4, 3]], [[4, 2], [4, 1, 2], [4]]
    grid = kl_samples_grid(p, prefixes, {"q": (q, q_prefixes)}, n_samples=600, n_tokens=2,
                           with_rb=True, rng=3)  # fmt: skip
    assert len(grid) == 3
    for k, cell in enumerate(grid):
        exact = exact_kl_enumerate(p, q, prefixes[k], q_prefix=q_prefixes[k], n_tokens=2)
        est = cell["q"].estimate("rb")
        assert est.n == 600 and abs(est.value - exact) <= 4 * est.stderr
    with pytest.raises(InputError, match="one context per prefix"):
        kl_samples_grid(p, prefixes, {"q": (q, q_prefixes[:1])}, rng=0)


def test_dist_budget_env_sets_rows_per_chunk(
    pair: tuple[TinyLM, TinyLM], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``BEBKIT_DIST_BUDGET_MB`` sets the rows of one distributions chunk; bad values are one
    clear InputError."""
    import bebkit.estimators.kl as kl

    p, _ = pair
    monkeypatch.delenv("BEBKIT_DIST_BUDGET_MB", raising=False)
    assert kl.dist_budget_bytes() == kl._DIST_BUDGET_BYTES
    monkeypatch.setenv("BEBKIT_DIST_BUDGET_MB", "1")
    assert kl.dist_budget_bytes() == 2**20
    assert kl._dist_chunk(p, 4) == 2**20 // (4 * p.vocab_size * 8)
    for bad in ("0", "-3", "lots"):
        monkeypatch.setenv("BEBKIT_DIST_BUDGET_MB", bad)
        with pytest.raises(InputError, match="BEBKIT_DIST_BUDGET_MB"):
            kl.dist_budget_bytes()


class _GroupRecorder(ScoredTinyLM):
    """Records how many prefixes each batched sampling call decodes together."""

    groups: list[int]

    def sample_scored_many(self, prefixes, n, stop, *, rng, with_dists=False):  # type: ignore[no-untyped-def]
        self.groups.append(len(prefixes))
        return [
            self.sample_scored(pre, n, stop, rng=rng, with_dists=with_dists) for pre in prefixes
        ]


@pytest.mark.parametrize(
    ("n_samples", "with_rb", "expected"),
    [
        (32, False, [4, 1]),  # plain MC: up to 128 rows per group, whatever the budget
        (64, False, [2, 2, 1]),
        (200, False, [1] * 5),  # more samples than a group holds: one prefix per group
        (32, True, [4, 1]),  # RB: the same, the distributions fit the default budget
    ],
)
def test_a_curves_prefixes_are_sampled_in_groups_of_up_to_128_rows(
    n_samples: int, with_rb: bool, expected: list[int]
) -> None:
    """Prefixes share decode steps (groups of ≤ ``_GROUP_ROWS`` rows) for both estimators;
    before mc revision 2, plain MC decoded one prefix at a time."""
    from bebkit.estimators.kl import kl_samples_grid

    p = _GroupRecorder(5, seed=1, name="p")
    p.groups = []
    q = TinyLM(5, seed=1, perturb_seed=7, perturb=0.8, name="q")
    pres = [[1, 2, 3][: k + 1] for k in range(3)] + [[4], [4, 1]]
    out = kl_samples_grid(p, pres, {"q": (q, pres)}, n_samples=n_samples, n_tokens=2,
                          with_rb=with_rb, rng=0)  # fmt: skip
    assert p.groups == expected
    assert [o["q"].mc.shape for o in out] == [(n_samples,)] * 5
