"""Out-of-memory in a batched model call: split in halves, same numbers, counted; or one clear error.

The fault is injected by a forward pre-hook on a tiny random Llama that raises an allocator
error whenever a pass is too big, as a device with less memory would. Split passes equal the
un-split ones to 1e-5 (float32 matrix kernels block by the number of rows, so bit-identity is
not promised; a wrong row mapping would be off by O(1)).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bebkit.errors import BatchOutOfMemoryError  # noqa: E402
from bebkit.models import hf  # noqa: E402
from bebkit.models.hf import HFLanguageModel  # noqa: E402
from bebkit.models.protocol import StopCondition  # noqa: E402

SEQS = [
    [2, 4, 6, 7, 8, 30, 10],
    [2, 5],
    [2, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 28],
    [2, 20, 21, 22],
    [2, 6, 6, 9, 11],
]
PREFIX = [2, 4, 6]
CONTS = [[7, 8, 9, 10], [5, 6], [11, 12], [13, 14, 15], [16, 17, 18, 19, 20]]

OOMS: dict[str, Callable[[], BaseException]] = {
    "torch-oom": lambda: torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "runtime-oom": lambda: RuntimeError("MPS backend out of memory (MPS allocated: 9 GB)"),
    "cpu-alloc": lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: 1 bytes"),
    "memory-error": MemoryError,
}


@contextmanager
def oom_when(
    model: Any, too_big: Callable[[int, int], bool], make: Callable[[], BaseException]
) -> Iterator[list[tuple[int, int]]]:
    """Raise ``make()`` in every forward pass whose (rows, columns) are ``too_big``; yield the
    (rows, columns) of the passes that ran."""
    ran: list[tuple[int, int]] = []

    def hook(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        rows, cols = int(ids.shape[0]), int(ids.shape[1])
        if too_big(rows, cols):
            raise make()
        ran.append((rows, cols))

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield ran
    finally:
        handle.remove()


def oom_above(model: Any, k: int, make: Callable[[], BaseException]) -> Any:
    """:func:`oom_when` for a device with room for ``k`` rows."""
    return oom_when(model, lambda rows, _cols: rows > k, make)


def _calls(lm: HFLanguageModel) -> dict[str, Callable[[], list[np.ndarray]]]:
    """Each batched scoring entry point, its outputs as a list of arrays."""

    def cont() -> list[np.ndarray]:
        sc = lm.continuation_logprobs(PREFIX, CONTS, with_dists=True)
        assert sc.dists is not None
        return [sc.token_logprobs, sc.dists]

    return {
        "sequence_logprobs": lambda: lm.sequence_logprobs(SEQS),
        "next_token_logprobs": lambda: [lm.next_token_logprobs(SEQS)],
        "continuation_logprobs": cont,
        "hidden_states": lambda: list(lm.hidden_states(SEQS, layers=(-1, "middle")).values()),
    }


@pytest.mark.parametrize("call", ["sequence_logprobs", "next_token_logprobs",
                                  "continuation_logprobs", "hidden_states"])  # fmt: skip
@pytest.mark.parametrize("oom", sorted(OOMS))
def test_oom_batch_is_split_in_halves_with_identical_numbers(
    tiny_llama: Any,
    tiny_tokenizer: Any,
    call: str,
    oom: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    expected = _calls(HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8))[call]()
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8)
    before = hf.oom_retries().get(lm.name, 0)
    with (
        caplog.at_level(logging.WARNING, logger="bebkit.models.hf"),
        oom_above(tiny_llama, 1, OOMS[oom]) as ran,
    ):
        got = _calls(lm)[call]()
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    # 5 rows → 2 (fails) → 1: two halvings, then every pass one row
    assert lm.oom_retries == 2
    assert hf.oom_retries()[lm.name] == before + 2
    assert {rows for rows, _ in ran} == {1}
    assert [r.getMessage() for r in caplog.records if r.name == hf.__name__] == [
        "hf: out of memory on 5 rows; retrying at 2",
        "hf: out of memory on 2 rows; retrying at 1",
    ]


def test_later_batches_start_at_the_size_that_fitted(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    """After a halving, later passes at least as wide start at the rows that fitted (no second
    failure); narrower ones are not cut."""
    seqs = [[2, 4, 5, 6, 7, 8], [2, 9, 10, 11, 12, 13], [2, 5, 7, 9, 11, 13],
            [2, 4, 6, 8, 10, 12], [2, 20, 21], [2, 22, 23]]  # fmt: skip
    expected = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=2).sequence_logprobs(seqs)
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=2)
    # memory for 6 tokens: batches of 2×6 do not fit, 1×6 and 2×3 do
    with oom_when(tiny_llama, lambda rows, cols: rows * cols > 6, OOMS["torch-oom"]) as ran:
        got = lm.sequence_logprobs(seqs)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    assert lm.oom_retries == 1
    assert ran == [(1, 6), (1, 6), (1, 6), (1, 6), (2, 3)]


def test_one_row_that_still_runs_out_of_memory_is_a_clear_error(
    tiny_llama: Any, tiny_tokenizer: Any
) -> None:
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8)
    with (
        oom_above(tiny_llama, 0, OOMS["torch-oom"]),
        pytest.raises(BatchOutOfMemoryError, match=r"^hf: out of memory on a batch of one row "),
    ):
        lm.sequence_logprobs(SEQS)
    assert lm.oom_retries == 2  # 5 → 2 → 1, which fails: nothing smaller to try


def test_other_errors_and_split_off_are_not_retried(tiny_llama: Any, tiny_tokenizer: Any) -> None:
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8)
    with (
        oom_above(tiny_llama, 1, lambda: RuntimeError("shape mismatch")),
        pytest.raises(RuntimeError, match=r"^shape mismatch$"),
    ):
        lm.sequence_logprobs(SEQS)
    off = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8, split_on_oom=False)
    with oom_above(tiny_llama, 1, OOMS["torch-oom"]), pytest.raises(torch.OutOfMemoryError):
        off.sequence_logprobs(SEQS)
    assert lm.oom_retries == 0 and off.oom_retries == 0


def test_sampling_out_of_memory_is_a_clear_error_not_a_split(
    tiny_llama: Any, tiny_tokenizer: Any
) -> None:
    """Sampling's decode steps are never split: its random draws depend on the decode batch
    layout (its prefix encoding is split, below)."""
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, decode_rows=8)
    stop = StopCondition(max_new_tokens=3)
    with (
        oom_above(tiny_llama, 4, OOMS["runtime-oom"]),
        pytest.raises(BatchOutOfMemoryError, match="sampling is not split"),
    ):
        lm.sample(PREFIX, 8, stop, rng=np.random.default_rng(0))
    assert lm.oom_retries == 0


# Prefix encoding (shared by continuation_logprobs_many and the samplers): five prefixes of one
# length are encoded in one pass of 5 rows × 6 columns; only that pass is too big below (the
# scoring passes after it are ≤ 4 columns wide, decode steps 1).
EQUAL = [[2, 4, 6, 8, 9, 10], [2, 5, 7, 9, 11, 13], [2, 9, 11, 12, 14, 16],
         [2, 6, 6, 9, 11, 12], [2, 8, 3, 4, 5, 6]]  # fmt: skip
STOP = StopCondition(max_new_tokens=3)


def _prefix_calls(lm: HFLanguageModel) -> dict[str, Callable[[], tuple[Any, list[np.ndarray]]]]:
    """Each entry point that encodes several prefixes: (exact part, float arrays)."""

    def cont() -> tuple[Any, list[np.ndarray]]:
        conts = [[CONTS[k], CONTS[(k + 1) % len(CONTS)]] for k in range(len(EQUAL))]
        out = lm.continuation_logprobs_many(EQUAL, conts, with_dists=True)
        return None, [a for sc in out for a in (sc.token_logprobs, sc.dists)]

    def scored() -> tuple[Any, list[np.ndarray]]:
        rng = np.random.default_rng(3)
        out = lm.sample_scored_many(EQUAL, 3, STOP, rng=rng, with_dists=True)
        return [ys for ys, _ in out], [a for _, sc in out for a in (sc.token_logprobs, sc.dists)]

    def plain() -> tuple[Any, list[np.ndarray]]:
        return lm.sample_many(EQUAL, 3, STOP, rng=np.random.default_rng(3)), []

    return {"continuation_logprobs_many": cont, "sample_scored_many": scored, "sample_many": plain}


@pytest.mark.parametrize("call", ["continuation_logprobs_many", "sample_scored_many",
                                  "sample_many"])  # fmt: skip
def test_prefix_encoding_is_split_in_halves_with_identical_numbers(
    tiny_llama: Any, tiny_tokenizer: Any, call: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The one pass over equal-length prefixes is split like a scoring pass (its chunks' KV
    caches stacked back into one): same samples, same scores, two halvings counted."""
    want_exact, want = _prefix_calls(HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8))[
        call
    ]()
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8)
    with (
        caplog.at_level(logging.WARNING, logger="bebkit.models.hf"),
        oom_when(tiny_llama, lambda rows, cols: rows > 1 and cols == 6, OOMS["torch-oom"]) as ran,
    ):
        got_exact, got = _prefix_calls(lm)[call]()
    assert got_exact == want_exact  # the same draws
    for g, e in zip(got, want, strict=True):
        assert g is not None and e is not None and g.shape == e.shape
        np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    assert lm.oom_retries == 2
    assert [rows for rows, cols in ran if cols == 6] == [1] * len(EQUAL)
    assert [r.getMessage() for r in caplog.records if r.name == hf.__name__] == [
        "hf: out of memory on 5 rows; retrying at 2",
        "hf: out of memory on 2 rows; retrying at 1",
    ]


