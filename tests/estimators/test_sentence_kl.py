"""Per-sentence KL (Definition 2's unit), log-ratio increments and explicit directions.

Every expected value is exact: the synthetic world's sentence-level KL / log-ratio moments,
or brute-force enumeration on a tiny model.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimators.exact import exact_kl_enumerate
from bebkit.estimators.kl import (
    directional_kl_curve,
    kl_curve,
    kl_samples,
    sentence_contexts,
)
from bebkit.estimators.logratio import (
    DIRECTIONS,
    directional_log_ratio,
    log_ratio_trajectories,
    sampled_spans,
)
from bebkit.estimators.prompts import NEWLINE, PromptFormat, SampledPrompt, sample_prompts
from bebkit.synthetic.lm import exact_kl, exact_log_ratio_moments
from bebkit.synthetic.world import World, world_from_params

from .tiny_lm import ScoredTinyLM, TinyLM


@pytest.fixture(scope="module")
def world() -> World:
    """Markov two-component world; alphabet 2 → every sentence is 3 letters + END = 4 tokens."""
    return world_from_params(0.05, 0.8, n_sentences=6, markov=True, gamma=-0.1, seed=0,
                             alphabet_size=2)  # fmt: skip


def _sentences(world: World, tokens: tuple[int, ...]) -> list[int]:
    return world.split_sentences(tokens)[0]


def _world_prompts(
    world: World, model: str, n_prompts: int, n_sentences: int, seed: int, forced: int | None = None
) -> list[SampledPrompt]:
    """Prompts ``s ~ P_model`` drawn by the world's exact (vectorised) sentence sampler.

    With ``forced = j`` every sampled sentence is preceded by the template sentence j (the
    layout :func:`sample_prompts` builds for :func:`_forced_format`); sampled sentences are
    then drawn given the history including the forced ones, as P₋ would.
    """
    rng = np.random.default_rng(seed)
    code_len = world.codec.code_length + 1
    hist = np.zeros((n_prompts, 0), np.int64)
    for _ in range(n_sentences):
        if forced is not None:
            hist = np.concatenate([hist, np.full((n_prompts, 1), forced)], axis=1)
        hist = np.concatenate([hist, world.sample(rng, n_prompts, 1, model, prefix=hist)], axis=1)
    unit = code_len * (2 if forced is not None else 1)
    opener = code_len if forced is not None else 0
    fmt = NEWLINE if forced is None else _forced_format(world, forced)
    return [
        SampledPrompt(
            tokens=tuple(world.encode_sentences(row.tolist())),
            boundaries=tuple(1 + k * unit for k in range(n_sentences + 1)),
            header_len=1,
            fmt=fmt,
            truncated=(False,) * n_sentences,
            source=f"synthetic:{model}",
            spans=tuple((1 + k * unit + opener, 1 + (k + 1) * unit) for k in range(n_sentences)),
        )
        for row in hist
    ]


@pytest.mark.parametrize("estimator", ["mc", "rb"])
def test_per_sentence_kl_equals_exact_on_the_synthetic_world(world: World, estimator: str) -> None:
    neg, mix = world.language_model("neg"), world.language_model()
    stops = world.sentence_end_token_ids
    prompts = sample_prompts(neg, n_prompts=3, n_sentences=3, rng=4, stop_ids=stops)
    curve = kl_curve(neg, mix, prompts, estimator=estimator, unit="sentence", stop_ids=stops,
                     n_samples=300, rng=5)  # fmt: skip
    assert curve.unit == "sentence" and curve.max_tokens == 48
    assert curve.truncated_total == 0 and curve.n_truncated is not None
    assert all(e.method.endswith("_per_sentence") for e in curve.estimates)
    d = curve.to_dict()
    assert d["unit"] == "sentence" and d["truncated_total"] == 0
    for i, pr in enumerate(prompts):
        sents = _sentences(world, pr.tokens)
        # sentence-level exact KL of the next sentence after every prefix (no token machinery)
        exact_row = world.next_sentence_kl([sents], "neg", "mixture")[0]
        for n in range(pr.n_sentences + 1):
            est, se = curve.per_prompt[i, n], curve.per_prompt_stderr[i, n]
            assert se > 0
            assert abs(est - exact_row[n]) <= 4 * se, (i, n, est, exact_row[n], se)
            ctx, _ = sentence_contexts(pr, neg, mix, n, None)
            assert exact_kl(neg, mix, ctx, n_sentences=1) == pytest.approx(exact_row[n])


def test_fixed_token_unit_is_not_the_per_sentence_kl(world: World) -> None:
    """With sentences of 4 tokens, 1- and 8-token KLs are different estimands (unit mix-up)."""
    neg, pos = world.language_model("neg"), world.language_model("pos")
    stops = world.sentence_end_token_ids
    prompts = sample_prompts(neg, n_prompts=3, n_sentences=2, rng=1, stop_ids=stops)
    sent = kl_curve(neg, pos, prompts, estimator="rb", unit="sentence", stop_ids=stops,
                    n_samples=200, rng=2)  # fmt: skip
    for n_tokens in (1, 8):
        tok = kl_curve(neg, pos, prompts, estimator="rb", unit="tokens", n_tokens=n_tokens,
                       n_samples=200, rng=2)  # fmt: skip
        assert tok.unit == "tokens" and tok.max_tokens == n_tokens
        assert all(e.method.endswith(f"_per_{n_tokens}_tokens") for e in tok.estimates)
        for i, pr in enumerate(prompts):
            sents = _sentences(world, pr.tokens)
            exact_sent = world.next_sentence_kl([sents], "neg", "pos")[0]
            for n in range(3):
                exact_tok = exact_kl(neg, pos, pr.context(neg, n), n_tokens=n_tokens)
                se = tok.per_prompt_stderr[i, n]
                assert abs(tok.per_prompt[i, n] - exact_tok) <= 4 * se + 1e-12
                # the token unit misses (1 token) or overshoots (8 tokens = 2 sentences)
                assert abs(tok.per_prompt[i, n] - exact_sent[n]) > 4 * se + 0.05
                s_se = sent.per_prompt_stderr[i, n]
                assert abs(sent.per_prompt[i, n] - exact_sent[n]) <= 4 * s_se


def test_sentence_cap_counts_truncations(world: World) -> None:
    neg, pos = world.language_model("neg"), world.language_model("pos")
    stops = world.sentence_end_token_ids
    pre = world.encode_sentences([2])
    capped = kl_samples(neg, pos, pre, unit="sentence", stop_ids=stops, max_sentence_tokens=3,
                        n_samples=50, with_rb=True, rng=0)  # fmt: skip
    # a sentence is 4 tokens: every continuation hits the cap of 3 before its END
    assert capped.n_truncated == 50 and np.all(capped.lengths == 3)
    est = capped.estimate("rb")
    assert abs(est.value - exact_kl(neg, pos, pre, n_tokens=3)) <= 4 * est.stderr
    full = kl_samples(neg, pos, pre, unit="sentence", stop_ids=stops, max_sentence_tokens=4,
                      n_samples=50, rng=0)  # fmt: skip
    assert full.n_truncated == 0 and np.all(full.lengths == 4)
    with pytest.raises(InputError, match="stop_ids"):
        kl_samples(neg, pos, pre, unit="sentence", n_samples=4, rng=0)
    with pytest.raises(InputError, match="unit"):
        kl_samples(neg, pos, pre, unit="words", n_samples=4, rng=0)  # type: ignore[arg-type]


# ---------------------------------------------------------------- skip_blank, tiny model
def _brute_sentence_kl(p: TinyLM, q: TinyLM, prefix: list[int], cap: int) -> float:
    """Σ_y P(y)[log P(y) − log Q(y)], y stopped at the first "\\n" after a letter, or at cap."""
    total, seen = 0.0, set()
    for ys in itertools.product(range(p.vocab_size), repeat=cap):
        y: list[int] = []
        for t in ys:
            y.append(t)
            if t == 0 and any(u != 0 for u in y):
                break
        if tuple(y) in seen:
            continue
        seen.add(tuple(y))
        lp = sum(p.logprobs(prefix + y[:i])[t] for i, t in enumerate(y))
        lq = sum(q.logprobs(prefix + y[:i])[t] for i, t in enumerate(y))
        if lp > -np.inf:
            total += math.exp(lp) * (lp - lq)
    return total


@pytest.mark.parametrize("cls", [TinyLM, ScoredTinyLM], ids=["fallback", "scored"])
def test_skip_blank_sentence_kl_matches_brute_force(cls: type[TinyLM]) -> None:
    p = cls(5, seed=1, name="p")
    q = TinyLM(5, seed=1, perturb_seed=7, perturb=0.8, name="q")
    pre, cap = [4, 1, 0], 3
    exact = _brute_sentence_kl(p, q, pre, cap)
    plain = exact_kl_enumerate(p, q, pre, n_tokens=cap, stop_ids=(0,))
    assert abs(exact - plain) > 0.02  # the blank rule changes the estimand here
    ks = kl_samples(p, q, pre, unit="sentence", stop_ids=(0,), max_sentence_tokens=cap,
                    n_samples=3000, with_rb=True, rng=3)  # fmt: skip
    # some continuations began with a blank "\n" and were continued past it
    starts_blank = ks.lengths > 1
    assert starts_blank.any()
    for est in (ks.estimate("mc"), ks.estimate("rb")):
        assert abs(est.value - exact) <= 4 * est.stderr, (est, exact)
    no_skip = kl_samples(p, q, pre, unit="sentence", stop_ids=(0,), max_sentence_tokens=cap,
                         n_samples=3000, with_rb=True, rng=3, skip_blank=False)  # fmt: skip
    est = no_skip.estimate("rb")
    assert abs(est.value - plain) <= 4 * est.stderr


# ---------------------------------------------------------------- log-ratio increments
def _forced_format(world: World, j: int) -> PromptFormat:
    """Each sampled sentence is preceded by the forced sentence j (a template turn)."""
    text = world.language_model().decode(world.codec.code(j)) + "."
    return PromptFormat(name="forced", sentence_prefix=text, truncation_suffix="")


def test_increments_and_variance_match_exact_in_both_directions(world: World) -> None:
    neg, pos = world.language_model("neg"), world.language_model("pos")
    models = {"neg": neg, "pos": pos}
    params = world.params()
    for direction, sampler, other, sigma in (
        ("neg||pos", neg, pos, params.sigma_neg),
        ("pos||neg", pos, neg, params.sigma_pos),
    ):
        prompts = _world_prompts(world, direction[:3], 500, 3, seed=7)
        traj = directional_log_ratio(models, prompts, direction=direction)
        assert traj.direction == direction and traj.forced == "exclude"
        inc, var = traj.increments(), traj.variance(n_boot=300, rng=0)
        prev = 0.0
        for n in range(1, 4):
            mean_n, var_n = exact_log_ratio_moments(sampler, other, n)
            e = inc[n - 1]
            assert e.n == 500 and abs(e.value - (mean_n - prev)) <= 4 * e.stderr, (direction, n)
            assert abs(var[n].value - var_n) <= 4 * var[n].stderr, (direction, n)
            assert var_n <= n * sigma**2 + 1e-9  # Definition 4 in this direction
            if direction == "pos||neg":
                assert mean_n - prev <= params.beta_prime + 1e-9  # Lemma 4 eq. 54
            else:
                assert mean_n - prev >= params.beta - 1e-9  # Definition 2
            prev = mean_n
        d = traj.to_dict(n_boot=100)
        assert d["direction"] == direction and d["uses"] == DIRECTIONS[direction]
        assert len(d["increments"]) == 3 and d["forced_tokens"] == "exclude"


def test_forced_template_tokens_are_excluded_from_the_log_ratio(world: World) -> None:
    j = 0  # log P₋(j|c)/P₊(j|c) ≈ 3.6–4.1 nats: a large leak if forced tokens were counted
    fmt = _forced_format(world, j)
    neg, pos = world.language_model("neg"), world.language_model("pos")
    stops = world.sentence_end_token_ids
    prompts = _world_prompts(world, "neg", 400, 3, seed=11, forced=j)
    # the sampler lays the format out identically (tokens, boundaries, spans)
    sampled = sample_prompts(neg, n_prompts=2, n_sentences=2, rng=1, fmt=fmt, stop_ids=stops)
    for pr in sampled:
        assert pr.boundaries == prompts[0].boundaries[:3]
        assert pr.spans == prompts[0].spans[:2]
    # every sampled sentence follows the forced sentence j: its context is c = 1 + j, so
    # E[r(n) − r(n−1)] = KL(P₋(·|c) ‖ P₊(·|c)) and Var[r(n)] = n Var_{x~P₋(·|c)}[f(x)] exactly
    c = 1 + j
    kl_c = float(world.conditional_kl("neg", "pos")[c])
    lp, lq = world.log_cond[0, c], world.log_cond[1, c]
    f = lp - lq
    var_c = float(np.exp(lp) @ f**2 - kl_c**2)
    exc = log_ratio_trajectories(neg, pos, prompts, forced="exclude")
    inc = log_ratio_trajectories(neg, pos, prompts, forced="include")
    for n in range(1, 4):
        e_exc, e_inc = exc.increments()[n - 1], inc.increments()[n - 1]
        assert abs(e_exc.value - kl_c) <= 4 * e_exc.stderr
        # the forced sentence's log P₋/P₊ leaks into the included estimate
        assert abs(e_inc.value - kl_c) > 4 * e_inc.stderr
        v = exc.variance(n_boot=300, rng=0)[n]
        assert abs(v.value - n * var_c) <= 4 * v.stderr
    # the sampled spans skip the forced opener (4 tokens) of every unit
    pr = prompts[0]
    spans = sampled_spans(pr, neg)
    assert [b - a for a, b in spans] == [4, 4, 4]
    assert all(a == pr.boundaries[k] + 4 for k, (a, _) in enumerate(spans))
    # per-sentence KL sees the forced opener too: sentence n+1's context is c at every n
    curve = kl_curve(neg, pos, prompts[:2], estimator="rb", unit="sentence", stop_ids=stops,
                     n_samples=200, rng=1)  # fmt: skip
    for i in range(2):
        for n in range(4):
            assert abs(curve.per_prompt[i, n] - kl_c) <= 4 * curve.per_prompt_stderr[i, n]


# ---------------------------------------------------------------- directions
def test_directional_kl_curve_names_its_direction_and_checks_the_sampler(world: World) -> None:
    neg, pos, mix = world.language_model("neg"), world.language_model("pos"), world.language_model()
    models = {"neg": neg, "pos": pos, "model": mix}
    stops = world.sentence_end_token_ids
    from_pos = sample_prompts(pos, n_prompts=3, n_sentences=2, rng=2, stop_ids=stops)
    curve = directional_kl_curve(models, from_pos, direction="pos||neg", stop_ids=stops,
                                 n_samples=200, rng=3)  # fmt: skip
    assert curve.direction == "pos||neg" and curve.unit == "sentence"
    assert "Lemma 4" in curve.to_dict()["uses"] and "Theorems 2, 3" in DIRECTIONS["pos||neg"]
    beta_prime = world.params().beta_prime
    for i, pr in enumerate(from_pos):
        sents = _sentences(world, pr.tokens)
        exact_rev = world.next_sentence_kl([sents], "pos", "neg")[0]
        exact_fwd = world.next_sentence_kl([sents], "neg", "pos")[0]
        for n in range(3):
            se = curve.per_prompt_stderr[i, n]
            assert abs(curve.per_prompt[i, n] - exact_rev[n]) <= 4 * se
            assert exact_rev[n] <= beta_prime + 1e-9
            assert abs(curve.per_prompt[i, n] - exact_fwd[n]) > 4 * se  # a swap would show
    with pytest.raises(InputError, match="sampled from"):
        directional_kl_curve(models, from_pos, direction="neg||model", stop_ids=stops, rng=0)
    with pytest.raises(InputError, match="direction must be"):
        directional_log_ratio(models, from_pos, direction="pos|neg")
    with pytest.raises(InputError, match="needs a 'model'"):
        directional_log_ratio({"pos": pos}, from_pos, direction="pos||model")
    assert NEWLINE.sentence_prefix == ""
