"""ComponentSet: one base in memory, adapter switching only inside contexts, base == disabled."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from bebkit.components.adapters import ComponentSet, model_fingerprint
from bebkit.components.presets import get_preset
from bebkit.errors import InputError
from bebkit.models.hf import HFLanguageModel
from bebkit.models.protocol import LanguageModel, StopCondition

from .conftest import make_llama

SEQS = [[2, 4, 9, 12, 30], [2, 5, 6, 7], [2, 20, 21, 22, 23, 24, 25]]


def _perturb(comps: ComponentSet, name: str, seed: int) -> None:
    """Give an adapter non-zero weights (B starts at 0, i.e. equal to the base)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in comps.trainable_parameters(name):
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)


def _two_adapters(comps: ComponentSet) -> None:
    cfg = get_preset("small")
    torch.manual_seed(0)
    comps.add_adapter("neg", cfg)
    comps.add_adapter("pos", cfg)
    _perturb(comps, "neg", 1)
    _perturb(comps, "pos", 2)


def _lp(lm: Any) -> list[np.ndarray]:
    return list(lm.sequence_logprobs(SEQS))


def test_base_equals_untouched_model(comps: ComponentSet, tokenizer: Any) -> None:
    reference = _lp(HFLanguageModel(make_llama(), tokenizer))  # same seed -> same weights
    fp = comps.fingerprint
    _two_adapters(comps)
    with comps.use("base") as lm:
        got = _lp(lm)
    for a, b in zip(reference, got, strict=True):
        np.testing.assert_array_equal(a, b)
    assert model_fingerprint(comps.torch_model) == fp  # LoRA ignored, prefixes stripped
    with comps.use("neg") as neg, comps.use("pos") as pos:
        pass
    assert not np.allclose(_lp(comps.model("neg"))[0], reference[0])
    assert not np.allclose(_lp(comps.model("neg"))[0], _lp(comps.model("pos"))[0])
    assert neg.name == "tiny:neg" and pos.name == "tiny:pos"


def _assert_base_untouched(comps: ComponentSet, reference: list[np.ndarray]) -> None:
    """``model("base")`` *without any switch first* computes the untouched model exactly.

    ``comps.model("base")`` runs under no switch when the set already believes it is on base
    (``_for_call`` is a no-op then), so this measures whatever state the set was left in.
    """
    assert comps.active == "base"
    for a, b in zip(reference, _lp(comps.model("base")), strict=True):
        np.testing.assert_array_equal(a, b)


def test_use_restores_previous_state_also_on_exception(comps: ComponentSet, tokenizer: Any) -> None:
    reference = _lp(HFLanguageModel(make_llama(), tokenizer))  # an untouched twin of the base
    _two_adapters(comps)
    assert comps.active == "base"
    with comps.use("neg"):
        assert comps.active == "neg"
        with comps.use("base"):
            assert comps.active == "base"
            with comps.use("pos"):
                assert comps.active == "pos"
            assert comps.active == "base"
        assert comps.active == "neg"
    assert comps.active == "base"
    with pytest.raises(RuntimeError, match="boom"), comps.use("pos") as lm:
        _lp(lm)
        raise RuntimeError("boom")
    # Measured right after the exception, with no switch in between: the restored state
    # really computes the base model, not just carries its label.
    _assert_base_untouched(comps, reference)
    with pytest.raises(RuntimeError, match="boom"), comps.use("neg"), comps.use("pos"):
        raise RuntimeError("boom")
    _assert_base_untouched(comps, reference)


def test_base_is_untouched_after_loading_and_deleting(
    comps: ComponentSet, tokenizer: Any, tmp_path: Any
) -> None:
    reference = _lp(HFLanguageModel(make_llama(), tokenizer))
    _two_adapters(comps)
    comps.save_adapter("neg", tmp_path / "neg")
    fresh = ComponentSet(make_llama(), tokenizer, name="tiny")
    fresh.load_adapter("neg", tmp_path / "neg")  # first adapter: wraps the base
    _assert_base_untouched(fresh, reference)
    fresh.load_adapter("neg2", tmp_path / "neg")  # second adapter
    _assert_base_untouched(fresh, reference)
    fresh.delete_adapter("neg2")
    _assert_base_untouched(fresh, reference)
    fresh.delete_adapter("neg")  # the last one: the base is unwrapped again
    assert fresh.adapters == ()
    _assert_base_untouched(fresh, reference)
    # ... and can be wrapped again afterwards.
    fresh.load_adapter("neg", tmp_path / "neg")
    np.testing.assert_array_equal(_lp(fresh.model("neg"))[0], _lp(comps.model("neg"))[0])
    _assert_base_untouched(fresh, reference)


