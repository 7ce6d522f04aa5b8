"""``bebkit sweep``: a grid of models × behaviors × experiments on Ray, resumable, with a report.

A *unit* is one (model, behavior, experiment). Its stage is built exactly as ``bebkit
reproduce`` builds it for a one-behavior run of that model (:func:`reproduce._stage`: settings
from the experiment's YAML section plus the run-level fields, a key derived from the settings,
the data fingerprints, the input keys and the version), and it is written through the same
content-addressed :class:`~bebkit.pipeline.stages.StageRunner`, into::

    SWEEP_DIR/units/<model>/<behavior>/stages/<stage>/<key>/result.json

so a killed sweep resumes where it stopped and a larger grid reuses every finished unit (a
unit's key does not depend on the rest of the grid, only on what it reads).

Execution is Ray's: one actor per model replica (declared ``num_cpus`` / ``num_gpus``) holds a
:class:`~bebkit.pipeline.session.ComponentProvider`, so it loads its base model once and
switches LoRA adapters per behavior; the driver feeds each actor units of its model (the same
behavior as its last unit first, so adapters are reused), passes upstream results along
(convergence reads beta-sigma; misalign reads both), and records a failed unit's one-line error without stopping the
others. Local Ray is started in-process with one worker per core unless an address is given
(``auto`` or ``ray://HOST:PORT``); on a multi-node cluster SWEEP_DIR should be on a shared
filesystem so the cache is shared (results themselves travel back through Ray).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bebkit.errors import InputError, RunError
from bebkit.io import write_json
from bebkit.pipeline.config import ReproduceConfig
from bebkit.pipeline.registry import Experiment, experiments, precision_error
from bebkit.pipeline.stages import RESULT_FILE, Stage, StageOutcome, StageRunner, plan_keys

Log = Callable[[str], None]

#: Top-level keys of a sweep config that are the sweep's own; every other key is a
#: ``bebkit reproduce`` key (seed, persona_dir, format, components, experiment sections, quick).
SWEEP_KEYS = frozenset({"name", "models", "behaviors", "experiments", "sizes", "resources"})
SWEEP_FILE = "sweep.json"
#: Environment variables forwarded to the workers (cache, data and thread settings).
FORWARDED_ENV = (
    "BEBKIT_CACHE",
    "BEBKIT_PERSONA_DIR",
    "BEBKIT_REFERENCE_DIR",
    "BEBKIT_HUMAN_LABELS_DIR",
    "BEBKIT_NUM_THREADS",
    "BEBKIT_DATA",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


class SweepResources(BaseModel):
    """What one model replica (a Ray actor running one unit at a time) declares."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    num_cpus: float = Field(1.0, gt=0, description="CPUs per model replica (its torch threads)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs per model replica")
    max_replicas: int | None = Field(None, ge=1, description="replicas of one model at most")
    max_restarts: int = Field(
        2, ge=0, description="restarts of a replica whose process died (its unit is retried once)"
    )


class SweepGrid(BaseModel):
    """The sweep's own keys: the grid and the resources."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "sweep"
    models: tuple[str, ...] = ("smollm2-135m-instruct",)
    behaviors: tuple[str, ...] = Field(
        ("cooperativeness",), description="names, fnmatch globs ('believes-*'), or 'all'"
    )
    experiments: tuple[str, ...] = ("classify", "probe")
    sizes: Literal["paper", "quick"] = Field(
        "paper", description="base sizes of every section: the paper's or the settings' quick"
    )
    resources: SweepResources = SweepResources()

    @field_validator("models", "behaviors", "experiments")
    @classmethod
    def _non_empty(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        v = tuple(dict.fromkeys(s.strip() for s in v if s.strip()))
        if not v:
            raise ValueError("must name at least one")
        return v

    @field_validator("experiments")
    @classmethod
    def _known(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        exps = experiments()
        if v == ("all",):
            return tuple(exps)
        for name in v:
            if name not in exps:
                raise ValueError(f"unknown experiment {name!r}; known: {', '.join(exps)}")
        return v


class SweepConfig(BaseModel):
    """A validated sweep: its grid plus a reproduce config holding every other setting."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    grid: SweepGrid
    run: ReproduceConfig

    @property
    def name(self) -> str:
        return self.grid.name

    def experiments(self) -> list[Experiment]:
        """The grid's experiments in pipeline order (pretrained only with a pretrained model)."""
        return [
            e
            for e in experiments().values()
            if e.name in self.grid.experiments
            and e.model_role != "none"
            and (e.model_role != "pretrained" or self.run.pretrained_model)
        ]

    def unit_config(self, model: str, behavior: str) -> ReproduceConfig:
        """The reproduce config of one grid row: ``model`` as the aligned model, one behavior."""
        return self.run.model_copy(update={"aligned_model": model, "behaviors": (behavior,)})

    def resolve_behaviors(self) -> list[str]:
        """The grid's behaviors: names kept, globs and ``all`` matched against the embedded
        behaviors and the persona folder's files (by name: a malformed file fails its units,
        not the sweep)."""
        available = available_behaviors(self.run.persona_dir)
        out: list[str] = []
        for pat in self.grid.behaviors:
            if pat == "all":
                out.extend(available)
            elif any(c in pat for c in "*?["):
                hits = [b for b in available if fnmatch.fnmatchcase(b, pat)]
                if not hits:
                    raise InputError(f"behaviors: {pat!r} matches no behavior")
                out.extend(hits)
            elif pat in available:
                out.append(pat)
            else:
                from difflib import get_close_matches

                close = get_close_matches(pat, available, n=3)
                hint = f" (did you mean {', '.join(close)}?)" if close else ""
                raise InputError(f"behaviors: unknown behavior {pat!r}{hint}")
        return list(dict.fromkeys(out))


