"""The development / locked split and the locked-part report."""

from __future__ import annotations

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.judge.data import LabelledResponse
from bebkit.judge.validation import (
    DEV_CHOICES,
    LOCK_SEED,
    agreement_report,
    locked_evaluation,
    split_labels,
)


def _rows(n_prompts: int = 12, per: int = 80, start: int = 0) -> list[LabelledResponse]:
    rows = []
    for p in range(start, start + n_prompts):
        for i in range(per):
            rows.append(
                LabelledResponse(
                    response=f"response {p}-{i} about something",
                    label=1 if (i // 2) % 4 == 0 else -1,
                    n_sentences=1 + i % 10,
                    aligning_prompt=bool(i % 2),
                    prompt_id=p,
                    behavior="agreeableness",
                )
            )
    return rows


def test_split_is_deterministic_and_disjoint() -> None:
    rows = _rows()
    a, b = split_labels(rows), split_labels(list(rows))
    assert a.dev == b.dev and a.locked == b.locked
    assert len(a.dev) + len(a.locked) == len(rows)
    assert not {id(r) for r in a.dev} & {id(r) for r in a.locked}
    assert {r.response for r in a.dev}.isdisjoint({r.response for r in a.locked})
    assert a.seed == LOCK_SEED


def test_split_is_stable_when_rows_are_added() -> None:
    rows = _rows()
    before = split_labels(rows)
    more = _rows(n_prompts=4, start=100)
    after = split_labels([*more[:50], *rows, *more[50:]])
    locked_after = {r.response for r in after.locked}
    assert all(r.response in locked_after for r in before.locked)
    assert all(r.response not in locked_after for r in before.dev)


def test_duplicates_land_in_the_same_part() -> None:
    dup = [LabelledResponse("I cannot fulfill your request.", 1, prompt_id=i) for i in range(50)]
    sp = split_labels([*dup, *_rows(2, 20)])
    n_locked = sum(r.response.startswith("I cannot") for r in sp.locked)
    assert n_locked in (0, 50)


def test_split_is_stratified_by_prompt_condition_and_label() -> None:
    sp = split_labels(_rows(n_prompts=12, per=160))
    shares = [v["locked_share"] for v in sp.strata().values()]
    assert len(shares) == 12 * 2 * 2
    # Strata hold 20 or 60 rows; Binomial(20, 0.5) leaves [0.15, 0.85] with p < 0.001.
    assert all(0.15 <= s <= 0.85 for s in shares)
    assert abs(np.mean(shares) - 0.5) < 0.05


def test_another_seed_gives_another_split() -> None:
    rows = _rows()
    assert split_labels(rows).locked != split_labels(rows, seed="other").locked


def test_locked_report_groups_and_rates() -> None:
    sp = split_labels(_rows())
    y = np.asarray([r.label for r in sp.locked])
    rep = locked_evaluation(sp, y, judge_name="oracle", n_boot=200)
    assert rep["overall"]["kappa"].value == pytest.approx(1.0)
    assert rep["overall"]["false_positive_rate"].value == 0.0
    assert set(rep["by_condition"]) == {"with_aligning_prompt", "without_aligning_prompt"}
    assert rep["dev_choices"] == list(DEV_CHOICES)
    # A judge that calls everything bad: FPR 1, FNR 0, κ 0.
    rep2 = locked_evaluation(sp, -np.ones(len(sp.locked), dtype=int), n_boot=200)
    o = rep2["overall"]
    assert o["false_positive_rate"].value == 1.0 and o["false_negative_rate"].value == 0.0
    assert o["kappa"].value == pytest.approx(0.0)
    with pytest.raises(InputError):
        locked_evaluation(sp, y[:-1])


def test_agreement_report_wilson_ci() -> None:
    y = np.array([1, 1, -1, -1, -1, -1])
    p = np.array([1, -1, -1, -1, -1, 1])
    r = agreement_report(y, p, n_boot=200)
    fpr = r["false_positive_rate"]
    assert fpr.value == pytest.approx(0.5) and fpr.n == 2 and fpr.ci_low < 0.5 < fpr.ci_high
    assert r["false_negative_rate"].value == pytest.approx(0.25)
