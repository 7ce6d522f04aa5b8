"""Benchmark 9: `bebkit sweep` with 1 and with 2 Ray workers on the same small grid.

The sweep (issue 15) runs every (model, behavior, experiment) unit as a Ray task on a replica
of its model; with W workers W replicas (one torch thread each) run units side by side. This
benchmark runs one grid — SmolLM2-135M-Instruct × the first ``n_behaviors`` persona behaviors
(sorted by name; the embedded behavior when no persona folder is configured) × Table 1
(``classify``: trains the P₋/P₊ adapters) and Table 2 (``probe``) at quick sizes — from an
empty adapter cache and an empty sweep folder, once per worker count, as a user's first run
would. It reports wall time, units per minute, the speed-up over one worker and the summed
unit seconds (the work itself, which a second worker should not change much; a larger sum
means the workers slowed each other down, e.g. by sharing memory bandwidth).

Every worker count starts from nothing, so the comparison includes each replica's model load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchContext, BenchResult

#: train sizes of the adapters in this benchmark (smaller than the sweep config's 100 texts,
#: so two full grids fit in a benchmark run; the units are the same code either way)
_N_TRAIN = 40


def _behaviors(n: int) -> list[str]:
    folder = os.environ.get("BEBKIT_PERSONA_DIR")
    if not folder or not Path(folder).is_dir():
        return ["cooperativeness"]
    names = sorted(p.stem for p in Path(folder).glob("*.jsonl"))
    return names[:n]


def _config(path: Path, behaviors: list[str], model: str) -> None:
    persona = os.environ.get("BEBKIT_PERSONA_DIR")
    lines = [
        "name: bench-workers",
        "seed: 0",
        f"models: [{model}]",
        f"behaviors: [{', '.join(behaviors)}]",
        "experiments: [classify, probe]",
        "format: chat",
        "sizes: quick",
        f"components: {{preset: small, n_train: {_N_TRAIN}}}",
        "resources: {num_cpus: 1}",
    ]
    if persona:
        lines.insert(4, f"persona_dir: {persona}")
    path.write_text("\n".join(lines) + "\n")


def _sweep(cfg: Path, out: Path, cache: Path, workers: int) -> tuple[float, dict[str, Any]]:
    env = {
        **os.environ,
        "BEBKIT_CACHE": str(cache),
        "BEBKIT_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), *sys.path]),
    }
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "sweep", str(cfg), "--out", str(out),
         "--num-cpus", str(workers), "--json"],
        capture_output=True, text=True, env=env, timeout=3600,
    )  # fmt: skip
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"sweep with {workers} workers failed: {proc.stderr[-2000:]}")
    return wall, json.loads((out / "sweep.json").read_text())


def run(ctx: BenchContext) -> BenchResult:
    n_behaviors = 2 if ctx.sizes.n_prompts <= 1 else 4
    behaviors = _behaviors(n_behaviors)
    model = os.environ.get("BEBKIT_BENCH_SWEEP_MODEL", "smollm2-135m-instruct")
    rows: list[list[Any]] = []
    data: dict[str, Any] = {"behaviors": behaviors, "n_train": _N_TRAIN, "runs": []}
    base_wall = None
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        root = Path(tmp)
        cfg = root / "sweep.yaml"
        _config(cfg, behaviors, model)
        for workers in (1, 2):
            wall, rec = _sweep(cfg, root / f"out-{workers}", root / f"cache-{workers}", workers)
            units = [u for u in rec["units"] if u["status"] == "done"]
            work = sum(float(u["seconds"] or 0.0) for u in units)
            base_wall = base_wall or wall
            rows.append(
                [workers, len(units), rec["failed"], wall, 60 * len(units) / wall,
                 base_wall / wall, work]
            )  # fmt: skip
            data["runs"].append(
                {"workers": workers, "wall_s": wall, "units": len(units), "unit_seconds": work,
                 "failed": rec["failed"]}
            )  # fmt: skip
    return BenchResult(
        name="sweep",
        title="Benchmark 9: bebkit sweep with 1 vs 2 Ray workers",
        headers=[
            "workers",
            "units done",
            "failed",
            "wall s",
            "units/min",
            "speed-up",
            "sum of unit s",
        ],
        rows=rows,
        notes=[
            f"grid: {model} × {len(behaviors)} behaviors ({', '.join(behaviors)}) × "
            f"[classify, probe], quick sizes, adapters trained on {_N_TRAIN} texts from an "
            "empty cache; one torch thread per worker; each run starts from nothing (model "
            "loads included)",
            "speed-up = wall(1 worker) / wall(W workers); the ideal on this grid is below W "
            "because the units of one behavior depend on its components unit",
        ],
        data=data,
    )