def available_behaviors(persona_dir: str | Path | None) -> list[str]:
    """Embedded behaviors, then the stems of ``*.jsonl`` in the persona folder (not parsed)."""
    from bebkit.data.behaviors import embedded_behavior_names
    from bebkit.paths import persona_dir as env_persona_dir

    names = list(embedded_behavior_names())
    directory = Path(persona_dir).expanduser() if persona_dir else env_persona_dir()
    if persona_dir and not (directory and directory.is_dir()):
        raise InputError(f"persona_dir: {persona_dir!r} is not a directory")
    if directory is not None and directory.is_dir():
        names += [p.stem for p in sorted(directory.glob("*.jsonl")) if p.is_file()]
    return list(dict.fromkeys(names))


def _absolute(value: str | None) -> str | None:
    """A path that exists, made absolute (workers may run elsewhere); names stay names."""
    if value and Path(value).expanduser().exists():
        return str(Path(value).expanduser().resolve())
    return value


def build_sweep_config(data: Mapping[str, Any], origin: str, *, quick: bool = False) -> SweepConfig:
    """Validate a sweep config mapping (errors are one line naming ``origin`` and the key)."""
    from bebkit.pipeline import config as reproduce_config

    data = dict(data)
    for bad in ("aligned_model",):
        if bad in data:
            raise InputError(f"{origin}: {bad}: a sweep lists its models under `models`")
    grid_data = {k: data.pop(k) for k in list(data) if k in SWEEP_KEYS}
    try:
        grid = SweepGrid.model_validate(grid_data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise InputError(f"{origin}: {where}: {msg.removeprefix('Value error, ')}") from None
    grid = grid.model_copy(update={"models": tuple(_absolute(m) or m for m in grid.models)})
    if grid.sizes == "quick":  # the settings' own quick sizes under the section's values
        for exp in experiments().values():
            section = data.get(exp.section) or {}
            if isinstance(section, dict):
                data[exp.section] = {**exp.settings.QUICK, **section}
    for key in ("persona_dir", "paper_figures"):
        if isinstance(data.get(key), str):
            data[key] = _absolute(data[key])
    data["aligned_model"] = grid.models[0]
    data.setdefault("name", grid.name)
    run = reproduce_config._validate(data, origin)
    if quick:
        run = run.with_quick()
    if run.components.adapters:
        run = run.model_copy(
            update={
                "components": run.components.model_copy(
                    update={"adapters": _absolute(run.components.adapters)}
                )
            }
        )
    # Resolve the environment-dependent inputs once, in the driver: a Ray worker's environment
    # may differ (another node, or a Ray started before the driver's variables changed), and
    # a unit's key and numbers must not depend on where it runs. "" = explicitly none.
    from bebkit.paths import persona_dir as env_persona_dir
    from bebkit.pipeline.reproduce import paper_figures_file

    figures = paper_figures_file(run)
    persona = run.persona_dir if run.persona_dir is not None else env_persona_dir()
    run = run.model_copy(
        update={
            "paper_figures": str(figures) if figures is not None else "",
            "persona_dir": None if persona is None else str(persona),
        }
    )
    explicit = grid_data.get("experiments") not in (None, "all", ["all"])
    if "pretrained" in grid.experiments and not run.pretrained_model and explicit:
        raise InputError(f"{origin}: experiments: pretrained needs pretrained_model")
    sweep = SweepConfig(grid=grid, run=run)
    # a sweep runs its grid's experiments whatever the sections' `enabled` say: check those
    for exp in sweep.experiments():
        refused = precision_error(exp, run.precision)
        if refused:
            raise InputError(f"{origin}: precision: {refused}")
    return sweep


def load_sweep_config(
    path: str | Path, *, quick: bool = False, overrides: Mapping[str, Any] | None = None
) -> SweepConfig:
    """Load and validate a sweep YAML config (one-line errors, :class:`InputError`);
    ``overrides`` replace top-level keys (the CLI's ``--persona-dir``)."""
    from bebkit.pipeline.config import read_yaml_mapping

    p = Path(path)
    data = read_yaml_mapping(p)
    return build_sweep_config({**data, **(overrides or {})}, str(p), quick=quick)


# --------------------------------------------------------------------------------------------
# Plan: every unit, its key and its dependencies, without loading a model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One (model, behavior, experiment) of the grid."""

    id: str
    model: str  #: the grid's model (the aligned model of its row)
    runs_on: str  #: the model the unit loads (its replica group)
    behavior: str
    experiment: str
    stage: str
    folder: str  #: the row's run folder, relative to SWEEP_DIR
    key: str | None = None
    deps: tuple[str, ...] = ()  #: unit ids whose results it reads
    error: str | None = None  #: planning failure (e.g. a malformed behavior file)

    def result_path(self, root: Path) -> Path:
        return root / self.folder / "stages" / self.stage / str(self.key) / RESULT_FILE


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters)."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    text = f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def _slug(text: str) -> str:
    import hashlib

    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"
    if safe == text and len(text) <= 80:
        return text
    base = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(text).name).strip("._") or "x"
    return f"{base[:60]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _build_stage(
    cfg: SweepConfig,
    model: str,
    behavior: str,
    exp: Experiment,
    provider: Any,
    log: Log,
    fingerprints: dict[Any, Any],
) -> Stage:
    """The unit's stage, built as ``bebkit reproduce`` builds it for this model and behavior."""
    from bebkit.pipeline.reproduce import _stage, paper_figures_file

    ucfg = cfg.unit_config(model, behavior)
    enabled = {e.name for e in cfg.experiments()}
    return _stage(
        ucfg, exp, behavior, enabled, provider, log, paper_figures_file(ucfg), fingerprints
    )


