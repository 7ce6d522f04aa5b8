"""Checkpoints inside a long computation: finished units and the RNG state after each.

A paper-sized stage (β/σ²: 30 prompts × 15 sentences sampled, then 64 continuations at every
one of 2 × 10 × 16 prefixes) runs for hours on a CPU; the stage cache
(:mod:`bebkit.pipeline.stages`) publishes only whole stages, so a stage killed at 90 % would
restart from zero. A :class:`Checkpoint` stores each finished *unit* (one prompt set, one
prompt's KL row) as a JSON file together with the state of the numpy generator that drives
every draw after it. On a rerun a stored unit is not recomputed: its payload is decoded and the
generator is set to the stored state, so everything after it draws exactly what an
uninterrupted run would have drawn — the resumed result equals the uninterrupted one (all of
bebkit's sampling is driven by that one generator; torch generators are seeded from it).

A unit is reused only when its ``fingerprint`` — a hash of what it read (the prompt's tokens,
the prefix lengths, the targets) and of the generator state it starts from — equals the stored
one; otherwise it is recomputed and overwritten. Whoever owns the folder makes it specific to one computation (the stage runner
names it by the stage's cache key, which covers settings, data, seed and code version).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bebkit.io import to_jsonable, write_json

T = TypeVar("T")

#: bump when the stored layout changes: older files are then recomputed, never misread
FORMAT = 1


def fingerprint(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``: what a unit read."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class Checkpoint:
    """Units of one computation stored in ``folder`` (``None``: nothing is stored).

    ``reused`` and ``computed`` count this process's units (what a resumed run skipped).
    """

    def __init__(self, folder: str | Path | None) -> None:
        self.folder = None if folder is None else Path(folder)
        self.reused = 0
        self.computed = 0

    def _path(self, name: str) -> Path:
        assert self.folder is not None
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        return self.folder / f"{safe}.json"

    def unit(
        self,
        name: str,
        rng: np.random.Generator | None,
        compute: Callable[[], T],
        *,
        dump: Callable[[T], Any],
        load: Callable[[Any], T],
        reads: Any = None,
    ) -> T:
        """``compute()`` once: the stored value (and the generator state after it) when unit
        ``name`` was finished before with the same ``reads``; else compute, store, return.

        ``dump``/``load`` convert the value to and from JSON types (``load(dump(v))`` must
        equal ``v`` for the resumed result to equal the uninterrupted one). ``rng=None``: a
        unit that draws nothing (judging), so no generator state is stored or restored.
        """
        if self.folder is None:
            return compute()
        path = self._path(name)
        # the generator state before the unit is part of what it read: a unit of another seed
        # (or after other draws) is never taken for this one
        state = None if rng is None else rng.bit_generator.state
        key = fingerprint({"reads": reads, "rng": state})
        stored = self._read(path)
        if stored is not None and stored.get("fingerprint") == key:
            value = load(stored["value"])
            if rng is not None:
                rng.bit_generator.state = stored["rng_state"]
            self.reused += 1
            return value
        value = compute()
        write_json(
            path,
            {
                "format": FORMAT,
                "unit": name,
                "fingerprint": key,
                "rng_state": None if rng is None else to_jsonable(rng.bit_generator.state),
                "value": to_jsonable(dump(value)),
            },
        )
        self.computed += 1
        return value

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        """The stored unit, or None when absent, unreadable or of another layout (writes are
        atomic, so a torn file cannot normally exist; a damaged one is recomputed)."""
        if not path.is_file():
            return None
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None
        if not isinstance(stored, dict) or stored.get("format") != FORMAT:
            return None
        if "rng_state" not in stored or "value" not in stored:
            return None
        return stored

    def summary(self) -> dict[str, int]:
        return {"reused": self.reused, "computed": self.computed}


__all__ = ["Checkpoint", "fingerprint"]