def test_unreadable_adapter_file_leaves_the_set_unchanged(
    comps: ComponentSet, tokenizer: Any, tmp_path: Any
) -> None:
    reference = _lp(HFLanguageModel(make_llama(), tokenizer))
    _two_adapters(comps)
    comps.save_adapter("neg", tmp_path / "neg")
    weights = tmp_path / "neg" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    fresh = ComponentSet(make_llama(), tokenizer, name="tiny")
    with pytest.raises(InputError, match="unreadable"):
        fresh.load_adapter("neg", tmp_path / "neg")
    assert fresh.adapters == ()
    _assert_base_untouched(fresh, reference)


def test_nested_use_computes_the_inner_component(comps: ComponentSet) -> None:
    _two_adapters(comps)
    neg_alone = _lp(comps.model("neg"))
    with comps.use("base"), comps.use("neg") as lm:
        inner = _lp(lm)
    for a, b in zip(neg_alone, inner, strict=True):
        np.testing.assert_array_equal(a, b)


def test_views_hold_several_components_at_once(comps: ComponentSet) -> None:
    _two_adapters(comps)
    neg, pos, base = comps.model("neg"), comps.model("pos"), comps.model("base")
    assert isinstance(neg, LanguageModel)
    with comps.use("neg") as lm_neg:
        ref_neg = _lp(lm_neg)
    with comps.use("pos") as lm_pos:
        ref_pos = _lp(lm_pos)
    # Interleaved calls through views give each component's own numbers.
    for _ in range(2):
        np.testing.assert_array_equal(_lp(pos)[1], ref_pos[1])
        np.testing.assert_array_equal(_lp(neg)[1], ref_neg[1])
        _lp(base)
    assert comps.active == "base"
    nt = neg.next_token_logprobs([[2, 4]])
    assert nt.shape == (1, neg.vocab_size)
    out = neg.sample([2], 3, StopCondition(max_new_tokens=4), rng=np.random.default_rng(0))
    assert len(out) == 3 and all(1 <= len(s) <= 4 for s in out)
    cs = pos.continuation_logprobs([2, 4], [[5, 6], [7]])
    full = pos.sequence_logprobs([[2, 4, 5, 6]])[0]
    np.testing.assert_allclose(cs.token_logprobs[0], full[-2:], atol=1e-5)
    assert comps.active == "base"