def plan_sweep(cfg: SweepConfig) -> list[Unit]:
    """Every unit of the grid with its key (rows whose data cannot be read: their error)."""
    from bebkit.pipeline.session import ComponentProvider

    exps = cfg.experiments()
    if not exps:
        raise InputError("experiments: nothing to run (pretrained needs pretrained_model)")
    behaviors = cfg.resolve_behaviors()
    lazy = ComponentProvider(cfg.run.components, lambda _m: None, persona_dir=cfg.run.persona_dir)
    fingerprints: dict[Any, Any] = {}
    units: list[Unit] = []
    for model in cfg.grid.models:
        for b in behaviors:
            folder = f"units/{_slug(model)}/{_slug(b)}"
            row = f"{_slug(model)}/{b}"
            ucfg = cfg.unit_config(model, b)
            error = None
            stages: list[Stage] = []
            keys: dict[str, str] = {}
            try:
                stages = [
                    _build_stage(cfg, model, b, e, lazy, lambda _m: None, fingerprints)
                    for e in exps
                ]
                keys = plan_keys(stages, ucfg.seed)
            except Exception as exc:
                error = one_line(exc)
            for i, exp in enumerate(exps):
                st = stages[i] if stages else None
                stage_name = st.name if st else exp.stage_name(b)
                units.append(
                    Unit(
                        id=f"{row}/{stage_name}",
                        model=model,
                        runs_on=ucfg.model_for(exp) or model,
                        behavior=b,
                        experiment=exp.name,
                        stage=stage_name,
                        folder=folder,
                        key=keys.get(stage_name),
                        deps=tuple(f"{row}/{d}" for d in (st.deps if st else ())),
                        error=error,
                    )
                )
    return units


