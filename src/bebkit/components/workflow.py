"""Train-or-reuse both components of a behavior and run the Table 1 classification.

This is the library behind ``bebkit train`` and ``bebkit classify``:

1. load the behavior and draw a seeded train / held-out split per side (appendix J: 450 / 50
   of 500; smaller behaviors get proportionally smaller splits, see
   :func:`resolve_split_sizes`);
2. render the training texts (groups of three statements, ``newline`` or ``chat`` format);
3. for ``neg`` (P₋, undesired) and ``pos`` (P₊, desired): reuse the saved adapter when its
   manifest key matches these exact inputs, else train and save it atomically;
4. classify the held-out statements by ``log P₊(s) > log P₋(s)``.
"""

from __future__ import annotations

import functools
import importlib.metadata as _md
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bebkit.components.adapters import ComponentSet
from bebkit.components.classify import ClassificationResult, classify_statements
from bebkit.components.manifest import (
    TRAINING_VERSION,
    clean_kept,
    component_dir,
    find_reusable,
    keep_aside,
    manifest_key,
    publish,
    restore_kept,
    texts_hash,
)
from bebkit.components.presets import TrainConfig, default_preset_name, get_preset
from bebkit.components.training import TrainResult, discard_adapter, train_adapter
from bebkit.errors import InputError
from bebkit.integrity import remove_stale
from bebkit.locks import artifact_lock
from bebkit.paths import cache_dir

SIDES: tuple[str, ...] = ("neg", "pos")
#: Appendix J split per side.
PAPER_SPLIT = (450, 50)
#: ``shared``: one P₋ both samples the prompts and judges (the paper's setup); ``generator`` /
#: ``judge``: the decoupled pair, trained on disjoint halves of the training statements
#: (:func:`bebkit.data.splits.decoupled_split`).
ROLES: tuple[str, ...] = ("shared", "generator", "judge")
#: Added to the training seed of the judge's adapters: another LoRA init and data order.
JUDGE_SEED_OFFSET = 1_000_003


def adapter_name(side: str, role: str = "shared") -> str:
    """The adapter (and folder) name of one side in one role: ``neg``, ``generator_neg``, ..."""
    if role not in ROLES:
        raise InputError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return side if role == "shared" else f"{role}_{side}"


def role_seed(seed: int, role: str) -> int:
    """The training seed of a role's adapters (the judge's differs from the generator's)."""
    return seed + JUDGE_SEED_OFFSET if role == "judge" else seed


def resolve_split_sizes(
    name: str,
    n_desired: int,
    n_undesired: int,
    n_train: int | None = None,
    n_heldout: int | None = None,
) -> tuple[int, int]:
    """Split sizes per side: the paper's 450 / 50 when a side has ≥ 500 statements.

    Otherwise, with m = the smaller side's count: ``n_heldout = clip(10·round(m / 75), 10,
    50)`` (≈13 %; 150 → 20) and ``n_train = min(450, m − n_heldout)`` (150 → 130). Explicit
    values are validated against m. Raises :class:`InputError` when too few statements remain
    (a component needs ≥ 3 training statements — one group — and ≥ 1 held out).
    """
    m = min(n_desired, n_undesired)
    if n_heldout is None:
        n_heldout = (
            PAPER_SPLIT[1] if m >= sum(PAPER_SPLIT) else int(min(50, max(10, 10 * round(m / 75))))
        )
    if n_train is None:
        n_train = min(PAPER_SPLIT[0], m - n_heldout)
    if n_heldout < 1:
        raise InputError(f"n_heldout must be >= 1, got {n_heldout}")
    if n_train < 3:
        raise InputError(
            f"behavior {name!r} has only {m} distinct statements on its smaller side: "
            f"n_train would be {n_train} (need >= 3 plus n_heldout={n_heldout})"
        )
    if n_train + n_heldout > m:
        raise InputError(
            f"behavior {name!r} has only {m} distinct statements on its smaller side, "
            f"but n_train + n_heldout = {n_train} + {n_heldout} = {n_train + n_heldout}"
        )
    return int(n_train), int(n_heldout)


