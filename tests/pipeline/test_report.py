"""The run report (issue 18): the answer first, measured vs the paper by experiment, methods from
the record, a section per stage, comparison of runs, and model text that stays inert."""

from __future__ import annotations

import html
import json
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from report_fixtures import authors_figures, make_run

from bebkit.pipeline.report import (
    build_report,
    console_lines,
    headline_rows,
    md_text,
    write_comparison,
    write_report,
)


@pytest.fixture(autouse=True)
def _no_reference_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEBKIT_REFERENCE_DIR", raising=False)


def _external_refs(page: str) -> list[str]:
    """src/href/url() values that would load or link outside the page's folder."""
    refs = re.findall(r"""(?:src|href)\s*=\s*["']?([^"'\s>]+)""", page, flags=re.I)
    refs += re.findall(r"url\(([^)]*)\)", page, flags=re.I)
    return [r for r in refs if re.match(r"\s*(https?:|//|javascript:)", r, flags=re.I)]


def test_report_has_every_section(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    figs = authors_figures(tmp_path / "authors-figures.json")
    md, page = build_report(run, paper_figures=figs)
    for doc in (md, html.unescape(page)):
        for heading in ("The answer", "Measured vs the paper", "Methods", "Limitations",
                        "Table 1", "Table 2", "β, β′ and σ²", "Prompt distinguishability",
                        "KL convergence", "Behavior expectation", "Pretrained vs aligned",
                        "Models and components", "LoRA recipe", "Timings",
                        "Software and machine", "Behavior data and splits"):  # fmt: skip
            assert heading in doc, heading
        # The answer: one sentence each, with CIs, next to the paper's.
        assert "Misaligning sentences until misbehaviour" in doc
        assert "n* = 2.5 [1.7, 3.3]" in doc and "floored Lemma 5 fit" in doc
        assert "n½ = 2.8 [2.6, 3]" in doc and "inside the measured n = 0–5" in doc
        assert (
            "Δn½ = 1.3 [0.5, 2.1]" in doc
            and (
                "Theorem 2 upper bound on the length with the aligning prompt: 7.5 sentences; "
                "measured centre 4.1, within the bound"
            )
            in doc
        )
        assert "β = 6 [5.8, 6.2] nats" in doc
        # Paper column: computed from the authors' curves, typed only where no curve exists.
        assert "on the authors' fig. 3a / 11 curve" in doc
        assert "Lemma 7 fit of the authors' fig. 12 curve" in doc
        # The authors' own prompts: identical inputs, their hand labels in the paper column.
        assert "% good after '[/INST]' marker 2 of the authors' prompts" in doc
        assert "marker k closes sentence 3" in doc and "62.5 %" in doc and "12.5 %" in doc
        assert "hand labels of Llama-2-13b-chat on these 2 prompts" in doc
        assert "typed from the paper (§4.1, fig. 2a; app. L.1 fig. 8a)" in doc
        # Each KL's unit as measured: per sentence here (beta-sigma), 8 tokens elsewhere; a
        # per-sentence β is not the authors' 8-token quantity, and the row says so.
        assert "nats (KL of the next sentence)" in doc and "nats (KL of the next 8 tokens)" in doc
        assert "KL of the next sentence vs the paper's next 8 tokens" in doc
        # Not comparable, and why.
        assert "different model families (tiny-chat vs tiny-base)" in doc
        # Methods from the record: re-run command, seeds, versions, machine, timings.
        assert "bebkit reproduce configs/demo.yaml --quick --out" in doc
        assert "abc123" in doc and "abc-dirty" in doc and "12.5 s" in doc
        # Every stage has its own section, with the examples page linked.
        for stage in ("components-agreeableness", "probes", "beta-sigma-agreeableness",
                      "prompt-dist-agreeableness", "convergence-agreeableness",
                      "misalign-agreeableness", "pretrained-agreeableness"):  # fmt: skip
            assert f"stage `{stage}`" in doc or f'id="{stage}"' in doc, stage
        assert "stages/misalign-agreeableness/k005/examples.html" in doc
    # HTML: tables are tables, figures are inlined, nothing is loaded from elsewhere.
    assert page.count("<table>") >= 15 and "<pre>" not in page
    assert page.count('src="data:image/png;base64,') >= 7
    assert "<script" not in page.lower() and _external_refs(page) == []
    # Markdown: figures by relative path for READMEs.
    assert "](stages/convergence-agreeableness/k004/convergence.png)" in md


def test_report_without_paper_figures_says_typed(tmp_path: Path) -> None:
    md, page = build_report(make_run(tmp_path / "run", behavior="cooperativeness"))
    assert "the paper's stated values only" in html.unescape(page)
    assert "typed from the paper" in md
    # A behavior the paper never measured: every paper row is marked not comparable.
    assert "different behavior (the paper's agreeableness)" in html.unescape(page)


def test_model_text_is_inert(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", payload=True)
    md_path, html_path = write_report(run)
    page, md = html_path.read_text(), md_path.read_text()
    assert "alert(1)" in page  # the responses are shown …
    low = page.lower()
    assert (
        "<script" not in low
        and "<img src=x" not in low
        and "onerror=" not in low.replace("onerror=&#34;", "").replace("onerror=&quot;", "")
    )
    assert "&lt;script&gt;alert(1);document.title=" in page
    assert "javascript:" not in re.sub(
        r"&[a-z#0-9]+;", "", " ".join(re.findall(r'href="[^"]*"', page))
    )
    assert _external_refs(page) == []
    # Markdown: no raw tag, no link or image can form from model text.
    assert "<script" not in md and "<img" not in md
    assert "](javascript:" not in md and "](http://evil" not in md
    assert "&lt;script&gt;alert\\(1\\);document.title=" in md
    # The fit error text (also untrusted) is escaped too.
    assert md_text("[a](javascript:x)") == "\\[a\\]\\(javascript:x\\)"


def test_headline_rows_and_console_lines(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    rec = json.loads((run / "record.json").read_text())
    rows = headline_rows(rec["results"]["stages"], ["agreeableness"])
    assert [q for _, q, _, _ in rows] == [
        "Misaligning sentences until misbehaviour",
        "Delay bought by the aligning prompt",
        "How distinguishable the behavior is (β)",
    ]
    assert rows[0][2].startswith("n* 2.5 [1.7, 3.3], n½ 2.8") and "(in range)" in rows[0][2]
    assert rows[1][2] == "1.3 [0.5, 2.1]" and rows[2][2] == "β 6 [5.8, 6.2]"
    assert headline_rows({}, ["agreeableness"]) == []
    lines = console_lines(rec, run)
    assert len(lines) == 4 and lines[0].startswith("tiny-chat / agreeableness: sentences to")
    # the β part names its symbol once (it read "β β 6 [5.8, 6.2]")
    assert "; β 6 [5.8, 6.2] (paper" in lines[0] and "β β" not in lines[0]
    assert lines[-2].endswith("record.json") and "report.html" in lines[-1]


def test_compare_runs_side_by_side(tmp_path: Path) -> None:
    from bebkit.cli import main

    a = make_run(tmp_path / "a", name="before", payload=False)
    b = make_run(tmp_path / "b", name="after", model="tiny-chat-v2", payload=False)
    # run b measured β over 8 tokens, run a per sentence: no shared unit cell for that row
    rec = json.loads((b / "record.json").read_text())
    del rec["results"]["stages"]["beta-sigma-agreeableness"]["result"]["unit"]
    # run b has a declining control and a second judge; run a has no control at all
    drop = {"value": 0.43, "stderr": 0.04, "n": 160, "ci_low": 0.35, "ci_high": 0.51}
    mis = rec["results"]["stages"]["misalign-agreeableness"]["result"]
    mis["control"] = {"curve": {}, "drop_first_to_last": drop, "declines": True}
    mis["second_judges"] = {"minilm": {
        "agreement_with_main": {"kappa": {"value": 0.41, "ci_low": 0.3, "ci_high": 0.5}},
        "control": {"drop_first_to_last": {**drop, "value": 0.02, "ci_low": -0.05,
                                           "ci_high": 0.09}, "declines": False}}}  # fmt: skip
    (b / "record.json").write_text(json.dumps(rec))
    md, page = write_comparison([a, b], tmp_path / "cmp")
    rows = md.read_text().splitlines()
    control_row = next(x for x in rows if x.startswith("| agreeableness | control |"))
    assert "no control curve in this run" in control_row and "DECLINES" in control_row
    assert "43.0 % [35.0, 51.0]" in control_row
    second = next(x for x in rows if x.startswith("| agreeableness | second judges |"))
    assert "minilm: κ with the main judge 0.41 [0.3, 0.5]" in second and "2.0 %" in second
    assert "Judges and controls" in page.read_text()
    beta_row = next(x for x in md.read_text().splitlines() if x.startswith("| agreeableness | β |"))
    assert "differs between runs" in beta_row
    assert "(nats (KL of the next sentence))" in beta_row
    assert "(nats (KL of the next 8 tokens))" in beta_row
    text = page.read_text()
    assert "before" in text and "after" in text and "tiny-chat-v2" in text
    assert text.count('src="data:image/png;base64,') == 2 * 5  # 5 figures per run
    assert "Figures side by side" in text and _external_refs(text) == []
    assert "| before | after | paper |" in md.read_text()
    out = tmp_path / "cli"
    assert main(["report", str(a), str(b), "--out", str(out), "--json"]) == 0
    assert (out / "compare.html").is_file() and (a / "report.html").is_file()


# --------------------------------------------------------------------------------------------
# `bebkit report RUN --paper-figures F` redraws the KL figures from the stored records
# --------------------------------------------------------------------------------------------


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
        "conditions": ["none"],
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


def test_report_reference_redraws_convergence_with_the_papers_curves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`bebkit report RUN --paper-figures F` redraws from the stored record alone; the report
    shows the redrawn figure instead of the stage's own one."""
    from bebkit.cli import main

    run = tmp_path / "run"
    _convergence_stage(run)
    # A folder of the same stage under another key (an older config): not this run's, never read.
    stale = run / "stages" / "convergence-agreeableness" / "k2"
    stale.mkdir()
    (stale / "record.json").write_text("{ not json")
    ref = authors_figures(tmp_path / "ref.json")
    assert main(["report", str(run), "--paper-figures", str(ref), "--json"]) == 0
    capsys.readouterr()
    redrawn = run / "figures" / "convergence-agreeableness" / "k1" / "convergence.png"
    assert redrawn.read_bytes()[:4] == b"\x89PNG" and redrawn.with_suffix(".svg").is_file()
    md = (run / "report.md").read_text()
    assert "figures/convergence-agreeableness/k1/convergence.png" in md
    assert "stages/convergence-agreeableness/k1/convergence.png" not in md
    assert "on the authors' fig. 3a / 11 curve" in md  # the paper column from --paper-figures
    # Without a figures file the report still redraws from the record (no paper curve): the
    # stage's own figure — drawn by whatever code ran the stage, here not even a PNG — is never
    # shown, so a reused stage cannot show a stale figure.
    shutil.rmtree(run / "figures")
    monkeypatch.delenv("BEBKIT_REFERENCE_DIR", raising=False)
    assert main(["report", str(run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["redrawn_figures"] == [str(redrawn)]
    assert redrawn.read_bytes()[:4] == b"\x89PNG"
    md = (run / "report.md").read_text()
    assert "figures/convergence-agreeableness/k1/convergence.png" in md
    assert "stages/convergence-agreeableness/k1/convergence.png" not in md
    assert not list((run / "figures" / "convergence-agreeableness" / "k1").glob(".draw-*"))
    # The same record redrawn gives the same bytes (no date, fixed SVG ids): archives stay clean.
    svg = redrawn.with_suffix(".svg").read_bytes()
    assert main(["report", str(run)]) == 0
    assert redrawn.with_suffix(".svg").read_bytes() == svg
    # A record that cannot be drawn keeps the stage's own figure.
    rec_path = run / "stages" / "convergence-agreeableness" / "k1" / "record.json"
    # The earlier redraw is removed, not shown for a record it was not drawn from.
    rec_path.write_text(json.dumps({"results": {"curves": {"none": {"n": "bad"}}}}))
    assert main(["report", str(run)]) == 0
    assert "stages/convergence-agreeableness/k1/convergence.png" in (run / "report.md").read_text()
    assert not redrawn.exists()
    # An unreadable stage record or figures file never stops the report.
    rec_path.write_text("{ not json")
    bad_ref = tmp_path / "bad.json"
    bad_ref.write_text("[1, 2]")
    assert main(["report", str(run), "--paper-figures", str(bad_ref)]) == 0


@pytest.mark.parametrize(
    ("layout", "expected_x"), [("alternating", [1.0, 3.0]), ("newline", [1.0, 2.0])]
)
def test_redrawn_convergence_puts_the_papers_markers_on_the_stage_figures_axis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layout: str, expected_x: list[float]
) -> None:
    """The redrawn figure must place the authors' curve where the stage's own figure and the
    report's table do: marker k at sentence 2k − 1 in the alternating layout, k otherwise."""
    from bebkit.pipeline.report import redraw_kl_figures
    from bebkit.reporting import kl_figures

    run = tmp_path / "run"
    _convergence_stage(run)
    rec_path = run / "stages" / "convergence-agreeableness" / "k1" / "record.json"
    rec = json.loads(rec_path.read_text())
    rec["results"]["format"] = layout
    rec_path.write_text(json.dumps(rec))
    seen: dict[str, Any] = {}

    def capture(results: Any, path: Any, **kw: Any) -> dict[str, str]:
        seen.update(kw)
        return {}

    monkeypatch.setattr(kl_figures, "convergence_figure", capture)
    redraw_kl_figures(run, authors_figures(tmp_path / "ref.json"))
    x, _ = seen["reference"]["none"]
    assert np.asarray(x, dtype=float).tolist()[:2] == expected_x


def test_report_reference_needs_a_run_dir(tmp_path: Path) -> None:
    from bebkit.cli import main

    assert main(["report", str(tmp_path), "--paper-figures", str(tmp_path / "r.json")]) != 0


def test_report_of_a_failed_partial_run(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run", payload=False)
    rec = json.loads((run / "record.json").read_text())
    rec["status"] = "failed"
    rec["results"]["error"] = "RuntimeError: <b>boom</b>"
    for name in list(rec["results"]["stages"]):
        if name.startswith(("misalign", "pretrained")):
            del rec["results"]["stages"][name]
    (run / "record.json").write_text(json.dumps(rec))
    _md, page = build_report(run)
    assert "The run failed" in page and "&lt;b&gt;boom&lt;/b&gt;" in page
    assert "not measured in this run" in page


def test_paper_centre_is_fitted_on_the_sentence_axis_of_320_responses() -> None:
    """The authors' % good curves count '[/INST]' markers; bebkit's measured centre counts
    sentences. A curve planted with centre 9 sentences (marker k at sentence 2k − 1) and
    pooled over 320 responses per point must give the paper centre ≈ 9, not ≈ 5 markers."""
    from types import SimpleNamespace

    from bebkit.paper import ReferenceCurve
    from bebkit.pipeline.report import PAPER_RESPONSES_PER_POINT, PaperSide

    k = np.arange(1, 11)
    pct = 100 / (1 + np.exp(0.8 * ((2 * k - 1) - 9.0)))  # σ(log 1/α − βn), n½ = 9 sentences
    figs = SimpleNamespace(pct_good={("agreeableness", "none"): ReferenceCurve(k, pct)})
    fit = PaperSide(figures=figs).sigmoid("agreeableness", "none")
    assert PAPER_RESPONSES_PER_POINT == 320
    assert fit.centre.value == pytest.approx(9.0, abs=0.15)
    assert fit.beta.value == pytest.approx(0.8, rel=0.1)


def test_report_names_the_cpus_of_a_stage_resumed_across_machines(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    payloads = sorted((run / "stages").glob("*/*/result.json"))
    target = payloads[0]
    stage = target.parent.parent.name
    data = json.loads(target.read_text())
    data["units"] = {"units": 3, "machines": {"CPU A": 2, "CPU B": 1}}
    target.write_text(json.dumps(data))
    md, _ = build_report(run)
    rows = [line for line in md.splitlines() if "2 on CPU A; 1 on CPU B" in line]
    assert len(rows) == 1 and rows[0].startswith(f"| {stage} |")
    assert "| stored units (CPU) |" in md
    # only the stage that stored units names CPUs
    assert "CPU A" not in md.replace(rows[0], "") and "CPU B" not in md.replace(rows[0], "")


def test_long_value_cells_wrap_and_short_ones_stay_on_one_line(tmp_path: Path) -> None:
    """A sentence in a value column (e.g. the Theorem 2 bound row) must wrap: kept on one line
    (``white-space:nowrap``) it widened the table past the page and hid the paper column."""
    run = make_run(tmp_path / "run")
    _, page = build_report(run, paper_figures=authors_figures(tmp_path / "authors-figures.json"))
    assert "td.num.long{white-space:normal" in page
    cells = re.findall(r'<td class="(num(?: long)?)">(.*?)</td>', page, flags=re.S)
    assert cells
    for cls, text in cells:
        # the class follows the text's length exactly: long ⇔ more than 36 characters
        assert (cls == "num long") == (len(html.unescape(text)) > 36), (cls, text)
    bound = [t for c, t in cells if t.startswith("Theorem 2 upper bound")]
    assert bound and all(c == "num long" for c, t in cells if t.startswith("Theorem 2 upper bound"))
