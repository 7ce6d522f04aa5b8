"""``bebkit misalign --judge-components decoupled``: the judge's adapters are not the prompt
generator's, the key moves only when the option is set, and the record states the judge's
validation status."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cli.test_misalign_cli import _tiny_model_dir

from bebkit.cli import main
from bebkit.judge.status import NOT_VALIDATED
from bebkit.pipeline.misalign import MisalignSettings


def test_the_option_enters_the_key_only_when_set() -> None:
    """Runs cached before the option existed keep their keys (resumable); decoupled moves it."""
    shared = MisalignSettings(behavior="agreeableness")
    assert "judge_components" not in shared.key_material()
    assert "judge_eval" not in shared.key_material()  # a label of the record, not an input
    # fields added later enter the key only when set away from their default
    unless_default = {"judge_components", "second_judges"}
    assert set(shared.key_material()) == set(MisalignSettings.key_fields()) - unless_default
    two = MisalignSettings(behavior="agreeableness", second_judges=("minilm",))
    assert two.key_material()["second_judges"] == ["minilm"]
    dec = MisalignSettings(behavior="agreeableness", judge_components="decoupled")
    assert dec.key_material()["judge_components"] == "decoupled"
    with pytest.raises(ValueError, match="needs judge mixture or likelihood"):
        MisalignSettings(behavior="agreeableness", judge="minilm", judge_components="decoupled")


def test_decoupled_judge_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny_model_dir(tmp_path)
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    args = ["misalign", "--model", str(model), "--behavior", "cooperativeness", "--quick",
            "--n-prompts", "2", "--n-sentences", "3", "--n-responses", "2",
            "--max-response-tokens", "4", "--max-sentence-tokens", "4", "--n-boot", "0",
            "--judge-components", "decoupled", "--threads", "1", "--json"]  # fmt: skip
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    d: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["judge_components"] == "decoupled"
    assert d["judge"].endswith("@judge_neg")  # the judge half, never the generator
    assert d["neg_model"].endswith("generator_neg")
    assert d["control"]["prompt_source"].endswith("generator_pos")
    st = d["judge_validation"]
    assert st["human_labels"] is None and st["summary"].startswith(NOT_VALIDATED)
    folders = {p.name for p in (tmp_path / "cache" / "adapters").rglob("*_neg")}
    assert folders == {"generator_neg", "judge_neg"}
    gen = json.loads(next((tmp_path / "cache").rglob("generator_neg/manifest.json")).read_text())
    jud = json.loads(next((tmp_path / "cache").rglob("judge_neg/manifest.json")).read_text())
    assert gen["inputs"]["seed"] != jud["inputs"]["seed"]
    assert gen["inputs"]["data_hash"] != jud["inputs"]["data_hash"]

    # A locked-part judge-eval record of this judge makes the record say so.
    group = {"n": 50, "kappa": {"value": 0.9, "stderr": 0.02, "n": 50, "ci_low": 0.85,
                                "ci_high": 0.95}}  # fmt: skip
    rec = {"kind": "judge-eval", "results": {"judge": d["judge"], "part": "locked",
           "format": "chat", "by_behavior": {"cooperativeness": group}}}  # fmt: skip
    (tmp_path / "eval.json").write_text(json.dumps(rec))
    argv = [*args, "--judge-eval", str(tmp_path / "eval.json"), "--out", str(tmp_path / "r2")]
    assert main(argv) == 0
    d2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "kappa 0.900 [0.850, 0.950], n=50" in d2["judge_validation"]["summary"]
    assert d2["curves"] == d["curves"]  # same seed, reused adapters

    # bf16: the judge's adapters are loaded after the generator's, so the set the run computes
    # with must be the copy made after both (an earlier copy lacks judge_neg)
    assert main([*args, "--precision", "bfloat16", "--out", str(tmp_path / "r16")]) == 0
    d16 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d16["judge"].endswith("@judge_neg") and d16["neg_model"].endswith("generator_neg")
    rec16 = json.loads((tmp_path / "r16" / "record.json").read_text())
    assert rec16["config"]["precision"] == "bfloat16"
