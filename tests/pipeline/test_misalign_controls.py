"""The copy audit of the misalign experiment: echoes of the prompt are counted and their
verdicts separated from the rest."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from bebkit.estimators.behavior import Response, behavior_curves
from bebkit.pipeline.misalign import MisalignSettings, copy_audit, second_opinion


def _r(pid: int, n: int, text: str, label: int) -> Response:
    return Response(pid, n, "none", text, text, 5, True, 0.5, label)


def test_copy_audit_separates_echoes_from_other_replies() -> None:
    prompts = [SimpleNamespace(sentences=("I never help anyone.", "People annoy me a lot."))]
    responses = [
        _r(0, 1, "I never help anyone at all.", -1),  # copies sentence 1: bad
        _r(0, 2, "People annoy me a lot!", -1),  # copies sentence 2 (seen at n = 2): bad
        _r(0, 1, "People annoy me a lot.", 1),  # sentence 2 is not in the prompt at n = 1
        _r(0, 2, "I am happy to help you.", 1),
        _r(0, 0, "I never help anyone.", -1),  # n = 0 has no prompt: not audited
    ]
    a = copy_audit(responses, prompts)
    assert a["copied"]["value"] == 0.5 and a["copied"]["n"] == 4
    assert a["bad_among_copied"]["value"] == 1.0 and a["bad_among_copied"]["n"] == 2
    assert a["bad_among_others"]["value"] == 0.0 and a["bad_among_others"]["n"] == 2


# ---------------------------------------------------------------- second judges


def _judged(texts_by_cell: dict[tuple[int, int], list[str]], judge: Any) -> list[Response]:
    from bebkit.estimators.behavior import judge_responses

    rs = [
        Response(pid, n, "none", t, t, 3, True)
        for (pid, n), texts in texts_by_cell.items()
        for t in texts
    ]
    return judge_responses(rs, judge)


def _says_bad_on(word: str) -> Any:
    return lambda texts: np.array([0.1 if word in t else 0.9 for t in texts])


def _cells(first: list[str], last: list[str]) -> dict[tuple[int, int], list[str]]:
    # two prompts, responses after n = 0, 1 and 3
    return {(p, n): (first if n <= 1 else last) for p in (0, 1) for n in (0, 1, 3)}


def test_second_opinion_of_the_same_judge_agrees_exactly() -> None:
    main = _says_bad_on("hate")
    rs = _judged(_cells(["glad to help"] * 4, ["i hate this", "glad"] * 2), main)
    ctl = _judged(_cells(["fine"] * 4, ["fine", "hate"] * 2), main)
    op = second_opinion(main, rs, rs[:3], ctl)
    assert op["agreement_with_main"]["kappa"]["value"] == 1.0
    assert op["agreement_with_main"]["n"] == len(rs) + len(ctl)
    mine = behavior_curves(rs)["none"]
    assert op["curves"]["none"]["fraction_good"][-1]["value"] == mine.fraction_good()[-1].value
    # the control goes 100 % -> 50 % good under this judge: a drop of exactly 0.5
    assert op["control"]["drop_first_to_last"]["value"] == 0.5
    assert op["drops"]["none"]["drop_first_to_last"]["value"] == 0.5


def test_a_judge_that_ignores_register_sees_a_flat_control() -> None:
    """The main judge calls every long first-person reply bad (a register judge); a judge of
    content does not: its control drop is exactly 0 and not flagged, the main judge's is."""
    register = _says_bad_on("i ")
    content = _says_bad_on("hate")
    rs = _judged(_cells(["glad to help"] * 4, ["i hate you"] * 4), register)
    ctl = _judged(_cells(["glad to help"] * 4, ["i like you"] * 4), register)
    main_ctl = behavior_curves(ctl)["none"].fraction_good()
    assert main_ctl[-1].value < main_ctl[0].value  # the main judge's control declines
    op = second_opinion(content, rs, [], ctl)
    assert op["control"]["drop_first_to_last"]["value"] == 0.0
    assert op["control"]["declines"] is False
    assert op["drops"]["none"]["declines"] is True  # the P- curve still falls under it
    assert op["g_minus"] is None
    assert op["agreement_with_main"]["kappa"]["value"] < 1.0


def test_second_judges_must_differ_from_the_main_judge() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="second_judges"):
        MisalignSettings(behavior="cooperativeness", judge="minilm", second_judges=("minilm",))
    with pytest.raises(ValidationError, match="second_judges"):
        MisalignSettings(behavior="cooperativeness", second_judges=("minilm", "minilm"))
    ok = MisalignSettings(behavior="cooperativeness", second_judges=("minilm", "hidden"))
    assert ok.second_judges == ("minilm", "hidden")


