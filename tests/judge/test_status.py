"""A judge's validation status from judge-eval / judge-checks records (bebkit.judge.status)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bebkit.errors import InputError
from bebkit.judge.status import NOT_VALIDATED, load_judge_records, validation_status


def _est(v: float, lo: float, hi: float, n: int) -> dict[str, Any]:
    return {"value": v, "stderr": 0.01, "n": n, "ci_low": lo, "ci_high": hi}


def _eval_record(judge: str, part: str = "locked", fmt: str = "chat") -> dict[str, Any]:
    group = {"n": 4220, "kappa": _est(0.546, 0.518, 0.573, 4220),
             "accuracy": _est(0.8, 0.79, 0.81, 4220)}  # fmt: skip
    return {
        "kind": "judge-eval",
        "results": {"judge": judge, "part": part, "behavior": "agreeableness", "format": fmt,
                    "overall": group, "by_behavior": {"agreeableness": group},
                    "split": {"seed": "s"}, "labels_file": "x.jsonl"},
    }  # fmt: skip


def _checks_record(judge: str, fmt: str = "chat") -> dict[str, Any]:
    per = {"judge": judge, "fmt": fmt, "statements": _est(0.96, 0.92, 0.98, 200),
           "quote_and_reject_flip": _est(0.83, 0.74, 0.89, 95),
           "negation_flip": _est(0.13, 0.07, 0.21, 95), "generic_good": _est(1.0, 0.86, 1.0, 24),
           "passed": {"statements": True, "quote_and_reject_flip": True, "negation_flip": False,
                      "generic_good": True}}  # fmt: skip
    return {"kind": "judge-checks", "results": {"fmt": fmt, "per_behavior": {"agreeableness": per}}}


def test_locked_kappa_with_ci_and_n_is_the_validation() -> None:
    st = validation_status("minilm:agreeableness", "agreeableness",
                           [_eval_record("minilm:agreeableness")], fmt="chat")  # fmt: skip
    assert st["human_labels"]["kappa"]["value"] == 0.546 and st["human_labels"]["n"] == 4220
    assert "kappa 0.546 [0.518, 0.573], n=4220" in st["summary"]
    assert NOT_VALIDATED not in st["summary"] and "label-free checks not run" in st["summary"]


def test_a_judge_designed_with_the_locked_half_in_view_is_not_called_validated() -> None:
    # the mixture judge's variant was chosen by kappa on all agreeableness labels
    j = "mixture[neg/base/aligned]:m"
    st = validation_status(j, "agreeableness", [_eval_record(j)], fmt="chat")
    assert st["summary"].startswith("kappa on the locked half of human labels (NOT a clean")
    assert "validated" not in st["summary"] and "kappa 0.546" in st["summary"]
    # the same judge on another behavior's labels (its design never saw them): validated
    rec = _eval_record(j)
    rec["results"]["by_behavior"] = {"neuroticism": rec["results"]["overall"]}
    rec["results"]["behavior"] = "neuroticism"
    st = validation_status(j, "neuroticism", [rec], fmt="chat")
    assert st["summary"].startswith("validated on the locked half")


@pytest.mark.parametrize(
    ("record", "judge", "behavior", "fmt"),
    [
        (_eval_record("minilm:agreeableness", part="dev"), "minilm:agreeableness",
         "agreeableness", "chat"),  # the development half is never a validation
        (_eval_record("minilm:agreeableness"), "mixture[neg/base/aligned]:m", "agreeableness",
         "chat"),  # another judge
        (_eval_record("minilm:agreeableness"), "minilm:agreeableness", "neuroticism", "chat"),
        (_eval_record("minilm:agreeableness"), "minilm:agreeableness", "agreeableness",
         "newline"),  # validated on chat replies, not on base-model text
    ],
)  # fmt: skip
def test_anything_else_is_not_validated(
    record: dict[str, Any], judge: str, behavior: str, fmt: str
) -> None:
    st = validation_status(judge, behavior, [record], fmt=fmt)
    assert st["human_labels"] is None and st["summary"].startswith(NOT_VALIDATED)


def test_label_free_checks_are_reported_beside_never_instead() -> None:
    st = validation_status("minilm:agreeableness", "agreeableness",
                           [_checks_record("minilm:agreeableness")], fmt="chat")  # fmt: skip
    assert st["human_labels"] is None and st["summary"].startswith(NOT_VALIDATED)
    assert "negation_flip 0.130 [0.070, 0.210] (n=95) FAIL" in st["summary"]
    assert st["label_free"]["statements"]["n"] == 200
    other = validation_status("stance:agreeableness", "agreeableness",
                              [_checks_record("minilm:agreeableness")])  # fmt: skip
    assert other["label_free"] is None


def test_load_records_from_file_or_folder(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text(json.dumps(_eval_record("j")))
    (tmp_path / "b.json").write_text(json.dumps(_checks_record("j")))
    (tmp_path / "other.json").write_text(json.dumps({"kind": "misalign"}))
    recs = load_judge_records(tmp_path)
    assert sorted(r["kind"] for r in recs) == ["judge-checks", "judge-eval"]
    assert recs[0]["_source"].endswith(".json")
    assert load_judge_records(None) == []
    with pytest.raises(InputError, match="not a judge-eval"):
        load_judge_records(tmp_path / "other.json")
    with pytest.raises(InputError, match="does not exist"):
        load_judge_records(tmp_path / "none.json")
