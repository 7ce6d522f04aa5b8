"""``bebkit train`` / ``bebkit classify``: error paths (one line, exit 2) and a tiny end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bebkit.cli import main

from .conftest import BAD, GOOD, make_llama, make_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tiny-llama")
    make_llama().save_pretrained(d)
    make_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def persona_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("persona")
    rows = [{"statement": s, "answer_matching_behavior": " Yes"} for s in BAD]
    rows += [{"statement": s, "answer_matching_behavior": " No"} for s in GOOD]
    (d / "toy.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return d


def _err(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    return err


def _exit2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_train_error_paths(
    capsys: pytest.CaptureFixture[str], model_dir: Path, persona_dir: Path, tmp_path: Path
) -> None:
    """``train`` is the generated ``classify`` command under its old name."""
    base = ["train", "--model", str(model_dir), "--persona-dir", str(persona_dir),
            "--adapters", str(tmp_path)]  # fmt: skip
    assert "unknown behavior 'nosuch'" in _err(capsys, [*base, "--behavior", "nosuch"])
    err = _err(capsys, [*base, "--behavior", "toy", "--train-seed", "-1"])
    assert "--train-seed must be >= 0" in err
    assert "--n-train must be >= 3" in _err(capsys, [*base, "--behavior", "toy", "--n-train", "0"])
    err = _err(capsys, [*base, "--behavior", "toy", "--n-train", "450"])
    assert "only 12 distinct statements" in err
    err = _err(
        capsys, ["train", "--model", str(tmp_path / "nope"), "--behavior", "cooperativeness"]
    )
    assert "does not exist" in err
    err = _err(capsys, ["train", "--model", "m", "--behavior", "toy", "--persona-dir", "/no/dir"])
    assert "not a directory" in err
    assert "invalid choice" in _exit2(capsys, [*base, "--behavior", "toy", "--format", "xml"])
    assert "invalid choice" in _exit2(capsys, [*base, "--behavior", "toy", "--preset", "huge"])


def test_classify_error_paths(
    capsys: pytest.CaptureFixture[str], model_dir: Path, persona_dir: Path, tmp_path: Path
) -> None:
    base = [
        "classify",
        "--model",
        str(model_dir),
        "--persona-dir",
        str(persona_dir),
        "--adapters",
        str(tmp_path),
        "--n-train",
        "9",
        "--n-heldout",
        "3",
    ]
    assert "at least one" in _err(capsys, [*base, "--behavior", " , "])
    assert "more than once" in _err(capsys, [*base, "--behavior", "toy,toy"])
    assert "unknown behavior 'nope'" in _err(capsys, [*base, "--behavior", "toy,nope"])
    assert "--no-train" in _err(capsys, [*base, "--behavior", "toy", "--no-train"])
    assert "--n-train must be >= 3" in _err(capsys, [*base, "--behavior", "toy", "--n-train", "2"])


def test_train_then_reuse_then_classify(
    capsys: pytest.CaptureFixture[str], model_dir: Path, persona_dir: Path, tmp_path: Path
) -> None:
    argv = ["train", "--model", str(model_dir), "--persona-dir", str(persona_dir),
            "--behavior", "toy", "--adapters", str(tmp_path), "--n-train", "9",
            "--n-heldout", "3", "--format", "newline", "--out", str(tmp_path / "t0"),
            "--json"]  # fmt: skip
    assert main(argv) == 0
    out, err = capsys.readouterr()
    first = json.loads(out.strip().splitlines()[-1])
    assert first["preset"] == "small" and first["format"] == "newline"
    t1 = first["table1"]
    assert t1["accuracy"]["n"] == 6 and 0 <= t1["accuracy"]["value"] <= 1
    assert {"value", "stderr", "n", "ci_low", "ci_high"} <= set(t1["accuracy_desired"])
    assert "training neg" in err
    assert (tmp_path / "toy" / "newline" / "pos" / "adapter_model.safetensors").is_file()
    rec = json.loads((tmp_path / "t0" / "record.json").read_text())
    assert rec["kind"] == "classify" and rec["results"]["table1"]["accuracy"] == t1["accuracy"]
    assert not rec["config"]["components"]["neg"]["reused"]

    assert main(argv[:-1]) == 0  # human output, second time: reused
    out = capsys.readouterr().out
    assert "reusing neg adapter" in out and "reusing pos adapter" in out
    assert "overall" in out and "n=6" in out

    cargv = ["classify", "--model", str(model_dir), "--persona-dir", str(persona_dir),
             "--behavior", "toy", "--adapters", str(tmp_path), "--n-train", "9",
             "--n-heldout", "3", "--format", "newline", "--out", str(tmp_path / "t1"),
             "--json"]  # fmt: skip
    assert main(cargv) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["table1"]["accuracy"] == t1["accuracy"]
    rec = json.loads((tmp_path / "t1" / "record.json").read_text())
    assert rec["kind"] == "classify" and rec["config"]["components"]["pos"]["reused"]
