"""Every report states each behavior's judge and its validation status (issue 14)."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest
from report_fixtures import make_run

from bebkit.judge.status import NOT_VALIDATED
from bebkit.pipeline.report import build_report


@pytest.fixture(autouse=True)
def _no_reference_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BEBKIT_REFERENCE_DIR", raising=False)


def test_a_judge_without_a_record_is_not_validated(tmp_path: Path) -> None:
    md, page = build_report(make_run(tmp_path / "run"))
    line = f"Judge: mixture (shared components) — {NOT_VALIDATED}"
    assert line in md and line in html.unescape(page)
    assert "validation status is not part" not in md


def test_the_records_status_is_shown_and_escaped(tmp_path: Path) -> None:
    run = make_run(tmp_path / "run")
    rec = json.loads((run / "record.json").read_text())
    res = rec["results"]["stages"]["misalign-agreeableness"]["result"]
    res["judge"] = "mixture<x>@judge_neg"
    res["judge_components"] = "decoupled"
    res["judge_validation"] = {"summary": "validated on the locked half of human labels: "
                                          "kappa 0.900 [0.850, 0.950], n=50"}  # fmt: skip
    (run / "record.json").write_text(json.dumps(rec))
    md, page = build_report(run)
    assert "kappa 0.900 [0.850, 0.950], n=50" in md and NOT_VALIDATED not in md
    assert "Judge: mixture&lt;x&gt;@judge_neg (decoupled components)" in page
    assert "mixture<x>" not in page  # the judge name is escaped like all record text
