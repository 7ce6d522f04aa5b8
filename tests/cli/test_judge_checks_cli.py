"""``bebkit judge-checks``: input errors, and the mixture judge's checks in the newline format
(base-model text) on a tiny model with decoupled adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.test_misalign_cli import _tiny_model_dir

from bebkit.cli import main
from bebkit.judge.status import load_judge_records, validation_status


def test_unknown_behavior_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["judge-checks", "--behaviors", "cooperativeness,no-such-behavior"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_mixture_checks_in_the_newline_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny_model_dir(tmp_path)
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "checks.json"
    argv = ["judge-checks", "--behaviors", "cooperativeness", "--judge", "mixture",
            "--model", str(model), "--format", "newline", "--components", "decoupled",
            "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rep = res["per_behavior"]["cooperativeness"]
    assert rep["fmt"] == "newline" and rep["judge"].endswith("@judge_neg")
    assert rep["statements"]["n"] == 40  # the adapters' 20 + 20 held-out statements
    assert rep["generic_good"]["n"] > 0 and set(rep["passed"]) == set(res["targets"])
    assert res["components"] == "decoupled"
    # the record is what a misalign run's judge_eval points at
    st = validation_status(rep["judge"], "cooperativeness", load_judge_records(out), fmt="newline")
    assert st["label_free"]["statements"]["n"] == 40
    assert "label-free checks (newline)" in st["summary"]
