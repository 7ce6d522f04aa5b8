"""Aligning a base model ourselves with TRL: SFT and DPO as a LoRA adapter (issue 16).

The paper's alignment conjecture (§3.1, RLHF discussion) says alignment tuning lowers α and
raises β. To test it inside one model family, bebkit makes the aligned model itself:

* **SFT** (:class:`trl.SFTTrainer`): supervised fine-tuning on assistant-style replies — a user
  turn (a statement of either side of a behavior) answered with a *desired* statement; the
  loss is the completion-only token NLL.
* **DPO** (:class:`trl.DPOTrainer`, Rafailov et al. 2023): preference pairs (prompt, chosen =
  a P₊-side statement, rejected = a P₋-side statement);
  ``L = −log σ(β_DPO[(log π/π_ref)(chosen) − (log π/π_ref)(rejected)])``. The reference
  π_ref is the model *before* DPO (TRL keeps a frozen copy of the adapter as ``"ref"``: the
  base model for ``method="dpo"``, the SFT model for ``method="sft+dpo"``).

Both train one LoRA adapter on the untouched base weights; the adapter is saved as
``adapter_config.json`` + ``adapter_model.safetensors``, which
:meth:`bebkit.components.adapters.ComponentSet.load_adapter` loads next to (or instead of)
``neg`` / ``pos``. :func:`merged_model` folds it into the weights, so the aligned model can
serve as the base of its own P₋ / P₊ components. Strength knobs: ``sft_steps``,
``dpo_steps`` and ``dpo_beta`` (a dose–response curve over them and over seeds).

All of this uses torch / transformers / peft / trl (the ``lm`` extra), imported lazily.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from bebkit.components.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, quiet_peft_wrap
from bebkit.components.presets import _ALL_LINEAR
from bebkit.components.training import torch_threads
from bebkit.data.formats import has_chat_template, terminate
from bebkit.errors import InputError, RunError

Method = Literal["sft", "dpo", "sft+dpo"]
#: Name of the adapter inside the PEFT model while training (TRL's DPO expects "default").
_TRAIN_ADAPTER = "default"
RESULT_FILE = "alignment.json"


class AlignConfig(BaseModel):
    """Frozen, validated hyper-parameters of one alignment run (the manifest key material)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: Method = "sft+dpo"
    # LoRA on every linear layer (as the ``small`` component preset).
    r: int = Field(default=16, ge=1, le=1024)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    target_modules: tuple[str, ...] = _ALL_LINEAR
    # Strength knobs.
    sft_steps: int = Field(default=60, ge=0)
    dpo_steps: int = Field(default=60, ge=0)
    dpo_beta: float = Field(default=0.1, gt=0)
    # Optimisation (AdamW, constant learning rate after an optional warm-up).
    sft_lr: float = Field(default=2e-4, gt=0, lt=1)
    dpo_lr: float = Field(default=5e-5, gt=0, lt=1)
    batch_size: int = Field(default=8, ge=1, le=4096)
    warmup_ratio: float = Field(default=0.0, ge=0, lt=1)
    max_grad_norm: float = Field(default=1.0, gt=0)
    max_length: int = Field(default=256, ge=8)
    bf16: bool = False
    # Data: SFT replies and preference pairs drawn from the behavior's statements.
    n_sft: int = Field(default=256, ge=1)
    n_pairs: int = Field(default=256, ge=1)
    # "chat": user / assistant turns through the tokenizer's template; "newline": plain text.
    fmt: Literal["auto", "chat", "newline"] = "auto"

    @field_validator("target_modules")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("target_modules must name at least one module")
        return tuple(v)

    def uses_sft(self) -> bool:
        return self.method in ("sft", "sft+dpo") and self.sft_steps > 0

    def uses_dpo(self) -> bool:
        return self.method in ("dpo", "sft+dpo") and self.dpo_steps > 0

    def key_material(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# --------------------------------------------------------------------------- data
@dataclass(frozen=True)
class PreferencePair:
    """One DPO example: the user ``prompt``, the preferred and the dispreferred reply."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class AlignmentData:
    """SFT (prompt, reply) examples and DPO pairs built from one behavior's statements."""

    sft: tuple[tuple[str, str], ...]
    pairs: tuple[PreferencePair, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"sft": [list(x) for x in self.sft], "pairs": [asdict(p) for p in self.pairs]}


def alignment_data(
    desired: Sequence[str],
    undesired: Sequence[str],
    *,
    n_sft: int = 256,
    n_pairs: int = 256,
    seed: int = 0,
) -> AlignmentData:
    """SFT replies and preference pairs from the two sides of a behavior.

    Each example's user turn is a statement drawn from either side with probability ½ (so
    the model learns to answer a P₋-side turn — the misaligning attack — in the desired way);
    the SFT reply and DPO's ``chosen`` are other desired statements, ``rejected`` an
    undesired one. Pass the *training* split (:func:`bebkit.data.splits.split_behavior`) so
    the held-out statements stay unseen.
    """
    des = [terminate(s) for s in desired]
    und = [terminate(s) for s in undesired]
    if len(des) < 2 or not und:
        raise InputError("need at least 2 desired and 1 undesired statement")
    rng = np.random.default_rng([int(seed), 16])

    def user_turn() -> tuple[str, int]:
        if rng.random() < 0.5:
            i = int(rng.integers(len(des)))
            return des[i], i
        return und[int(rng.integers(len(und)))], -1

    def other_desired(skip: int) -> str:
        j = int(rng.integers(len(des) - 1 if skip >= 0 else len(des)))
        if skip >= 0 and j >= skip:
            j += 1
        return des[j]

    sft = []
    for _ in range(int(n_sft)):
        p, i = user_turn()
        sft.append((p, other_desired(i)))
    pairs = []
    for _ in range(int(n_pairs)):
        p, i = user_turn()
        pairs.append(PreferencePair(p, other_desired(i), und[int(rng.integers(len(und)))]))
    return AlignmentData(tuple(sft), tuple(pairs))


def _use_chat(tokenizer: Any, fmt: str) -> bool:
    if fmt == "chat":
        if not has_chat_template(tokenizer):
            raise InputError("fmt='chat' needs a tokenizer with a chat template")
        return True
    if fmt == "newline":
        return False
    return has_chat_template(tokenizer)


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _sft_rows(data: AlignmentData, chat: bool) -> list[dict[str, Any]]:
    if chat:
        return [{"prompt": _user(p), "completion": _assistant(c)} for p, c in data.sft]
    return [{"prompt": p + "\n", "completion": c + "\n"} for p, c in data.sft]


def _dpo_rows(data: AlignmentData, chat: bool) -> list[dict[str, Any]]:
    if chat:
        return [
            {
                "prompt": _user(x.prompt),
                "chosen": _assistant(x.chosen),
                "rejected": _assistant(x.rejected),
            }
            for x in data.pairs
        ]
    return [
        {"prompt": x.prompt + "\n", "chosen": x.chosen + "\n", "rejected": x.rejected + "\n"}
        for x in data.pairs
    ]


# --------------------------------------------------------------------------- scoring
def _ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text, add_special_tokens=False)["input_ids"]]


