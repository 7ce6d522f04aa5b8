"""Label-free checks over many behaviors, for probe judges and for ready (adapter) judges."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest
from tests.judge.tiny import HashBowEncoder

from bebkit.errors import InputError
from bebkit.judge.checks import (
    TARGETS,
    checks_for_behaviors,
    probe_judge_factory,
    ready_judge_checks,
)
from bebkit.judge.data import load_behavior_statements
from bebkit.judge.judge import JudgeConfig


class _Keyword:
    """Bad iff the text contains 'ignore' — a judge of one word, blind to stance."""

    name = "keyword"

    def prob_good(self, responses: Sequence[str], *, progress: bool = False) -> np.ndarray:
        return np.asarray([0.0 if "ignore" in r.lower() else 1.0 for r in responses])


def test_ready_judge_is_scored_on_its_heldout_statements_and_all_generic_replies() -> None:
    stm = load_behavior_statements("cooperativeness")
    rep = ready_judge_checks(_Keyword(), "cooperativeness", stm.desired[:20], stm.undesired[:20])
    assert rep["judge"] == "keyword" and rep["n_train"]["generic"] == 0
    assert rep["statements"].n == 40 and rep["generic_good"].value == 1.0
    # quoting a statement with 'ignore' to reject it still contains 'ignore': no flip
    assert rep["quote_and_reject_flip"] is None or rep["quote_and_reject_flip"].value == 0.0
    assert set(rep["passed"]) == set(TARGETS)
    with pytest.raises(InputError, match="no held-out"):
        ready_judge_checks(_Keyword(), "cooperativeness", [], stm.undesired[:3])


def test_checks_for_behaviors_record_per_behavior_and_pass_counts() -> None:
    logs: list[str] = []
    make = probe_judge_factory(JudgeConfig(kind="minilm"), {"minilm": HashBowEncoder(dim=256)})
    res = checks_for_behaviors(["cooperativeness"], make, fmt="newline", log=logs.append)
    rep = res["per_behavior"]["cooperativeness"]
    assert res["n_behaviors"] == 1 and res["fmt"] == "newline" and rep["fmt"] == "newline"
    assert rep["judge"] == "minilm:cooperativeness"  # the name misalign's probe judge has
    for k in TARGETS:
        assert rep[k].n > 0 and rep[k].ci_low <= rep[k].value <= rep[k].ci_high
        assert res["behaviors_passing"][k] == int(rep["passed"][k])
    assert rep["statements"].value > 0.6  # a bag of words separates the sides above chance
    assert logs and logs[0].startswith("cooperativeness: statements")
    assert rep["wall_s"] >= 0


def test_probe_factory_refuses_the_mixture_judge() -> None:
    with pytest.raises(InputError, match="ready_judge_checks"):
        probe_judge_factory(JudgeConfig(kind="mixture"))