# --------------------------------------------------------------------------------------------
# Executing one unit (in a Ray actor, or inline)
# --------------------------------------------------------------------------------------------


def _file_log(path: Path) -> Log:
    def say(msg: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

    return say


def execute_unit(
    cfg: SweepConfig,
    unit: Unit,
    root: str | Path,
    provider: Any,
    deps: Mapping[str, Mapping[str, Any]],
    log: Log | None = None,
) -> dict[str, Any]:
    """Run (or find cached) one unit through its stage runner; ``deps``: the outcomes of the
    units it reads, by unit id. Returns the outcome (key, seconds, cached, result)."""
    root = Path(root)
    say = log or (lambda _m: None)
    exp = experiments()[unit.experiment]
    stage = _build_stage(cfg, unit.model, unit.behavior, exp, provider, say, {})
    if not exp.sides:  # runs on the bare model: whatever adapters the replica holds are off
        model = cfg.unit_config(unit.model, unit.behavior).model_for(exp) or unit.model
        inner = stage.fn

        def on_base(ctx: Any) -> dict[str, Any]:
            with provider.inference(model).activated("base"):
                return inner(ctx)

        stage = dataclasses.replace(stage, fn=on_base)
    runner = StageRunner(root / unit.folder, cfg.run.seed)
    for dep_id, d in deps.items():
        name = dep_id.rsplit("/", 1)[1]
        runner.outcomes[name] = StageOutcome(
            name, d["key"], Path(d["folder"]), d["result"], True, float(d["seconds"])
        )
    outcome = runner.run(stage)
    if unit.key is not None and outcome.key != unit.key:
        raise RunError(f"unit {unit.id}: key {outcome.key} differs from the planned {unit.key}")
    return {
        "key": outcome.key,
        "folder": str(outcome.folder),
        "seconds": outcome.seconds,
        "cached": outcome.cached,
        "result": outcome.result,
    }


class ModelReplica:
    """A Ray actor: one base model in memory (lazily), adapters switched per behavior."""

    def __init__(self, cfg: SweepConfig, root: str, model: str, threads: int | None) -> None:
        from bebkit.pipeline.session import ComponentProvider

        if threads:
            try:
                import torch

                torch.set_num_threads(threads)
            except ImportError:  # pragma: no cover - the [lm] extra brings torch
                pass
        self.cfg, self.root, self.model = cfg, Path(root), model
        self.provider = ComponentProvider(
            cfg.run.components,
            lambda _m: None,
            persona_dir=cfg.run.persona_dir,
            threads=threads,
            split_on_oom=cfg.run.split_on_oom,
            precision=cfg.run.precision,
        )

    def pid(self) -> int:
        return os.getpid()

    def run(self, unit: Unit, deps: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """Run ``unit``; a failure is returned as its one-line error, never raised. Batch
        halvings after out-of-memory errors during the unit are returned (and logged) per
        model as ``oom_retries``."""
        from bebkit.pipeline.reproduce import _oom_tally

        log = _file_log(self.root / "logs" / (unit.id.replace("/", "__") + ".log"))
        self.provider.log = log
        log(f"unit {unit.id} on replica pid {os.getpid()}")
        t0 = time.perf_counter()
        before = _oom_tally()

        def oom() -> dict[str, int]:
            after = {m: n - before.get(m, 0) for m, n in _oom_tally().items()}
            found = {m: n for m, n in after.items() if n}
            for m, n in found.items():
                log(f"{m}: out of memory: {n} batch halving(s), same numbers")
            return found

        try:
            out = execute_unit(self.cfg, unit, self.root, self.provider, deps, log)
        except Exception as exc:
            import traceback

            log("".join(traceback.format_exception(exc)).rstrip())
            return {
                "status": "failed",
                "error": one_line(exc),
                "seconds": time.perf_counter() - t0,
                "oom_retries": oom(),
            }
        return {"status": "done", "pid": os.getpid(), **out, "oom_retries": oom()}


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------


@dataclass
class UnitState:
    unit: Unit
    status: str = "pending"  # pending | running | done | cached | failed
    error: str | None = None
    outcome: dict[str, Any] | None = None
    seconds: float | None = None
    attempts: int = 0
    #: batch halvings after out-of-memory errors in this invocation's run, per model
    oom_retries: dict[str, int] = field(default_factory=dict)


@dataclass
class _Replica:
    handle: Any
    group: str
    busy: str | None = None
    last_behavior: str | None = None


@dataclass
class SweepProgress:
    """Counts and an ETA from the mean time of the units run by this invocation."""

    total: int
    t0: float = field(default_factory=time.perf_counter)
    durations: list[float] = field(default_factory=list)

    def line(self, states: Iterable[UnitState], replicas: int) -> str:
        st = list(states)
        count = {k: sum(s.status == k for s in st) for k in ("done", "cached", "failed", "running")}
        left = sum(s.status in ("pending", "running") for s in st)
        eta = "—"
        if left == 0:
            eta = "0s"
        elif self.durations and replicas:
            eta = _fmt_seconds(sum(self.durations) / len(self.durations) * left / replicas)
        return (
            f"[sweep] {count['done'] + count['cached']}/{self.total} done "
            f"({count['cached']} cached), {count['failed']} failed, {count['running']} running; "
            f"elapsed {_fmt_seconds(time.perf_counter() - self.t0)}, ETA {eta}"
        )


def _fmt_seconds(s: float) -> str:
    s = max(0.0, s)
    if s < 90:
        return f"{s:.0f}s"
    if s < 5400:
        return f"{s / 60:.1f}min"
    return f"{s / 3600:.2f}h"


def _connect_ray(address: str | None, num_cpus: int | None, log: Log) -> bool:
    """Connect to (or start) Ray; True when this call started it (and must shut it down)."""
    try:
        import ray
    except ImportError:
        raise InputError("bebkit sweep needs Ray: pip install 'bebkit[lm]'") from None
    if ray.is_initialized():
        return False
    if address:
        log(f"[sweep] connecting to Ray at {address}")
        ray.init(address=address, log_to_driver=False)
    else:
        n = int(num_cpus or os.cpu_count() or 1)
        log(f"[sweep] starting a local Ray with {n} CPUs")
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False)
    return True


def _slots(res: SweepResources) -> int:
    """Replicas that fit on the cluster at once."""
    import ray

    total = ray.cluster_resources()
    slots = math.floor(total.get("CPU", 0.0) / res.num_cpus + 1e-9)
    if res.num_gpus > 0:
        slots = min(slots, math.floor(total.get("GPU", 0.0) / res.num_gpus + 1e-9))
    if slots < 1:
        raise InputError(
            f"resources: the Ray cluster has no room for one replica "
            f"(needs {res.num_cpus:g} CPU, {res.num_gpus:g} GPU; has "
            f"{total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU)"
        )
    return slots


class _RayDriver:
    """Feeds each model's units to that model's replicas (Ray actors)."""

    def __init__(
        self,
        cfg: SweepConfig,
        root: Path,
        states: dict[str, UnitState],
        progress: SweepProgress,
        log: Log,
        on_change: Callable[[], None],
        progress_every: float,
    ) -> None:
        import ray

        self.ray = ray
        self.cfg, self.root, self.states = cfg, root, states
        self.progress, self.log, self.on_change = progress, log, on_change
        self.every = progress_every
        res = cfg.grid.resources
        self.res = res
        self.slots = _slots(res)
        env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        self.actor_cls = ray.remote(ModelReplica).options(
            num_cpus=res.num_cpus,
            num_gpus=res.num_gpus,
            max_restarts=res.max_restarts,
            max_task_retries=1 if res.max_restarts else 0,
            runtime_env={"env_vars": env} if env else None,
        )
        self.replicas: list[_Replica] = []
        self.inflight: dict[Any, tuple[_Replica, str]] = {}

    # -- bookkeeping ----------------------------------------------------------------------
    def _pending(self, group: str | None = None) -> list[UnitState]:
        return [
            s
            for s in self.states.values()
            if s.status == "pending" and (group is None or s.unit.runs_on == group)
        ]

    def _ready(self, s: UnitState) -> bool:
        return all(self.states[d].status in ("done", "cached") for d in s.unit.deps)

    def _fail_orphans(self) -> None:
        """Units whose input failed fail too (with the input named)."""
        changed = True
        while changed:
            changed = False
            for s in self._pending():
                bad = [d for d in s.unit.deps if self.states[d].status == "failed"]
                if bad:
                    s.status, s.error = "failed", f"input {bad[0]} failed"
                    changed = True

    # -- replicas -------------------------------------------------------------------------
    def _spawn(self) -> None:
        """Start replicas while there is room: for the model with the most pending units per
        replica, when it has more runnable units than idle replicas."""
        cap = self.res.max_replicas or self.slots
        while len(self.replicas) < self.slots:
            best, best_load = None, 0.0
            for group in dict.fromkeys(s.unit.runs_on for s in self._pending()):
                n = sum(1 for r in self.replicas if r.group == group)
                runnable = sum(1 for s in self._pending(group) if self._ready(s))
                if n >= cap or runnable <= self._idle(group):
                    continue
                load = len(self._pending(group)) / (n + 1)
                if load > best_load:
                    best, best_load = group, load
            if best is None:
                return
            threads = max(1, int(self.res.num_cpus))
            handle = self.actor_cls.remote(self.cfg, str(self.root), best, threads)
            self.replicas.append(_Replica(handle, best))
            self.log(f"[sweep] replica {len(self.replicas)}: {best}")

    def _idle(self, group: str) -> int:
        return sum(1 for r in self.replicas if r.group == group and r.busy is None)

    def _retire(self) -> None:
        """Free the slots of idle replicas whose model has nothing left to run."""
        for r in list(self.replicas):
            if r.busy is None and not self._pending(r.group):
                self.ray.kill(r.handle)
                self.replicas.remove(r)

    def _pick(self, r: _Replica) -> UnitState | None:
        ready = [s for s in self._pending(r.group) if self._ready(s)]
        if not ready:
            return None
        elsewhere = {
            self.states[x.busy].unit.behavior for x in self.replicas if x.busy and x is not r
        }
        for s in ready:  # adapters already loaded here
            if s.unit.behavior == r.last_behavior:
                return s
        for s in ready:  # a behavior no other replica is training or using
            if s.unit.behavior not in elsewhere:
                return s
        return ready[0]

    def _assign(self) -> None:
        for r in self.replicas:
            if r.busy is not None:
                continue
            s = self._pick(r)
            if s is None:
                continue
            deps = {d: self.states[d].outcome for d in s.unit.deps}
            ref = r.handle.run.remote(s.unit, deps)
            s.status, s.attempts = "running", s.attempts + 1
            r.busy, r.last_behavior = s.unit.id, s.unit.behavior
            self.inflight[ref] = (r, s.unit.id)

    # -- loop -----------------------------------------------------------------------------
    def run(self) -> None:
        last = 0.0
        while True:
            self._fail_orphans()
            self._retire()
            self._spawn()
            self._assign()
            if not self.inflight:
                stuck = self._pending()
                for s in stuck:  # cannot happen with a well-formed plan; never hang on it
                    s.status, s.error = "failed", "never became runnable"
                break
            done, _ = self.ray.wait(list(self.inflight), num_returns=1, timeout=self.every)
            for ref in done:
                r, uid = self.inflight.pop(ref)
                r.busy = None
                s = self.states[uid]
                try:
                    out = self.ray.get(ref)
                except Exception as exc:  # the replica died (OOM kill, SIGKILL) past its retries
                    out = {"status": "failed", "error": one_line(exc)}
                    self.replicas.remove(r)
                    self.ray.kill(r.handle)
                s.oom_retries = dict(out.get("oom_retries") or {})
                if out["status"] == "done":
                    s.status = "cached" if out.get("cached") else "done"
                    s.outcome = {k: out[k] for k in ("key", "folder", "seconds", "result")}
                    s.seconds = float(out["seconds"])
                    if not out.get("cached"):
                        self.progress.durations.append(s.seconds)
                else:
                    s.status, s.error = "failed", out["error"]
                    s.seconds = out.get("seconds")
                    self.log(f"[sweep] {uid} failed: {s.error}")
                self.on_change()
            now = time.perf_counter()
            if done or now - last >= self.every:
                self.log(self.progress.line(self.states.values(), max(1, len(self.replicas))))
                last = now
        for r in self.replicas:
            self.ray.kill(r.handle)
        self.replicas.clear()


def _read_cached(
    unit: Unit, root: Path, say: Callable[[str], None] | None = None
) -> dict[str, Any] | None:
    """A unit's finished result, or None when it must run: absent, unreadable, or its folder
    no longer holds exactly what its StageRunner published (every file hashed, as a stage
    reuse checks: a damaged unit is recomputed, never trusted by its key alone)."""
    from bebkit.integrity import IntegrityError, verify

    path = unit.result_path(root)
    if unit.key is None or not path.is_file():
        return None
    try:
        verify(path.parent, deep=True, name=f"sweep unit {unit.id}")
    except IntegrityError as exc:
        if say is not None:
            say(f"{unit.id}: invalid: {exc}; recomputing")
        return None
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return {
        "key": unit.key,
        "folder": str(path.parent),
        "seconds": float(payload["seconds"]),
        "result": payload["result"],
    }


def _sweep_temp(units: Sequence[Unit], root: Path) -> None:
    for folder in dict.fromkeys(u.folder for u in units):
        keys = [u.key for u in units if u.folder == folder and u.key is not None]
        StageRunner(root / folder, 0).sweep_temp(keep_partial=keys)


def run_sweep(
    cfg: SweepConfig,
    out: str | Path,
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    log: Log | None = None,
    progress_every: float = 10.0,
    report: bool = True,
    execute: bool = True,
) -> dict[str, Any]:
    """Run (or resume) every unit of ``cfg`` into ``out`` on Ray; write ``sweep.json`` and the
    sweep report. Returns the summary (``status`` is ``failed`` when any unit failed).

    ``execute=False``: run nothing, only write the report of the units finished so far
    (``status`` ``partial`` while some are not) as ``report-partial.html``,
    ``results-partial.csv``/``.parquet`` and ``figures-partial/``: safe beside a sweep running
    into the same folder, whose own report files and ``sweep.json`` it never touches.
    """
    from bebkit.locks import RunLock

    say = log or (lambda _m: None)
    root = Path(out).resolve()
    units = plan_sweep(cfg)  # bad input fails before the sweep folder is created
    if not execute:
        return _report_only(cfg, root, units, say)
    with RunLock(root):
        _sweep_temp(units, root)
        states = _initial_states(units, root, say)
        progress = SweepProgress(len(units))
        t0 = time.perf_counter()

        def write_state(status: str = "running") -> None:
            write_json(
                root / SWEEP_FILE, sweep_state(cfg, states, status, time.perf_counter() - t0)
            )

        write_state()
        say(progress.line(states.values(), 0))
        pending = [s for s in states.values() if s.status == "pending"]
        if pending:
            started = _connect_ray(address, num_cpus, say)
            try:
                driver = _RayDriver(cfg, root, states, progress, say, write_state, progress_every)
                driver.run()
            finally:
                if started:
                    import ray

                    ray.shutdown()
        failed = [s for s in states.values() if s.status == "failed"]
        status = "failed" if failed else "complete"
        write_state(status)
        summary = sweep_state(cfg, states, status, time.perf_counter() - t0)
        if report:
            summary["report"] = write_sweep_report(root, cfg, states)
        say(progress.line(states.values(), 0))
        return summary


def _initial_states(
    units: Sequence[Unit],
    root: Path,
    say: Log,
    failed_before: Mapping[tuple[Any, Any], Any] | None = None,
) -> dict[str, UnitState]:
    """Each unit's state before anything runs: failed at planning, cached (its published
    result), failed in an earlier sweep (``failed_before``, by unit id and key), or pending."""
    states = {u.id: UnitState(u) for u in units}
    for s in states.values():
        if s.unit.error:
            s.status, s.error = "failed", s.unit.error
        elif (cached := _read_cached(s.unit, root, say)) is not None:
            s.status, s.outcome, s.seconds = "cached", cached, cached["seconds"]
        elif failed_before and (s.unit.id, s.unit.key) in failed_before:
            s.status, s.error = "failed", failed_before[(s.unit.id, s.unit.key)]
    return states


def _report_only(cfg: SweepConfig, root: Path, units: Sequence[Unit], say: Log) -> dict[str, Any]:
    """The report of the finished units of ``cfg`` in ``root``; no unit runs, no lock."""
    from bebkit.errors import InputError

    if not root.is_dir():
        raise InputError(f"no sweep folder {root}: nothing to report")
    t0 = time.perf_counter()
    # failures are not published as units: the last sweep's state has them (same key only)
    try:
        last = json.loads((root / SWEEP_FILE).read_text(encoding="utf-8")).get("units", [])
    except (OSError, ValueError, AttributeError):
        last = []
    failed_before = {
        (u.get("id"), u.get("key")): u.get("error")
        for u in last
        if isinstance(u, dict) and u.get("status") == "failed"
    }
    states = _initial_states(units, root, say, failed_before)
    pending = sum(s.status == "pending" for s in states.values())
    failed = any(s.status == "failed" for s in states.values())
    status = "partial" if pending else ("failed" if failed else "complete")
    summary = sweep_state(cfg, states, status, time.perf_counter() - t0)
    summary["pending"] = pending
    title = f"bebkit sweep — {cfg.name}"
    if pending:
        title += f" (partial: {len(units) - pending} of {len(units)} units finished)"
    summary["report"] = write_sweep_report(root, cfg, states, title=title, suffix="-partial")
    say(f"[sweep] report of {len(units) - pending} finished units; {pending} not finished")
    return summary


def sweep_state(
    cfg: SweepConfig, states: Mapping[str, UnitState], status: str, wall: float
) -> dict[str, Any]:
    units = [
        {
            "id": s.unit.id,
            "model": s.unit.model,
            "runs_on": s.unit.runs_on,
            "behavior": s.unit.behavior,
            "experiment": s.unit.experiment,
            "stage": s.unit.stage,
            "key": s.unit.key,
            "status": s.status,
            "error": s.error,
            "seconds": s.seconds,
            "folder": s.unit.folder,
            "oom_retries": s.oom_retries,
        }
        for s in states.values()
    ]
    counts = {k: sum(u["status"] == k for u in units) for k in ("done", "cached", "failed")}
    oom: dict[str, int] = {}
    for s in states.values():
        for m, n in s.oom_retries.items():
            oom[m] = oom.get(m, 0) + n
    return {
        "name": cfg.name,
        "status": status,
        "n_units": len(units),
        **counts,
        "wall_this_invocation": wall,
        "failures": {u["id"]: u["error"] for u in units if u["status"] == "failed"},
        "oom_retries": oom,  # batch halvings after out-of-memory errors, per model
        "units": units,
    }


# --------------------------------------------------------------------------------------------
# Headline numbers and the report
# --------------------------------------------------------------------------------------------


def _estimates(obj: Any, path: str) -> Iterable[tuple[str, dict[str, Any]]]:
    if isinstance(obj, dict):
        if "value" in obj and "stderr" in obj and "n" in obj:
            yield path, obj
            return
        for k, v in obj.items():
            yield from _estimates(v, f"{path}.{k}" if path else str(k))


def headline(experiment: str, behavior: str, result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The unit's headline numbers: every estimate among its typed result fields (probe: the
    behavior's accuracy per layer), named ``<experiment>:<path>``."""
    exp = experiments()[experiment]
    out: list[tuple[str, dict[str, Any]]] = []
    if experiment == "probe":
        for sc in result.get("scores", []):
            if sc.get("behavior") == behavior:
                out.append((f"accuracy[{sc['layer']}]", sc["accuracy"]))
    else:
        for name in exp.result.model_fields:
            out.extend(_estimates(result.get(name), name))
    rows = []
    for path, e in out:
        rows.append(
            {
                "quantity": f"{experiment}:{path.replace('.estimate', '')}",
                **{k: e.get(k) for k in ("value", "stderr", "ci_low", "ci_high", "ci_level", "n")},
            }
        )
    return rows


def result_rows(states: Mapping[str, UnitState]) -> list[dict[str, Any]]:
    """One row per unit and headline quantity (failed units: one row with the error)."""
    rows: list[dict[str, Any]] = []
    for s in states.values():
        u = s.unit
        base = {
            "model": u.model,
            "behavior": u.behavior,
            "experiment": u.experiment,
            "status": s.status,
            "seconds": s.seconds,
            "key": u.key,
            "error": s.error,
        }
        if s.outcome is None:
            rows.append({**base, "quantity": None})
            continue
        for h in headline(u.experiment, u.behavior, s.outcome["result"]):
            rows.append({**base, **h})
    return rows


def write_sweep_report(
    root: str | Path,
    cfg: SweepConfig,
    states: Mapping[str, UnitState],
    *,
    title: str | None = None,
    suffix: str = "",
) -> dict[str, str]:
    """``results.csv`` / ``results.parquet``, ``report.html`` and ``figures/`` in ``root``
    (``suffix``: ``report<suffix>.html`` …, a set that never replaces the sweep's own)."""
    from bebkit.reporting.sweep import write_report

    return write_report(
        Path(root), result_rows(states), title=title or f"bebkit sweep — {cfg.name}",
        suffix=suffix,
    )  # fmt: skip


__all__ = [
    "ModelReplica",
    "SweepConfig",
    "SweepGrid",
    "SweepResources",
    "Unit",
    "available_behaviors",
    "build_sweep_config",
    "execute_unit",
    "headline",
    "load_sweep_config",
    "plan_sweep",
    "result_rows",
    "run_sweep",
]
