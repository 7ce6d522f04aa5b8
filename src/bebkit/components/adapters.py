"""One base LM in memory with named LoRA adapters: the proxy components P₋ and P₊.

The paper (appendix J) approximates the ill-behaved and well-behaved mixture components
P₋ / P₊ of ``P = α·P₋ + (1−α)·P₊`` by LoRA-finetuning the same pretrained model on the
undesired / desired statements of a behavior. :class:`ComponentSet` keeps exactly one copy of
the base weights (a :class:`peft.PeftModel`) and switches between

* ``"neg"`` — P₋ (trained on undesired statements),
* ``"pos"`` — P₊ (trained on desired statements),
* ``"base"`` — the unmodified model (adapter layers disabled, ``PeftModel.disable_adapter``).

The active adapter is only ever changed inside :meth:`ComponentSet.use` (which restores the
previous state on exit, exceptions included) or by the per-call wrappers of
:meth:`ComponentSet.model`, so estimators holding several components at once never see a
silently switched model.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import warnings
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bebkit.errors import InputError, RunError
from bebkit.models.protocol import TokenIds

if TYPE_CHECKING:
    from bebkit.components.presets import TrainConfig

BASE = "base"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")
ADAPTER_WEIGHTS = "adapter_model.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


@contextmanager
def quiet_peft_wrap() -> Iterator[None]:
    """Wrapping a model in PEFT reads transformers' deprecated ``is_gradient_checkpointing``
    (peft ≤ 0.21), whose FutureWarning a user can do nothing about: silenced here only."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def model_fingerprint(model: Any) -> str:
    """A short hash of a base model's config and weights (identifies "the same base model").

    Hashes the config JSON plus, for every tensor, its name, shape, dtype, float64 sum and a
    strided sample of ≤4096 values: cheap (≈0.3 s for 135M parameters) yet any retraining,
    requantisation or different checkpoint changes it. LoRA tensors are ignored and PEFT's
    name prefixes stripped, so the fingerprint is the same before and after wrapping.
    """
    import torch

    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        cfg_dict = cfg.to_dict()
        for k in ("_name_or_path", "transformers_version", "dtype", "torch_dtype"):
            cfg_dict.pop(k, None)
        h.update(json.dumps(cfg_dict, sort_keys=True, default=str).encode())
    entries: list[tuple[str, torch.Tensor]] = []
    for name, tensor in model.state_dict().items():
        if "lora_" in name:
            continue
        clean = name.replace("base_model.model.", "").replace(".base_layer", "")
        entries.append((clean, tensor))
    with torch.no_grad():
        for name, tensor in sorted(entries, key=lambda e: e[0]):
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // 4096)
            sample = flat[::step][:4096].to(torch.float64).cpu().numpy()
            h.update(name.encode())
            h.update(str(tuple(tensor.shape)).encode())
            h.update(str(tensor.dtype).encode())
            h.update(np.float64(flat.to(torch.float64).sum().item()).tobytes())
            h.update(np.ascontiguousarray(sample).tobytes())
    return h.hexdigest()[:16]


def lora_config(config: TrainConfig) -> Any:
    """The :class:`peft.LoraConfig` of a training preset (causal LM, no bias)."""
    from peft import LoraConfig, TaskType

    return LoraConfig(
        task_type=TaskType.CAUSAL_LM,
        r=config.r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=list(config.target_modules),
        bias="none",
    )