def check_behavior(
    name: str,
    persona_dir: str | Path | None = None,
    n_train: int | None = None,
    n_heldout: int | None = None,
) -> Any:
    """Load a behavior and validate its split sizes (cheap: run before loading a model)."""
    from bebkit.data.behaviors import load_behavior
    from bebkit.data.splits import dedupe

    beh = load_behavior(name, persona_dir)
    resolve_split_sizes(
        beh.name, len(dedupe(beh.desired)), len(dedupe(beh.undesired)), n_train, n_heldout
    )
    return beh


@dataclass(frozen=True)
class BehaviorData:
    """Everything a component pair is trained and evaluated on, for one behavior and format."""

    behavior: str
    fmt: str
    split: Any  # bebkit.data.splits.BehaviorSplit
    texts: dict[str, list[str]]  # side -> training texts
    heldout_texts: dict[str, list[str]]  # side -> held-out texts (for the held-out loss)
    role: str = "shared"  # see ROLES; names the adapters and sets their seed

    @property
    def heldout(self) -> dict[str, tuple[str, ...]]:
        """side -> held-out statements (``neg``: undesired, ``pos``: desired)."""
        return {"neg": self.split.heldout_undesired, "pos": self.split.heldout_desired}


def prepare_data(
    behavior: str | Any,
    fmt: str,
    tokenizer: Any,
    config: TrainConfig,
    *,
    split_seed: int = 0,
    seed: int = 0,
    persona_dir: str | Path | None = None,
    role: str = "shared",
) -> BehaviorData:
    """Load, dedupe, split and render a behavior for one format (see module docstring).

    ``behavior`` is a name (:func:`bebkit.data.behaviors.load_behavior`) or a ``Behavior``.
    ``role`` other than ``shared`` keeps that role's half of the training statements.
    """
    from bebkit.data.behaviors import load_behavior
    from bebkit.data.formats import FORMATS, training_texts
    from bebkit.data.splits import decoupled_split, dedupe, split_behavior

    if fmt not in FORMATS:
        raise InputError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    beh = load_behavior(behavior, persona_dir) if isinstance(behavior, str) else behavior
    n_train, n_heldout = resolve_split_sizes(
        beh.name,
        len(dedupe(beh.desired)),
        len(dedupe(beh.undesired)),
        config.n_train,
        config.n_heldout,
    )
    split = split_behavior(beh, n_train=n_train, n_heldout=n_heldout, seed=split_seed)
    adapter_name("neg", role)  # validates the role
    if role != "shared":
        split = decoupled_split(split, role)

    def render(statements: Sequence[str]) -> list[str]:
        return training_texts(
            list(statements), fmt, tokenizer, order=config.order, seed=role_seed(seed, role)
        )

    return BehaviorData(
        behavior=beh.name,
        fmt=fmt,
        split=split,
        texts={"neg": render(split.train_undesired), "pos": render(split.train_desired)},
        heldout_texts={
            "neg": render(split.heldout_undesired),
            "pos": render(split.heldout_desired),
        },
        role=role,
    )


def default_out(model_name: str) -> Path:
    """``cache_dir()/adapters/<model name>``: where adapters go without ``--out``."""
    safe = model_name.replace("/", "__")
    return cache_dir() / "adapters" / safe


def resolve_config(components: ComponentSet, preset: str | None, **overrides: Any) -> TrainConfig:
    """The named preset, or ``small`` / ``paper`` by model size when ``preset`` is None."""
    name = preset or default_preset_name(components.n_parameters())
    return get_preset(name, **overrides)


@dataclass(frozen=True)
class SideStatus:
    """How one component was obtained: reused from disk, or trained now."""

    side: str
    path: Path
    reused: bool
    manifest: dict[str, Any]
    train: TrainResult | None = None

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "side": self.side,
            "path": str(self.path),
            "reused": self.reused,
            "key": m.get("key"),
            "weights_sha256": self.weights_sha256,
            "metrics": m.get("metrics", {}),
        }

    @property
    def weights_sha256(self) -> str | None:
        """SHA-256 of the adapter's weights file as published (its integrity record): what
        identifies *these* weights, where ``key`` identifies only the recipe that made them
        (a retraining on another CPU may round differently under the same key)."""
        from bebkit.integrity import read_record

        record = read_record(self.path) or {"files": {}}
        entry = record["files"].get("adapter_model.safetensors")
        return entry.get("sha256") if isinstance(entry, dict) else None


