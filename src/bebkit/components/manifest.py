"""Saved adapters with a manifest: reuse when every input matches, retrain otherwise.

Layout: ``<out>/<behavior>/<format>/<neg|pos>/`` holds ``adapter_config.json``,
``adapter_model.safetensors`` and ``manifest.json``. The manifest records what produced the
adapter (base model name + weight fingerprint, data content hash, split seed and sizes,
hyper-parameters, format, seed, package versions) and its metrics (final / held-out loss,
wall time). ``key`` is a hash of the inputs only; an adapter is reused iff its key matches.

Crash safety: a component folder is built in a hidden temp folder beside the target and
renamed into place only after ``manifest.json`` and the integrity record
(:mod:`bebkit.integrity`: size + SHA-256 of every file, written last) are complete, so a
killed training never leaves a folder that reads as a finished adapter.

Integrity: on reuse every file is hashed again (``deep``: an adapter is a few MB, i.e.
milliseconds) and compared with the record; a truncated or edited weights file, config or
manifest makes the folder not reusable (retrained), or raises
:class:`~bebkit.integrity.IntegrityError` with ``recompute=False``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bebkit.integrity import IntegrityError, publish_folder, verify
from bebkit.io import to_jsonable, write_json

MANIFEST = "manifest.json"
#: Bump when the training code changes what a given set of inputs produces.
TRAINING_VERSION = 1
_REQUIRED = ("adapter_config.json", "adapter_model.safetensors", MANIFEST)


def manifest_key(inputs: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of the inputs (first 20 hex digits)."""
    blob = json.dumps(to_jsonable(inputs), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def texts_hash(*groups: list[str] | tuple[str, ...]) -> str:
    """Content hash of the exact texts a component sees (training texts, held-out statements)."""
    h = hashlib.sha256()
    for group in groups:
        h.update(b"\x1e")
        for t in group:
            h.update(t.encode())
            h.update(b"\x1f")
    return h.hexdigest()[:20]


def component_dir(out: str | Path, behavior: str, fmt: str, side: str) -> Path:
    """``<out>/<behavior>/<format>/<side>``."""
    return Path(out) / behavior / fmt / side


def read_manifest(folder: str | Path) -> dict[str, Any] | None:
    """The manifest of a complete adapter folder, or None (missing files or unreadable JSON)."""
    p = Path(folder)
    if not all((p / f).is_file() for f in _REQUIRED):
        return None
    try:
        data = json.loads((p / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def find_reusable(
    folder: str | Path,
    key: str,
    *,
    recompute: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """The manifest if ``folder`` holds a complete, intact adapter trained from these inputs.

    None when the folder is absent, incomplete or from other inputs. When the key matches but
    the files differ from their integrity record (or it has none), the mismatch is reported in
    one line through ``log`` and None is returned (the caller retrains), or, with
    ``recompute=False``, :class:`~bebkit.integrity.IntegrityError` is raised.
    """
    m = read_manifest(folder)
    if m is None or m.get("key") != key:
        return None
    try:
        verify(folder, deep=True, name=f"adapter {folder}")
    except IntegrityError as exc:
        if not recompute:
            raise
        if log is not None:
            log(f"{exc}; training it again")
        return None
    return m


def publish(
    folder: str | Path,
    write: Callable[[Path], None],
    manifest: dict[str, Any],
    *,
    what: str | None = None,
) -> Path:
    """Atomically create/replace ``folder``: ``write(tmp)``, the manifest, the integrity
    record, then rename (:func:`bebkit.integrity.publish_folder`).

    A full disk raises a one-line :class:`~bebkit.errors.RunError` and publishes nothing.
    """
    target = Path(folder)
    with publish_folder(target, what=what or f"adapter {target}") as tmp:
        write(tmp)
        write_json(tmp / MANIFEST, to_jsonable(manifest))
    return target
