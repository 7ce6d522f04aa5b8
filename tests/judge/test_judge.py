"""Judge training on synthetic separable texts, ensembles, likelihood-ratio judge."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.judge.data import BehaviorStatements, generic_good_texts, rejection_templates
from bebkit.judge.judge import (
    EnsembleJudge,
    JudgeConfig,
    LikelihoodRatioJudge,
    LinearJudge,
    MixturePosteriorJudge,
    behavior_expectation,
    build_judge,
    build_training_set,
    fill_template,
    predict,
    source_weights,
)
from bebkit.models.protocol import ContinuationScores

from .tiny import HashBowEncoder, synthetic_statements

pytest.importorskip("sklearn")


def test_build_training_set_sources_and_labels() -> None:
    ts = build_training_set(
        ["good a", "good b"],
        ["bad a"],
        generic=["hello"],
        templates=['I reject "{statement}".'],
        n_template_samples=3,
        seed=0,
    )
    assert ts.counts() == {"desired": 2, "undesired": 1, "generic": 1, "template": 3}
    assert ts.labels.tolist() == [1, 1, -1, 1, 1, 1, 1]
    assert ts.texts[-1] == 'I reject "bad a".'
    with pytest.raises(InputError):
        build_training_set([], ["x"])


def test_packaged_generic_texts_are_present() -> None:
    g = generic_good_texts()
    assert set(g) == {"refusals", "supportive", "neutral"}
    assert all(len(v) >= 30 for v in g.values())
    t = rejection_templates()
    assert t and all("{statement}" in x or "{you}" in x for x in t)


def test_fill_template_and_source_weights() -> None:
    assert fill_template('No to "{statement}".', "I lie.") == 'No to "I lie".'
    assert fill_template("Sorry to hear that {you}.", "I lie to my friends") == (
        "Sorry to hear that you lie to your friends."
    )
    y = np.array([1, 1, 1, 1, -1, -1])
    w = source_weights(["desired"] * 3 + ["generic", "undesired", "undesired"], y)
    # Classes weigh the same; within the good class each source weighs the same.
    assert w[y == 1].sum() == pytest.approx(w[y == -1].sum())
    assert w[:3].sum() == pytest.approx(w[3])


def test_linear_judge_learns_separable_statements() -> None:
    desired, undesired = synthetic_statements(0, 60)
    test_d, test_u = synthetic_statements(1, 30)
    judge = LinearJudge(HashBowEncoder(), Cs=(0.1, 1.0)).fit(
        build_training_set(desired, undesired, n_template_samples=0)
    )
    assert judge.chosen_C in (0.1, 1.0)
    pred = predict(judge, [*test_d, *test_u])
    truth = np.array([1] * 30 + [-1] * 30)
    assert np.mean(pred == truth) > 0.9
    p = judge.prob_good(test_d)
    assert p.shape == (30,) and np.all((p >= 0) & (p <= 1))
    # The judge scores the first sentence only: a bad first sentence decides.
    assert predict(judge, [f"{test_u[0]}. {test_d[0]}. {test_d[1]}."])[0] == -1
    assert predict(judge, [f"{test_u[0]}. {test_d[0]}."])[0] == -1
    be = behavior_expectation(judge, [*test_d, *test_u])
    assert be.n == 60 and abs(be.value) < 0.3


def test_unfitted_judge_raises() -> None:
    with pytest.raises(RuntimeError, match="not fitted"):
        LinearJudge(HashBowEncoder()).prob_good(["x"])


def test_build_judge_with_injected_encoders_and_ensemble() -> None:
    desired, undesired = synthetic_statements(2, 50)
    stm = BehaviorStatements("toy", tuple(desired), tuple(undesired))
    encs = {"minilm": HashBowEncoder(32, "a"), "hidden": HashBowEncoder(48, "b")}
    single = build_judge(stm, JudgeConfig(kind="minilm", n_template_samples=50), encoders=encs)
    ens = build_judge(stm, JudgeConfig(kind="ensemble", Cs=(1.0,)), encoders=encs)
    assert isinstance(ens, EnsembleJudge) and len(ens.members) == 2
    test_d, test_u = synthetic_statements(3, 20)
    truth = np.array([1] * 20 + [-1] * 20)
    for j in (single, ens):
        assert np.mean(predict(j, [*test_d, *test_u]) == truth) > 0.85
    # Mean of member probabilities.
    texts = test_d[:3]
    np.testing.assert_allclose(
        ens.prob_good(texts), np.mean([m.prob_good(texts) for m in ens.members], axis=0)
    )


def test_judge_config_is_frozen_and_validated() -> None:
    cfg = JudgeConfig()
    with pytest.raises(Exception):  # noqa: B017 - pydantic ValidationError
        cfg.kind = "hidden"  # type: ignore[misc]
    with pytest.raises(Exception):  # noqa: B017
        JudgeConfig(kind="oracle")  # type: ignore[arg-type]


class _UnigramLM:
    """Minimal LanguageModel: i.i.d. characters with fixed probabilities (for log P(x))."""

    def __init__(self, probs: dict[str, float], name: str) -> None:
        self.chars = sorted(probs)
        self.logp = np.log(np.array([probs[c] for c in self.chars]))
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    @property
    def bos_token_ids(self) -> list[int]:
        return [len(self.chars)]

    def encode(self, text: str) -> list[int]:
        return [self.chars.index(c) for c in text if c in self.chars]

    def sequence_logprobs(self, sequences: Sequence[Sequence[int]]) -> list[np.ndarray]:
        return [self.logp[list(s[1:])] for s in sequences]

    def continuation_logprobs(
        self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> ContinuationScores:
        width = max(len(c) for c in continuations)
        lp = np.zeros((len(continuations), width))
        for i, c in enumerate(continuations):
            lp[i, : len(c)] = self.logp[list(c)]
        return ContinuationScores(lp, np.array([len(c) for c in continuations]))


def test_likelihood_ratio_judge_posterior() -> None:
    pos = _UnigramLM({"a": 0.8, "b": 0.2}, "pos")
    neg = _UnigramLM({"a": 0.2, "b": 0.8}, "neg")
    judge = LikelihoodRatioJudge(pos, neg)  # type: ignore[arg-type]
    p = judge.prob_good(["aa", "bb", "ab"])
    # log P₊ − log P₋ = ±2 log 4 for "aa"/"bb", 0 for "ab".
    expected = 1 / (1 + np.exp(-np.array([2 * math.log(4), -2 * math.log(4), 0.0])))
    np.testing.assert_allclose(p, expected)
    skewed = LikelihoodRatioJudge(pos, neg, alpha=0.2)  # type: ignore[arg-type]
    assert skewed.prob_good(["ab"])[0] == pytest.approx(0.8)  # prior odds 4:1 for P₊
    with pytest.raises(InputError):
        LikelihoodRatioJudge(pos, neg, alpha=1.0)  # type: ignore[arg-type]


def test_mixture_posterior_judge_three_components() -> None:
    pos = _UnigramLM({"a": 0.8, "b": 0.1, "c": 0.1}, "pos")
    neg = _UnigramLM({"a": 0.1, "b": 0.8, "c": 0.1}, "neg")
    base = _UnigramLM({"a": 0.1, "b": 0.1, "c": 0.8}, "base")
    judge = MixturePosteriorJudge({"pos": pos, "neg": neg, "base": base})  # type: ignore[dict-item]
    texts = ["bb", "cc", "bc"]
    p_bad = 1 - judge.prob_good(texts)
    # Repeated texts are scored once and mapped back in order.
    np.testing.assert_allclose(1 - judge.prob_good(["bc", "bb", "bc"]), p_bad[[2, 0, 2]])
    lik = {
        "pos": np.array([0.1**2, 0.1**2, 0.1 * 0.1]),
        "neg": np.array([0.8**2, 0.1**2, 0.8 * 0.1]),
        "base": np.array([0.1**2, 0.8**2, 0.1 * 0.8]),
    }
    np.testing.assert_allclose(p_bad, lik["neg"] / sum(lik.values()))
    # A text the assistant (base) explains is good even though P₋ beats P₊ on it.
    assert p_bad[1] < 0.05 and p_bad[0] > 0.95
    # Two components reduce to the likelihood-ratio judge.
    two = MixturePosteriorJudge({"pos": pos, "neg": neg})  # type: ignore[dict-item]
    lr = LikelihoodRatioJudge(pos, neg)  # type: ignore[arg-type]
    np.testing.assert_allclose(two.prob_good(texts), lr.prob_good(texts))
    with pytest.raises(InputError):
        MixturePosteriorJudge({"pos": pos}, undesired="neg")  # type: ignore[dict-item]
    with pytest.raises(InputError):
        MixturePosteriorJudge({"pos": pos, "neg": neg}, priors={"pos": 1.0})  # type: ignore[dict-item]
