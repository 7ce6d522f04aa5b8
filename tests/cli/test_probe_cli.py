"""``bebkit probe`` end to end on a tiny saved model and tiny persona files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bebkit.cli import main

pytest.importorskip("torch")
pytest.importorskip("sklearn")

WORDS = ["i", "am", "kind", "cruel", "to", "others", "always", "people"]


def _save_tiny_model(d: Path) -> None:
    import torch
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "<eos>", *WORDS])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"\w+|[^\w\s]"), behavior="isolated")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        pad_token_id=1,
    )
    LlamaForCausalLM(cfg).save_pretrained(d)
    tok.save_pretrained(d)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    tmp_path = tmp_path_factory.mktemp("probe_cli")
    model_dir = tmp_path / "model"
    _save_tiny_model(model_dir)
    persona = tmp_path / "persona"
    persona.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(15):
        rows.append({"statement": " ".join(rng.choice(WORDS[:6], 3)) + " kind",
                     "answer_matching_behavior": " Yes"})  # fmt: skip
        rows.append({"statement": " ".join(rng.choice(WORDS[:6], 3)) + " cruel",
                     "answer_matching_behavior": " No"})  # fmt: skip
    (persona / "toy.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return model_dir, persona


def test_probe_cli_json_and_outputs(
    setup: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, persona = setup
    out = tmp_path / "out"
    code = main(
        ["probe", "--model", str(model_dir), "--behaviors", "all", "--persona-dir", str(persona),
         "--n-per-side", "10", "--layers", "last", "--out", str(out), "--json"]
    )  # fmt: skip
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["summary"]["last"]["n_behaviors"] == 1
    acc = res["scores"][0]["accuracy"]
    assert {"value", "stderr", "n"} <= set(acc) and acc["n"] == 20
    assert (out / "record.json").is_file() and (out / "table2.md").is_file()
    assert (out / "pca" / "toy.last.png").is_file()
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "probe" and rec["results"]["scores"]


@pytest.mark.parametrize(
    "extra",
    [
        ["--behaviors", "missing-behavior"],
        ["--behaviors", "toy", "--layers", "top"],
        ["--behaviors", "toy", "--n-per-side", "1"],
    ],
)
def test_probe_cli_bad_input_exits_2(
    setup: tuple[Path, Path], extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    model_dir, persona = setup
    code = main(["probe", "--model", str(model_dir), "--persona-dir", str(persona), *extra])
    assert code == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and err[0].startswith("bebkit probe: error:")