class ComponentSet:
    """A base model plus named LoRA adapters, switched only through :meth:`use`.

    Args:
        model: a Hugging Face causal LM (``PreTrainedModel``); it is wrapped in place by
            PEFT the first time an adapter is added or loaded — never copied.
        tokenizer: its tokenizer.
        name: short model name used in component names (``"smollm2-135m-instruct:neg"``).
        split_on_oom: the views' :class:`~bebkit.models.hf.HFLanguageModel` rerun a batch
            that runs out of memory in halves (True) or let the error through.
    """

    def __init__(self, model: Any, tokenizer: Any, *, name: str, split_on_oom: bool = True) -> None:
        self._base = model
        self._peft: Any = None
        self.tokenizer = tokenizer
        self.name = name
        self._state = BASE
        self._fingerprint: str | None = None
        self._lms: dict[str, Any] = {}
        self._split_on_oom = bool(split_on_oom)
        #: the dtype of an :meth:`inference_copy` (None: the set adapters are trained in)
        self.inference_dtype: str | None = None
        model.eval()

    @property
    def split_on_oom(self) -> bool:
        """Whether out-of-memory batches are split in halves (set: applies to every view)."""
        return self._split_on_oom

    @split_on_oom.setter
    def split_on_oom(self, on: bool) -> None:
        self._split_on_oom = bool(on)
        for lm in self._lms.values():
            lm.split_on_oom = self._split_on_oom

    # -- inspection -------------------------------------------------------------------
    @property
    def adapters(self) -> tuple[str, ...]:
        """Names of the adapters held (``"base"`` is always available and not listed)."""
        return tuple(self._peft.peft_config) if self._peft is not None else ()

    @property
    def active(self) -> str:
        """The component the underlying model currently computes (``"base"`` or an adapter)."""
        return self._state

    @property
    def torch_model(self) -> Any:
        """The module to call: the PeftModel once an adapter exists, else the base model."""
        return self._peft if self._peft is not None else self._base

    @property
    def base_model(self) -> Any:
        """The base ``PreTrainedModel`` (carries LoRA layers once wrapped)."""
        return self._base

    @property
    def fingerprint(self) -> str:
        """:func:`model_fingerprint` of the base weights (computed once)."""
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self._base)
        return self._fingerprint

    @property
    def bos_token_ids(self) -> list[int]:
        """The model's context-start tokens (as its ``HFLanguageModel`` defines them)."""
        return list(self._lm(BASE).bos_token_ids)

    def n_parameters(self) -> int:
        """Number of base-model parameters (LoRA excluded)."""
        return sum(p.numel() for n, p in self.torch_model.named_parameters() if "lora_" not in n)

    def inference_copy(self, dtype: str) -> ComponentSet:
        """A copy of the base weights and of every adapter held, cast to ``dtype`` (``"bfloat16"``
        or ``"float16"``), switched like this set, for inference only.

        Only the network's arithmetic is reduced: :class:`~bebkit.models.hf.HFLanguageModel`
        takes every log-softmax in float32. This set stays the one adapters are trained,
        loaded and saved in (a reduced-precision master would lose the LoRA updates), so the
        copy refuses :meth:`add_adapter`, :meth:`load_adapter`, :meth:`delete_adapter` and
        training (:class:`RunError`). One deep copy: the PEFT wrapper and the base it wraps
        stay linked in the copy, tied weights stay tied, and floating-point buffers (RoPE
        frequencies) stay float32.
        """
        import torch

        if self.inference_dtype is not None:
            raise RunError("an inference copy cannot be copied again; copy its source set")
        dt = getattr(torch, str(dtype), None)
        if not isinstance(dt, torch.dtype) or not dt.is_floating_point:
            raise InputError(f"inference dtype must be a torch float dtype, got {dtype!r}")
        # Parameters only, each cast on its own (no float32 duplicate of the whole model at any
        # time): float buffers such as RoPE's inv_freq stay float32, as from_pretrained keeps
        # them — a whole-model .to(bf16) would round them and shift every position's phase.
        module = self._peft if self._peft is not None else self._base
        memo: dict[int, Any] = {
            id(p): torch.nn.Parameter(p.detach().to(dt, copy=True), requires_grad=False)
            for p in module.parameters()
        }
        base, peft = copy.deepcopy((self._base, self._peft), memo)
        out = ComponentSet(base, self.tokenizer, name=self.name, split_on_oom=self._split_on_oom)
        out._peft = peft
        # the weights' identity is the source's (adapter manifests are checked against it)
        out._fingerprint = self.fingerprint
        out.inference_dtype = str(dtype)
        out._apply(self._state)
        return out

    def _writable(self, what: str) -> None:
        if self.inference_dtype is not None:
            raise RunError(
                f"cannot {what} on a {self.inference_dtype} inference copy; use its float32 source"
            )

    # -- adapter management -------------------------------------------------------------
    def _check_new_name(self, name: str) -> None:
        if name == BASE or not _NAME_RE.match(name):
            raise InputError(f"invalid adapter name {name!r} ('base' is reserved)")
        if name in self.adapters:
            raise InputError(f"adapter {name!r} already exists")

    def add_adapter(self, name: str, config: TrainConfig) -> None:
        """Add a freshly initialised LoRA adapter (B = 0, so it starts equal to the base).

        The random init of A uses torch's global RNG: seed it first for reproducibility.
        """
        from peft import get_peft_model

        self._writable("add an adapter")
        self._check_new_name(name)
        self.fingerprint  # noqa: B018 -- fingerprint the pristine base before wrapping
        cfg = lora_config(config)
        if self._peft is None:
            with quiet_peft_wrap():
                self._peft = get_peft_model(self._base, cfg, adapter_name=name)
            self._peft.eval()
            self._lms.clear()  # wrappers built on the bare base must now call the PeftModel
        else:
            self._peft.add_adapter(name, cfg)
        self._reapply()

    def load_adapter(self, name: str, path: str | Path) -> None:
        """Load a saved adapter (``adapter_config.json`` + safetensors) into the same base.

        The weights file is read once before the model is touched, so an unreadable
        (truncated, corrupted) file raises :class:`InputError` and leaves the set unchanged; a
        failure inside PEFT removes the half-loaded adapter again.
        """
        from peft import PeftModel
        from safetensors.torch import load_file

        self._writable("load an adapter")
        self._check_new_name(name)
        p = Path(path)
        if not (p / ADAPTER_CONFIG).is_file() or not (p / ADAPTER_WEIGHTS).is_file():
            raise InputError(f"no saved adapter in {p}")
        try:
            load_file(str(p / ADAPTER_WEIGHTS))
        except Exception as exc:  # safetensors raises its own error type for bad files
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise InputError(
                f"adapter weights {p / ADAPTER_WEIGHTS} are unreadable: {first}"
            ) from exc
        self.fingerprint  # noqa: B018
        try:
            if self._peft is None:
                with quiet_peft_wrap():
                    self._peft = PeftModel.from_pretrained(self._base, str(p), adapter_name=name)
                self._lms.clear()
            else:
                self._peft.load_adapter(str(p), adapter_name=name)
        except BaseException:
            if name in self.adapters:
                self.delete_adapter(name)
            else:
                self._reapply()
            raise
        self._peft.eval()
        self._reapply()

    def save_adapter(self, name: str, path: str | Path) -> None:
        """Write ``adapter_config.json`` and ``adapter_model.safetensors`` into ``path``."""
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        self._require(name)
        if name == BASE:
            raise InputError("cannot save the base model as an adapter")
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        state = get_peft_model_state_dict(self._peft, adapter_name=name)
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(p / ADAPTER_WEIGHTS))
        self._peft.peft_config[name].save_pretrained(str(p))

    def delete_adapter(self, name: str) -> None:
        """Remove an adapter (e.g. before retraining it, or a failed training run's).

        Deleting the last adapter unwraps the base model again (PEFT's ``unload`` without
        merging: the LoRA layers are replaced by the original modules, same weight tensors),
        because a ``PeftModel`` left with no adapter cannot even run the base model.
        """
        self._writable("delete an adapter")
        self._require(name)
        if name == BASE:
            raise InputError("cannot delete the base model")
        if self._state == name:
            raise RunError(f"adapter {name!r} is in use")
        if self.adapters == (name,):
            self._base = self._peft.unload()
            self._peft = None
            self._lms.clear()  # views built on the PeftModel must now call the bare base
            self._apply(BASE)
            return
        with warnings.catch_warnings():
            # PEFT warns that it re-points its active adapter; ours is restored just below.
            warnings.filterwarnings("ignore", message=".*was active which is now deleted.*")
            self._peft.delete_adapter(name)
        self._lms.pop(name, None)
        self._reapply()

    def trainable_parameters(self, name: str) -> list[Any]:
        """The LoRA parameters of one adapter (its A and B matrices)."""
        self._writable("train")
        self._require(name)
        marker = f".{name}."
        return [p for n, p in self._peft.named_parameters() if "lora_" in n and marker in n]

    # -- switching ----------------------------------------------------------------------
    def _require(self, name: str) -> None:
        if name != BASE and name not in self.adapters:
            known = ", ".join((BASE, *self.adapters))
            raise InputError(f"unknown component {name!r}; available: {known}")

    def _apply(self, name: str) -> None:
        """Point the PEFT model at ``name`` (equivalent to ``disable_adapter()`` for base)."""
        if self._peft is not None:
            if name == BASE:
                self._peft.base_model.disable_adapter_layers()
            else:
                self._peft.base_model.enable_adapter_layers()
                # inference_mode=True: switching never marks weights trainable.
                self._peft.set_adapter(name, inference_mode=True)
            # Keep PEFT's own flag in sync, as PeftModel.disable_adapter() does.
            self._peft._adapters_disabled = name == BASE
        self._state = name

    def _reapply(self) -> None:
        # PEFT makes a newly added adapter active on some code paths: restore ours.
        self._apply(self._state if self._state in (BASE, *self.adapters) else BASE)

    @contextmanager
    def activated(self, name: str) -> Iterator[None]:
        """Run the block under component ``name``; restore the previous one on any exit."""
        self._require(name)
        previous = self._state
        self._apply(name)
        try:
            yield
        finally:
            self._apply(previous)

    def _for_call(self, name: str) -> AbstractContextManager[None]:
        """:meth:`activated` for one inference call, a no-op when ``name`` is already active.

        A switch walks every LoRA module (twice per call: ≈4 % of a KL estimate); calls of
        the view that is already active need none. (:meth:`activated` itself always
        re-applies, which also re-freezes LoRA weights after training.)
        """
        if name == self._state:
            self._require(name)
            return nullcontext()
        return self.activated(name)

    @contextmanager
    def use(self, name: str) -> Iterator[Any]:
        """``with comps.use("neg") as lm:`` — an ``HFLanguageModel`` computing P₋ inside the block."""
        with self.activated(name):
            yield self._lm(name)

    def _lm(self, name: str) -> Any:
        if name not in self._lms:
            from bebkit.models.hf import HFLanguageModel

            self._lms[name] = HFLanguageModel(
                self.torch_model,
                self.tokenizer,
                name=f"{self.name}:{name}",
                split_on_oom=self._split_on_oom,
            )
        return self._lms[name]

    def model(self, name: str) -> ComponentView:
        """A :class:`~bebkit.models.protocol.LanguageModel` view that runs every call under ``name``."""
        self._require(name)
        return ComponentView(self, name)


