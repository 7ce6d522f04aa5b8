"""Benchmark 5: wall time per stage of ``bebkit reproduce configs/demo.yaml``.

The per-stage times come from the run's own records (``timings_s`` in every JSON record that
:func:`bebkit.records.make_record` writes, and in stage ``result.json`` files). The
run folder is, in order of preference: ``--run-dir``; ``runs/demo`` when ``make demo`` left
one; else a fresh ``bebkit reproduce <config> --quick`` run in a temporary folder when the
``reproduce`` command exists.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.common import REPO_ROOT, BenchContext, BenchResult, timed


def collect_timings(run_dir: Path) -> list[tuple[str, str, float]]:
    """``(file, stage, seconds)`` for every numeric entry of every ``timings_s`` under ``run_dir``."""
    out: list[tuple[str, str, float]] = []
    for path in sorted(run_dir.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        timings = data.get("timings_s")
        if not isinstance(timings, dict):
            continue
        rel = str(path.relative_to(run_dir))
        for stage, secs in timings.items():
            if isinstance(secs, (int, float)) and not isinstance(secs, bool):
                out.append((rel, str(stage), float(secs)))
    return out


def _config_name(run_dir: Path) -> str | None:
    """The run's config name (and ``--quick``) from its ``record.json``, if readable."""
    try:
        cfg = json.loads((run_dir / "record.json").read_text()).get("config") or {}
    except (OSError, ValueError):
        return None
    name = cfg.get("name")
    return f"{name}{' --quick' if cfg.get('quick') else ''}" if name else None


def reproduce_available() -> bool:
    return importlib.util.find_spec("bebkit.cli.commands.reproduce") is not None


def _run_reproduce(config: Path, out: Path) -> tuple[float, str]:
    exe = Path(sys.executable).with_name("bebkit")
    cmd = [str(exe), "reproduce", str(config), "--quick", "--out", str(out)]
    proc, secs = timed(
        lambda: subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, check=False)
    )
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        raise RuntimeError(f"bebkit reproduce failed (exit {proc.returncode}): {tail}")
    return secs, " ".join(cmd[1:])


def run(ctx: BenchContext) -> BenchResult:
    notes: list[str] = []
    total: float | None = None
    run_dir = ctx.run_dir
    if run_dir is None and (REPO_ROOT / "runs" / "demo").is_dir():
        run_dir = REPO_ROOT / "runs" / "demo"
    tmp: tempfile.TemporaryDirectory[str] | None = None
    try:
        if run_dir is None or not run_dir.is_dir():
            cfg = ctx.reproduce_config
            if reproduce_available() and cfg is not None and cfg.is_file():
                tmp = tempfile.TemporaryDirectory(prefix="bebkit-bench-e2e-")
                run_dir = Path(tmp.name) / "run"
                total, cmd = _run_reproduce(cfg, run_dir)
                notes.append(f"ran `bebkit {cmd}` (temporary folder): {total:.1f} s wall in total.")
            else:
                missing = "the `reproduce` command" if not reproduce_available() else str(cfg)
                notes.append(
                    f"no run folder and {missing} not available yet: pass `--run-dir RUN` (a "
                    "finished `bebkit reproduce` run) to fill this table."
                )
                run_dir = None
        else:
            notes.append(f"read from run folder `{run_dir}`.")
        entries = collect_timings(run_dir) if run_dir is not None else []
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows: list[list[Any]] = []
    # Percentages are of the pipeline's own stage total (the top-level record's stages), so a
    # nested sub-stage reads as its share of the whole run and nothing is counted twice.
    top = [(r, st, s) for r, st, s in entries if r == "record.json"]
    stage_sum = sum(s for _, st, s in top if not st.startswith("wall")) or sum(
        s for _, _, s in entries
    )
    for rel, stage, secs in entries:
        rows.append([stage, rel, secs, 100 * secs / stage_sum if stage_sum > 0 else 0.0])
    if run_dir is not None and not entries:
        notes.append("the run folder holds no record with `timings_s`.")
    if entries:
        notes.append(
            f"sum of the pipeline's stage times {stage_sum:.1f} s"
            + (f" (wall {total:.1f} s: the rest is start-up and model loading)" if total else "")
            + "; nested rows (a stage's own record) are parts of their stage, and % is of that sum."
        )
    name = _config_name(run_dir) if run_dir is not None else None
    return BenchResult(
        name="e2e",
        title=f"5. End to end: `bebkit reproduce` ({name or 'configs/demo.yaml'}) per stage",
        headers=["stage", "record", "seconds", "% of recorded"],
        rows=rows,
        notes=notes,
        data={"entries": entries, "wall_s": total},
    )