def test_prefix_encoding_out_of_memory_with_split_off_is_not_retried(
    tiny_llama: Any, tiny_tokenizer: Any
) -> None:
    off = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8, split_on_oom=False)
    conts = [[CONTS[0]] for _ in EQUAL]
    with (
        oom_when(tiny_llama, lambda rows, cols: rows > 1 and cols == 6, OOMS["torch-oom"]),
        pytest.raises(torch.OutOfMemoryError),
    ):
        off.continuation_logprobs_many(EQUAL, conts)
    assert off.oom_retries == 0


def test_padded_prefix_pass_that_cannot_be_stacked_is_a_clear_error(
    tiny_llama: Any, tiny_tokenizer: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Caches that are not plain KV tensors (sliding-window layers) cannot be stacked from
    parts: a prefix pass of such a model that does not fit is one clear error."""
    monkeypatch.setattr(hf, "_merge_left_padded", lambda _caches, _pads: None)
    lm = HFLanguageModel(tiny_llama, tiny_tokenizer, batch_size=8)
    mixed = [[2, 4], [2, 4, 6, 8, 9], [2, 5, 6]]  # different lengths: one left-padded pass
    with (
        oom_when(tiny_llama, lambda rows, cols: rows > 1 and cols == 5, OOMS["torch-oom"]),
        pytest.raises(BatchOutOfMemoryError, match="cannot be encoded in parts"),
    ):
        lm.continuation_logprobs_many(mixed, [[[5, 6]], [[7, 8]], [[9]]])
