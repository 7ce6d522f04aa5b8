"""The components step: one base model per model name in memory, with the named LoRA adapters of
one behavior at a time — the component provider every experiment gets through its RunContext
(CLI and reproduce alike). Models load lazily, so a run whose stages are all cached never loads
one.

What the step reads is one value, :class:`ComponentInputs` (:func:`component_inputs`): the
provider builds the adapters from its fields alone, and a stage's components key is derived
from the same fields (:meth:`ComponentInputs.key`), so an input cannot be read without
entering the key.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from bebkit.components import manifest
from bebkit.components.presets import PRESETS, TrainConfig, default_preset_name, get_preset
from bebkit.pipeline.experiments_common import training_format
from bebkit.pipeline.registry import ComponentOptions, behavior_fingerprint, model_identity


def _key(name: str | None = None, by: Callable[[Any], Any] | None = None) -> dict[str, Any]:
    """Field metadata: the field enters the key as ``name`` (default: the field name), valued
    ``by(inputs)`` (default: the field's value)."""
    return {"key_name": name, "key_by": by}


def _recipe_key(inp: ComponentInputs) -> Any:
    r = inp.recipe
    return r.model_dump() if isinstance(r, TrainConfig) else {c.name: c.model_dump() for c in r}


@dataclass(frozen=True)
class ComponentInputs:
    """Everything the components step reads to build P₊/P₋ of one behavior, before any
    tokenizer exists. Every field enters :meth:`key` (data by content: the model folder, the
    behavior's statements); the adapter manifest checks the same inputs once tokenized
    (:func:`bebkit.components.workflow.component_inputs`)."""

    model: str = field(metadata=_key(by=lambda i: model_identity(i.model)))
    behavior: str = field(metadata=_key())
    persona_dir: str | None = field(
        metadata=_key("behavior_data", lambda i: behavior_fingerprint(i.behavior, i.persona_dir))
    )
    #: the training format (every chat layout trains on ``chat``)
    fmt: str = field(metadata=_key("format"))
    #: the fields declared ``not_in_key`` (adapter root, no-train) cannot change the weights
    options: ComponentOptions = field(metadata=_key(by=lambda i: i.options.key_material()))
    #: the options' preset, or every preset when it is chosen by the model's size
    recipe: TrainConfig | tuple[TrainConfig, ...] = field(metadata=_key(by=_recipe_key))
    training_version: int = field(metadata=_key())

    def key(self) -> dict[str, Any]:
        """The components' key material, derived from every field as declared."""
        out: dict[str, Any] = {}
        for f in fields(self):
            by = f.metadata["key_by"]
            out[f.metadata["key_name"] or f.name] = by(self) if by else getattr(self, f.name)
        return out

    def train_config(self, n_parameters: int) -> TrainConfig:
        """The LoRA recipe for a base model of ``n_parameters``, with the split sizes."""
        r = self.recipe
        if not isinstance(r, TrainConfig):
            r = {c.name: c for c in r}[default_preset_name(n_parameters)]
        o = self.options
        over = {
            k: v for k, v in (("n_train", o.n_train), ("n_heldout", o.n_heldout)) if v is not None
        }
        return r.model_copy(update=over)


def component_inputs(
    model: str, behavior: str, fmt: str, options: ComponentOptions, persona_dir: str | None
) -> ComponentInputs:
    """The components step's inputs for a prompt layout ``fmt`` (tokenizer-free, cheap)."""
    epochs = {} if options.epochs is None else {"epochs": options.epochs}
    names = (options.preset,) if options.preset else tuple(PRESETS)
    recipes = tuple(get_preset(n, **epochs) for n in names)
    return ComponentInputs(
        model=model,
        behavior=behavior,
        persona_dir=persona_dir,
        fmt=training_format(fmt),
        options=options,
        recipe=recipes[0] if options.preset else recipes,
        training_version=manifest.TRAINING_VERSION,
    )


@dataclass(frozen=True)
class Prepared:
    """A behavior's components step before training: its inputs, recipe and rendered data."""

    inputs: ComponentInputs
    config: TrainConfig
    data: Any  # bebkit.components.workflow.BehaviorData


@dataclass
class ComponentProvider:
    """Lazily loaded ComponentSets; adapters trained or reused on demand (appendix J)."""

    options: ComponentOptions
    log: Callable[[str], None]
    persona_dir: str | None = None
    threads: int | None = None
    #: out-of-memory batches of the models it loads are split in halves (``split_on_oom``)
    split_on_oom: bool = True
    #: the arithmetic experiments compute in: ``float32``, or ``bfloat16`` — then they get an
    #: inference copy (:meth:`inference`); adapters are always trained and kept in float32
    precision: str = "float32"
    _sets: dict[str, Any] = field(default_factory=dict)
    _copies: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    _loaded: dict[str, tuple[ComponentInputs, frozenset[str]]] = field(default_factory=dict)
    _status: dict[ComponentInputs, dict[str, Any]] = field(default_factory=dict)
    _prepared: dict[tuple[ComponentInputs, str], Prepared] = field(default_factory=dict)

    def base(self, model: str) -> Any:
        """The model's ComponentSet (loaded once), whatever adapters it holds."""
        from bebkit.components.workflow import load_components

        if model not in self._sets:
            self.log(f"loading {model}")
            comps = load_components(model, progress=False)
            comps.split_on_oom = self.split_on_oom
            self._sets[model] = comps
        return self._sets[model]

    def inference(self, model: str) -> Any:
        """The set experiments compute with: the loaded set at float32; otherwise its
        :meth:`~bebkit.components.adapters.ComponentSet.inference_copy` in ``precision``, made
        again whenever the adapters loaded into the float32 set change (a new behavior)."""
        comps = self.base(model)
        if self.precision == "float32":
            return comps
        tag = self._loaded.get(model)
        have = self._copies.get(model)
        if have is None or have[0] != tag:
            self._copies.pop(model, None)  # free the old copy before making the new one
            del have
            self.log(f"{model}: {self.precision} inference copy")
            self._copies[model] = (tag, comps.inference_copy(self.precision))
        return self._copies[model][1]

    def add_model(self, name: str, components: Any) -> None:
        """Serve an in-memory ComponentSet (a model an experiment made itself) as ``name``;
        its P₋/P₊ are then trained or reused like any loaded model's."""
        if name in self._sets:
            raise ValueError(f"model {name!r} is already in this provider")
        self._sets[name] = components

    def prepared(self, model: str, behavior: str, fmt: str, role: str = "shared") -> Prepared:
        """The behavior's split rendered for ``model`` in the training format of the layout
        ``fmt``, with its recipe — built once per inputs, from the inputs alone. ``role``: the
        shared components or one half of a decoupled pair (the experiment's settings name it,
        so it enters the stage key there)."""
        from bebkit.components.workflow import prepare_data

        inp = component_inputs(model, behavior, fmt, self.options, self.persona_dir)
        if (inp, role) not in self._prepared:
            comps = self.base(inp.model)
            config = inp.train_config(comps.n_parameters())
            data = prepare_data(
                inp.behavior,
                inp.fmt,
                comps.tokenizer,
                config,
                seed=inp.options.train_seed,
                persona_dir=inp.persona_dir,
                role=role,
            )
            self._prepared[(inp, role)] = Prepared(inp, config, data)
        return self._prepared[(inp, role)]

    def data(self, model: str, behavior: str, fmt: str) -> Any:
        """The behavior's rendered split (:meth:`prepared`)."""
        return self.prepared(model, behavior, fmt).data

    def components(
        self,
        model: str,
        behavior: str,
        fmt: str,
        sides: tuple[str, ...] = ("neg", "pos"),
        role: str = "shared",
    ) -> Any:
        """The ComponentSet of ``model`` with the ``sides`` adapters of ``behavior`` loaded, named
        :func:`~bebkit.components.workflow.adapter_name` (side, ``role``) — the set experiments
        compute with (:meth:`inference`: an inference copy unless ``precision`` is float32)."""
        from bebkit.components.training import torch_threads
        from bebkit.components.workflow import adapter_name, ensure_components

        prep = self.prepared(model, behavior, fmt, role)
        inp, o = prep.inputs, prep.inputs.options
        comps = self.base(inp.model)
        want = frozenset(adapter_name(s, role) for s in sides)
        have = self._loaded.get(model)
        same = have is not None and have[0] == inp
        loaded: frozenset[str] = have[1] if have is not None and same else frozenset()
        if not want <= loaded:
            todo = tuple(sorted({s for s in sides if adapter_name(s, role) not in loaded}))
            if not same:
                self._status.pop(inp, None)
            want = want | loaded  # the other role's adapters of this behavior stay loaded
            with torch_threads(self.threads):
                status = ensure_components(
                    comps,
                    prep.data,
                    prep.config,
                    out=o.adapters,
                    seed=o.train_seed,
                    train_missing=not o.no_train,
                    progress=False,
                    num_threads=self.threads,
                    log=self.log,
                    sides=todo,
                )
            self._loaded[model] = (inp, want)
            self._status.setdefault(inp, {}).update({k: v.to_dict() for k, v in status.items()})
        return self.inference(model)

    def weights_sha256(
        self, model: str, behavior: str, fmt: str, side: str, role: str = "shared"
    ) -> str | None:
        """SHA-256 of the weights of one adapter loaded by :meth:`components` (None before)."""
        from bebkit.components.workflow import adapter_name

        inp = self.prepared(model, behavior, fmt, role).inputs
        # statuses are keyed by adapter name: neg, generator_neg, judge_pos, …
        status = self._status.get(inp, {}).get(adapter_name(side, role))
        return None if status is None else status.get("weights_sha256")

    def provenance(self, model: str, behavior: str, fmt: str) -> dict[str, Any]:
        """Which adapters were used (reused or trained, from where) for the record."""
        prep = self.prepared(model, behavior, fmt)
        return {
            "model": model,
            "preset": prep.config.name,
            "components": self._status.get(prep.inputs, {}),
            "threads": self.threads,
            "precision": self.precision,
        }


__all__ = ["ComponentInputs", "ComponentProvider", "Prepared", "component_inputs"]
