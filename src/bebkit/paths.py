"""Where bebkit reads external data and keeps its caches; everything is overridable by env var.

* ``BEBKIT_PERSONA_DIR`` — Perez et al. persona ``*.jsonl`` files (e.g. ``../shared/data/persona``).
* ``BEBKIT_HUMAN_LABELS_DIR`` — hand-labelled responses for validating the judge.
* ``BEBKIT_REFERENCE_DIR`` — the paper's figure numbers (``authors-figures.json``).
* ``BEBKIT_CACHE`` — converted models and trained adapters (default ``~/.cache/bebkit``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the variables naming external data folders (each may enter a stage's key through the data
#: it points to); tests that pin keys clear them to plan as a fresh machine would
PERSONA_VAR, HUMAN_LABELS_VAR, REFERENCE_VAR = (
    "BEBKIT_PERSONA_DIR",
    "BEBKIT_HUMAN_LABELS_DIR",
    "BEBKIT_REFERENCE_DIR",
)
DATA_VARIABLES: tuple[str, ...] = (PERSONA_VAR, HUMAN_LABELS_VAR, REFERENCE_VAR)


def cache_dir() -> Path:
    """Root of bebkit's cache (``$BEBKIT_CACHE`` or ``~/.cache/bebkit``)."""
    root = os.environ.get("BEBKIT_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "bebkit"


def _env_dir(var: str) -> Path | None:
    value = os.environ.get(var)
    return Path(value).expanduser() if value else None


def persona_dir() -> Path | None:
    """``$BEBKIT_PERSONA_DIR`` if set."""
    return _env_dir(PERSONA_VAR)


def human_labels_dir() -> Path | None:
    """``$BEBKIT_HUMAN_LABELS_DIR`` if set."""
    return _env_dir(HUMAN_LABELS_VAR)


def reference_dir() -> Path | None:
    """``$BEBKIT_REFERENCE_DIR`` if set."""
    return _env_dir(REFERENCE_VAR)
