"""The experiment registry: every experiment is defined once, here-registered, and both the CLI
subcommands and the ``bebkit reproduce`` stages are generated from that one definition.

An :class:`Experiment` names

* a frozen :class:`Settings` (its fields, defaults, ranges and help text are the CLI options
  and the YAML section; ``quick()`` / ``paper()`` are the two size presets),
* a typed :class:`Result` (pydantic; round-trips to and from JSON),
* a ``version`` (bump it when the code changes what the result would be),
* the components it needs (``sides``: LoRA P₋/P₊ of the behavior; ``model_role``),
* the experiments it reads from (``reads``: their typed results are its inputs),
* the external data it reads (persona statements always by content hash; the paper's figures
  when ``reads_paper_figures``), and
* ``run(ctx, settings) -> Result``.

A stage's cache key is *derived*, never hand-listed: the hash of the experiment's name and
version, its resolved settings minus the fields declared :func:`not_in_key`, the keys of its
inputs and the content fingerprints of the components, models and data files it reads
(:func:`stage_key`). A new experiment is one module with one :func:`register` call, listed in
:data:`EXPERIMENT_MODULES`.
"""

from __future__ import annotations

import hashlib
import importlib
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError

from bebkit.checkpoint import Checkpoint
from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.kl import ESTIMATOR_REVISIONS
from bebkit.io import to_jsonable
from bebkit.pipeline.stages import stable_hash

#: Modules that register experiments (imported on first use of the registry).
EXPERIMENT_MODULES: tuple[str, ...] = (
    "bebkit.pipeline.classify",
    "bebkit.pipeline.probes",
    "bebkit.pipeline.beta_sigma",
    "bebkit.pipeline.prompt_dist",
    "bebkit.pipeline.convergence",
    "bebkit.pipeline.misalign",
    "bebkit.pipeline.pretrained",
    "bebkit.pipeline.theorems",
    "bebkit.pipeline.align",
)

#: Settings fields filled from the run (subject, seed, shared prompt) rather than the YAML
#: section of the experiment; on the command line they are ordinary options.
RUN_FIELDS: frozenset[str] = frozenset({"behavior", "fmt", "seed", "aligning_prompt"})


def not_in_key(default: Any, description: str) -> Any:
    """A settings field that cannot change the result (progress bars, thread counts): declared
    out of the cache key here, so that leaving a field out of a key is never an omission."""
    return Field(default, description=description, json_schema_extra={"key": False})


def key_unless_default(default: Any, description: str, **kwargs: Any) -> Any:
    """A field added after runs were cached: it enters the key only when set away from
    ``default`` (which reproduces the earlier behavior), so those runs stay resumable."""
    return Field(default, description=description, json_schema_extra={"key": "unless_default"},
                 **kwargs)  # fmt: skip


def _to_estimate(v: Any) -> Estimate:
    if isinstance(v, Estimate):
        return v
    try:
        return Estimate.from_dict(v)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"not an estimate: {v!r} ({exc})") from None


#: An :class:`~bebkit.estimate.Estimate` as a typed result field (JSON: ``Estimate.to_dict``).
EstimateField = Annotated[
    Estimate, PlainValidator(_to_estimate), PlainSerializer(lambda e: e.to_dict())
]