@dataclass(frozen=True)
class ComponentsReport:
    """Result of :func:`ensure_components` plus (optionally) the Table 1 classification."""

    behavior: str
    fmt: str
    model: str
    config: TrainConfig
    data: BehaviorData
    sides: dict[str, SideStatus]
    classification: ClassificationResult | None = None
    timings: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "behavior": self.behavior,
            "format": self.fmt,
            "model": self.model,
            "preset": self.config.name,
            "split": self.data.split.to_dict(),
            "components": {s: st.to_dict() for s, st in self.sides.items()},
            "timings_s": self.timings,
        }
        if self.classification is not None:
            out.update(self.classification.to_dict())
        return out


def _load_avg() -> float | None:
    """1-minute load average when training ended (other jobs on a shared CPU slow it down)."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # pragma: no cover
        return None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for pkg in ("bebkit", "torch", "transformers", "peft"):
        try:
            out[pkg] = _md.version(pkg)
        except _md.PackageNotFoundError:
            out[pkg] = None
    return out


def component_inputs(
    components: ComponentSet,
    data: BehaviorData,
    side: str,
    config: TrainConfig,
    *,
    seed: int,
) -> dict[str, Any]:
    """Everything that determines an adapter's weights (hashed into the manifest key).

    ``seed`` is the run's training seed; a role's own seed (:func:`role_seed`) is derived here.
    The role enters only when not ``shared``, so the keys of shared adapters are unchanged.
    """
    held = data.heldout[side]
    role = {} if data.role == "shared" else {"role": data.role}
    return {
        **role,
        "training_version": TRAINING_VERSION,
        "base_model": components.name,
        "base_fingerprint": components.fingerprint,
        "behavior": data.behavior,
        "format": data.fmt,
        "side": side,
        "data_hash": texts_hash(data.texts[side], list(held)),
        "split_hash": data.split.content_hash(),
        "split_seed": data.split.seed,
        "n_train": len(data.split.train_desired),
        "n_heldout": len(data.split.heldout_desired),
        "hyperparameters": config.hyperparameters(len(data.texts[side])),
        "seed": role_seed(seed, data.role),
    }


def ensure_components(
    components: ComponentSet,
    data: BehaviorData,
    config: TrainConfig,
    *,
    out: str | Path | None = None,
    seed: int = 0,
    train_missing: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    sides: Sequence[str] = SIDES,
    recompute: bool = True,
    lock_timeout: float | None = None,
) -> dict[str, SideStatus]:
    """Load (reuse) or train the ``neg`` and ``pos`` adapters of ``data`` into ``components``.

    Any adapter named ``neg`` / ``pos`` already in ``components`` is replaced. Raises
    :class:`InputError` for a missing adapter when ``train_missing`` is False. ``sides``
    restricts the work to some components (e.g. only ``("neg",)`` to sample prompts from P₋).

    Each side runs under its folder's :func:`~bebkit.locks.artifact_lock`: a second process
    needing the same adapter waits (up to ``lock_timeout`` s, None = forever), then reuses
    what the first one published — the adapter is trained once. A saved adapter whose files
    no longer match their integrity record is retrained (one ``log`` line), or with
    ``recompute=False`` raises :class:`~bebkit.integrity.IntegrityError` (exit 1). If
    anything fails for a side, that side's adapter is not left registered.

    A decoupled ``data.role`` names the adapters and their folders ``<role>_<side>`` (e.g.
    ``judge_neg``) beside the shared ones, and trains them with :func:`role_seed`; the
    returned statuses are keyed by adapter name (the side itself when shared).
    """
    say = log or (lambda _msg: None)
    root = Path(out) if out is not None else default_out(components.name)
    statuses: dict[str, SideStatus] = {}
    if any(s not in SIDES for s in sides):
        raise InputError(f"sides must be a subset of {SIDES}, got {tuple(sides)}")
    for side in sides:
        name = adapter_name(side, data.role)
        inputs = component_inputs(components, data, side, config, seed=seed)
        key = manifest_key(inputs)
        folder = component_dir(root, data.behavior, data.fmt, name)
        if name in components.adapters:
            components.delete_adapter(name)
        what = f"{name} adapter for {data.behavior}/{data.fmt}"
        try:
            with artifact_lock(folder, what=what, log=say, timeout=lock_timeout):
                statuses[name] = _ensure_side(
                    components, data, config, side, folder, key, inputs,
                    seed=role_seed(seed, data.role), train_missing=train_missing,
                    progress=progress, num_threads=num_threads, say=say, recompute=recompute,
                    root=root,
                )  # fmt: skip
        except BaseException:
            discard_adapter(components, name)  # e.g. trained but the disk was full
            raise
    return statuses


def _ensure_side(
    components: ComponentSet,
    data: BehaviorData,
    config: TrainConfig,
    side: str,
    folder: Path,
    key: str,
    inputs: dict[str, Any],
    *,
    seed: int,
    train_missing: bool,
    progress: bool,
    num_threads: int | None,
    say: Callable[[str], None],
    recompute: bool,
    root: Path,
) -> SideStatus:
    """Reuse or train one side; the caller holds the folder's artifact lock."""
    name = adapter_name(side, data.role)
    remove_stale(folder)  # temp folders of killed publishes (safe: we hold the lock)
    clean_kept(folder)  # and of killed deletions of kept recipes
    found = find_reusable(folder, key, recompute=recompute, log=say)
    if found is None:  # trained earlier for these inputs, then set aside for another recipe
        found = restore_kept(folder, key, recompute=recompute, log=say)
    if found is not None:
        components.load_adapter(name, folder)
        say(f"reusing {name} adapter for {data.behavior}/{data.fmt} from {folder}")
        return SideStatus(name, folder, True, found)
    if not train_missing:
        raise InputError(
            f"no trained {name} adapter for {data.behavior}/{data.fmt} with these inputs "
            f"in {root}; run `bebkit train` or drop --no-train"
        )
    say(f"training {name} adapter for {data.behavior}/{data.fmt} ({config.name} preset)")
    result = train_adapter(
        components,
        name,
        data.texts[side],
        config,
        seed=seed,
        heldout_texts=data.heldout_texts[side],
        progress=progress,
        num_threads=num_threads,
        description=f"{data.behavior}/{data.fmt}/{name}",
    )
    manifest = {
        "key": key,
        "inputs": inputs,
        "preset": config.name,
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "metrics": {
            "final_loss": result.final_loss,
            "initial_loss": result.initial_loss,
            "heldout_loss": result.heldout_loss,
            "heldout_loss_base": result.heldout_loss_base,
            "wall_time_s": result.wall_time_s,
            "cpu_time_s": result.cpu_time_s,
            "load_avg_1min": _load_avg(),
            "n_steps": result.n_steps,
            "n_texts": result.n_texts,
            "n_tokens": result.n_tokens,
            "num_threads": result.num_threads,
            "bf16": result.bf16,
        },
    }
    # the recipe in place (other inputs) stays available for the runs that ask for it
    keep_aside(folder, unless=key)
    publish(
        folder,
        functools.partial(_save_into, components, name),
        manifest,
        what=f"{name} adapter for {data.behavior}/{data.fmt}",
    )
    say(
        f"trained {name}: loss {result.initial_loss:.3f} -> {result.final_loss:.3f}, "
        f"held-out {result.heldout_loss_base or float('nan'):.3f} -> "
        f"{result.heldout_loss or float('nan'):.3f} in {result.wall_time_s:.0f} s; saved to {folder}"
    )
    return SideStatus(name, folder, False, manifest, result)


