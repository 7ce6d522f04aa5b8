"""A Hugging Face causal LM behind the :class:`~bebkit.models.protocol.LanguageModel` protocol.

Everything is computed from one primitive: the next-token log-distribution
``log P(· | x_<t) = log_softmax(logits_t)`` taken in float32 even when the model runs in
bf16/fp16, because KL and log-ratio estimates (paper §2, Definitions 2–3) are differences of
these numbers.

* :meth:`HFLanguageModel.sequence_logprobs` — batched, padded, masked forward passes.
* :meth:`HFLanguageModel.continuation_logprobs` — encodes the shared prefix ``s`` **once**,
  then scores continuations in batches by replicating its KV cache.
* :meth:`HFLanguageModel.sample` — pure ancestral sampling ``y_t ~ P(· | s, y_<t)``
  (temperature 1, no top-k/top-p unless asked; ``generate``'s silent ``top_k=50`` default is
  what biased the paper's KL estimates), reusing the prefix's KV cache for all samples.

Nothing adapter-specific is cached between calls, so the model may be a ``peft.PeftModel``
whose active adapter is switched between calls.

A full-sequence pass that runs out of memory (CUDA, MPS, the CPU allocator or Python's
``MemoryError``) is rerun in halves of its batch, down to one row, with the same padded width
and masks, so every row gets the numbers of the un-split pass up to float32 rounding: matrix
kernels choose their blocking by the number of rows (measured on the test model: ≤ 5e-6 in a
log-prob, often bit-identical). That covers scoring and the prefix encoding shared by
scoring and sampling (the chunks' KV caches are stacked back into one). Each halving is
logged and counted (:attr:`HFLanguageModel.oom_retries`, :func:`oom_retries`; ``reproduce``
writes the count into its record; ``split_on_oom: false`` in its config turns it off).
Sampling's decode steps are never split — its random draws depend on the decode batch
layout, and the KV cache that fills memory there would not shrink — and one row that still
does not fit raises :class:`~bebkit.errors.BatchOutOfMemoryError`.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bebkit.errors import BatchOutOfMemoryError
from bebkit.models.protocol import ContinuationScores, StopCondition, TokenIds, check_prefix

LayerSpec = int | str
Tensors = tuple[torch.Tensor, ...]

log = logging.getLogger(__name__)
#: batch halvings after an out-of-memory error in this process, per model name
_OOM_RETRIES: Counter[str] = Counter()


def oom_retries() -> dict[str, int]:
    """Batch halvings after out-of-memory errors so far in this process, per model name."""
    return dict(_OOM_RETRIES)


def _forward_parameters(model: Any) -> Mapping[str, inspect.Parameter]:
    """The parameters of ``model``'s own forward (under a PEFT wrapper, the base model's)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return inspect.signature(base.forward).parameters


def cache_arg_name(model: Any) -> str:
    """The name under which ``model``'s forward (through a PEFT wrapper) takes and returns a
    KV cache: transformers 5.x renames ``past_key_values`` to ``cache`` (the old name warns,
    and goes in 5.40); releases before the rename only know the old one."""
    return "cache" if "cache" in _forward_parameters(model) else "past_key_values"


def returned_cache(out: Any, arg: str) -> Any:
    """The KV cache a forward with ``use_cache=True`` returned, for the cache argument name
    ``arg`` (:func:`cache_arg_name`): ``out.cache`` after the rename, ``out.past_key_values``
    before it (and where an output class after the rename still fills only the old field)."""
    if arg == "cache":
        cache = getattr(out, "cache", None)
        if cache is not None:
            return cache
    return out.past_key_values