class Settings(BaseModel):
    """Frozen experiment settings. Defaults are the paper's sizes; ``quick()`` the CI sizes."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Overrides applied by :meth:`quick` (the only place quick sizes are written).
    QUICK: ClassVar[Mapping[str, Any]] = {}
    #: The sample-count field of a plain Monte Carlo KL curve these settings estimate without
    #: an estimator field (misalign's and align's Lemma 5 curve); while it is > 0 the MC
    #: estimator's revision joins the key as ``kl_estimator`` (see :meth:`key_material`).
    MC_KL_SAMPLES: ClassVar[str | None] = None

    @classmethod
    def quick(cls, **overrides: Any) -> Any:
        """Small sizes for CI and demos (``QUICK``), then ``overrides``."""
        return cls(**{**cls.QUICK, **overrides})

    @classmethod
    def paper(cls, **overrides: Any) -> Any:
        """The paper's sizes (the field defaults), then ``overrides``."""
        return cls(**overrides)

    @classmethod
    def key_fields(cls) -> tuple[str, ...]:
        """The fields that enter the cache key: all but those declared :func:`not_in_key`."""
        out = []
        for name, info in cls.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and extra.get("key") is False:
                continue
            out.append(name)
        return tuple(out)

    def key_material(self) -> dict[str, Any]:
        """The key fields' values; a value with a revision in its field's ``key_revisions``
        (e.g. an estimator whose definition changed) enters as ``"value@revision"``, so that a
        stage cached under the old definition is recomputed while other values keep their
        keys. An estimator implied rather than chosen (``MC_KL_SAMPLES``) enters the same
        way, as ``kl_estimator: "mc@<revision>"``."""
        dumped: dict[str, Any] = self.model_dump(mode="json")
        fields = type(self).model_fields
        out: dict[str, Any] = {}
        for k in self.key_fields():
            extra = fields[k].json_schema_extra
            extra = extra if isinstance(extra, dict) else {}
            if extra.get("key") == "unless_default" and getattr(self, k) == fields[k].default:
                continue
            v = dumped[k]
            revs = extra.get("key_revisions")
            if isinstance(revs, dict) and isinstance(v, str) and v in revs:
                v = f"{v}@{revs[v]}"
            out[k] = v
        if self.MC_KL_SAMPLES is not None and getattr(self, self.MC_KL_SAMPLES) > 0:
            out["kl_estimator"] = f"mc@{ESTIMATOR_REVISIONS['mc']}"
        return out


#: the arithmetic of a run's model calls (``bfloat16``: an inference copy of the weights)
Precision = Literal["float32", "bfloat16"]


class RunOptions(Settings):
    """Run-level options that change what every model call of a run computes, whichever the
    experiment. Their key material joins the key of every stage that calls a model; each
    field enters only away from its default, so runs cached before the field keep their keys.
    """

    precision: Precision = key_unless_default(
        "float32", "weights of the inference copy the experiments compute with"
    )


class Result(BaseModel):
    """A typed experiment result. Typed fields are what other experiments and the report read;
    everything else the experiment records (curves, files, diagnostics) is kept as extra JSON."""

    model_config = ConfigDict(extra="allow")

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = to_jsonable(self.model_dump(mode="json"))
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Any:
        try:
            return cls.model_validate(to_jsonable(dict(data)))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise InputError(f"not a {cls.__name__}: {where}: {err['msg']}") from None


S = TypeVar("S", bound=Settings)
R = TypeVar("R", bound=Result)


class ComponentOptions(Settings):
    """How the LoRA components P₊/P₋ are trained or reused (appendix J); enters the key of every
    experiment that uses them through :class:`bebkit.pipeline.session.ComponentInputs`."""

    preset: Literal["small", "paper"] | None = Field(
        None, description="LoRA recipe when an adapter must be trained (default: by size)"
    )
    n_train: int | None = Field(None, ge=3, description="training statements per side")
    n_heldout: int | None = Field(None, ge=1, description="held-out statements per side")
    epochs: int | None = Field(None, ge=1, description="training epochs (default: the preset's)")
    train_seed: int = Field(0, ge=0, description="adapter training seed")
    adapters: str | None = not_in_key(
        None, "adapter root (default: $BEBKIT_CACHE/adapters/<model>)"
    )
    no_train: bool = not_in_key(False, "fail instead of training a missing adapter")