def test_every_model_call_of_a_view_runs_under_its_adapter(
    comps: ComponentSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The view is a generic pass-through: each protocol method (batched and single-prefix)
    must reach the base model with the view's adapter active and return its answer
    unchanged, while the tokenizer side needs no switch."""
    _two_adapters(comps)
    view = comps.model("neg")
    seen: list[tuple[str, str]] = []

    class Spy:
        tokenizer = comps.tokenizer
        vocab_size, bos_token_ids = 7, [2]

        def encode(self, text: str) -> list[int]:
            return [len(text)]

        def decode(self, ids: Any) -> str:
            return "x" * len(ids)

        def __getattr__(self, method: str) -> Any:
            def call(*args: Any, **kwargs: Any) -> Any:
                seen.append((method, comps.active))
                return (method, args, kwargs)

            return call

    monkeypatch.setattr(comps, "_lm", lambda name: Spy())
    methods = ["sequence_logprobs", "next_token_logprobs", "continuation_logprobs",
               "continuation_logprobs_many", "sample", "sample_many", "sample_scored",
               "sample_scored_many"]  # fmt: skip
    for m in methods:
        assert getattr(view, m)([1], k=2) == (m, ([1],), {"k": 2})
    assert seen == [(m, "neg") for m in methods]
    assert comps.active == "base"  # restored after every call
    seen.clear()
    assert (view.vocab_size, view.bos_token_ids, view.encode("ab"), view.decode([1])) == (
        7, [2], [2], "x"
    )  # fmt: skip
    assert view.tokenizer is comps.tokenizer and seen == []


def test_unknown_and_reserved_names(comps: ComponentSet) -> None:
    with pytest.raises(InputError, match="unknown component 'neg'"), comps.use("neg"):
        pass
    with pytest.raises(InputError, match="reserved"):
        comps.add_adapter("base", get_preset("small"))
    comps.add_adapter("neg", get_preset("small"))
    with pytest.raises(InputError, match="already exists"):
        comps.add_adapter("neg", get_preset("small"))
    with pytest.raises(InputError, match="no saved adapter"):
        comps.load_adapter("pos", "/nonexistent/adapter")


def test_save_load_round_trip_into_the_same_base(comps: ComponentSet, tmp_path: Any) -> None:
    _two_adapters(comps)
    want = _lp(comps.model("neg"))
    comps.save_adapter("neg", tmp_path / "neg")
    assert (tmp_path / "neg" / "adapter_model.safetensors").is_file()

    fresh = ComponentSet(make_llama(), comps.tokenizer, name="tiny")
    base_ptrs = {n: p.data_ptr() for n, p in fresh.base_model.named_parameters()}
    fresh.load_adapter("neg", tmp_path / "neg")
    fresh.load_adapter("other", tmp_path / "neg")
    for a, b in zip(want, _lp(fresh.model("neg")), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # No second copy of the base: every original base tensor is still the one in use.
    in_use = {p.data_ptr() for n, p in fresh.torch_model.named_parameters() if "lora_" not in n}
    assert set(base_ptrs.values()) <= in_use
    assert fresh.adapters == ("neg", "other")
    fresh.delete_adapter("other")
    assert fresh.adapters == ("neg",)


def test_inference_copy_is_a_reduced_precision_twin_that_cannot_be_trained(
    comps: ComponentSet, tmp_path: Any
) -> None:
    """The bf16 copy computes every component close to float32 (its arithmetic is bf16, the
    log-softmax float32), leaves the source's weights and dtype untouched, keeps the active
    component, and refuses every weight change."""
    from bebkit.errors import RunError

    _two_adapters(comps)
    with comps.activated("neg"):
        half = comps.inference_copy("bfloat16")
    assert half.active == "neg" and comps.active == "base"  # the state at copy time, kept
    assert half.adapters == comps.adapters and half.inference_dtype == "bfloat16"
    assert half.fingerprint == comps.fingerprint
    assert {p.dtype for p in half.torch_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in comps.torch_model.parameters()} == {torch.float32}
    # float buffers (RoPE frequencies) keep float32, as from_pretrained(dtype=bf16) keeps them
    floats = [b for b in half.torch_model.buffers() if b.is_floating_point()]
    assert floats and {b.dtype for b in floats} == {torch.float32}
    for name in ("base", "neg", "pos"):
        full, low = _lp(comps.model(name)), _lp(half.model(name))
        for a, b in zip(full, low, strict=True):
            assert b.dtype == np.float64
            # bf16 keeps 8 mantissa bits: log-probs move by a few hundredths, not by nats
            assert np.max(np.abs(a - b)) < 0.15
            assert not np.array_equal(a, b)  # the copy really computes in bf16
    # components stay distinct in the copy (adapters were copied, not dropped)
    assert not np.allclose(_lp(half.model("neg"))[0], _lp(half.model("pos"))[0])
    comps.save_adapter("neg", tmp_path / "neg")
    with pytest.raises(RunError, match="inference copy"):
        half.add_adapter("other", get_preset("small"))
    with pytest.raises(RunError, match="inference copy"):
        half.load_adapter("other", tmp_path / "neg")
    with pytest.raises(RunError, match="inference copy"):
        half.delete_adapter("pos")
    with pytest.raises(RunError, match="inference copy"):
        half.trainable_parameters("neg")
    with pytest.raises(RunError, match="copied again"):
        half.inference_copy("bfloat16")
    with pytest.raises(InputError, match="float dtype"):
        comps.inference_copy("int8")