def _switched(method: str) -> Any:
    """A method of :class:`ComponentView` that calls the base model's ``method`` with the
    view's adapter active (switch, compute, restore)."""

    def call(self: ComponentView, *args: Any, **kwargs: Any) -> Any:
        with self._set._for_call(self.adapter):
            return getattr(self._inner, method)(*args, **kwargs)

    call.__name__, call.__qualname__ = method, f"ComponentView.{method}"
    call.__doc__ = f"The base model's ``{method}`` with this view's adapter active."
    return call


class ComponentView:
    """Implements the ``LanguageModel`` protocol by wrapping every call in ``use(adapter)``.

    Safe to hold several views (``neg``, ``pos``, ``base``) of one :class:`ComponentSet` at
    once: each call switches, computes and restores. A generic pass-through: the tokenizer
    side needs no adapter and is read directly, every model call goes through
    :func:`_switched` (so a method added to the protocol is one line here).
    """

    def __init__(self, components: ComponentSet, adapter: str) -> None:
        self._set = components
        self.adapter = adapter

    @property
    def _inner(self) -> Any:
        return self._set._lm(self.adapter)

    @property
    def name(self) -> str:
        return f"{self._set.name}:{self.adapter}"

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer (shared by every view, so vocabulary scans are too)."""
        return getattr(self._inner, "tokenizer", None)

    @property
    def vocab_size(self) -> int:
        return int(self._inner.vocab_size)

    @property
    def bos_token_ids(self) -> list[int]:
        return list(self._inner.bos_token_ids)

    def encode(self, text: str) -> list[int]:
        return list(self._inner.encode(text))

    def decode(self, ids: TokenIds) -> str:
        return str(self._inner.decode(ids))

    # the batch-first protocol and its single-prefix conveniences, all under the adapter
    sequence_logprobs = _switched("sequence_logprobs")
    next_token_logprobs = _switched("next_token_logprobs")
    continuation_logprobs = _switched("continuation_logprobs")
    continuation_logprobs_many = _switched("continuation_logprobs_many")
    sample = _switched("sample")
    sample_many = _switched("sample_many")
    sample_scored = _switched("sample_scored")
    sample_scored_many = _switched("sample_scored_many")
