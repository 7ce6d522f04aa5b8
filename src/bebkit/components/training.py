"""LoRA training of one component (P₋ or P₊) with the causal-LM loss (paper appendix J).

Loss: the mean next-token NLL ``L(θ) = −(1/T) Σ_{texts} Σ_t log P_θ(x_t | x_<t)`` over every
real (non-padding) token of the training texts; only the LoRA matrices of the adapter being
trained receive gradients. Optimiser AdamW, linear warm-up then linear decay. Forward and
backward run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` when the preset asks
(the LoRA weights, gradients and optimiser state stay float32).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from bebkit.components.adapters import ComponentSet
from bebkit.components.presets import TrainConfig
from bebkit.errors import InputError, RunError


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one adapter training run.

    ``final_loss`` is the mean training loss over the last epoch; ``heldout_loss`` the mean
    token NLL of the held-out texts under the trained adapter (float32, no dropout).
    ``cpu_time_s`` is the process CPU time (all threads) spent in the training loop.
    """

    adapter: str
    final_loss: float
    initial_loss: float
    heldout_loss: float | None
    heldout_loss_base: float | None
    n_steps: int
    n_texts: int
    n_tokens: int
    wall_time_s: float
    cpu_time_s: float
    bf16: bool
    num_threads: int
    losses: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def encode_text(tokenizer: Any, text: str, bos: Sequence[int]) -> list[int]:
    """Token ids of a training text, starting with the model's BOS tokens exactly once.

    ``bos`` is the model's ``bos_token_ids`` (the same context start every estimator uses);
    chat-template renderings may already begin with it, and it is not doubled.
    """
    ids = [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]
    bos = [int(b) for b in bos]
    if bos and ids[: len(bos)] != bos:
        ids = bos + ids
    return ids


def default_num_threads() -> int:
    """``$BEBKIT_NUM_THREADS``, else the cores this process may use minus the busy ones.

    On a shared machine more torch threads than idle cores is far slower, not faster
    (measured on the 2-core dev box under load ≈ 10: one training step took 3.7 s with 1
    thread and 5–16 s with 2), so with ``c`` cores and 1-minute load ``L`` this returns
    ``clip(⌊c − L + 1⌋, 1, c)``: all cores on an idle machine, one when it is saturated.
    """
    env = os.environ.get("BEBKIT_NUM_THREADS")
    if env:
        return max(1, int(env))
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        cores = max(1, os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover
        load = 0.0
    return int(min(cores, max(1, math.floor(cores - load + 1))))


def bf16_supported() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX). Without it torch emulates
    bf16 and an autocast step is ~24× slower than float32 (measured on an AVX2-only EPYC: 1.16 s
    vs 0.049 s for a 256×576 @ 576×1536 matmul with backward), so the presets' bf16 autocast is
    used only where it is a speed-up; the LoRA weights and optimizer are float32 either way."""
    import torch

    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


@contextmanager
def torch_threads(n: int | None) -> Iterator[int]:
    """Temporarily set ``torch.set_num_threads`` (restored on exit)."""
    import torch

    previous = torch.get_num_threads()
    target = default_num_threads() if n is None else max(1, int(n))
    torch.set_num_threads(target)
    try:
        yield target
    finally:
        torch.set_num_threads(previous)


def _pad_batch(seqs: Sequence[list[int]], pad_id: int) -> tuple[Any, Any, Any]:
    """Right-pad: ``input_ids``, ``attention_mask`` and ``labels`` (−100 on padding)."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    return ids, mask, labels


def _token_nll(model: Any, seqs: Sequence[list[int]], pad_id: int, batch_size: int) -> float:
    """Mean next-token NLL (nats/token) of ``seqs`` in float32, eval mode."""
    import torch

    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(seqs), batch_size):
            ids, mask, labels = _pad_batch(seqs[i : i + batch_size], pad_id)
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1)
            tgt = labels[:, 1:]
            valid = tgt != -100
            picked = logp.gather(-1, tgt.clamp(min=0).unsqueeze(-1)).squeeze(-1)
            total += float(-(picked * valid).sum())
            count += int(valid.sum())
    return total / max(count, 1)


def _pad_id(tokenizer: Any) -> int:
    for attr in ("pad_token_id", "eos_token_id", "unk_token_id"):
        v = getattr(tokenizer, attr, None)
        if v is not None:
            return int(v)
    return 0


def discard_adapter(components: ComponentSet, adapter: str) -> None:
    """Remove ``adapter`` from ``components`` if it is registered (no-op otherwise).

    Used on every failure path after an adapter was created, so that only finished adapters
    ever stay registered. The component set is back on its previous state by then
    (:meth:`ComponentSet.activated` restores on exit).
    """
    if adapter in components.adapters:
        components.delete_adapter(adapter)


