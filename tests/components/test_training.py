"""LoRA training: loss goes down, seeded runs are identical, neg and pos end up different."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bebkit.components.adapters import ComponentSet
from bebkit.components.training import bf16_supported, encode_text, torch_threads, train_adapter
from bebkit.data.formats import training_texts
from bebkit.errors import InputError

from .conftest import BAD, GOOD, make_llama


def test_a_few_steps_reduce_the_loss(comps: ComponentSet, fast_config: Any) -> None:
    texts = training_texts(BAD, "newline")
    res = train_adapter(
        comps,
        "neg",
        texts,
        fast_config,
        seed=0,
        heldout_texts=texts[:3],
        progress=False,
        num_threads=1,
    )
    assert res.n_steps == fast_config.epochs * int(np.ceil(len(texts) / fast_config.batch_size))
    assert res.final_loss < 0.7 * res.initial_loss
    assert res.heldout_loss is not None and res.heldout_loss_base is not None
    assert res.heldout_loss < res.heldout_loss_base
    assert res.num_threads == 1
    # Training leaves nothing trainable and the base state active.
    assert comps.active == "base"
    assert not any(p.requires_grad for p in comps.torch_model.parameters())


def test_training_is_seeded(tokenizer: Any, fast_config: Any) -> None:
    texts = training_texts(GOOD, "newline")
    weights = []
    for _ in range(2):
        comps = ComponentSet(make_llama(), tokenizer, name="tiny")
        train_adapter(comps, "pos", texts, fast_config, seed=3, progress=False, num_threads=1)
        weights.append([p.detach().clone() for p in comps.trainable_parameters("pos")])
    for a, b in zip(*weights, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_neg_and_pos_differ_after_training(comps: ComponentSet, fast_config: Any) -> None:
    train_adapter(comps, "neg", training_texts(BAD, "newline"), fast_config, progress=False)
    train_adapter(comps, "pos", training_texts(GOOD, "newline"), fast_config, progress=False)
    seq = [encode_text(comps.tokenizer, "i like to hurt people.\n", comps.bos_token_ids)]
    neg = comps.model("neg").sequence_logprobs(seq)[0].sum()
    pos = comps.model("pos").sequence_logprobs(seq)[0].sum()
    base = comps.model("base").sequence_logprobs(seq)[0].sum()
    assert neg > pos + 1.0  # the bad sentence is far likelier under P-
    assert neg > base


def test_bf16_autocast_only_where_the_cpu_supports_it(
    comps: ComponentSet, fast_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without native bf16, autocast would emulate it (~24x slower): training falls back to
    float32 and says so in the result; with it, autocast is on."""
    import torch

    from bebkit.components import training

    cfg = fast_config.model_copy(update={"bf16": True, "epochs": 1})
    seen: list[bool] = []
    real = torch.autocast

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(True)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "autocast", spy)
    for supported in (False, True):
        seen.clear()
        monkeypatch.setattr(training, "bf16_supported", lambda s=supported: s)
        res = train_adapter(comps, "x", training_texts(BAD, "newline"), cfg, progress=False)
        comps.delete_adapter("x")
        assert res.bf16 is supported and bool(seen) is supported


def test_bf16_autocast_trains(comps: ComponentSet, fast_config: Any) -> None:
    cfg = fast_config.model_copy(update={"bf16": True, "epochs": 2})
    res = train_adapter(comps, "neg", training_texts(BAD, "newline"), cfg, progress=False)
    # bf16 autocast is used only where the CPU computes bf16 natively (else float32)
    assert res.bf16 == bf16_supported()
    assert np.isfinite(res.final_loss) and res.final_loss < res.initial_loss
    # LoRA weights stay float32 under autocast.
    assert all(p.dtype == torch.float32 for p in comps.trainable_parameters("neg"))


def test_chat_texts_do_not_double_bos(comps: ComponentSet) -> None:
    text = training_texts(GOOD[:3], "chat", comps.tokenizer)[0]
    ids = encode_text(comps.tokenizer, text, comps.bos_token_ids)
    assert ids[0] == 2 and ids[1] != 2
    assert encode_text(comps.tokenizer, "i am kind.\n", [2])[:2] == [2, 4]


def test_empty_training_set_is_an_input_error(comps: ComponentSet, fast_config: Any) -> None:
    with pytest.raises(InputError, match="no training texts"):
        train_adapter(comps, "neg", [], fast_config, progress=False)
    assert comps.adapters == ()


def test_torch_threads_restores() -> None:
    before = torch.get_num_threads()
    with torch_threads(1) as n:
        assert n == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def _poison_after(monkeypatch: pytest.MonkeyPatch, n_steps: int) -> None:
    """Make the adapter's weights NaN after ``n_steps`` optimiser steps: the next forward
    gives a NaN loss, as a diverging run would (the weights are half-trained *and* poisoned,
    so a base model that still computed them would show it)."""
    real_step = torch.optim.AdamW.step
    calls = {"n": 0}

    def step(self: Any, *args: Any, **kwargs: Any) -> Any:
        out = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] >= n_steps:
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_failed_training_leaves_no_adapter_and_an_exact_base(
    tokenizer: Any, fast_config: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bebkit.errors import RunError
    from bebkit.models.hf import HFLanguageModel

    seqs = [[2, 4, 9, 12, 30], [2, 5, 6, 7]]
    reference = HFLanguageModel(make_llama(), tokenizer).sequence_logprobs(seqs)
    texts = training_texts(BAD, "newline")

    # Case 1: the failing adapter is the only one (the base gets unwrapped again).
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    with monkeypatch.context() as m:
        _poison_after(m, 2)
        with pytest.raises(RunError, match=r"training loss became nan at step 2"):
            train_adapter(comps, "neg", texts, fast_config, progress=False, num_threads=1)
    assert comps.adapters == () and comps.active == "base"
    for a, b in zip(reference, comps.model("base").sequence_logprobs(seqs), strict=True):
        np.testing.assert_array_equal(a, b)

    # Case 2: another, finished adapter is registered; it survives unchanged.
    train_adapter(comps, "pos", training_texts(GOOD, "newline"), fast_config, progress=False)
    pos_before = comps.model("pos").sequence_logprobs(seqs)
    with monkeypatch.context() as m:
        _poison_after(m, 3)
        with pytest.raises(RunError, match="became nan"):
            train_adapter(comps, "neg", texts, fast_config, progress=False, num_threads=1)
    assert comps.adapters == ("pos",) and comps.active == "base"
    for a, b in zip(reference, comps.model("base").sequence_logprobs(seqs), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(pos_before, comps.model("pos").sequence_logprobs(seqs), strict=True):
        np.testing.assert_array_equal(a, b)
    # The name is free again: a clean retrain works and gives the uninterrupted result.
    train_adapter(comps, "neg", texts, fast_config, seed=0, progress=False, num_threads=1)
    clean = ComponentSet(make_llama(), tokenizer, name="tiny")
    train_adapter(clean, "neg", texts, fast_config, seed=0, progress=False, num_threads=1)
    for a, b in zip(
        comps.trainable_parameters("neg"), clean.trainable_parameters("neg"), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