def completion_ids(
    tokenizer: Any, prompt: str, completion: str, *, chat: bool
) -> tuple[list[int], list[int]]:
    """``(prompt ids, completion ids)`` as the model sees them (chat template or plain text
    with the tokenizer's BOS first); the completion is scored after the prompt."""
    if chat:
        head = tokenizer.apply_chat_template(
            _user(prompt), tokenize=False, add_generation_prompt=True
        )
        full = tokenizer.apply_chat_template(
            _user(prompt) + _assistant(completion), tokenize=False, add_generation_prompt=False
        )
        if not full.startswith(head):
            raise InputError("the chat template is not prefix-consistent for user → assistant")
        p_ids = _ids(tokenizer, head)
        return p_ids, _ids(tokenizer, full)[len(p_ids) :]
    bos = getattr(tokenizer, "bos_token_id", None)
    p_ids = _ids(tokenizer, prompt + "\n")
    if bos is not None and p_ids[:1] != [int(bos)]:
        p_ids = [int(bos), *p_ids]
    return p_ids, _ids(tokenizer, completion + "\n")


def completion_logprobs(
    model: Any,
    tokenizer: Any,
    items: Sequence[tuple[str, str]],
    *,
    chat: bool,
    batch_size: int = 16,
) -> np.ndarray:
    """``[N]`` log π(completion | prompt) (sum over completion tokens, float32, eval mode)."""
    import torch

    from bebkit.components.training import _pad_id

    seqs = [completion_ids(tokenizer, p, c, chat=chat) for p, c in items]
    pad = _pad_id(tokenizer)
    out = np.zeros(len(seqs))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for s in range(0, len(seqs), batch_size):
                chunk = seqs[s : s + batch_size]
                width = max(len(a) + len(b) for a, b in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                comp = torch.zeros_like(ids, dtype=torch.bool)
                for i, (a, b) in enumerate(chunk):
                    ids[i, : len(a) + len(b)] = torch.tensor(a + b)
                    mask[i, : len(a) + len(b)] = 1
                    comp[i, len(a) : len(a) + len(b)] = True
                logits = model(input_ids=ids, attention_mask=mask).logits.float()
                logp = torch.log_softmax(logits[:, :-1], dim=-1)
                picked = logp.gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
                tot = (picked * comp[:, 1:]).sum(dim=1).double().numpy()
                out[s : s + len(chunk)] = tot
    finally:
        model.train(was_training)
    return out


def preference_margins(
    model: Any, tokenizer: Any, pairs: Sequence[PreferencePair], *, chat: bool
) -> np.ndarray:
    """``[N]`` log π(chosen | prompt) − log π(rejected | prompt) (no reference model)."""
    c = completion_logprobs(model, tokenizer, [(x.prompt, x.chosen) for x in pairs], chat=chat)
    r = completion_logprobs(model, tokenizer, [(x.prompt, x.rejected) for x in pairs], chat=chat)
    return np.asarray(c - r, dtype=np.float64)


# --------------------------------------------------------------------------- training
@dataclass(frozen=True)
class AlignResult:
    """What one alignment run did.

    ``sft_nll_*`` are the mean per-token NLL of the SFT replies; ``margin_*`` the mean
    preference margin log π(chosen) − log π(rejected) over the pairs, before and after.
    ``sft_losses`` / ``dpo_losses`` / ``dpo_reward_margins`` are TRL's per-step logs.
    ``model`` is the trained :class:`peft.PeftModel` when ``unload=False`` (else None).
    """

    config: dict[str, Any]
    seed: int
    chat: bool
    adapter_dir: str | None
    sft_nll_before: float | None
    sft_nll_after: float | None
    margin_before: float | None
    margin_after: float | None
    sft_losses: list[float] = field(default_factory=list)
    dpo_losses: list[float] = field(default_factory=list)
    dpo_reward_margins: list[float] = field(default_factory=list)
    wall_time_s: float = 0.0
    num_threads: int = 1
    model: Any = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model")
        return {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()
        }


def _history(trainer: Any, key: str) -> list[float]:
    return [float(h[key]) for h in trainer.state.log_history if key in h]


def _sft_nll(model: Any, tokenizer: Any, data: AlignmentData, chat: bool) -> float:
    lps = completion_logprobs(model, tokenizer, data.sft, chat=chat)
    n_tok = sum(len(completion_ids(tokenizer, p, c, chat=chat)[1]) for p, c in data.sft)
    return float(-lps.sum() / max(n_tok, 1))


def _common_args(config: AlignConfig, seed: int, out: str, steps: int, lr: float) -> dict[str, Any]:
    return {
        "output_dir": out,
        "max_steps": int(steps),
        "per_device_train_batch_size": config.batch_size,
        "learning_rate": lr,
        "lr_scheduler_type": "constant_with_warmup" if config.warmup_ratio else "constant",
        "warmup_steps": round(config.warmup_ratio * steps),
        "max_grad_norm": config.max_grad_norm,
        "max_length": config.max_length,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": [],
        "seed": int(seed),
        "data_seed": int(seed),
        "use_cpu": True,
        "bf16": config.bf16,
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }


def save_training_adapter(peft_model: Any, path: str | Path) -> Path:
    """Write the trained adapter as ``adapter_config.json`` + ``adapter_model.safetensors``
    (the layout :meth:`ComponentSet.load_adapter` reads)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(peft_model, adapter_name=_TRAIN_ADAPTER)
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(p / ADAPTER_WEIGHTS))
    peft_model.peft_config[_TRAIN_ADAPTER].save_pretrained(str(p))
    return p


def train_alignment(
    model: Any,
    tokenizer: Any,
    data: AlignmentData,
    config: AlignConfig,
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    num_threads: int | None = None,
    unload: bool = True,
) -> AlignResult:
    """Align ``model`` with SFT and/or DPO (``config.method``) as one LoRA adapter.

    ``model`` is a base causal LM (a ``PreTrainedModel``, not already wrapped by PEFT); it is
    wrapped in place and, with ``unload=True``, unwrapped again afterwards (its own weights
    are never changed). The adapter is written to ``out_dir`` (with ``alignment.json``).
    Deterministic for a fixed seed and thread count (LoRA init under ``torch.manual_seed``,
    TRL's ``seed`` / ``data_seed``).
    """
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from peft.tuners.tuners_utils import BaseTunerLayer

    if any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise InputError("train_alignment needs a bare base model (this one carries LoRA layers)")
    if not (config.uses_sft() or config.uses_dpo()):
        raise InputError("nothing to train: the method's step count is 0")
    chat = _use_chat(tokenizer, config.fmt)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    had_forward = "forward" in vars(model)
    t0 = time.perf_counter()
    with torch_threads(num_threads) as threads:
        torch.manual_seed(seed)
        lora = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=config.r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=list(config.target_modules),
            bias="none",
        )
        with quiet_peft_wrap():
            peft_model = get_peft_model(model, lora, adapter_name=_TRAIN_ADAPTER)
        try:
            result = _train(peft_model, tokenizer, data, config, seed, chat)
        except BaseException:
            peft_model.unload()
            _restore_forward(model, had_forward)
            raise
        peft_model.eval()
        adapter_dir = None
        if out_dir is not None:
            adapter_dir = str(save_training_adapter(peft_model, out_dir))
        wall = time.perf_counter() - t0
        res = AlignResult(
            config=config.key_material(),
            seed=int(seed),
            chat=chat,
            adapter_dir=adapter_dir,
            wall_time_s=wall,
            num_threads=threads,
            model=None if unload else peft_model,
            **result,
        )
        if out_dir is not None:
            (Path(out_dir) / RESULT_FILE).write_text(
                json.dumps(res.to_dict(), indent=2, sort_keys=True), encoding="utf-8"
            )
        if unload:
            peft_model.unload()
            _restore_forward(model, had_forward)
    return res


def _restore_forward(model: Any, had_forward: bool) -> None:
    """Drop the fused-LM-head ``forward`` TRL's DPO trainer patches onto the base model."""
    if not had_forward and "forward" in vars(model):
        del model.forward


def _train(
    peft_model: Any,
    tokenizer: Any,
    data: AlignmentData,
    config: AlignConfig,
    seed: int,
    chat: bool,
) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import PrinterCallback
    from trl import DPOConfig, DPOTrainer, SFTConfig, SFTTrainer

    out: dict[str, Any] = {
        "sft_nll_before": None,
        "sft_nll_after": None,
        "margin_before": None,
        "margin_after": None,
        "sft_losses": [],
        "dpo_losses": [],
        "dpo_reward_margins": [],
    }
    with tempfile.TemporaryDirectory(prefix="bebkit-align-") as tmp, warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning)
        # transformers' own deprecation notices fired inside Trainer; not actionable here.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        if config.uses_sft():
            out["sft_nll_before"] = _sft_nll(peft_model, tokenizer, data, chat)
            args = SFTConfig(
                **_common_args(config, seed, tmp, config.sft_steps, config.sft_lr),
                completion_only_loss=True,
                packing=False,
            )
            trainer = SFTTrainer(
                model=peft_model,
                args=args,
                train_dataset=Dataset.from_list(_sft_rows(data, chat)),
                processing_class=tokenizer,
            )
            trainer.remove_callback(PrinterCallback)  # per-step dicts on stdout; kept in state
            trainer.train()
            out["sft_losses"] = _history(trainer, "loss")
            out["sft_nll_after"] = _sft_nll(peft_model, tokenizer, data, chat)
        if config.uses_dpo():
            out["margin_before"] = float(
                preference_margins(peft_model, tokenizer, data.pairs, chat=chat).mean()
            )
            dpo_args = DPOConfig(
                **_common_args(config, seed, tmp, config.dpo_steps, config.dpo_lr),
                beta=config.dpo_beta,
            )
            dpo = DPOTrainer(
                model=peft_model,
                ref_model=None,
                args=dpo_args,
                train_dataset=Dataset.from_list(_dpo_rows(data, chat)),
                processing_class=tokenizer,
            )
            dpo.remove_callback(PrinterCallback)
            try:
                dpo.train()
            finally:
                if "ref" in peft_model.peft_config:  # TRL's frozen copy of the starting adapter
                    peft_model.set_adapter(_TRAIN_ADAPTER)
                    peft_model.delete_adapter("ref")
            out["dpo_losses"] = _history(dpo, "loss")
            out["dpo_reward_margins"] = _history(dpo, "rewards/margins")
            out["margin_after"] = float(
                preference_margins(peft_model, tokenizer, data.pairs, chat=chat).mean()
            )
    for v in out.values():
        if isinstance(v, float) and not math.isfinite(v):
            raise RunError(f"alignment produced a non-finite value: {out}")
    return out


def merged_model(model: Any, adapter_dir: str | Path) -> Any:
    """``model`` with a saved alignment adapter merged into its weights (a plain
    ``PreTrainedModel``: the aligned model, usable as the base of its own P₋ / P₊)."""
    from peft import PeftModel

    p = Path(adapter_dir)
    if not (p / ADAPTER_CONFIG).is_file() or not (p / ADAPTER_WEIGHTS).is_file():
        raise InputError(f"no saved adapter in {p}")
    return PeftModel.from_pretrained(model, str(p)).merge_and_unload()


__all__ = [
    "RESULT_FILE",
    "AlignConfig",
    "AlignResult",
    "AlignmentData",
    "PreferencePair",
    "alignment_data",
    "completion_ids",
    "completion_logprobs",
    "merged_model",
    "preference_margins",
    "save_training_adapter",
    "train_alignment",
]