@dataclass
class RunContext:
    """What an experiment's ``run`` receives: where to write, how to log, its subject's
    components (loaded lazily), its typed inputs and the external data it may read."""

    out: Path
    log: Callable[[str], None]
    provider: Any  # bebkit.pipeline.session.ComponentProvider (lazy model/adapters)
    model: str | None = None
    inputs: Mapping[str, Result] = field(default_factory=dict)
    persona_dir: str | None = None
    paper_figures: Path | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    #: where long experiments keep finished units between attempts (None: not kept)
    checkpoint_dir: Path | None = None
    #: (behavior, fmt, side, role) of every adapter asked for through :meth:`components`
    _used: set[tuple[str, str, str, str]] = field(default_factory=set)

    def checkpoint(self, part: str) -> Checkpoint:
        """The checkpoint of one part of this run (units of a stage killed before it was
        published are reused by the next attempt; :mod:`bebkit.checkpoint`)."""
        return Checkpoint(
            None if self.checkpoint_dir is None else self.checkpoint_dir / part,
            identity=self.weights_identity,
        )

    def weights_identity(self) -> dict[str, Any]:
        """The SHA-256 of every adapter this run has asked for so far (:meth:`components`):
        part of each stored unit's fingerprint, so units computed with other weights (an
        adapter retrained in another session or on another CPU) are recomputed."""
        if self.model is None:
            return {}
        return {
            "/".join(k): self.provider.weights_sha256(self.model, *k) for k in sorted(self._used)
        }

    def components(
        self, behavior: str, fmt: str, sides: Sequence[str], role: str = "shared"
    ) -> Any:
        """The ComponentSet of ``self.model`` with the ``sides`` adapters of ``behavior`` (of one
        ``role``: shared, or the generator / judge half of a decoupled pair)."""
        if self.model is None:
            raise InputError("this experiment needs --model")
        comps = self.provider.components(self.model, behavior, fmt, tuple(sides), role)
        self._used.update((behavior, fmt, side, role) for side in sides)
        self.provenance.update(self.provider.provenance(self.model, behavior, fmt))
        return comps

    def base(self) -> Any:
        if self.model is None:
            raise InputError("this experiment needs --model")
        # the record says in which arithmetic the model ran (components() adds it too)
        self.provenance.setdefault("precision", getattr(self.provider, "precision", "float32"))
        return self.provider.inference(self.model)

    def input(self, name: str) -> Any:
        """The typed result of the experiment ``name`` this one reads, or None."""
        return self.inputs.get(name)


@dataclass(frozen=True)
class Experiment:
    """One experiment, defined once (see module docstring)."""

    name: str
    settings: type[Settings]
    result: type[Result]
    version: str
    run: Callable[[RunContext, Any], Result]
    summary: Callable[[Any], list[str]]
    help: str
    description: str = ""
    sides: tuple[str, ...] = ()
    model_role: Literal["aligned", "pretrained", "none"] = "aligned"
    reads: tuple[str, ...] = ()
    reads_paper_figures: bool = False
    per_behavior: bool = True
    default_model: str | None = None
    #: whether a reproduce config runs it without an explicit ``enabled: true`` in its section
    default_enabled: bool = True
    #: False: the experiment keeps its own format (β/σ² always use the newline P₋, app. J)
    format_from_run: bool = True
    #: other CLI names of the subcommand
    aliases: tuple[str, ...] = ()
    #: the stage-name prefix in a reproduce run (default: ``name``); stage seeds derive from it
    stage: str | None = None
    #: LoRA components P₋/P₊ it trains on models it makes itself (beyond ``sides`` of the run's
    #: model): the run's component options then change its result all the same
    trains_components: bool = False
    #: it trains models and measures them beside the loaded one, so one arithmetic must serve
    #: all of them: a reduced-precision run refuses it (:func:`precision_error`)
    float32_only: bool = False

    @property
    def uses_components(self) -> bool:
        """Whether the component options (recipe, split, seed) enter its result: its CLI has
        them, its stage key holds the components' fingerprint."""
        return bool(self.sides) or self.trains_components

    @property
    def section(self) -> str:
        """The experiment's section name in a reproduce YAML config."""
        return self.name.replace("-", "_")

    def stage_name(self, behavior: str | None) -> str:
        prefix = self.stage or self.name
        return f"{prefix}-{behavior}" if self.per_behavior and behavior else prefix


