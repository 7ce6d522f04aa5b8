"""The report's 'measured vs the paper' table: every experiment that ran gets its rows."""

from __future__ import annotations

from typing import Any

from bebkit.pipeline.report import PAPER, headline_rows


def _est(v: float, n: int = 10) -> dict[str, Any]:
    return {"value": v, "stderr": 0.1, "ci_low": v - 0.2, "ci_high": v + 0.2, "n": n}


def _stages() -> dict[str, Any]:
    curve = {"n": [0, 1, 2], "fraction_good": [_est(0.9, 320), _est(0.7, 320), _est(0.5, 320)]}
    return {
        "probes": {
            "result": {"summary": {"last": {"mean_accuracy": _est(0.92, 20), "n_behaviors": 20}}}
        },
        "convergence-agreeableness": {
            "result": {
                "lengths": {
                    "none": {"epsilon": 0.1, "lemma5": {"theorem1": _est(22.1)}},
                }
            }
        },
        "misalign-agreeableness": {
            "result": {
                "curves": {"none": curve, "aligned": curve},
                "sigmoid": {"none": {"centre": _est(4.0)}, "aligned": {"centre": _est(6.0)}},
                "aligning_delay": _est(2.0),
                "theorem2_delay": {"predicted": 9.64},
            }
        },
        "pretrained-agreeableness": {
            "result": {
                "target_model": "gemma:base",
                "fits": {"none": {"lemma5": {"beta": _est(1.5)}}},
                "beta_ratio": {"lemma5": _est(1.9)},
            }
        },
    }


def test_headline_has_table2_curves_and_delay() -> None:
    rows = headline_rows(_stages(), ["agreeableness"])
    by_q = {q: (b, o, p) for b, q, o, p in rows}
    t2 = by_q["Table 2 probe accuracy, mean over behaviors (last layer)"]
    assert t2[0] == "20 behaviors" and t2[1].startswith("0.92") and t2[2] == PAPER["table2"]
    good = by_q["% good responses, n = 0 → 2 (no aligning prompt)"]
    assert good[1].startswith("90.0 %") and "→ 50.0 %" in good[1] and "(n=320)" in good[1]
    assert good[2] == PAPER["good_agreeableness_none"]
    assert by_q["Lemma 7 sigmoid centre, sentences (aligning prompt)"][1].startswith("6")
    delay = by_q["aligning-prompt delay, sentences (measured, vs Theorem 2)"][1]
    assert delay.startswith("2") and delay.endswith("Theorem 2 predicts 9.64")
    thm1 = by_q["Theorem 1 prompt length for ε = 0.1 (Lemma 5 parameters, no aligning prompt)"]
    assert thm1[1].startswith("22.1")
    assert by_q["β pretrained (gemma:base, Lemma 5 fit)"][1].startswith("1.5")
    ratio = by_q["β_aligned / β_pretrained (lemma5; different model families)"]
    assert ratio[1].startswith("1.9") and ratio[2] == PAPER["beta_ratio"]


def test_headline_skips_missing_stages() -> None:
    assert headline_rows({}, ["agreeableness"]) == []
