"""Checkpoints inside a long computation: finished units and the RNG state after each.

A paper-sized stage (β/σ²: 30 prompts × 15 sentences sampled, then 64 continuations at every
one of 2 × 10 × 16 prefixes) runs for hours on a CPU; the stage cache
(:mod:`bebkit.pipeline.stages`) publishes only whole stages, so a stage killed at 90 % would
restart from zero. A :class:`Checkpoint` stores each finished *unit* (one sentence round of
prompt sampling, one prompt's KL row, one prompt's responses, one judging pass) as a JSON file
together with the state of the numpy generator that drives every draw after it. On a rerun a
stored unit is not recomputed: its value is decoded and the generator is set to the stored
state, so everything after it draws exactly what an uninterrupted run would have drawn (all of
bebkit's sampling is driven by that one generator; torch generators are seeded from it).

A unit is reused only when its fingerprint equals the stored one. The fingerprint hashes

* what the unit read (the prompt's tokens and format, the prefix lengths, the targets, …),
* the generator state it starts from (a unit of another seed, or after other draws, is never
  taken for this one),
* the code and numerics that computed it (:func:`code_identity`: a hash of bebkit's source,
  the numpy / torch versions and torch's thread count, since the thread count changes float
  rounding) — a unit computed before a bug fix is recomputed, never mixed with units of the
  fixed code,
* the weights it was computed with, when the owner passes ``identity`` (a callable read at
  each unit: the stage runner passes the SHA-256 of the LoRA adapters in memory, so a unit
  stored before its adapters were retrained — e.g. in another session, on another CPU — is
  recomputed, never mixed with units of the new weights). The identity is read when a unit
  is reached, so a computation must load every adapter its units use *before* its first unit
  (all of bebkit's experiments do): an adapter loaded inside a unit's computation would be
  skipped on resume and change the keys of the units after it (they would be recomputed).

The CPU is deliberately *not* in the fingerprint: with the same code, versions, thread count
and weights, a unit computed on another CPU model is reused (its float rounding may differ in
the last bits, so a stage resumed across machines is a valid sample of the same estimand but
not bit-identical to an uninterrupted run on either one). Long runs move between machines, and
recomputing hours of units for last-bit rounding would buy nothing statistically; instead each
unit stores the CPU that computed it (:func:`machine_identity`) and the stage runner publishes
the count per CPU with the stage (:func:`units_provenance`), so a reader sees which stages were
computed on more than one machine. (Adapters retrained on another CPU have other weights and
so other units: those are recomputed.)

Anything else is recomputed and overwritten (and counted as ``discarded``). Values keep
non-finite floats (``NaN``, ``±inf``: a KL estimate can be +inf) exactly. Whoever owns the
folder makes it specific to one computation; the stage runner names it by the stage's cache
key (settings, data fingerprints, seed and the experiment's version).
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bebkit.io import atomic_open, to_jsonable

T = TypeVar("T")

#: bump when the stored layout changes: older files are then recomputed, never misread
FORMAT = 2


def fingerprint(obj: Any) -> str:
    """SHA-256 (hex) of the canonical JSON of ``obj``: what a unit read."""
    blob = json.dumps(to_jsonable(obj), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@functools.lru_cache(maxsize=1)
def _source_hash() -> str:
    """SHA-256 of every ``.py`` file of the installed bebkit package (path and content)."""
    root = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode("utf-8") + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()


def cpu_model_from(cpuinfo: str) -> str | None:
    """The first ``model name`` of a ``/proc/cpuinfo`` text (None when it names none)."""
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name") and ":" in line:
            return line.split(":", 1)[1].strip() or None
    return None


@functools.lru_cache(maxsize=1)
def machine_identity() -> str:
    """The CPU model (``/proc/cpuinfo``'s ``model name``; else the platform's processor)."""
    import platform

    try:
        name = cpu_model_from(Path("/proc/cpuinfo").read_text(encoding="utf-8"))
    except OSError:
        name = None
    return name or platform.processor() or platform.machine() or "unknown"


#: the machine of units stored before their CPU was recorded
UNRECORDED_MACHINE = "not recorded"


def units_provenance(folder: str | Path | None) -> dict[str, Any] | None:
    """``{"units": n, "machines": {cpu: count}}`` over the units stored below ``folder`` (None
    when there are none): which CPUs computed a stage that was resumed across machines."""
    if folder is None or not Path(folder).is_dir():
        return None
    machines: dict[str, int] = {}
    for path in sorted(Path(folder).rglob("*.json")):
        stored = Checkpoint._read(path)
        if stored is None:
            continue
        m = str(stored.get("machine") or UNRECORDED_MACHINE)
        machines[m] = machines.get(m, 0) + 1
    if not machines:
        return None
    return {"units": sum(machines.values()), "machines": machines}


def code_identity() -> dict[str, Any]:
    """What, besides its inputs, decides a unit's numbers: bebkit's source, numpy's version
    and, when torch is loaded, its version and intra-op thread count."""
    ident: dict[str, Any] = {"bebkit_source": _source_hash(), "numpy": np.__version__}
    torch = sys.modules.get("torch")
    if torch is not None:
        ident["torch"] = str(getattr(torch, "__version__", ""))
        ident["torch_threads"] = int(torch.get_num_threads())
    return ident


class Checkpoint:
    """Units of one computation stored in ``folder`` (``None``: nothing is stored).

    ``reused``, ``computed`` and ``discarded`` (stored, but by other inputs, code or
    numerics) count this process's units.
    """

    def __init__(
        self, folder: str | Path | None, *, identity: Callable[[], Any] | None = None
    ) -> None:
        self.folder = None if folder is None else Path(folder)
        self.identity = identity
        self.reused = 0
        self.computed = 0
        self.discarded = 0

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
        ``name`` was finished before with the same fingerprint; else compute, store, return.

        ``dump``/``load`` convert the value to and from JSON types (``load(dump(v))`` must
        equal ``v`` for the resumed result to equal the uninterrupted one). ``rng=None``: a
        unit that draws nothing (judging), so no generator state is stored or restored.
        """
        if self.folder is None:
            return compute()
        path = self._path(name)
        state = None if rng is None else rng.bit_generator.state
        material = {"reads": reads, "rng": state, "code": code_identity()}
        if self.identity is not None:
            material["weights"] = self.identity()
        key = fingerprint(material)
        stored = self._read(path)
        if stored is not None:
            if stored.get("fingerprint") == key:
                try:
                    loaded = load(stored["value"])
                    if rng is not None:
                        rng.bit_generator.state = stored["rng_state"]
                except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                    pass  # a stored value this code cannot read: recompute it below
                else:
                    self.reused += 1
                    return loaded
            self.discarded += 1
        value = compute()
        record = {
            "format": FORMAT,
            "unit": name,
            "fingerprint": key,
            "machine": machine_identity(),  # provenance only, not in the fingerprint (above)
            "rng_state": None if rng is None else to_jsonable(rng.bit_generator.state),
            "value": to_jsonable(dump(value), keep_non_finite=True),
        }
        with atomic_open(path) as fh:
            json.dump(record, fh, allow_nan=True)
        self.computed += 1
        return value

    def forget(self, name: str) -> None:
        """Remove unit ``name``'s stored value, if any (before changing files kept beside it,
        so a stored value never outlives the files it was stored with)."""
        if self.folder is not None:
            self._path(name).unlink(missing_ok=True)

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
        return {"reused": self.reused, "computed": self.computed, "discarded": self.discarded}


__all__ = [
    "UNRECORDED_MACHINE",
    "Checkpoint",
    "code_identity",
    "cpu_model_from",
    "fingerprint",
    "machine_identity",
    "units_provenance",
]
