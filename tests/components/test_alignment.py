"""Alignment with TRL (SFT + DPO as a LoRA adapter) on a tiny in-process Llama."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from .conftest import BAD, GOOD, make_llama, make_tokenizer

pytest.importorskip("trl")
pytest.importorskip("datasets")

from bebkit.components.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, ComponentSet
from bebkit.components.alignment import (
    RESULT_FILE,
    AlignConfig,
    alignment_data,
    completion_ids,
    merged_model,
    preference_margins,
    train_alignment,
)
from bebkit.errors import InputError
from bebkit.models.hf import HFLanguageModel


def _config(**kw: Any) -> AlignConfig:
    base = dict(
        r=8,
        lora_alpha=16,
        sft_steps=12,
        dpo_steps=12,
        sft_lr=1e-2,
        dpo_lr=1e-2,
        dpo_beta=0.5,
        batch_size=4,
        max_length=64,
    )
    return AlignConfig(**{**base, **kw})


def _probe(tok: Any) -> list[list[int]]:
    """Scored token sequences (chat-rendered statements of both sides)."""
    out = []
    for s in (GOOD[0], BAD[0], GOOD[3] + " " + BAD[5]):
        text = tok.apply_chat_template(
            [{"role": "user", "content": s}, {"role": "assistant", "content": GOOD[1]}],
            tokenize=False,
        )
        out.append([int(t) for t in tok(text, add_special_tokens=False)["input_ids"]])
    return out


def test_alignment_data_is_seeded_and_sided() -> None:
    a = alignment_data(GOOD, BAD, n_sft=20, n_pairs=30, seed=1)
    b = alignment_data(GOOD, BAD, n_sft=20, n_pairs=30, seed=1)
    assert a == b and len(a.sft) == 20 and len(a.pairs) == 30
    good = {g + "." for g in GOOD}
    bad = {x + "." for x in BAD}
    assert all(c in good and c != p for p, c in a.sft)
    assert all(x.chosen in good and x.rejected in bad and x.chosen != x.prompt for x in a.pairs)
    assert {x.prompt in bad for x in a.pairs} == {True, False}  # both sides ask
    with pytest.raises(InputError):
        alignment_data(GOOD[:1], BAD)


def test_completion_ids_split_prompt_and_reply() -> None:
    tok = make_tokenizer()
    p, c = completion_ids(tok, "i like people.", "we help the user.", chat=True)
    assert tok.decode(c).strip().startswith("we help the user")
    assert tok.decode(p).endswith("assistant :")
    p2, c2 = completion_ids(tok, "i like people.", "we help.", chat=False)
    assert p2[0] == tok.bos_token_id and tok.decode(c2).strip() == "we help .\n".strip()


def test_sft_dpo_train_save_reload(tmp_path: Path) -> None:
    tok = make_tokenizer()
    data = alignment_data(GOOD, BAD, n_sft=32, n_pairs=32, seed=0)
    model = make_llama(0)
    before = preference_margins(model, tok, data.pairs, chat=True)
    res = train_alignment(
        model,
        tok,
        data,
        _config(),
        seed=3,
        out_dir=tmp_path / "aligned",
        num_threads=1,
        unload=False,
    )
    # SFT: the replies' NLL falls; DPO: the preference margin rises (from where SFT left it)
    assert res.sft_nll_after < res.sft_nll_before
    assert res.margin_after > res.margin_before
    assert res.margin_after > float(before.mean())
    assert len(res.sft_losses) == 12 and len(res.dpo_losses) == 12
    assert res.chat and res.config["method"] == "sft+dpo"
    out = tmp_path / "aligned"
    assert (out / ADAPTER_CONFIG).is_file() and (out / ADAPTER_WEIGHTS).is_file()
    assert json.loads((out / RESULT_FILE).read_text())["seed"] == 3
    assert "ref" not in res.model.peft_config  # TRL's reference copy is gone

    probe = _probe(tok)
    trained = HFLanguageModel(res.model, tok, name="trained").sequence_logprobs(probe)
    res.model.unload()

    comps = ComponentSet(make_llama(0), tok, name="tiny")
    comps.load_adapter("aligned", out)
    reloaded = comps.model("aligned").sequence_logprobs(probe)
    base = comps.model("base").sequence_logprobs(probe)
    for a, b, c in zip(trained, reloaded, base, strict=True):
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)

    merged = merged_model(make_llama(0), out)
    m = HFLanguageModel(merged, tok, name="merged").sequence_logprobs(probe)
    for a, b in zip(trained, m, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_dpo_only_is_seeded_and_unloads(tmp_path: Path) -> None:
    tok = make_tokenizer()
    data = alignment_data(GOOD, BAD, n_sft=8, n_pairs=24, seed=0)
    cfg = _config(method="dpo", dpo_steps=8)
    model = make_llama(0)
    r1 = train_alignment(model, tok, data, cfg, seed=5, out_dir=tmp_path / "a", num_threads=1)
    assert r1.sft_nll_before is None and r1.margin_after > r1.margin_before
    assert "forward" not in vars(model)  # TRL's patched forward removed, model unwrapped
    assert not any("lora_" in n for n, _ in model.named_parameters())
    r2 = train_alignment(
        make_llama(0), tok, data, cfg, seed=5, out_dir=tmp_path / "b", num_threads=1
    )
    assert r1.dpo_losses == r2.dpo_losses
    assert (tmp_path / "a" / ADAPTER_WEIGHTS).read_bytes() == (
        tmp_path / "b" / ADAPTER_WEIGHTS
    ).read_bytes()


def test_alignment_validates() -> None:
    tok = make_tokenizer()
    data = alignment_data(GOOD, BAD, n_sft=4, n_pairs=4)
    with pytest.raises(InputError):
        train_alignment(make_llama(0), tok, data, _config(method="sft", sft_steps=0))
    with pytest.raises(InputError):
        train_alignment(make_llama(0), make_tokenizer(None), data, _config(fmt="chat"))