def precision_error(exp: Experiment, precision: str) -> str | None:
    """Why ``exp`` cannot run with its model calls in ``precision`` (None: it can). The one
    rule behind the config check, the command line and the experiment's own run."""
    if exp.float32_only and precision != "float32":
        return f"{exp.name} runs in float32 only (precision: float32), not {precision}"
    return None


_REGISTRY: dict[str, Experiment] = {}
_LOADED = False


def register(exp: Experiment) -> Experiment:
    """Add ``exp`` to the registry (one call per experiment module)."""
    if exp.name in _REGISTRY and _REGISTRY[exp.name] is not exp:
        raise ValueError(f"experiment {exp.name!r} registered twice")
    for r in exp.reads:
        if r == exp.name:
            raise ValueError(f"experiment {exp.name!r} reads itself")
    _REGISTRY[exp.name] = exp
    return exp


def experiments() -> dict[str, Experiment]:
    """All registered experiments, in pipeline order: the order of :data:`EXPERIMENT_MODULES`
    (registration order within a module, other modules after), then moved so that every
    experiment follows those it reads. Registration order alone would depend on which module
    a program happened to import first."""
    global _LOADED
    if not _LOADED:
        for mod in EXPERIMENT_MODULES:
            importlib.import_module(mod)
        _LOADED = True
    rank = {m: i for i, m in enumerate(EXPERIMENT_MODULES)}
    pending = sorted(
        _REGISTRY.values(), key=lambda e: rank.get(getattr(e.run, "__module__", ""), len(rank))
    )
    out: dict[str, Experiment] = {}
    while pending:
        # the first experiment (in that order) whose inputs are all placed: a stable sort
        nxt = next((e for e in pending if all(r in out or r not in _REGISTRY for r in e.reads)),
                   None)  # fmt: skip
        if nxt is None:
            raise ValueError(f"experiments read each other in a cycle: {[e.name for e in pending]}")
        out[nxt.name] = nxt
        pending.remove(nxt)
    return out


def get(name: str) -> Experiment:
    exps = experiments()
    if name not in exps:
        raise InputError(f"unknown experiment {name!r}; known: {', '.join(exps)}")
    return exps[name]


# --------------------------------------------------------------------------------------------
# Fingerprints: data by content, components by everything that determines their weights
# --------------------------------------------------------------------------------------------


def file_fingerprint(path: str | Path) -> str:
    """SHA-256 (16 hex) of a file's bytes: data enter keys by content, never by path."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def behavior_fingerprint(behavior: str, persona_dir: str | Path | None) -> str:
    """Content hash of a behavior's statements (both sides, in file order) and its polarity."""
    from bebkit.data.behaviors import load_behavior

    b = load_behavior(behavior, persona_dir)
    return stable_hash(
        {
            "name": b.name,
            "desired": list(b.desired),
            "undesired": list(b.undesired),
            "polarity": getattr(b, "polarity", None),
        }
    )


def _file_digest(path: Path) -> str:
    """:func:`file_fingerprint` of a large file, cached on disk by (path, inode, size, mtime):
    a model's weights are hashed once, not at every plan (a move re-hashes them once)."""
    from bebkit.io import atomic_open
    from bebkit.paths import cache_dir

    st = path.stat()
    ident = stable_hash([str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns])
    memo = cache_dir() / "file-hashes" / ident
    if memo.is_file():
        return memo.read_text().strip()
    digest = file_fingerprint(path)
    with atomic_open(memo) as fh:
        fh.write(digest)
    return digest


def model_identity(model: str) -> Any:
    """How a model enters a key: a bundled name or hub id by its name; a local folder or GGUF
    file by content (every file's name below it, size and hash), never by path — so a moved
    model keeps its keys and an edited weight file moves them."""
    path = Path(model).expanduser()
    if not path.exists():
        return model
    from bebkit.models.loading import BUNDLED_MODELS  # torch: only for path-like names

    if model in BUNDLED_MODELS:  # load_model prefers the bundled name
        return model
    if path.is_file():
        return {"gguf": _file_digest(path)}
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
    )
    return {
        "folder": stable_hash(
            {str(p.relative_to(path)): [p.stat().st_size, _file_digest(p)] for p in files}
        )
    }


