"""One base model per model name in memory, with the named LoRA adapters of one behavior at a
time: the component provider every experiment gets through its RunContext (CLI and reproduce
alike). Models load lazily, so a run whose stages are all cached never loads one."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bebkit.pipeline.registry import ComponentOptions


@dataclass
class ComponentProvider:
    """Lazily loaded ComponentSets; adapters trained or reused on demand (appendix J)."""

    options: ComponentOptions
    log: Callable[[str], None]
    persona_dir: str | None = None
    threads: int | None = None
    _sets: dict[str, Any] = field(default_factory=dict)
    _loaded: dict[str, tuple[str, str, frozenset[str]]] = field(default_factory=dict)
    _status: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)

    def base(self, model: str) -> Any:
        """The model's ComponentSet (loaded once), whatever adapters it holds."""
        from bebkit.components.workflow import load_components

        if model not in self._sets:
            self.log(f"loading {model}")
            self._sets[model] = load_components(model, progress=False)
        return self._sets[model]

    def training_config(self, model: str) -> Any:
        from bebkit.components.workflow import resolve_config

        o = self.options
        over = {
            k: v
            for k, v in {"n_train": o.n_train, "n_heldout": o.n_heldout, "epochs": o.epochs}.items()
            if v is not None
        }
        return resolve_config(self.base(model), o.preset, **over)

    def data(self, model: str, behavior: str, fmt: str) -> Any:
        """The behavior's training/held-out split rendered for ``model`` in the training format
        of the prompt layout ``fmt`` (every chat layout trains on alternating turns)."""
        from bebkit.components.workflow import prepare_data
        from bebkit.pipeline.experiments_common import training_format

        fmt = training_format(fmt)
        comps = self.base(model)
        return prepare_data(
            behavior,
            fmt,
            comps.tokenizer,
            self.training_config(model),
            seed=self.options.train_seed,
            persona_dir=self.persona_dir,
        )

    def components(
        self, model: str, behavior: str, fmt: str, sides: tuple[str, ...] = ("neg", "pos")
    ) -> Any:
        """The ComponentSet of ``model`` with the ``sides`` adapters of ``behavior`` loaded."""
        from bebkit.components.training import torch_threads
        from bebkit.components.workflow import ensure_components
        from bebkit.pipeline.experiments_common import training_format

        fmt = training_format(fmt)
        comps = self.base(model)
        want = frozenset(sides)
        have = self._loaded.get(model)
        if have is None or have[:2] != (behavior, fmt) or not want <= have[2]:
            with torch_threads(self.threads):
                status = ensure_components(
                    comps,
                    self.data(model, behavior, fmt),
                    self.training_config(model),
                    out=self.options.adapters,
                    seed=self.options.train_seed,
                    train_missing=not self.options.no_train,
                    progress=False,
                    num_threads=self.threads,
                    log=self.log,
                    sides=tuple(sorted(want)),
                )
            self._loaded[model] = (behavior, fmt, want)
            self._status[(model, behavior, fmt)] = {k: v.to_dict() for k, v in status.items()}
        return comps

    def provenance(self, model: str, behavior: str, fmt: str) -> dict[str, Any]:
        """Which adapters were used (reused or trained, from where) for the record."""
        from bebkit.pipeline.experiments_common import training_format

        return {
            "model": model,
            "preset": self.training_config(model).name,
            "components": self._status.get((model, behavior, training_format(fmt)), {}),
            "threads": self.threads,
        }


__all__ = ["ComponentProvider"]
