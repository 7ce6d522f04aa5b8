"""The authors'-prompts comparison: measured good rate vs the authors' hand labels per marker."""

from __future__ import annotations

import pytest

from bebkit.estimate import wilson_interval
from bebkit.estimators.behavior import Response
from bebkit.estimators.prompts import AuthorsGoodCounts
from bebkit.fits.parity import authors_prompt_parity


def _r(pid: int, n: int, cond: str, good: bool) -> Response:
    return Response(pid, n, cond, "x", "x", 3, True, 0.9 if good else 0.1, 1 if good else -1)


def _counts() -> dict[int, AuthorsGoodCounts]:
    # prompt 7: markers close sentences 1 and 3; prompt 9: a misspelt marker, so 1 and 4
    return {
        7: AuthorsGoodCounts("b", 7, (30, 10), (20, 2), (1, 3)),
        9: AuthorsGoodCounts("b", 9, (32, 16), (31, 0), (1, 4)),
    }


def test_pools_the_same_prompts_on_both_sides() -> None:
    sources = ["authors:b:9", "authors:b:7", "file:3"]
    rs = (
        [_r(0, 1, "none", g) for g in (True, True, False, True)]  # prompt 9 at n = 1: 3/4
        + [_r(1, 1, "none", g) for g in (True, False)]  # prompt 7 at n = 1: 1/2
        + [_r(1, 3, "none", g) for g in (False, False, True)]  # prompt 7 at n = 3: 1/3
        # prompt 9's 2nd marker closes sentence 4, never read here (odd n only): skipped
        + [_r(0, 3, "none", True)]
        + [_r(2, 1, "none", True) for _ in range(5)]  # not an authors' prompt: ignored
        + [_r(0, 1, "aligned", False)]
    )
    rows = {(r.condition, r.marker): r for r in authors_prompt_parity(rs, sources, _counts())}
    assert set(rows) == {("none", 1), ("none", 2), ("aligned", 1)}
    m1 = rows[("none", 1)]
    assert m1.measured == wilson_interval(4, 6)
    assert m1.authors == wilson_interval(20 + 31, 64)
    assert sorted(m1.prompt_ids) == [7, 9] and sorted(m1.sentences) == [1, 1]
    m2 = rows[("none", 2)]
    assert m2.prompt_ids == (7,) and m2.sentences == (3,)
    assert m2.measured == wilson_interval(1, 3) and m2.authors == wilson_interval(2, 32)
    a1 = rows[("aligned", 1)]
    assert a1.prompt_ids == (9,) and a1.measured == wilson_interval(0, 1)
    assert a1.authors == wilson_interval(32, 32)
    assert m1.to_dict()["authors"]["value"] == pytest.approx(51 / 64)


def test_unjudged_responses_and_unknown_prompts_give_no_rows() -> None:
    unjudged = Response(0, 1, "none", "x", "x", 3, True)
    assert authors_prompt_parity([unjudged], ["authors:b:7"], _counts()) == []
    assert authors_prompt_parity([_r(0, 1, "none", True)], ["authors:b:8"], _counts()) == []