def _save_into(components: ComponentSet, side: str, folder: Path) -> None:
    components.save_adapter(side, folder)


def classify_heldout(
    components: ComponentSet, data: BehaviorData, num_threads: int | None = None
) -> ClassificationResult:
    """Table 1 on the held-out statements of ``data`` with the loaded ``pos`` / ``neg``."""
    from bebkit.components.training import torch_threads

    with torch_threads(num_threads):
        return classify_statements(
            components.model("pos"),
            components.model("neg"),
            data.split.heldout_desired,
            data.split.heldout_undesired,
            data.fmt,
            components.tokenizer,
        )


def train_and_classify(
    components: ComponentSet,
    behavior: str | Any,
    *,
    fmt: str = "newline",
    config: TrainConfig,
    out: str | Path | None = None,
    seed: int = 0,
    split_seed: int = 0,
    persona_dir: str | Path | None = None,
    train_missing: bool = True,
    progress: bool = True,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    recompute: bool = True,
) -> ComponentsReport:
    """Train or reuse both components of ``behavior`` and classify its held-out statements."""
    t0 = time.perf_counter()
    data = prepare_data(
        behavior,
        fmt,
        components.tokenizer,
        config,
        split_seed=split_seed,
        seed=seed,
        persona_dir=persona_dir,
    )
    sides = ensure_components(
        components,
        data,
        config,
        out=out,
        seed=seed,
        train_missing=train_missing,
        progress=progress,
        num_threads=num_threads,
        log=log,
        recompute=recompute,
    )
    t1 = time.perf_counter()
    result = classify_heldout(components, data, num_threads)
    t2 = time.perf_counter()
    return ComponentsReport(
        behavior=data.behavior,
        fmt=fmt,
        model=components.name,
        config=config,
        data=data,
        sides=sides,
        classification=result,
        timings={"components": t1 - t0, "classify": t2 - t1},
    )


