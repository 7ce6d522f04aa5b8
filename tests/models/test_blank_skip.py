"""StopCondition.blank_token_ids in the HF sampler: a stop token ends a row only after some
non-blank text, in one batched pass (the estimators used to stop at a lone newline and resume
such rows one by one)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from conftest import make_llama, make_tokenizer

torch = pytest.importorskip("torch")

from bebkit.models.hf import HFLanguageModel  # noqa: E402
from bebkit.models.protocol import StopCondition  # noqa: E402

NL = 32  # the newline token of the test tokenizer
V = 33


@pytest.fixture(scope="module")
def uniform() -> HFLanguageModel:
    """Every next token uniform over the 33 ids (zero output head): the sampled paths are
    iid uniform tokens, so the stopping rule alone shapes them."""
    m = make_llama(seed=3)
    with torch.no_grad():
        m.lm_head.weight.zero_()
    return HFLanguageModel(m, make_tokenizer(), name="uniform", batch_size=64)


def _blank_stopped(rows: list[list[int]], cap: int) -> list[list[int]]:
    return [y for y in rows if len(y) < cap and y[-1] == NL and all(t == NL for t in y)]


def test_rows_keep_sampling_past_a_lone_newline(uniform: HFLanguageModel) -> None:
    cap = 6
    old = uniform.sample(
        [2, 5], 600, StopCondition(cap, frozenset({NL})), rng=np.random.default_rng(0)
    )
    assert _blank_stopped(old, cap)  # without blank ids a lone newline ends the row
    new = uniform.sample(
        [2, 5],
        600,
        StopCondition(cap, frozenset({NL}), frozenset({NL})),
        rng=np.random.default_rng(0),
    )
    assert _blank_stopped(new, cap) == []
    continued = [y for y in new if y[0] == NL and len(y) > 1]
    assert len(continued) > 0  # ~600/33 rows start blank and go on
    for y in new:  # every row ends at the cap or at a newline after non-blank text
        assert len(y) == cap or (y[-1] == NL and any(t != NL for t in y))


def test_scores_of_continued_rows_are_the_models_own(uniform: HFLanguageModel) -> None:
    stop = StopCondition(5, frozenset({NL}), frozenset({NL}))
    ((ys, sc),) = uniform.sample_scored_many([[2, 5, 7]], 300, stop, rng=np.random.default_rng(1))
    for i, y in enumerate(ys):
        lp = sc.token_logprobs[i, : len(y)]
        np.testing.assert_allclose(lp, -np.log(V), atol=1e-5)
        assert int(sc.lengths[i]) == len(y)
        # the same path scored afterwards gets the same log-probs
    again = uniform.continuation_logprobs([2, 5, 7], ys[:20])
    np.testing.assert_allclose(again.token_logprobs, sc.token_logprobs[:20], atol=1e-5)


def test_sentence_kl_needs_one_sampling_pass(uniform: HFLanguageModel, monkeypatch: Any) -> None:
    from bebkit.estimators.kl import kl_samples_grid

    calls: list[int] = []
    orig = uniform.sample_scored_many

    def spy(*a: Any, **k: Any) -> Any:
        calls.append(len(a[0]))
        return orig(*a, **k)

    monkeypatch.setattr(uniform, "sample_scored_many", spy)
    out = kl_samples_grid(
        uniform, [[2, 5]], {"q": (uniform, [[2, 5]])}, n_samples=200, unit="sentence",
        stop_ids=[NL], max_sentence_tokens=6, rng=0,
    )  # fmt: skip
    assert calls == [1]  # no row left blank for _extend_blank to resume
    assert out[0]["q"].mc.shape == (200,)
    np.testing.assert_allclose(out[0]["q"].mc, 0.0, atol=1e-5)  # P = Q: every term is 0
