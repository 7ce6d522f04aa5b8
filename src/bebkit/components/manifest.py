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

Several recipes: the side's folder holds the adapter used last. When another recipe (other
inputs: a ``--quick`` size, another preset or seed) is trained or restored, the one in place
is moved to ``<out>/<behavior>/<format>/.kept/<side>/<key>/`` rather than deleted, and a
later run asking for it again swaps it back instead of training it again (the
``MAX_KEPT`` recipes used last are kept per side; older ones are deleted). All of it happens
under the side's artifact lock.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bebkit.integrity import IntegrityError, fsync_dir, publish_folder, remove_invalid, verify
from bebkit.io import to_jsonable, write_json

MANIFEST = "manifest.json"
#: Bump when the training code changes what a given set of inputs produces.
TRAINING_VERSION = 1
_REQUIRED = ("adapter_config.json", "adapter_model.safetensors", MANIFEST)
#: Folder (beside the sides) of the recipes not in use; at most ``MAX_KEPT`` per side.
KEPT = ".kept"
MAX_KEPT = 4


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


def kept_dir(folder: str | Path) -> Path:
    """``<behavior>/<format>/.kept/<side>``: the recipes of ``folder`` not in use."""
    p = Path(folder)
    return p.parent / KEPT / p.name


def keep_aside(folder: str | Path, *, unless: str | None = None) -> Path | None:
    """Move the adapter in ``folder`` to ``kept_dir(folder)/<its key>`` (replacing a kept
    copy of the same key) and delete the least recently used kept recipes beyond
    ``MAX_KEPT`` (never the one just kept). Nothing happens when ``folder`` holds no
    complete adapter with a key, or one whose key is ``unless`` (a damaged copy of the
    recipe about to be published there). Returns where it went. Hold ``folder``'s artifact
    lock."""
    dest = _set_aside(Path(folder), unless)
    if dest is not None:
        _evict(dest)
    return dest


def _set_aside(src: Path, unless: str | None) -> Path | None:
    m = read_manifest(src)
    key = m.get("key") if m is not None else None
    if not isinstance(key, str) or not key or "/" in key or key.startswith(".") or key == unless:
        return None
    dest = kept_dir(src) / key
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_invalid(dest)  # an older copy of the same recipe: moved aside, then deleted
    os.replace(src, dest)
    os.utime(dest)  # its recency, which the eviction goes by
    fsync_dir(dest.parent)
    return dest


def _evict(newest: Path) -> None:
    """Delete the kept recipes beside ``newest`` beyond ``MAX_KEPT``, least recently set
    aside first (ties by name, so the choice never depends on directory order); ``newest``
    itself always stays. Each goes through :func:`remove_invalid`, so a kill mid-delete
    leaves a hidden folder (cleaned by :func:`clean_kept`), never a half recipe under its
    key."""
    kept = [p for p in newest.parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
    kept.sort(key=lambda p: (p == newest, p.stat().st_mtime_ns, p.name), reverse=True)
    for old in kept[MAX_KEPT:]:
        remove_invalid(old)


def locate_recipe(folder: str | Path, key: str) -> Path | None:
    """Where the adapter of recipe ``key`` of ``folder`` is now: ``folder`` itself, or its
    kept copy after another recipe took its place; None when neither holds it. Hold
    ``folder``'s artifact lock while reading what it returns."""
    for p in (Path(folder), kept_dir(folder) / key):
        m = read_manifest(p)
        if m is not None and m.get("key") == key:
            return p
    return None


def clean_kept(folder: str | Path) -> None:
    """Delete what a killed deletion left among ``folder``'s kept recipes (hidden folders).
    Hold ``folder``'s artifact lock."""
    kept = kept_dir(folder)
    if kept.is_dir():
        for p in kept.iterdir():
            if p.name.startswith(".") and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)


def restore_kept(
    folder: str | Path,
    key: str,
    *,
    recompute: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any] | None:
    """Swap the kept recipe ``key`` of ``folder`` back into place and return its manifest;
    None when no intact copy is kept (then nothing moves). The adapter in place goes to the
    kept ones (:func:`keep_aside`; the eviction runs after the swap, so it can never take
    the recipe being restored), or is deleted when it is a damaged copy of ``key`` itself.
    Hold ``folder``'s artifact lock."""
    dest = Path(folder)
    cand = kept_dir(dest) / key
    manifest = find_reusable(cand, key, recompute=recompute, log=log)
    if manifest is None:
        return None
    current = read_manifest(dest)
    aside: Path | None = None
    if current is not None and current.get("key") == key:
        remove_invalid(dest)  # same recipe but failed its check: the kept copy replaces it
    elif dest.exists():
        aside = _set_aside(dest, None)
        if aside is None:
            remove_invalid(dest)  # not an adapter with a key (an incomplete folder)
    os.replace(cand, dest)
    fsync_dir(dest.parent)
    if aside is not None:
        _evict(aside)
    return manifest  # verified above; the rename moved the same files under the lock