def stage_key(
    exp: Experiment,
    settings: Settings,
    *,
    inputs: Mapping[str, str],
    data: Mapping[str, Any],
) -> str:
    """The derived cache key: name, version, key settings, input keys and data fingerprints."""
    return stable_hash(
        {
            "experiment": exp.name,
            "version": exp.version,
            "settings": settings.key_material(),
            "inputs": dict(sorted(inputs.items())),
            "data": dict(data),
        }
    )


# --------------------------------------------------------------------------------------------
# Settings from user input: one-line errors named like the option or YAML key
# --------------------------------------------------------------------------------------------


def option_name(field_name: str) -> str:
    """The CLI option of a settings field (``fmt`` is ``--format``)."""
    return "--format" if field_name == "fmt" else "--" + field_name.replace("_", "-")


def _bounds(info: Any) -> tuple[Any, Any, Any, Any]:
    ge = gt = le = lt = None
    for m in info.metadata:
        ge = getattr(m, "ge", ge)
        gt = getattr(m, "gt", gt)
        le = getattr(m, "le", le)
        lt = getattr(m, "lt", lt)
    return ge, gt, le, lt


def validation_message(cls: type[BaseModel], exc: ValidationError, *, style: str) -> str:
    """One line for the first error: ``--n-prompts must be >= 1, got 0`` (style ``cli``) or
    ``convergence.n_prompts: …`` (style ``yaml:<section>``)."""
    err = exc.errors()[0]
    loc = [str(p) for p in err["loc"]]
    name = loc[0] if loc else ""
    info = cls.model_fields.get(name)
    label = option_name(name) if style == "cli" else ".".join([style[5:], *loc]).strip(".")
    if not name:
        return f"{label or cls.__name__}: {err['msg'].removeprefix('Value error, ')}"
    got = err.get("input")
    if info is not None and err["type"] in {
        "greater_than_equal",
        "greater_than",
        "less_than",
        "less_than_equal",
    }:
        ge, gt, le, lt = _bounds(info)
        if (ge is not None or gt is not None) and (le is not None or lt is not None):
            lo = f"[{ge:g}" if ge is not None else f"({gt:g}"
            hi = f"{le:g}]" if le is not None else f"{lt:g})"
            return f"{label} must be in {lo}, {hi}, got {got}"
        bound = {"greater_than_equal": ">=", "greater_than": ">", "less_than": "<"}.get(
            err["type"], "<="
        )
        limit = next(v for v in (ge, gt, lt, le) if v is not None)
        return f"{label} must be {bound} {limit:g}, got {got}"
    if err["type"] == "extra_forbidden":
        return f"{label}: unknown key"
    return f"{label}: {err['msg'].removeprefix('Value error, ')}"


def build_settings(
    cls: type[S], values: Mapping[str, Any], *, quick: bool = False, style: str = "cli"
) -> S:
    """``cls.quick(**values)`` or ``cls(**values)``, errors as one :class:`InputError` line."""
    try:
        out: S = cls.quick(**values) if quick else cls(**values)
    except ValidationError as exc:
        raise InputError(validation_message(cls, exc, style=style)) from None
    return out


def field_type(annotation: Any) -> tuple[Any, bool]:
    """``(base type, optional)`` of a settings annotation (``int | None`` → ``(int, True)``)."""
    args = typing.get_args(annotation)
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


__all__ = [
    "EXPERIMENT_MODULES",
    "RUN_FIELDS",
    "ComponentOptions",
    "EstimateField",
    "Experiment",
    "Precision",
    "Result",
    "RunContext",
    "RunOptions",
    "Settings",
    "behavior_fingerprint",
    "build_settings",
    "experiments",
    "field_type",
    "file_fingerprint",
    "get",
    "key_unless_default",
    "model_identity",
    "not_in_key",
    "option_name",
    "precision_error",
    "register",
    "stage_key",
    "validation_message",
]