def test_judges_figure_draws_every_judge_and_is_skipped_without_second_judges(
    tmp_path: Any,
) -> None:
    from bebkit.reporting.misalign import plot_judges_compared

    main = _says_bad_on("hate")
    rs = _judged(_cells(["glad to help"] * 4, ["i hate this", "glad"] * 2), main)
    ctl = _judged(_cells(["fine"] * 4, ["fine", "hate"] * 2), main)
    curves = {c: cv.to_dict() for c, cv in behavior_curves(rs).items()}
    op = second_opinion(_says_bad_on("i "), rs, [], ctl)
    results = {"judge": "mixture[neg/base]:tiny", "curves": curves, "control": None}
    assert plot_judges_compared(results, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()
    results["second_judges"] = {"register": op}
    png = plot_judges_compared(results, tmp_path / "judges.png", title="t")
    assert png is not None and png.read_bytes()[:4] == b"\x89PNG"


def test_a_finished_judging_pass_is_reused_and_other_responses_are_rejudged(
    tmp_path: Any,
) -> None:
    from bebkit.checkpoint import Checkpoint
    from bebkit.pipeline.misalign import judged

    calls: list[int] = []
    word = _says_bad_on("hate")

    def judge(texts: list[str]) -> Any:
        calls.append(len(texts))
        return word(texts)

    rs = [Response(0, n, "none", t, t, 3, True) for n, t in enumerate(["i hate it", "glad"])]
    first = judged(Checkpoint(tmp_path), "judge", rs, judge, "first_sentence")
    assert [r.label for r in first] == [-1, 1] and calls == [2]
    again = judged(Checkpoint(tmp_path), "judge", rs, judge, "first_sentence")
    assert again == first and calls == [2]  # not judged again
    other = [*rs, Response(1, 1, "none", "hate", "hate", 1, True)]
    third = judged(Checkpoint(tmp_path), "judge", other, judge, "first_sentence")
    assert calls == [2, 3] and [r.label for r in third] == [-1, 1, -1]


def test_good_rates_are_clustered_by_prompt() -> None:
    """g- and g+ are rates over responses of a few prompts: two prompts whose responses are
    all good and two all bad are four observations, not 128, so the interval must be wider
    than the plain Wilson interval of 64/128 (the old one)."""
    from bebkit.estimate import wilson_interval
    from bebkit.pipeline.misalign import _rate

    rs = [_r(p, 19, "x", 1 if p < 2 else -1) for p in range(4) for _ in range(32)]
    g = _rate(rs, "g-")
    plain = wilson_interval(64, 128)
    assert g.value == 0.5 and "clustered" in g.method and g.n == 128
    assert g.ci_low is not None and plain.ci_low is not None
    assert g.ci_high - g.ci_low > 3 * (plain.ci_high - plain.ci_low)
    # independent-looking prompts (each half good): no design effect
    mixed = [_r(p, 19, "x", 1 if k % 2 else -1) for p in range(4) for k in range(32)]
    assert _rate(mixed, "g-").ci_low == pytest.approx(plain.ci_low)


def test_p_minus_responds_in_its_own_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """g- is P-'s good rate on its own prompts: its responses are drawn in the prompt's own
    text (the header it sampled under), the target's in the target view."""
    import bebkit.estimators.behavior as behavior
    from bebkit.estimators.behavior import ResponseConfig, sample_responses

    seen: list[list[int]] = []

    def fake(model: Any, ctxs: Any, n: int, stop: Any, **kw: Any) -> list[list[list[int]]]:
        seen.extend(list(c) for c in ctxs)
        return [[[1]] * n for _ in ctxs]

    monkeypatch.setattr(behavior, "sample_many", fake)
    from bebkit.estimators.prompts import SampledPrompt

    pr = SampledPrompt(tokens=(1, 2), boundaries=(0, 2), header_len=0)
    monkeypatch.setattr(SampledPrompt, "context", lambda self, m, n: [7, 7, n])
    monkeypatch.setattr(SampledPrompt, "target_context", lambda self, m, n, s: [9, n])
    lm = SimpleNamespace(decode=lambda ids: "a", name="m")
    for own, want in ((True, [7, 7, 1]), (False, [9, 1])):
        seen.clear()
        cfg = ResponseConfig(n_responses=2, ns=(1,), conditions=("none",), own_context=own)
        sample_responses(lm, [pr], rng=0, config=cfg, stop_ids=[0])  # type: ignore[arg-type]
        assert seen == [want]