def write_table1_record(report: ComponentsReport, out: str | Path | None = None) -> Path:
    """Write the run as a result record to ``<out>/<behavior>/<format>/table1.json``."""
    from bebkit.records import make_record, write_record

    root = Path(out) if out is not None else default_out(report.model)
    record = make_record(
        "components.table1",
        config={"preset": report.config.model_dump(mode="json"), "format": report.fmt},
        seed=None,
        results=report.to_dict(),
        timings=report.timings,
    )
    return write_record(root / report.behavior / report.fmt / "table1.json", record)


def load_components(
    model: str, *, dtype: str = "float32", progress: bool = True, recompute: bool = True
) -> ComponentSet:
    """Load a base model by name or path (:func:`bebkit.models.loading.load_model`).

    ``progress=False`` silences transformers' own "Loading weights" bars; ``recompute=False``
    makes a damaged cached model conversion an error instead of converting it again.
    """
    from bebkit.models.loading import load_model

    if not progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    loaded = load_model(model, dtype=dtype, recompute=recompute)
    return ComponentSet(loaded.model, loaded.tokenizer, name=loaded.name)


def components_for(
    model: str,
    behavior: str,
    fmt: str,
    *,
    preset: str | None = None,
    n_train: int | None = None,
    seed: int = 0,
    persona_dir: str | Path | None = None,
    out: str | Path | None = None,
    train_missing: bool = True,
    sides: Sequence[str] = SIDES,
    num_threads: int | None = None,
    log: Callable[[str], None] | None = None,
    recompute: bool = True,
    role: str = "shared",
) -> tuple[ComponentSet, BehaviorData, TrainConfig, dict[str, SideStatus]]:
    """Load ``model`` and train-or-reuse the ``sides`` adapters of ``behavior`` in ``fmt``.

    The one sequence every command runs before using P₋ / P₊: :func:`load_components`,
    :func:`resolve_config` (``n_train`` overrides the preset), :func:`prepare_data`,
    :func:`ensure_components`. Returns the components, the data (with its split), the
    resolved training config and each side's status. ``recompute=False``: a cached model or
    adapter that fails its integrity check raises instead of being rebuilt. ``role``: the
    shared components or one half of a decoupled pair (adapters named by :func:`adapter_name`).
    """
    comps = load_components(model, progress=False, recompute=recompute)
    overrides = {} if n_train is None else {"n_train": n_train}
    config = resolve_config(comps, preset, **overrides)
    data = prepare_data(
        behavior, fmt, comps.tokenizer, config, seed=seed, persona_dir=persona_dir, role=role
    )
    status = ensure_components(
        comps, data, config, out=out, seed=seed, train_missing=train_missing, progress=False,
        num_threads=num_threads, log=log, sides=sides, recompute=recompute,
    )  # fmt: skip
    return comps, data, config, status
