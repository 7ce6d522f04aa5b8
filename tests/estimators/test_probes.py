"""Linear SVM probes: CV accuracy on separable / random features, tiny-model end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bebkit.data import statement_key
from bebkit.errors import InputError
from bebkit.estimators.probes import (
    ProbeConfig,
    cv_svm_accuracy,
    pca_scatter,
    sample_sides,
)
from bebkit.pipeline.probes import run_probe_table

pytest.importorskip("sklearn")


def test_cv_accuracy_separable_vs_random_features() -> None:
    rng = np.random.default_rng(0)
    y = np.array([1] * 60 + [-1] * 60)
    X_sep = rng.normal(size=(120, 20))
    X_sep[:, 0] += 4.0 * y  # a large mean shift along one direction
    mean, std, folds = cv_svm_accuracy(X_sep, y, folds=5, seed=0)
    assert mean > 0.97 and len(folds) == 5 and std >= 0.0
    X_rand = rng.normal(size=(120, 20))
    mean_r, _, _ = cv_svm_accuracy(X_rand, y, folds=5, seed=0)
    assert 0.3 < mean_r < 0.7
    # Seeded: identical folds give identical numbers.
    assert cv_svm_accuracy(X_sep, y, seed=3) == cv_svm_accuracy(X_sep, y, seed=3)


def test_cv_accuracy_input_checks() -> None:
    with pytest.raises(InputError):
        cv_svm_accuracy(np.zeros((4, 2)), np.array([1, 1, -1, -1]), folds=5)
    with pytest.raises(InputError):
        cv_svm_accuracy(np.zeros((4, 2)), np.array([1, -1]), folds=2)


def test_sample_sides_is_seeded_and_balanced() -> None:
    a = [f"m{i}" for i in range(30)]
    b = [f"n{i}" for i in range(10)]
    texts, y = sample_sides(a, b, n_per_side=20, seed=1)
    assert len(texts) == 20 and (y == 1).sum() == 10  # capped by the smaller side
    assert sample_sides(a, b, 20, 1)[0] == texts
    assert all(t.startswith("m") for t, v in zip(texts, y, strict=True) if v == 1)


def test_sample_sides_has_no_statement_twice() -> None:
    # persona files repeat statements (up to 37 times on a side): a repeat in the training
    # folds and its copy in the test fold would be scored as generalisation
    a = ["I help.", "i help", "I  help!", *(f"m{i}" for i in range(8)), "both ways."]
    b = ["Both ways", *(f"n{i}" for i in range(12))]
    texts, y = sample_sides(a, b, n_per_side=50, seed=0)
    keys = [statement_key(t) for t in texts]
    assert len(keys) == len(set(keys)) and "both ways" not in keys
    assert (y == 1).sum() == (y == -1).sum() == 9  # 8 + one "I help" on the matching side


def test_pca_scatter_writes_png(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 6))
    y = np.array([1, -1] * 20)
    p = pca_scatter(X, y, tmp_path / "sub" / "x.png", title="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


WORDS = ["i", "am", "kind", "cruel", "to", "others", "always", "people", "help", "hurt", "like"]


def _tiny_model() -> tuple[Any, Any]:
    pytest.importorskip("torch")
    pytest.importorskip("tokenizers")
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
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=32,
        pad_token_id=1,
    )
    return LlamaForCausalLM(cfg).eval(), tok


def _write_persona(d: Path, name: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(30):
        # The *last* word decides the side, so last-token states separate them.
        rows.append({"statement": " ".join(rng.choice(WORDS[:8], 3)) + " kind",
                     "answer_matching_behavior": " Yes"})  # fmt: skip
        rows.append({"statement": " ".join(rng.choice(WORDS[:8], 3)) + " cruel",
                     "answer_matching_behavior": " No"})  # fmt: skip
    (d / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_run_probe_table_on_tiny_model(tmp_path: Path) -> None:
    model, tok = _tiny_model()
    persona = tmp_path / "persona"
    persona.mkdir()
    for i, name in enumerate(["toy-a", "toy-b"]):
        _write_persona(persona, name, i)
    cfg = ProbeConfig(n_per_side=20, layers=("last", "middle", 1), folds=5)
    table = run_probe_table(
        ["toy-a", "toy-b"],
        model_name="tiny",
        config=cfg,
        persona_dir=persona,
        out_dir=tmp_path / "out",
        model=model,
        tokenizer=tok,
    )
    assert len(table.scores) == 6
    assert {s.layer_index for s in table.scores} == {4, 2, 1}
    for s in table.scores:
        assert s.accuracy.value > 0.9  # the side is encoded in the last token
        assert s.accuracy.n == 40 and s.n_per_side == 20
    summ = table.summary()
    assert set(summ) == {"last", "middle", "1"} and summ["last"]["n_behaviors"] == 2
    assert len(table.plots) == 6 and all(Path(p).is_file() for p in table.plots.values())
    md = table.markdown()
    assert "toy-a" in md and "mean (std over behaviors)" in md
    json.dumps(table.to_dict(), default=lambda o: o.to_dict())