def train_adapter(
    components: ComponentSet,
    adapter: str,
    texts: Sequence[str],
    config: TrainConfig,
    *,
    seed: int = 0,
    heldout_texts: Sequence[str] | None = None,
    progress: bool = True,
    num_threads: int | None = None,
    description: str | None = None,
) -> TrainResult:
    """Create adapter ``adapter`` in ``components`` and train it on ``texts``.

    Deterministic for a fixed seed and thread count: the LoRA init uses ``torch.manual_seed
    (seed)`` and the per-epoch shuffles a ``numpy`` generator seeded with ``seed``.

    On any failure (a non-finite loss raises :class:`RunError`; also interrupts) the new
    adapter is removed again before the exception propagates, and the component set is back
    on the component that was active before the call.
    """
    import torch

    if not texts:
        raise InputError("no training texts")
    tok = components.tokenizer
    bos = components.bos_token_ids
    seqs = [encode_text(tok, t, bos)[: config.max_length] for t in texts]
    seqs = [s for s in seqs if len(s) >= 2]
    if not seqs:
        raise InputError("every training text is shorter than 2 tokens")
    held = (
        [encode_text(tok, t, bos)[: config.max_length] for t in heldout_texts]
        if heldout_texts
        else []
    )
    pad_id = _pad_id(tok)

    with torch_threads(num_threads) as threads:
        torch.manual_seed(seed)
        held_base = None
        if held:
            with components.activated("base"):
                held_base = _token_nll(components.torch_model, held, pad_id, config.batch_size)
        components.add_adapter(adapter, config)
        try:
            params = components.trainable_parameters(adapter)
            opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
            steps_per_epoch = math.ceil(len(seqs) / config.batch_size)
            epochs = config.effective_epochs(len(seqs))
            total_steps = steps_per_epoch * epochs
            warmup = round(config.warmup_ratio * total_steps)

            def lr_lambda(step: int) -> float:
                if warmup and step < warmup:
                    return (step + 1) / warmup
                return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

            sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda)
            rng = np.random.default_rng(seed)
            model = components.torch_model
            use_bf16 = config.bf16 and bf16_supported()
            autocast = torch.autocast("cpu", dtype=torch.bfloat16) if use_bf16 else nullcontext()
            losses: list[float] = []
            n_tokens = 0
            t0 = time.perf_counter()
            c0 = time.process_time()
            bar = _progress(progress, description or f"train {adapter}", total_steps)
            try:
                with components.activated(adapter), warnings.catch_warnings():
                    # transformers' own deprecation notice fired by .train(); not actionable here.
                    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
                    # After switching: set_adapter(inference_mode=True) froze every LoRA weight.
                    for p in params:
                        p.requires_grad_(True)
                    model.train()
                    for _epoch in range(epochs):
                        order = rng.permutation(len(seqs))
                        for b in range(steps_per_epoch):
                            batch = [
                                seqs[j]
                                for j in order[b * config.batch_size : (b + 1) * config.batch_size]
                            ]
                            ids, mask, labels = _pad_batch(batch, pad_id)
                            with autocast:
                                out = model(input_ids=ids, attention_mask=mask, labels=labels)
                            loss = out.loss.float()
                            if not torch.isfinite(loss):
                                raise RunError(
                                    f"training loss became {float(loss.detach())} at step {len(losses)}"
                                )
                            opt.zero_grad(set_to_none=True)
                            loss.backward()
                            if config.max_grad_norm is not None:
                                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                            opt.step()
                            sched.step()
                            value = float(loss.detach())
                            losses.append(value)
                            n_tokens += int(mask.sum())
                            bar.advance(value)
                    model.eval()
                    held_loss = _token_nll(model, held, pad_id, config.batch_size) if held else None
            finally:
                model.eval()
                for p in params:
                    p.requires_grad_(False)
                bar.close()
            wall = time.perf_counter() - t0
            # CPU seconds of this process: ≈ the wall time on an idle machine with one thread,
            # which is the honest speed figure when the CPU is shared with other jobs.
            cpu = time.process_time() - c0
        except BaseException:
            # A failed or interrupted run (NaN loss, Ctrl-C, OOM) must not leave a half-trained
            # adapter registered: a later ``use(adapter)`` would silently compute it.
            discard_adapter(components, adapter)
            raise

    last = losses[-steps_per_epoch:]
    return TrainResult(
        adapter=adapter,
        final_loss=float(np.mean(last)),
        initial_loss=float(losses[0]),
        heldout_loss=held_loss,
        heldout_loss_base=held_base,
        n_steps=len(losses),
        n_texts=len(seqs),
        n_tokens=n_tokens,
        wall_time_s=wall,
        cpu_time_s=cpu,
        bf16=config.bf16 and bf16_supported(),
        num_threads=threads,
        losses=losses,
    )


class _Bar:
    """A rich progress bar on stderr (a no-op when disabled)."""

    def __init__(self, enabled: bool, description: str, total: int) -> None:
        self._progress: Any = None
        if enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._task = self._progress.add_task(description, total=total, loss="-")
            self._progress.start()

    def advance(self, loss: float) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=1, loss=f"{loss:.3f}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _progress(enabled: bool, description: str, total: int) -> _Bar:
    return _Bar(enabled, description, total)
