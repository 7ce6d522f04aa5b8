"""Resumable, content-addressed pipeline stages.

Each stage's output lives in ``RUN_DIR/stages/<name>/<key>/`` where ``key`` is a hash of the
stage's key material (for experiments: the settings, model, components and data fingerprints
derived by :mod:`bebkit.pipeline.registry`), the keys of the stages it depends on and the
experiment's version. A stage
is complete iff its ``result.json`` exists: the stage writes into a private temp folder
which is renamed into place only after ``result.json`` and the integrity record (size and
SHA-256 of every file, :mod:`bebkit.integrity`) are written, so a run killed at any point
(SIGKILL included) never leaves a partial stage that a rerun would read as complete, and a
stage folder edited or damaged afterwards is detected when it is reused. Long stages also
checkpoint their finished units (a sentence round of prompt sampling, one prompt's KL row or
responses, a judging pass) in ``stages/<name>/.partial-<key>/``, which outlives a killed
attempt (the key pins settings, data, seed and the experiment's version; each unit's own
fingerprint pins the code and torch's thread count) and is removed once the stage is published
or no longer planned, so a stage killed at 90 % resumes at 90 % with the same numbers
(:mod:`bebkit.checkpoint`). A disk that fills up
while a stage writes is one line (:class:`~bebkit.errors.DiskFullError`) and publishes
nothing.
Each stage gets its own seed derived from the run seed and the stage name, so a resumed run
produces the same numbers as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bebkit.checkpoint import units_provenance
from bebkit.errors import DiskFullError, InputError
from bebkit.integrity import IntegrityError, disk_error, verify, write_manifest
from bebkit.io import to_jsonable, write_json

RESULT_FILE = "result.json"
#: ``stages/<name>/.partial-<key>/``: a stage's checkpointed units between attempts
PARTIAL_PREFIX = ".partial-"


def stable_hash(obj: Any) -> str:
    """SHA-256 (first 16 hex chars) of the canonical JSON form of ``obj``."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def derive_seed(run_seed: int, stage_name: str) -> int:
    """A 31-bit seed that depends only on the run seed and the stage name."""
    digest = hashlib.sha256(f"{run_seed}:{stage_name}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


@dataclass
class StageContext:
    """What a stage function receives: its folder, seed, config and upstream results."""

    name: str
    workdir: Path
    seed: int
    config: Mapping[str, Any]
    inputs: Mapping[str, dict[str, Any]]
    run_dir: Path
    #: survives a failed or killed attempt of this stage (same key) and is removed when the
    #: stage is published: long stages store finished units there (:mod:`bebkit.checkpoint`)
    checkpoint_dir: Path | None = None

    def path(self, relative: str) -> Path:
        """A path inside the stage's (temporary, then final) folder."""
        p = self.workdir / relative
        p.parent.mkdir(parents=True, exist_ok=True)
        return p


StageFn = Callable[[StageContext], dict[str, Any]]


@dataclass(frozen=True)
class Stage:
    """A named step: ``fn(ctx) -> JSON-able results``; ``deps`` name earlier stages."""

    name: str
    fn: StageFn
    config: Mapping[str, Any] = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    version: str = "1"


def stage_key(stage: Stage, run_seed: int, dep_keys: Mapping[str, str]) -> str:
    """A stage's cache key: its name, version, key material and the keys of its inputs."""
    return stable_hash(
        {
            "name": stage.name,
            "version": stage.version,
            "seed": int(run_seed),
            "config": stage.config,
            "deps": {d: dep_keys[d] for d in stage.deps},
        }
    )


def plan_keys(stages: Iterable[Stage], run_seed: int) -> dict[str, str]:
    """Every stage's key, in order, without running anything (a stage's inputs are earlier
    stages, so their keys are known when it is reached)."""
    keys: dict[str, str] = {}
    for st in stages:
        missing = [d for d in st.deps if d not in keys]
        if missing:
            raise InputError(f"stage {st.name!r} depends on stages not planned yet: {missing}")
        keys[st.name] = stage_key(st, run_seed, keys)
    return keys


@dataclass(frozen=True)
class StageOutcome:
    name: str
    key: str
    folder: Path
    result: dict[str, Any]
    cached: bool
    seconds: float


class StageRunner:
    """Run stages in order, skipping those whose output for the same key is on disk."""

    def __init__(
        self,
        run_dir: str | Path,
        seed: int,
        *,
        on_event: Callable[[str, str], None] | None = None,
        recompute: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.seed = int(seed)
        #: a stage folder that fails its integrity check is recomputed (True) or an error
        self.recompute = recompute
        self.on_event = on_event or (lambda _stage, _msg: None)
        self.outcomes: dict[str, StageOutcome] = {}

    def key_for(self, stage: Stage) -> str:
        missing = [d for d in stage.deps if d not in self.outcomes]
        if missing:
            raise InputError(f"stage {stage.name!r} depends on stages not run yet: {missing}")
        return stage_key(stage, self.seed, {d: self.outcomes[d].key for d in stage.deps})

    def run(self, stage: Stage) -> StageOutcome:
        key = self.key_for(stage)
        folder = self.run_dir / "stages" / stage.name / key
        result_path = folder / RESULT_FILE
        if result_path.is_file() and not self._intact(stage.name, folder):
            shutil.rmtree(folder)
        if result_path.is_file():
            # a kill between publishing and removing the units leaves them: not needed now
            shutil.rmtree(folder.parent / f"{PARTIAL_PREFIX}{key}", ignore_errors=True)
            with result_path.open(encoding="utf-8") as fh:
                payload = json.load(fh)
            outcome = StageOutcome(
                stage.name, key, folder, payload["result"], True, float(payload["seconds"])
            )
            self.on_event(stage.name, "cached")
            self.outcomes[stage.name] = outcome
            return outcome

        tmp = folder.parent / f".tmp-{key}-{os.getpid()}"
        partial = folder.parent / f"{PARTIAL_PREFIX}{key}"
        self.on_event(stage.name, "start")
        t0 = time.perf_counter()
        try:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            ctx = StageContext(
                name=stage.name,
                workdir=tmp,
                seed=derive_seed(self.seed, stage.name),
                config=stage.config,
                inputs={d: self.outcomes[d].result for d in stage.deps},
                run_dir=self.run_dir,
                checkpoint_dir=partial,
            )
            result = stage.fn(ctx)
            seconds = time.perf_counter() - t0
            payload = {
                "stage": stage.name,
                "key": key,
                "seconds": seconds,
                "result": to_jsonable(result),
            }
            # which CPUs computed the stored units (a stage resumed on another machine)
            units = units_provenance(partial)
            if units is not None:
                payload["units"] = units
            write_json(tmp / RESULT_FILE, payload)
            write_manifest(tmp)  # content hashes of every file, checked when the stage is reused
        except BaseException as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            # A full disk, wherever the stage hit it (its own outputs or result.json): one
            # line, and nothing published (an adapter's publish already says so itself).
            reason = None if isinstance(exc, DiskFullError) else disk_error(exc)
            if reason is not None:
                raise DiskFullError(
                    f"cannot write stage {stage.name} in {folder.parent}: {reason}; "
                    "nothing was published"
                ) from exc
            raise
        if folder.exists():  # a stale folder without result.json (cannot normally happen)
            shutil.rmtree(folder)
        os.replace(tmp, folder)
        # the units are in the published result now; a later attempt of this key is cached
        shutil.rmtree(partial, ignore_errors=True)
        # Results are re-read through JSON so a fresh and a cached run see identical objects.
        outcome = StageOutcome(stage.name, key, folder, payload["result"], False, seconds)
        self.outcomes[stage.name] = outcome
        self.on_event(stage.name, "done")
        return outcome

    def _intact(self, name: str, folder: Path) -> bool:
        """Whether a finished stage folder still holds exactly what was published (every file
        hashed: stage folders are small). A mismatch is one line, then a recompute — or, with
        ``recompute=False``, an :class:`~bebkit.integrity.IntegrityError` (exit 1)."""
        try:
            verify(folder, deep=True, name=f"stage {name}")
        except IntegrityError as exc:
            if not self.recompute:
                raise
            self.on_event(name, f"invalid: {exc}; recomputing")
            return False
        return True

    def run_all(self, stages: Iterable[Stage]) -> dict[str, StageOutcome]:
        for stage in stages:
            self.run(stage)
        return dict(self.outcomes)

    def sweep_temp(self, keep_partial: Iterable[str] | None = None) -> int:
        """Remove temp folders left by killed runs (never read as results) and, given the keys
        of the stages still planned, the checkpointed units of any other key (an abandoned
        attempt of other settings, seed or version: no later attempt can use them). Returns
        the number of unit folders removed."""
        root = self.run_dir / "stages"
        removed = 0
        if root.is_dir():
            for tmp in root.glob("*/.tmp-*"):
                shutil.rmtree(tmp, ignore_errors=True)
            if keep_partial is not None:
                keep = set(keep_partial)
                for partial in root.glob(f"*/{PARTIAL_PREFIX}*"):
                    if partial.name.removeprefix(PARTIAL_PREFIX) not in keep:
                        shutil.rmtree(partial, ignore_errors=True)
                        removed += 1
        return removed
