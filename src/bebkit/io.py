"""Crash-safe file writing: write to a temp file in the same folder, fsync, then rename.

A reader never sees a partial file, even if the process is SIGKILLed mid-write.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


@contextmanager
def atomic_open(
    path: str | Path, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    """Open a temp file beside ``path``; on clean exit atomically rename it onto ``path``."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as pretty JSON (NaN/inf must already be converted)."""
    with atomic_open(path) as fh:
        json.dump(obj, fh, indent=2, allow_nan=False)
        fh.write("\n")


def reroot_paths(obj: Any, old: str | Path, new: str = "") -> Any:
    """``obj`` (JSON-like) with every string path inside folder ``old`` moved under ``new``
    (``""``: made relative to ``old``). Results written in a temp folder stay valid after it
    is renamed into place, or when a stored result is reused from another attempt's folder."""
    prefix = str(old).rstrip("/") + "/"
    if isinstance(obj, str):
        if not obj.startswith(prefix):
            return obj
        rest = obj[len(prefix) :]
        return f"{new}/{rest}" if new else rest
    if isinstance(obj, dict):
        return {k: reroot_paths(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [reroot_paths(v, old, new) for v in obj]
    return obj


def to_jsonable(obj: Any, *, keep_non_finite: bool = False) -> Any:
    """Convert Estimates, numpy scalars/arrays, dataclasses and non-finite floats to JSON types.

    Non-finite floats become ``None`` (strict JSON), or stay floats with ``keep_non_finite``
    (for :func:`json.dump` with ``allow_nan=True``, which reads them back exactly)."""

    def conv(o: Any) -> Any:
        return to_jsonable(o, keep_non_finite=keep_non_finite)

    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return conv(obj.to_dict())
    if isinstance(obj, dict):
        return {str(k): conv(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [conv(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return conv(obj.tolist())
    if isinstance(obj, np.generic):
        return conv(obj.item())
    if isinstance(obj, float) and not math.isfinite(obj):
        return float(obj) if keep_non_finite else None
    return obj