class HFLanguageModel:
    """:class:`~bebkit.models.protocol.LanguageModel` backed by a transformers causal LM.

    Args:
        model: a ``PreTrainedModel`` (or ``peft.PeftModel``) returning ``.logits``.
        tokenizer: its tokenizer.
        name: short display name.
        batch_size: most sequences per full-sequence forward pass (scoring).
        decode_rows: most rows per KV-cached sampling batch. A decode step reads every
            weight once for all its rows, so more rows per step is cheaper per token (on a
            CPU core: 142 tok/s at 32 rows, 210 at 64, 237 at 128 for SmolLM2-135M); the KV
            cache costs ``rows × prefix × layers × 2 × kv_dim`` floats.
        max_logits_elements: cap on ``rows × positions × V`` logits held at once; batches are
            shrunk below ``batch_size`` to respect it (large vocabularies, e.g. Gemma's 262k).
        bos_token_ids: tokens that start every context; default: the tokens the tokenizer
            itself prepends, else ``[bos_token_id]``, else ``[]``.
        padding_side: ``"right"`` or ``"left"`` padding for batched :meth:`sequence_logprobs`
            (results are identical; left padding uses explicit position ids).
        split_on_oom: rerun a scoring or prefix-encoding batch that runs out of memory in
            halves (down to one row); False lets the allocator's error through.
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        name: str = "hf",
        *,
        batch_size: int = 32,
        max_logits_elements: int = 2**27,
        bos_token_ids: Sequence[int] | None = None,
        padding_side: str = "right",
        decode_rows: int = 128,
        split_on_oom: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if decode_rows < 1:
            raise ValueError(f"decode_rows must be >= 1, got {decode_rows}")
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.model = model
        self.tokenizer = tokenizer
        self._name = name
        self.batch_size = int(batch_size)
        self.decode_rows = int(decode_rows)
        self.max_logits_elements = int(max_logits_elements)
        self.padding_side = padding_side
        self.split_on_oom = bool(split_on_oom)
        #: batch halvings after out-of-memory errors (each one logged)
        self.oom_retries = 0
        # (rows, width) that last fitted after a halving: later batches at least that wide
        # start there instead of failing at full size again; narrower ones are not cut.
        self._oom_cap: tuple[int, int] | None = None
        self._bos = (
            [int(t) for t in bos_token_ids]
            if bos_token_ids is not None
            else _default_bos(tokenizer)
        )
        self._vocab_size = _output_vocab_size(model, tokenizer)
        pad = getattr(tokenizer, "pad_token_id", None)
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None)
        # The pad id is never attended to nor scored; it only needs to be a valid embedding row.
        self._pad_id = int(pad) if isinstance(pad, int) and 0 <= pad < self._vocab_size else 0
        self._keep_last = "logits_to_keep" in _forward_parameters(model)
        self._cache_arg = cache_arg_name(model)
        model.eval()

    # ----------------------------------------------------------------- protocol: metadata
    @property
    def name(self) -> str:
        """Display name."""
        return self._name

    @property
    def vocab_size(self) -> int:
        """Size V of the next-token distribution (the model's output dimension)."""
        return self._vocab_size

    @property
    def bos_token_ids(self) -> list[int]:
        """Tokens that start every context (``[]`` when the model has none)."""
        return list(self._bos)

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def encode(self, text: str) -> list[int]:
        """Tokenise text without special tokens."""
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]

    def decode(self, ids: TokenIds) -> str:
        """Detokenise ids (special tokens kept)."""
        return str(self.tokenizer.decode([int(t) for t in ids], skip_special_tokens=False))

    # ----------------------------------------------------------------- internals
    def _forward(self, *, cache: Any = None, **kwargs: Any) -> Any:
        """One forward pass; ``cache`` (a KV cache to continue from) goes under the name this
        model's transformers release expects."""
        if cache is not None:
            kwargs[self._cache_arg] = cache
        return self.model(use_cache=kwargs.pop("use_cache", False), return_dict=True, **kwargs)

    def _out_cache(self, out: Any) -> Any:
        """The KV cache a forward with ``use_cache=True`` returned (:func:`returned_cache`)."""
        return returned_cache(out, self._cache_arg)

    def _by_rows(self, n: int, width: int, run: Callable[[int, int], Tensors]) -> Tensors:
        """``run(0, n)``, or after an out-of-memory error ``run`` on consecutive row chunks of
        half the failed size (down to one row), concatenated along the batch axis.

        ``run(lo, hi)`` computes rows ``lo … hi−1`` of one already padded batch of ``width``
        columns, so a row's padded width and masks are the same however the batch is cut.
        """
        cap = self._oom_cap
        size = n if cap is None or width < cap[1] else min(n, cap[0])
        parts: list[Tensors] = []
        lo = 0
        while lo < n:
            hi = min(n, lo + size)
            try:
                parts.append(run(lo, hi))
                lo = hi
                continue
            except (RuntimeError, MemoryError) as exc:
                if not (self.split_on_oom and _is_oom(exc)):
                    raise
                if hi - lo == 1:
                    raise BatchOutOfMemoryError(
                        f"{self.name}: out of memory on a batch of one row "
                        f"({type(exc).__name__}); use a smaller model, shorter inputs or a "
                        "device with more memory"
                    ) from exc
            # Retried outside the except block, so the failed pass's frames and tensors are
            # already released.
            size = (hi - lo) // 2
            self._oom_cap = (size, width)
            self.oom_retries += 1
            _OOM_RETRIES[self.name] += 1
            log.warning("%s: out of memory on %d rows; retrying at %d", self.name, hi - lo, size)
            _release_cached_memory()
        if len(parts) == 1:
            return parts[0]
        return tuple(torch.cat(chunk, dim=0) for chunk in zip(*parts, strict=True))

    def _rows_per_batch(self, positions: int) -> int:
        per_row = max(1, positions) * self._vocab_size
        return max(1, min(self.batch_size, self.max_logits_elements // per_row))

    def _padded_batches(
        self, seqs: list[list[int]]
    ) -> Iterator[tuple[list[int], torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Yield ``(indices, input_ids, attention_mask, position_ids)`` for length-sorted batches.

        Sorting by length keeps padding small; ``indices`` map rows back to ``seqs``. Left
        padding gets ``position_ids = cumsum(mask) − 1`` so every real token sits at the same
        position as in an unpadded pass.
        """
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]), reverse=True)
        start = 0
        dev = self.device
        while start < len(order):
            longest = len(seqs[order[start]])
            rows = self._rows_per_batch(longest)
            idx = order[start : start + rows]
            start += rows
            ids = torch.full((len(idx), longest), self._pad_id, dtype=torch.long)
            mask = torch.zeros((len(idx), longest), dtype=torch.long)
            for r, i in enumerate(idx):
                s = seqs[i]
                if self.padding_side == "right":
                    ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
                    mask[r, : len(s)] = 1
                else:
                    ids[r, longest - len(s) :] = torch.tensor(s, dtype=torch.long)
                    mask[r, longest - len(s) :] = 1
            pos = (mask.cumsum(dim=1) - 1).clamp(min=0)
            yield idx, ids.to(dev), mask.to(dev), pos.to(dev)

    def _padded_logits(
        self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        """Logits of one padded batch (split into row chunks on out-of-memory)."""

        def run(lo: int, hi: int) -> Tensors:
            kw = {"attention_mask": mask[lo:hi], "position_ids": pos[lo:hi]}
            return (self._forward(input_ids=ids[lo:hi], **kw).logits,)

        return self._by_rows(ids.shape[0], ids.shape[1], run)[0]

    def _padded_hidden(self, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> Tensors:
        """Hidden states (every layer) of one padded batch, split on out-of-memory."""

        def run(lo: int, hi: int) -> Tensors:
            kw = {"attention_mask": mask[lo:hi], "position_ids": pos[lo:hi]}
            res = self._forward(input_ids=ids[lo:hi], output_hidden_states=True, **kw)
            return tuple(res.hidden_states)

        return self._by_rows(ids.shape[0], ids.shape[1], run)

    def _cached_logits(
        self, feed: torch.Tensor, pf: _Prefixes, src: torch.Tensor, extra: dict[str, Any]
    ) -> torch.Tensor:
        """Logits of ``feed`` after the prefix caches ``src`` (row chunks on out-of-memory)."""

        def run(lo: int, hi: int) -> Tensors:
            out = self._forward(
                input_ids=feed[lo:hi].to(self.device),
                cache=self._select_cache(pf.cache, src[lo:hi]),
                use_cache=True,
                **{name: t[lo:hi] for name, t in extra.items()},
            )
            return (out.logits,)

        return self._by_rows(feed.shape[0], feed.shape[1], run)[0]

    def _real_slice(self, row_len: int, padded_len: int) -> slice:
        """Columns holding the real tokens of a row of length ``row_len``."""
        if self.padding_side == "right":
            return slice(0, row_len)
        return slice(padded_len - row_len, padded_len)

    def _encode_prefixes(self, prefixes: list[list[int]]) -> _Prefixes:
        """KV cache and ``log P(· | prefix_k)`` of K prefixes, left-aligned to the longest.

        Equal lengths: one batched pass, no mask. Different lengths: each prefix is encoded
        alone (no compute spent on padding) and the caches are merged with zero left padding,
        which every later step masks (attention mask + explicit position ids); caches that
        are not plain growing KV tensors (e.g. sliding-window layers) fall back to one
        left-padded, masked pass.
        """
        lens = torch.tensor([len(p) for p in prefixes], dtype=torch.long)
        width = int(lens.max())
        pad = width - lens
        if not bool(pad.any()):
            cache, first = self._prefix_pass(prefixes, None)
            return _Prefixes(cache, first, pad, lens, False)
        parts = [self._prefix_pass([pre], None) for pre in prefixes]
        merged = _merge_left_padded([c for c, _ in parts], pad.tolist())
        if merged is not None:
            first = torch.cat([f for _, f in parts], dim=0)
            return _Prefixes(merged, first, pad, lens, True)
        cache, first = self._prefix_pass(prefixes, pad)
        return _Prefixes(cache, first, pad, lens, True)

    def _prefix_pass(
        self, prefixes: list[list[int]], pad: torch.Tensor | None
    ) -> tuple[Any, torch.Tensor]:
        """One forward over prefixes (equal lengths, or left-padded by ``pad``): cache, last
        log-dists. On out-of-memory the rows are encoded in halves (:meth:`_by_rows`) and
        their caches stacked, which every row sees as the un-split pass."""
        width = max(len(p) for p in prefixes)
        ids = torch.full((len(prefixes), width), self._pad_id, dtype=torch.long)
        for k, pre in enumerate(prefixes):
            ids[k, width - len(pre) :] = torch.tensor(pre, dtype=torch.long)
        # Only the last position's logits are used: skipping the LM head on the other
        # positions saves 2·L·V·d FLOPs (≈ 20 % of a 100-token prefix pass for a 49k vocabulary).
        keep: dict[str, Any] = {"logits_to_keep": 1} if self._keep_last else {}
        rows: dict[str, torch.Tensor] = {}
        if pad is not None:
            # real tokens at positions 0 … L−1 whatever the padding (padding columns: 0)
            rows = self._mask_kwargs(pad, -pad, 0, width)
            rows["position_ids"] = rows["position_ids"].clamp(min=0)
        caches: list[Any] = []  # one per chunk that ran, in row order

        def run(lo: int, hi: int) -> Tensors:
            out = self._forward(
                input_ids=ids[lo:hi].to(self.device),
                use_cache=True,
                **keep,
                **{name: t[lo:hi] for name, t in rows.items()},
            )
            caches.append(self._out_cache(out))
            return (out.logits[:, -1, :].float().log_softmax(dim=-1),)

        first = self._by_rows(len(prefixes), width, run)[0]
        if len(caches) == 1:
            return caches[0], first
        cache = _merge_left_padded(caches, [0] * len(caches))
        if cache is None:
            raise BatchOutOfMemoryError(
                f"{self.name}: out of memory encoding {len(prefixes)} prefixes, and this "
                "model's cache layers cannot be encoded in parts; use shorter inputs or a "
                "device with more memory"
            )
        return cache, first

    def _mask_kwargs(
        self, pad: torch.Tensor, start: torch.Tensor, past: int, new: int
    ) -> dict[str, Any]:
        """Attention mask and position ids for ``new`` tokens after ``past`` cached columns.

        Row r has ``pad[r]`` left-padding columns; its new tokens sit at positions
        ``start[r] … start[r] + new − 1`` (the real tokens before them).
        """
        cols = torch.arange(past + new)
        mask = (cols[None, :] >= pad[:, None]).long()
        pos = start[:, None] + torch.arange(new)[None, :]
        return {"attention_mask": mask.to(self.device), "position_ids": pos.to(self.device)}

    def _select_cache(self, cache: Any, rows: torch.Tensor) -> Any:
        """A private copy of a cache whose batch row ``i`` is row ``rows[i]`` of ``cache``."""
        selected = copy.deepcopy(cache)
        selected.batch_select_indices(rows.to(self.device))
        return selected

    # ----------------------------------------------------------------- protocol: scoring
    @torch.inference_mode()
    def sequence_logprobs(self, sequences: Sequence[TokenIds]) -> list[np.ndarray]:
        """For every sequence x: ``[log P(x_t | x_<t) for t = 1 … len(x)−1]`` (float64).

        Padded batches with an attention mask; ``log_softmax`` in float32.
        """
        seqs = [[int(t) for t in s] for s in sequences]
        result: list[np.ndarray] = [np.zeros(0, dtype=np.float64) for _ in seqs]
        todo = [i for i, s in enumerate(seqs) if len(s) >= 2]
        if not todo:
            return result
        sub = [seqs[i] for i in todo]
        for idx, ids, mask, pos in self._padded_batches(sub):
            logits = self._padded_logits(ids, mask, pos)
            padded = ids.shape[1]
            for r, i in enumerate(idx):
                cols = self._real_slice(len(sub[i]), padded)
                lg = logits[r, cols][:-1].float()
                tgt = ids[r, cols][1:]
                lp = lg.gather(-1, tgt[:, None])[:, 0] - torch.logsumexp(lg, dim=-1)
                result[todo[i]] = lp.double().cpu().numpy()
        return result

    @torch.inference_mode()
    def next_token_logprobs(self, prefixes: Sequence[TokenIds]) -> np.ndarray:
        """``[B, V]`` array of ``log P(· | prefix_b)`` (float64)."""
        seqs = [check_prefix(p) for p in prefixes]
        out = np.zeros((len(seqs), self._vocab_size), dtype=np.float64)
        for idx, ids, mask, pos in self._padded_batches(seqs):
            logits = self._padded_logits(ids, mask, pos)
            padded = ids.shape[1]
            for r, i in enumerate(idx):
                last = self._real_slice(len(seqs[i]), padded).stop - 1
                out[i] = logits[r, last].float().log_softmax(dim=-1).double().cpu().numpy()
        return out

    @torch.inference_mode()
    def continuation_logprobs(
        self,
        prefix: TokenIds,
        continuations: Sequence[TokenIds],
        *,
        with_dists: bool = False,
        reference: np.ndarray | None = None,
    ) -> ContinuationScores:
        """``log P(y_t | s, y_<t)`` for every continuation ``y`` after the shared prefix ``s``.

        The prefix is encoded once; each batch of continuations runs on a replica of its KV
        cache. Continuations are right-padded after the prefix, which needs no attention mask:
        under the causal mask a real token never sees the padding that follows it.

        ``dists`` come back as float32 (they are float32 log-softmaxes). With ``reference``
        (``[N, ≥T, V]`` log-dists R), ``step_kl[i, t] = Σ_v R(v)(log R(v) − log P(v|h_t))`` is
        computed batch by batch in torch, so no ``[N, T, V]`` array of P is materialised.
        """
        refs = None if reference is None else [reference]
        return self.continuation_logprobs_many(
            [prefix], [continuations], with_dists=with_dists, references=refs
        )[0]

    @torch.inference_mode()
    def continuation_logprobs_many(
        self,
        prefixes: Sequence[TokenIds],
        continuations: Sequence[Sequence[TokenIds]],
        *,
        with_dists: bool = False,
        references: Sequence[np.ndarray | None] | None = None,
    ) -> list[ContinuationScores]:
        """:meth:`continuation_logprobs` for K prefixes at once (``continuations[k]`` after ``prefixes[k]``).

        All prefixes are encoded in one left-padded pass and continuations of different
        prefixes share scoring batches (attention mask + position ids), so short curves of
        several prefix lengths fill the batches a single prefix would leave small.
        """
        pres = [check_prefix(p) for p in prefixes]
        if len(continuations) != len(pres):
            raise ValueError("need one list of continuations per prefix")
        if references is not None and len(references) != len(pres):
            raise ValueError("need one reference (or None) per prefix")
        conts = [[[int(t) for t in c] for c in cs] for cs in continuations]
        v = self._vocab_size
        outs: list[ContinuationScores] = []
        refs: list[torch.Tensor | None] = []
        for k, cs in enumerate(conts):
            lengths = np.array([len(c) for c in cs], dtype=np.int64)
            width = int(lengths.max()) if cs else 0
            ref = _reference_tensor(
                references[k] if references is not None else None, len(cs), width, v
            )
            refs.append(ref)
            outs.append(
                ContinuationScores(
                    token_logprobs=np.zeros((len(cs), width), dtype=np.float64),
                    lengths=lengths,
                    dists=np.zeros((len(cs), width, v), dtype=np.float32) if with_dists else None,
                    step_kl=np.zeros((len(cs), width), dtype=np.float64)
                    if ref is not None
                    else None,
                )
            )
        used = [k for k in range(len(pres)) if any(conts[k])]
        if not used:
            return outs
        pf = self._encode_prefixes([pres[k] for k in used])
        slot = {k: j for j, k in enumerate(used)}  # prefix k → row of the prefix cache
        # Step 0 has the same context for every continuation of a prefix: one op per prefix.
        for k in used:
            sc, ref, first = outs[k], refs[k], pf.first[slot[k]]
            nonempty = [i for i, c in enumerate(conts[k]) if c]
            tok0 = torch.tensor([conts[k][i][0] for i in nonempty], dtype=torch.long)
            first_cpu = first.cpu()
            sc.token_logprobs[nonempty, 0] = first_cpu[tok0].double().numpy()
            if sc.dists is not None:
                sc.dists[nonempty, 0] = first_cpu.numpy()
            if ref is not None and sc.step_kl is not None:
                r0 = ref[torch.tensor(nonempty, dtype=torch.long), 0].to(first.device)
                sc.step_kl[nonempty, 0] = _kl_terms(r0, first[None]).cpu().numpy()
        rows = [(k, i) for k in used for i, c in enumerate(conts[k]) if len(c) >= 2]
        rows.sort(key=lambda r: len(conts[r[0]][r[1]]), reverse=True)
        start = 0
        while start < len(rows):
            longest = len(conts[rows[start][0]][rows[start][1]])
            batch = rows[start : start + self._rows_per_batch(longest - 1)]
            start += len(batch)
            b = len(batch)
            # Feed y_0 … y_{T−2}; the logits at step t give the distribution of y_{t+1}.
            feed = torch.full((b, longest - 1), self._pad_id, dtype=torch.long)
            tgt = torch.zeros((b, longest - 1), dtype=torch.long)
            lens = torch.tensor([len(conts[k][i]) for k, i in batch], dtype=torch.long)
            for r, (k, i) in enumerate(batch):
                c = conts[k][i]
                feed[r, : len(c) - 1] = torch.tensor(c[:-1], dtype=torch.long)
                tgt[r, : len(c) - 1] = torch.tensor(c[1:], dtype=torch.long)
            src = torch.tensor([slot[k] for k, _ in batch], dtype=torch.long)
            extra = (
                self._mask_kwargs(pf.pad[src], pf.lens[src], pf.width, longest - 1)
                if pf.masked
                else {}
            )
            logits = self._cached_logits(feed, pf, src, extra).float()  # [b, T−1, V]
            with_ref = any(refs[k] is not None for k, _ in batch)
            index = tgt.to(logits.device)[..., None]
            if with_dists or with_ref:
                logits = logits.log_softmax(dim=-1)
                picked = logits.gather(-1, index)[..., 0]
            else:
                # log p = logit − logsumexp(logits): avoids a second [b, T−1, V] tensor.
                picked = logits.gather(-1, index)[..., 0] - torch.logsumexp(logits, dim=-1)
            valid = torch.arange(longest - 1)[None, :] < (lens - 1)[:, None]  # [b, T−1]
            picked_np = torch.where(valid, picked.cpu().double(), 0.0).numpy()
            kl_np = None
            if with_ref:
                rb = torch.zeros((b, longest - 1, v), dtype=torch.float32)
                for r, (k, i) in enumerate(batch):
                    ref = refs[k]
                    if ref is not None:
                        w = min(longest, ref.shape[1])
                        rb[r, : w - 1] = ref[i, 1:w]
                kl = _kl_terms(rb.to(logits.device), logits).cpu()
                kl_np = torch.where(valid, kl, 0.0).numpy()
            dists_np = logits.cpu().numpy() if with_dists else None
            for r, (k, i) in enumerate(batch):
                sc, n_t = outs[k], len(conts[k][i])
                sc.token_logprobs[i, 1:n_t] = picked_np[r, : n_t - 1]
                if sc.dists is not None and dists_np is not None:
                    sc.dists[i, 1:n_t] = dists_np[r, : n_t - 1]
                if sc.step_kl is not None and kl_np is not None:
                    sc.step_kl[i, 1:n_t] = kl_np[r, : n_t - 1]
        return outs

    # ----------------------------------------------------------------- protocol: sampling
    @torch.inference_mode()
    def sample(
        self,
        prefix: TokenIds,
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> list[list[int]]:
        """``n`` independent continuations ``y ~ P(· | s)`` by ancestral sampling.

        Each row stops after a token in ``stop.stop_token_ids`` (kept) or after
        ``stop.max_new_tokens`` tokens; finished rows are dropped from the batch (and from the
        KV cache), so the batch only ever computes live rows.
        Deterministic given ``rng``: a ``torch.Generator`` is seeded from it.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
        return self._sample_many([prefix], n, stop, rng, temperature, top_k, top_p, None)[0]

    @torch.inference_mode()
    def sample_many(
        self,
        prefixes: Sequence[TokenIds],
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
    ) -> list[list[list[int]]]:
        """:meth:`sample` for K prefixes at once: ``n`` rows each, sharing decode batches.

        One encoding pass per prefix (caches merged, left-padded and masked) and decode
        batches of up to ``decode_rows`` rows across prefixes: a decode step reads every
        weight once for all its rows, so e.g. 4 response contexts × 32 rows decode ≈ 1.7×
        faster per token than 32 rows at a time on a CPU core.
        """
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        if top_p is not None and not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] or None, got {top_p}")
        return self._sample_many(prefixes, n, stop, rng, temperature, top_k, top_p, None)

    @torch.inference_mode()
    def sample_scored(
        self,
        prefix: TokenIds,
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        with_dists: bool = False,
    ) -> tuple[list[list[int]], ContinuationScores]:
        """``sample`` at temperature 1 plus the scores the sampler computed on the way.

        ``token_logprobs[i, t] = log P(y_t | s, y_<t)`` is read from the very distribution
        ``y_t`` was drawn from, and ``dists`` (float32) are those distributions: equal to
        :meth:`continuation_logprobs` on the same samples up to float32 rounding, for no
        extra forward pass. Same samples as :meth:`sample` for the same ``rng``.
        """
        return self.sample_scored_many([prefix], n, stop, rng=rng, with_dists=with_dists)[0]

    @torch.inference_mode()
    def sample_scored_many(
        self,
        prefixes: Sequence[TokenIds],
        n: int,
        stop: StopCondition,
        *,
        rng: np.random.Generator,
        with_dists: bool = False,
    ) -> list[tuple[list[list[int]], ContinuationScores]]:
        """:meth:`sample_scored` for K prefixes at once: ``n`` rows each, decoded together.

        The K prefixes are encoded in one left-padded pass and their ``K·n`` rows share
        decode batches of up to ``decode_rows`` rows (a decode step costs about the same for
        32 rows as for 64 on a CPU, so a curve's short cells ride along for little).
        """
        k = len(prefixes)
        rec = _Recorder(k * max(n, 0), stop.max_new_tokens, self._vocab_size if with_dists else 0)
        groups = self._sample_many(prefixes, n, stop, rng, 1.0, None, None, rec)
        return [(ys, rec.scores(ys, j * n)) for j, ys in enumerate(groups)]

    def _sample_many(
        self,
        prefixes: Sequence[TokenIds],
        n: int,
        stop: StopCondition,
        rng: np.random.Generator,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        rec: _Recorder | None,
    ) -> list[list[list[int]]]:
        pres = [check_prefix(p) for p in prefixes]
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if n == 0 or not pres:
            return [[] for _ in pres]
        dev = self.device
        gen = torch.Generator(device=dev)
        gen.manual_seed(int(rng.integers(0, 2**63 - 1)))
        stop_ids = torch.tensor(sorted(stop.stop_token_ids), dtype=torch.long, device=dev)
        total = len(pres) * n
        flat: list[list[int]] = []
        try:
            pf = self._encode_prefixes(pres)
            for row0 in range(0, total, self.decode_rows):
                src = torch.arange(row0, min(total, row0 + self.decode_rows)) // n  # row → prefix
                flat.extend(
                    self._sample_batch(
                        pf, src, stop, stop_ids, gen, temperature, top_k, top_p, rec, row0
                    )
                )
        except (RuntimeError, MemoryError) as exc:
            if not _is_oom(exc):
                raise
            # Not split and retried: each decode batch draws its own random numbers, so
            # smaller batches would draw different samples.
            raise BatchOutOfMemoryError(
                f"{self.name}: out of memory while sampling {total} rows in decode batches of "
                f"{self.decode_rows} ({type(exc).__name__}); sampling is not split (the draws "
                "depend on the batch layout): lower HFLanguageModel(decode_rows=...) or use a "
                "device with more memory"
            ) from exc
        return [flat[j * n : (j + 1) * n] for j in range(len(pres))]

    def _sample_batch(
        self,
        pf: _Prefixes,
        src: torch.Tensor,
        stop: StopCondition,
        stop_ids: torch.Tensor,
        gen: torch.Generator,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        rec: _Recorder | None,
        row0: int,
    ) -> list[list[int]]:
        b = int(src.numel())
        # Room for every decode step up front: each step then writes one KV column instead
        # of concatenating (copying) the whole cache, the main cost of a step at long prefixes.
        cache = _with_decode_room(self._select_cache(pf.cache, src), stop.max_new_tokens)
        logp = pf.first[src.to(pf.first.device)]
        pad, start = pf.pad[src], pf.lens[src]  # left padding; position of the next token
        out: list[list[int]] = [[] for _ in range(b)]
        live = torch.arange(b)  # output row of each live batch row
        # StopCondition.blank_token_ids: a stop token ends a row only after non-blank text
        blank_ids = torch.tensor(sorted(stop.blank_token_ids), dtype=torch.long)
        blank_ids = blank_ids.to(stop_ids.device)
        content = torch.zeros(b, dtype=torch.bool, device=stop_ids.device)
        for step in range(stop.max_new_tokens):
            probs = _sampling_probs(logp, temperature, top_k, top_p)
            tok = _draw(probs, gen)
            if rec is not None:
                rec.record(live + row0, step, logp, tok)
            tok_cpu = tok.cpu()
            for r, t in zip(live.tolist(), tok_cpu.tolist(), strict=True):
                out[r].append(int(t))
            if step == stop.max_new_tokens - 1:
                break
            done = (
                torch.isin(tok, stop_ids)
                if stop_ids.numel()
                else torch.zeros_like(tok, dtype=torch.bool)
            )
            if blank_ids.numel():
                content = content | ~torch.isin(tok, blank_ids)
                done = done & content
            if bool(done.all()):
                break
            if bool(done.any()):
                keep = (~done).nonzero()[:, 0]
                cache.batch_select_indices(keep)
                tok, content = tok[keep], content[keep]
                keep_cpu = keep.cpu()
                live, pad, start = live[keep_cpu], pad[keep_cpu], start[keep_cpu]
            extra = self._mask_kwargs(pad, start + step, pf.width + step, 1) if pf.masked else {}
            res = self._forward(input_ids=tok[:, None], cache=cache, use_cache=True, **extra)
            cache = self._out_cache(res)
            logp = res.logits[:, -1, :].float().log_softmax(dim=-1)
        return out

    # ----------------------------------------------------------------- probes (appendix K)
    @torch.inference_mode()
    def hidden_states(
        self,
        texts_or_ids: Sequence[str] | Sequence[TokenIds],
        layers: Sequence[LayerSpec] = (-1, "middle"),
    ) -> dict[LayerSpec, np.ndarray]:
        """Last-token hidden states ``[N, d]`` (float32) for each requested layer.

        Layers index ``outputs.hidden_states`` (entry 0 = embeddings, entry ``L`` = last layer,
        which HF models return after the final norm); ``"middle"`` means entry ``L // 2``.
        Strings are encoded as ``bos_token_ids + encode(text)``. Keys of the result are the
        requested specs.
        """
        seqs: list[list[int]] = []
        for item in texts_or_ids:
            if isinstance(item, str):
                seqs.append(self._bos + self.encode(item))
            else:
                seqs.append([int(t) for t in item])
        for s in seqs:
            check_prefix(s)
        specs = list(layers)
        out: dict[LayerSpec, np.ndarray] = {}
        chunks: dict[LayerSpec, list[tuple[list[int], np.ndarray]]] = {s: [] for s in specs}
        for idx, ids, mask, pos in self._padded_batches(seqs):
            hs = self._padded_hidden(ids, mask, pos)
            padded = ids.shape[1]
            last = torch.tensor(
                [self._real_slice(len(seqs[i]), padded).stop - 1 for i in idx], device=ids.device
            )
            rows = torch.arange(len(idx), device=ids.device)
            for spec in specs:
                h = hs[_layer_index(spec, len(hs))]
                chunks[spec].append((idx, h[rows, last].float().cpu().numpy()))
        for spec in specs:
            first = chunks[spec][0][1] if chunks[spec] else np.zeros((0, 0), np.float32)
            arr = np.zeros((len(seqs), first.shape[1] if first.ndim == 2 else 0), np.float32)
            for idx, vals in chunks[spec]:
                arr[idx] = vals
            out[spec] = arr
        return out


@dataclass(frozen=True)
class _Prefixes:
    """K encoded prefixes: KV cache ``[K, …, width]``, ``log P(· | prefix_k)`` ``[K, V]``,
    left padding and lengths ``[K]`` (CPU), and whether the padding needs a mask."""

    cache: Any
    first: torch.Tensor
    pad: torch.Tensor
    lens: torch.Tensor
    masked: bool

    @property
    def width(self) -> int:
        """Columns of the prefix cache (the longest prefix)."""
        return int((self.pad + self.lens).max())


def _is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocator's out-of-memory error (CUDA, MPS, CPU or Python's)."""
    if isinstance(exc, BatchOutOfMemoryError):  # already final: nothing smaller to retry
        return False
    if isinstance(exc, MemoryError | torch.OutOfMemoryError):
        return True
    msg = str(exc).lower()
    return isinstance(exc, RuntimeError) and (
        "out of memory" in msg or "can't allocate memory" in msg  # the CPU allocator's words
    )


def _release_cached_memory() -> None:
    """Return the CUDA caching allocator's free blocks before a retry (no-op elsewhere)."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _merge_left_padded(caches: list[Any], pads: list[int]) -> Any | None:
    """KV caches stacked along the batch axis, cache ``k`` left-padded by ``pads[k]`` zero
    columns (batch-1 caches of different lengths; or, all pads 0, row chunks of one pass).

    Only for caches made of plain growing layers (``DynamicLayer``); None otherwise.
    """
    from transformers.cache_utils import DynamicLayer

    found = [getattr(c, "layers", None) for c in caches]
    layers: list[Any] = [ls for ls in found if ls is not None]
    if len(layers) < len(caches) or any(
        type(layer) is not DynamicLayer for ls in layers for layer in ls
    ):
        return None
    merged = caches[pads.index(0)]
    for i, layer in enumerate(merged.layers):
        for attr in ("keys", "values"):
            parts = [
                torch.nn.functional.pad(getattr(ls[i], attr), (0, 0, p, 0))
                for ls, p in zip(layers, pads, strict=True)
            ]
            setattr(layer, attr, torch.cat(parts, dim=0))
    return merged


def _with_decode_room(cache: Any, extra: int) -> Any:
    """``cache`` with each plain growing layer (``DynamicLayer``) replaced by a
    ``RoomyLayer`` (:func:`_roomy_layer_class`) holding the same keys/values and room for ``extra`` more columns;
    other layer types (sliding windows, …) are left as they are."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if layers is None:
        return cache
    for i, layer in enumerate(layers):
        keys, values = getattr(layer, "keys", None), getattr(layer, "values", None)
        if type(layer) is DynamicLayer and keys is not None and values is not None and keys.numel():
            layers[i] = _roomy_layer(keys, values, extra)
    return cache


@functools.cache
def _roomy_layer_class() -> type:
    from transformers.cache_utils import DynamicLayer

    class RoomyLayer(DynamicLayer):
        """A ``DynamicLayer`` whose ``keys``/``values`` are views of preallocated buffers:
        ``update`` writes the new columns in place (amortised O(new) instead of the O(cache)
        copy of ``torch.cat``); the values seen by attention are the same tensors' contents,
        so the numbers are identical to ``DynamicLayer``'s."""

        def __init__(self, keys: torch.Tensor, values: torch.Tensor, extra: int) -> None:
            super().__init__()
            b, h, n, d = keys.shape
            self._kbuf = keys.new_empty((b, h, n + max(extra, 1), d))
            self._vbuf = values.new_empty((b, values.shape[1], n + max(extra, 1), values.shape[3]))
            self._kbuf[:, :, :n] = keys
            self._vbuf[:, :, :n] = values
            self._n = n
            self.device = keys.device
            self.is_initialized = True
            self._views()

        def _views(self) -> tuple[torch.Tensor, torch.Tensor]:
            keys, values = self._kbuf[:, :, : self._n], self._vbuf[:, :, : self._n]
            self.keys, self.values = keys, values
            return keys, values

        def update(
            self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
        ) -> tuple[torch.Tensor, torch.Tensor]:
            n, new = self._n, key_states.shape[-2]
            if key_states.dtype != self._kbuf.dtype:  # torch.cat would promote; never cast
                raise TypeError(
                    f"KV states of dtype {key_states.dtype} for a {self._kbuf.dtype} cache"
                )
            if n + new > self._kbuf.shape[-2]:  # out of room: double it (rare)
                grow = (0, 0, 0, max(new, self._kbuf.shape[-2]))
                self._kbuf = torch.nn.functional.pad(self._kbuf, grow)
                self._vbuf = torch.nn.functional.pad(self._vbuf, grow)
            self._kbuf[:, :, n : n + new] = key_states
            self._vbuf[:, :, n : n + new] = value_states
            self._n = n + new
            return self._views()

        def get_seq_length(self) -> int:
            return self._n

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            k = int(indices.numel())
            if k > self._kbuf.shape[0]:  # more rows than there are (repeats): a new buffer
                self._kbuf, self._vbuf = self._kbuf[indices], self._vbuf[indices]
                self._views()
                return
            # Gathered into the front of the same buffers, filled columns only, and only from
            # the first row that moves (pruning keeps the order, so the rows before the first
            # finished one are already in place): no new full-width buffer, no copy of the
            # empty room, only a temporary of the moved rows' filled columns (measured for 128
            # rows × 130 + 48 columns, 30 layers, every row moving: 87 vs 141 ms a pruning).
            # Same values, same layout.
            idx = indices.to(self._kbuf.device)
            moved = (idx != torch.arange(k, device=idx.device)).nonzero()
            first = int(moved[0, 0]) if moved.numel() else k
            n = self._n
            for name in ("_kbuf", "_vbuf"):
                buf = getattr(self, name)
                if first < k:
                    rows = torch.index_select(buf[:, :, :n], 0, idx[first:])
                    buf[first:k, :, :n].copy_(rows)
                setattr(self, name, buf[:k])
            self._views()

        def batch_repeat_interleave(self, repeats: int) -> None:
            self._kbuf = self._kbuf.repeat_interleave(repeats, dim=0)
            self._vbuf = self._vbuf.repeat_interleave(repeats, dim=0)
            self._views()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx)

        def reset(self) -> None:
            self._n = 0
            self._views()

        def offload(self) -> None:
            raise NotImplementedError("RoomyLayer is a CPU/one-device decode cache")

        def prefetch(self) -> None:
            raise NotImplementedError("RoomyLayer is a CPU/one-device decode cache")

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative number of tokens to remove")
            self._n = max(0, self._n + tokens_to_remove)
            self._views()

    return RoomyLayer


def _roomy_layer(keys: torch.Tensor, values: torch.Tensor, extra: int) -> Any:
    """A ``RoomyLayer`` (:func:`_roomy_layer_class`; built on first use because transformers
    is imported lazily)."""
    return _roomy_layer_class()(keys, values, extra)


class _Recorder:
    """Collects, while sampling, ``log P(y_t | ·)`` of each drawn token and (optionally) ``log P(· | ·)``."""

    def __init__(self, n: int, steps: int, vocab: int) -> None:
        self.token_lp = torch.zeros((n, steps), dtype=torch.float64)
        # float32 [N, T, V]: the distributions are float32 log-softmaxes; zeros beyond a
        # row's length keep every entry finite.
        self.dists = torch.zeros((n, steps, vocab), dtype=torch.float32) if vocab else None

    def record(self, rows: torch.Tensor, step: int, logp: torch.Tensor, tok: torch.Tensor) -> None:
        picked = logp.gather(-1, tok[:, None])[:, 0]
        self.token_lp[rows, step] = picked.double().cpu()
        if self.dists is not None:
            self.dists[rows, step] = logp.cpu()

    def scores(self, samples: list[list[int]], row0: int = 0) -> ContinuationScores:
        """Scores of the rows ``row0 … row0 + len(samples) − 1`` (one prefix's samples)."""
        lengths = np.array([len(y) for y in samples], dtype=np.int64)
        width = int(lengths.max()) if samples else 0
        rows = slice(row0, row0 + len(samples))
        tok = self.token_lp[rows, :width].numpy()
        dists = self.dists[rows, :width].numpy() if self.dists is not None else None
        return ContinuationScores(token_logprobs=tok, lengths=lengths, dists=dists)


def _reference_tensor(
    reference: np.ndarray | None, n: int, width: int, vocab: int
) -> torch.Tensor | None:
    """``reference`` as a float32 CPU tensor (zero-copy for float32 numpy input), shape-checked."""
    if reference is None:
        return None
    ref = torch.as_tensor(np.asarray(reference)).float()
    if ref.ndim != 3 or ref.shape[0] != n or ref.shape[1] < width or ref.shape[2] != vocab:
        raise ValueError(
            f"reference must have shape [{n}, >={width}, {vocab}], got {tuple(ref.shape)}"
        )
    return ref


def _kl_terms(ref: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """``Σ_v R(v)(log R(v) − log Q(v))`` over the last axis, returned as float64.

    One fused float32 pass ``(log R − log Q)·R`` summed by torch's vectorised (multi-
    accumulator) reduction: ≈1e-7 absolute error on a 49k vocabulary, 40 % cheaper than a
    float64 reduction. Exact conventions — R = 0 contributes 0 (also where log Q = −inf),
    R > 0 = Q gives +inf — only matter where the fast pass produced NaN (0·∞), and those rows
    are recomputed term by term.
    """
    kl = (ref - logq).mul_(ref.exp()).sum(dim=-1)
    bad = kl.isnan()
    if bool(bad.any()):
        r, q = ref[bad], logq.expand_as(ref)[bad]
        p = r.exp()
        kl[bad] = torch.where(p > 0, p * (r - q), 0.0).sum(dim=-1)
    return kl.double()


def _layer_index(spec: LayerSpec, n_states: int) -> int:
    """Index into ``hidden_states`` (length ``L + 1``) for a layer spec."""
    if spec == "middle":
        return (n_states - 1) // 2
    if isinstance(spec, int) and not isinstance(spec, bool) and -n_states <= spec < n_states:
        return spec
    raise ValueError(f"layer must be an int in [-{n_states}, {n_states}) or 'middle', got {spec!r}")


def _sampling_probs(
    logp: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """Sampling distribution ∝ exp(logp / T), optionally truncated to the top-k / nucleus."""
    logits = logp if temperature == 1.0 else logp / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_lg, order = torch.sort(logits, dim=-1, descending=True)
        probs_sorted = sorted_lg.softmax(dim=-1)
        # Drop a token when the mass strictly before it already reaches top_p (keeps ≥ 1 token).
        before = probs_sorted.cumsum(dim=-1) - probs_sorted
        drop_sorted = before >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits.softmax(dim=-1)


def _draw(probs: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """One token per row ``~ probs`` by inverting the float64 CDF at a uniform draw.

    ``u ∈ [0, Σp)`` and the first index with ``cdf > u`` (``side="right"``) is never a
    zero-probability token. 5× cheaper than ``torch.multinomial`` over a 49k vocabulary on
    CPU, and the float64 cumulative sum keeps every token's mass exact to ~1e-16.
    """
    cdf = probs.double().cumsum(dim=-1)
    u = torch.rand((probs.shape[0], 1), generator=gen, dtype=torch.float64, device=probs.device)
    tok = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)[:, 0]
    return tok.clamp_(max=probs.shape[-1] - 1)


def _default_bos(tokenizer: Any) -> list[int]:
    """Tokens the tokenizer prepends itself, else its declared BOS, else none."""
    with_special = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    if len(with_special) > len(without) and with_special[-len(without) :] == without:
        return [int(t) for t in with_special[: len(with_special) - len(without)]]
    bos = getattr(tokenizer, "bos_token_id", None)
    return [int(bos)] if isinstance(bos, int) else []


def _output_vocab_size(model: Any, tokenizer: Any) -> int:
    emb = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if emb is not None and getattr(emb, "weight", None) is not None:
        return int(emb.weight.shape[0])
    cfg = model.config
    text_cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    return int(getattr(text_cfg, "vocab_size", len(tokenizer)))
