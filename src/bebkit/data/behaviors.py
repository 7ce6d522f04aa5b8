"""Behaviors: desired and undesired statements that define ``P₊`` and ``P₋`` (appendix J).

A :class:`Behavior` holds the two sides of one behavior vertical. ``undesired`` statements are
what ``P₋`` is fine-tuned on, ``desired`` ones what ``P₊`` is fine-tuned on. Sources:

* ``"cooperativeness"`` — embedded in bebkit (``resources/cooperativeness.jsonl``, written for
  bebkit, persona-file format, matching = cooperative), so everything runs without external
  data;
* ``<persona_dir>/<name>.jsonl`` — Perez et al. (2022) persona files, with
  ``persona_dir`` = the argument or ``$BEBKIT_PERSONA_DIR``;
* the Hugging Face dataset ``Anthropic/model-written-evals`` (:func:`load_behavior_from_hub`).

The side of each statement comes from its ``answer_matching_behavior`` field
(:mod:`bebkit.data.persona`); which side is undesired comes from the polarity table
(:mod:`bebkit.data.polarity`, with the neutral convention documented there).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from bebkit.data.persona import PersonaRow, read_persona_file, read_persona_text, split_sides
from bebkit.data.polarity import (
    Polarity,
    PolarityEntry,
    check_polarity,
    polarity_of,
    polarity_table,
    suggest,
)
from bebkit.errors import InputError, RunError
from bebkit.paths import cache_dir as default_cache_dir
from bebkit.paths import persona_dir as env_persona_dir

HUB_REPO_ID = "Anthropic/model-written-evals"
EMBEDDED_SOURCE = "embedded"
HUB_SOURCE = "hub"


@dataclass(frozen=True)
class Behavior:
    """Desired and undesired statements of one behavior.

    Attributes:
        name: behavior name (persona file stem, or ``"cooperativeness"``).
        desired: statements ``P₊`` is trained on (file order).
        undesired: statements ``P₋`` is trained on (file order).
        polarity: which side of the source file is undesired: ``"matching"``,
            ``"not_matching"`` or ``"neutral"`` (then undesired = matching by convention).
        source: file path, ``"embedded"`` or ``"hub"``.
        description: one line on the behavior and why its undesired side is undesired.
    """

    name: str
    desired: tuple[str, ...]
    undesired: tuple[str, ...]
    polarity: Polarity
    source: str
    description: str

    @property
    def matching(self) -> tuple[str, ...]:
        """Statements that match the behavior named by the file (``" Yes"`` answers)."""
        return self.desired if self.polarity == "not_matching" else self.undesired

    @property
    def not_matching(self) -> tuple[str, ...]:
        """Statements that do not match the behavior named by the file."""
        return self.undesired if self.polarity == "not_matching" else self.desired

    def info(self) -> BehaviorInfo:
        """Summary counts, as listed by :func:`list_behaviors`."""
        return BehaviorInfo(
            self.name,
            len(self.desired),
            len(self.undesired),
            self.polarity,
            self.source,
            self.description,
        )


@dataclass(frozen=True)
class BehaviorInfo:
    """What ``bebkit data list`` shows for one behavior."""

    name: str
    n_desired: int
    n_undesired: int
    polarity: Polarity
    source: str
    description: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_desired": self.n_desired,
            "n_undesired": self.n_undesired,
            "polarity": self.polarity,
            "source": self.source,
            "description": self.description,
        }


# --------------------------------------------------------------------------- embedded data

_EMBEDDED: dict[str, tuple[str, Polarity, str]] = {
    # name: (resource file, polarity, description). matching = cooperative, so the
    # not-matching (uncooperative) side is undesired.
    "cooperativeness": (
        "cooperativeness.jsonl",
        "not_matching",
        "Embedded bebkit behavior: cooperative, helpful, considerate statements (desired) "
        "versus uncooperative, obstructive, dismissive ones (undesired).",
    ),
}


def embedded_behavior_names() -> tuple[str, ...]:
    """Names of the behaviors shipped inside bebkit."""
    return tuple(_EMBEDDED)


@cache
def _embedded_rows(name: str) -> tuple[PersonaRow, ...]:
    filename = _EMBEDDED[name][0]
    text = resources.files("bebkit.data").joinpath(f"resources/{filename}").read_text("utf-8")
    return tuple(read_persona_text(text, f"bebkit:resources/{filename}"))


@lru_cache(maxsize=1)
def generic_good_texts() -> tuple[str, ...]:
    """Generic acceptable replies (refusals, neutral and off-topic answers) written for bebkit.

    Useful as "good" reference texts for judges; comment lines (``#``) are skipped.
    """
    text = resources.files("bebkit.data").joinpath("resources/generic_good.txt").read_text("utf-8")
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


# --------------------------------------------------------------------------- construction


def behavior_from_rows(
    name: str,
    rows: list[PersonaRow] | tuple[PersonaRow, ...],
    *,
    polarity: Polarity,
    source: str,
    description: str,
) -> Behavior:
    """Assign the matching / not-matching sides of ``rows`` to desired / undesired.

    ``undesired = matching`` for ``polarity`` in {matching, neutral}, else ``not_matching``.
    """
    check_polarity(polarity)
    matching, not_matching = split_sides(list(rows))
    if not matching or not not_matching:
        raise InputError(
            f"behavior {name!r} ({source}) needs statements on both sides: "
            f"{len(matching)} matching, {len(not_matching)} not matching"
        )
    if polarity == "not_matching":
        desired, undesired = matching, not_matching
    else:
        desired, undesired = not_matching, matching
    return Behavior(name, desired, undesired, polarity, source, description)


def _entry_for(name: str, polarity: str | None) -> tuple[Polarity, str]:
    """Polarity and description: explicit override, else the table, else neutral convention."""
    table = polarity_table()
    entry: PolarityEntry | None = table.get(name)
    if polarity is not None:
        pol = check_polarity(polarity)
        reason = entry.reason if entry is not None and entry.polarity == pol else "set by caller"
        return pol, reason
    if entry is not None:
        return entry.polarity, entry.reason
    # A user-supplied persona-format file with a name bebkit has not judged.
    return "neutral", "not in bebkit's polarity table; neutral convention (undesired = matching)"


def _resolve_persona_dir(persona_dir: str | Path | None) -> Path | None:
    if persona_dir is not None:
        p = Path(persona_dir).expanduser()
        if not p.is_dir():
            raise InputError(f"persona dir {str(p)!r} does not exist or is not a directory")
        return p
    env = env_persona_dir()
    if env is not None and not env.is_dir():
        raise InputError(f"BEBKIT_PERSONA_DIR={str(env)!r} does not exist or is not a directory")
    return env


def _persona_files(directory: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(directory.glob("*.jsonl")) if p.is_file()}


def load_behavior(
    name: str, persona_dir: str | Path | None = None, *, polarity: str | None = None
) -> Behavior:
    """Load one behavior.

    ``"cooperativeness"`` needs no external data; any other name reads
    ``<persona_dir or $BEBKIT_PERSONA_DIR>/<name>.jsonl``. ``polarity`` overrides the table
    (for custom files or to flip a judgement). Raises :class:`InputError` for unknown names
    (listing the closest ones), malformed files (file and line) or a missing persona dir.
    """
    if name in _EMBEDDED:
        _, pol, desc = _EMBEDDED[name]
        if polarity is not None:
            pol = check_polarity(polarity)
        return behavior_from_rows(
            name, _embedded_rows(name), polarity=pol, source=EMBEDDED_SOURCE, description=desc
        )
    directory = _resolve_persona_dir(persona_dir)
    if directory is None:
        known = {**polarity_table(), **{k: None for k in _EMBEDDED}}
        if name in known:
            raise InputError(
                f"behavior {name!r} needs the persona data: set BEBKIT_PERSONA_DIR or pass "
                "--persona-dir (or load it with load_behavior_from_hub when online)"
            )
        raise InputError(
            f"unknown behavior {name!r}{suggest(name, list(known))} "
            "(set BEBKIT_PERSONA_DIR or pass --persona-dir to use persona files)"
        )
    files = _persona_files(directory)
    if name not in files:
        available = [*files, *_EMBEDDED]
        raise InputError(f"unknown behavior {name!r} in {directory}{suggest(name, available)}")
    pol, desc = _entry_for(name, polarity)
    rows = read_persona_file(files[name])
    return behavior_from_rows(name, rows, polarity=pol, source=str(files[name]), description=desc)


def list_behaviors(persona_dir: str | Path | None = None) -> list[BehaviorInfo]:
    """Every behavior available: the embedded ones, then each ``*.jsonl`` in the persona dir.

    Without a persona dir (argument or ``$BEBKIT_PERSONA_DIR``) only the embedded behaviors are
    listed. Every file is parsed, so a malformed one raises :class:`InputError`.
    """
    infos = [load_behavior(name).info() for name in _EMBEDDED]
    directory = _resolve_persona_dir(persona_dir)
    if directory is not None:
        for name in _persona_files(directory):
            if name not in _EMBEDDED:
                infos.append(load_behavior(name, directory).info())
    return infos


# --------------------------------------------------------------------------- Hugging Face hub


def load_behavior_from_hub(
    name: str, cache_dir: str | Path | None = None, *, polarity: str | None = None
) -> Behavior:
    """Download ``persona/<name>.jsonl`` of the HF dataset ``Anthropic/model-written-evals``.

    Uses ``huggingface_hub.hf_hub_download(repo_type="dataset")`` with its cache under
    ``cache_dir`` (default ``bebkit.paths.cache_dir() / "hub"``); a later call works offline
    from that cache. Only the 135 upstream names (the polarity table) are accepted.
    """
    entry = polarity_of(name)  # InputError with suggestions for unknown names
    pol = check_polarity(polarity) if polarity is not None else entry.polarity
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir() / "hub"
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub ships with the [lm] extra
        raise RunError(
            "load_behavior_from_hub needs huggingface_hub (pip install bebkit[lm])"
        ) from None
    kwargs: dict[str, Any] = {
        "repo_id": HUB_REPO_ID,
        "filename": f"persona/{name}.jsonl",
        "repo_type": "dataset",
        "cache_dir": str(root),
    }
    try:
        path = hf_hub_download(**kwargs)
    except Exception as exc:  # network errors come in many types; fall back to the cache
        try:
            path = hf_hub_download(**kwargs, local_files_only=True)
        except Exception:
            raise RunError(
                f"could not download {HUB_REPO_ID}/persona/{name}.jsonl ({exc.__class__.__name__}: "
                f"{exc}); set BEBKIT_PERSONA_DIR to a local copy instead"
            ) from None
    rows = read_persona_file(path)
    reason = entry.reason if pol == entry.polarity else "set by caller"
    return behavior_from_rows(name, rows, polarity=pol, source=HUB_SOURCE, description=reason)
