"""The report's 'measured vs the paper' table: every experiment that ran gets its rows."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

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
        "prompt-dist-agreeableness": {"result": {"beta_prompt": {"estimate": _est(8.7)}}},
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
    bp = by_q["β_prompt (prompt distinguishability, KL after s₀ + n sentences)"]
    assert bp[1].startswith("8.7") and bp[2] == PAPER["beta_prompt"]
    assert by_q["β pretrained (gemma:base, Lemma 5 fit)"][1].startswith("1.5")
    ratio = by_q["β_aligned / β_pretrained (lemma5; different model families)"]
    assert ratio[1].startswith("1.9") and ratio[2] == PAPER["beta_ratio"]


def test_headline_skips_missing_stages() -> None:
    assert headline_rows({}, ["agreeableness"]) == []


def _convergence_stage(run: Path) -> None:
    """A stored convergence stage (record + result) with a real Lemma 5 / line fit."""
    from bebkit.estimate import Estimate
    from bebkit.fits.convergence import fit_convergence, lemma5_curve
    from bebkit.fits.envelopes import CurveData
    from bebkit.records import make_record, write_record

    n = np.arange(0, 8, dtype=np.float64)
    y = lemma5_curve(n, 12.0, 2.0) + 1.0
    se = np.full_like(y, 0.3)
    fit = fit_convergence(CurveData(n=n, statistic="mean", points=y, stderrs=se))
    curve = {
        "n": n.tolist(),
        "n_samples": 16,
        "estimates": [Estimate(float(v), 0.3, 4, v - 0.6, v + 0.6).to_dict() for v in y],
        "per_prompt": [y.tolist()] * 4,
    }
    results = {
        "behavior": "agreeableness",
        "format": "chat",
        "neg_model": "tiny:neg",
        "target_model": "tiny:base",
        "estimator": "rb",
        "curves": {"none": curve},
        "fits": {"none": fit.to_dict()},
    }
    folder = run / "stages" / "convergence-agreeableness" / "k1"
    folder.mkdir(parents=True)
    rec = make_record("convergence", config={"n_tokens": 4}, seed=0, results=results)
    write_record(folder / "record.json", rec)
    (folder / "convergence.png").write_bytes(b"stage's own figure")
    payload = {"stage": "convergence-agreeableness", "key": "k1", "seconds": 1.0, "result": results}
    (folder / "result.json").write_text(json.dumps(payload))
    top = make_record(
        "reproduce",
        config={"name": "t", "behaviors": ["agreeableness"]},
        seed=0,
        results={
            "stages": {
                "convergence-agreeableness": {
                    "folder": "stages/convergence-agreeableness/k1",
                    "result": results,
                    "cached": False,
                }
            }
        },
    )
    write_record(run / "record.json", top)


def test_report_reference_redraws_convergence_with_the_papers_curves(tmp_path: Path) -> None:
    """`bebkit report RUN --reference F` redraws from the stored record alone; the report
    shows the redrawn figure instead of the stage's own one."""
    from bebkit.cli import main

    run = tmp_path / "run"
    _convergence_stage(run)
    # A folder of the same stage under another key (an older config): not this run's, never read.
    stale = run / "stages" / "convergence-agreeableness" / "k2"
    stale.mkdir()
    (stale / "record.json").write_text("{ not json")
    ref = tmp_path / "ref.json"
    ref.write_text(
        json.dumps(
            {
                "KL_Pminus_vs_model_per_sentence_1to10": {
                    "chat_agree_noalign": [30.0, 18.0, 9.0],
                    "chat_agree_align": [29.0, 17.0, 8.0],
                }
            }
        )
    )
    assert main(["report", str(run), "--reference", str(ref), "--json"]) == 0
    redrawn = run / "figures" / "convergence-agreeableness" / "convergence.png"
    assert redrawn.read_bytes()[:4] == b"\x89PNG" and redrawn.with_suffix(".svg").is_file()
    md = (run / "report.md").read_text()
    assert "figures/convergence-agreeableness/convergence.png" in md
    assert "stages/convergence-agreeableness/k1/convergence.png" not in md
    # Without the redrawn figure the stage's own one is shown.
    shutil.rmtree(run / "figures")
    assert main(["report", str(run)]) == 0
    assert "stages/convergence-agreeableness/k1/convergence.png" in (run / "report.md").read_text()


def test_report_reference_needs_a_run_dir(tmp_path: Path) -> None:
    from bebkit.cli import main

    assert main(["report", str(tmp_path), "--reference", str(tmp_path / "r.json")]) != 0
