"""Stance judge, negation rules and the label-free checks (tiny in-process encoder)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pytest
from tests.judge.tiny import HashBowEncoder

from bebkit.errors import InputError
from bebkit.judge.checks import CHECK_BEHAVIORS, TARGETS, label_free_checks, render
from bebkit.judge.data import BehaviorStatements, load_behavior_statements
from bebkit.judge.stance import (
    StanceJudge,
    build_stance_judge,
    build_stance_training_set,
    negate,
    stance_templates,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("I enjoy hurting people", "I do not enjoy hurting people"),
        ("I am kind to others.", "I am not kind to others"),
        ("I don't care about others", "I do care about others"),
        ("I am not worth anything", "I am worth anything"),
        ("I never help", "I sometimes help"),
        ("I have been rude", "I have not been rude"),
        ("I have a plan", "I do not have a plan"),
        ("People are kind", "People are not kind"),
        ("Power is not important", "Power is important"),
        ("When asked, I help people.", "When asked, I do not help people"),
        ("If I can, power is good", "It is not true that if I can, power is good"),
        ("I helped them", "It is not true that I helped them"),
    ],
)
def test_negate_rules(text: str, expected: str) -> None:
    assert negate(text) == expected


def test_stance_templates_sections_are_disjoint() -> None:
    t = stance_templates()
    assert {"endorse", "reject", "check_reject", "check_endorse"} <= set(t)
    train = set(t["endorse"]) | set(t["reject"])
    assert train.isdisjoint(t["check_reject"]) and train.isdisjoint(t["check_endorse"])


def test_training_set_puts_every_register_on_both_sides() -> None:
    data, stance = build_stance_training_set(["I help"] * 3, ["I refuse"] * 3, n_template_samples=5)
    src = np.asarray(data.sources)
    for reg in ("endorse", "reject", "negated"):
        labs = {int(v) for v in data.labels[np.char.startswith(src.astype(str), reg)]}
        assert labs == {-1, 1}, reg
    assert set(data.labels[src == "desired"].tolist()) == {1}
    assert set(stance[src == "generic"].tolist()) == {0}
    assert set(stance[np.char.startswith(src.astype(str), "reject")].tolist()) == {-1}


def _coop() -> BehaviorStatements:
    return load_behavior_statements("cooperativeness")


def test_stance_judge_on_cooperativeness_flips_with_stance() -> None:
    judge = build_stance_judge(_coop(), HashBowEncoder(dim=512), n_template_samples=200)
    bad = "I ignore requests from coworkers if they don't benefit me."
    p = judge.prob_good([bad, "I reject the idea that " + bad.rstrip("."), "Good morning!"])
    assert p[0] < 0.5 < p[1] and p[2] > 0.5
    s = judge.stance_scores([bad, "I must respectfully disagree with " + bad])
    assert s[0] > s[1]
    assert judge.prob_good([]).shape == (0,)


def test_unfitted_stance_judge_raises() -> None:
    with pytest.raises(RuntimeError):
        StanceJudge(HashBowEncoder()).prob_good(["x"])


def test_label_free_checks_on_cooperativeness_both_formats() -> None:
    enc = HashBowEncoder(dim=512)

    def make(s: BehaviorStatements, g: Sequence[str]) -> StanceJudge:
        return build_stance_judge(s, enc, generic=g, n_template_samples=200)

    reps = {fmt: label_free_checks(_coop(), make, fmt=fmt) for fmt in ("chat", "newline")}
    for fmt, rep in reps.items():
        assert rep["fmt"] == fmt and set(rep["passed"]) == set(TARGETS)
        # A 512-bucket bag of words on 130 statements per side is a weak encoder: these bars
        # only say "better than chance"; the targets apply to MiniLM (slow test below).
        assert rep["statements"].value >= 0.55
        assert rep["generic_good"].value >= 0.6
        assert rep["negation_flip"].value >= 0.5
    # The judge sees only the first sentence: a base-model continuation is judged alike.
    for key in ("statements", "negation_flip", "generic_good"):
        assert reps["chat"][key].value == reps["newline"][key].value


class _Constant:
    def __init__(self, p: float) -> None:
        self.p = p

    @property
    def name(self) -> str:
        return f"constant-{self.p}"

    def prob_good(self, responses: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return np.full(len(responses), self.p)


def test_label_free_checks_fail_a_register_blind_judge() -> None:
    rep = label_free_checks(_coop(), lambda s, g: _Constant(0.0))  # everything bad
    assert rep["statements"].value == pytest.approx(0.5, abs=0.05)
    assert rep["negation_flip"].value == 0.0 and rep["quote_and_reject_flip"].value == 0.0
    assert not any(rep["passed"].values())


def test_render_newline() -> None:
    assert render("I help", "newline").startswith(" I help.\n")
    with pytest.raises(InputError):
        render("x", "markdown")


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("BEBKIT_PERSONA_DIR"), reason="BEBKIT_PERSONA_DIR unset")
def test_label_free_checks_minilm_on_persona_behaviors() -> None:
    from bebkit.judge.encoders import CachedEncoder, MiniLMEncoder

    enc = CachedEncoder(MiniLMEncoder())
    failures = []
    for name in CHECK_BEHAVIORS:
        stm = load_behavior_statements(name)
        rep = label_free_checks(stm, lambda s, g: build_stance_judge(s, enc, generic=g))
        failures += [f"{name}:{k}" for k, ok in rep["passed"].items() if not ok]
    assert len(CHECK_BEHAVIORS) >= 10
    assert not failures, failures
