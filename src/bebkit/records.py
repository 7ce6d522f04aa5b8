"""Result records (core layer, used by every experiment): every run writes the resolved config, seed, versions and git hash with its numbers."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as _md
import platform
import subprocess
from pathlib import Path
from typing import Any

from bebkit.checkpoint import machine_identity
from bebkit.io import to_jsonable, write_json

SCHEMA_VERSION = 1
_PACKAGES = ("bebkit", "numpy", "scipy", "torch", "transformers", "peft", "scikit-learn")


def package_versions() -> dict[str, str | None]:
    """Installed versions of the packages that can change a number."""
    out: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            out[name] = _md.version(name)
        except _md.PackageNotFoundError:
            out[name] = None
    return out


def git_hash(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the source tree (with ``-dirty`` when modified), or None."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info() -> dict[str, Any]:
    import os

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": machine_identity(),
        "cpu_count": os.cpu_count(),
        # decides how KL draws are batched (bebkit.estimators.kl.dist_budget_bytes); None = default
        "dist_budget_mb": os.environ.get("BEBKIT_DIST_BUDGET_MB") or None,
    }


def make_record(
    kind: str,
    *,
    config: Any,
    seed: int | None,
    results: dict[str, Any],
    status: str = "complete",
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """Assemble a JSON-ready record: schema, kind, status, config, seed, provenance, results."""
    return to_jsonable(
        {
            "schema_version": SCHEMA_VERSION,
            "kind": kind,
            "status": status,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "config": config,
            "seed": seed,
            "versions": package_versions(),
            "git": git_hash(),
            "machine": machine_info(),
            "timings_s": timings or {},
            "results": results,
        }
    )


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Atomically write a record to ``path`` and return the path."""
    p = Path(path)
    write_json(p, record)
    return p
