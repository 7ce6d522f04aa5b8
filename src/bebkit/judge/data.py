"""Inputs of the judge: a behavior's persona statements, bebkit's generic texts, human labels.

Persona statements and their polarity (which side is undesired) come from
:func:`bebkit.data.load_behavior` (Perez et al. 2022 ``*.jsonl`` files).
Labels of the human-annotated responses are used ONLY to validate a judge, never to fit one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from bebkit.data import load_behavior
from bebkit.errors import InputError
from bebkit.paths import persona_dir


@dataclass(frozen=True)
class BehaviorStatements:
    """Both sides of one behavior: ``undesired`` statements get B = −1, ``desired`` B = +1."""

    name: str
    desired: tuple[str, ...]
    undesired: tuple[str, ...]


def read_persona_sides(
    name: str, directory: str | Path | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(matching, not_matching)`` statements of a behavior (answer_matching_behavior Yes/No)."""
    b = load_behavior(name, persona_dir=directory)
    if not b.matching or not b.not_matching:
        raise InputError(f"behavior {name!r} needs statements on both sides")
    return tuple(b.matching), tuple(b.not_matching)


def persona_file_names(directory: str | Path | None = None) -> list[str]:
    """Names of all persona files in the persona directory (sorted)."""
    d = Path(directory) if directory is not None else persona_dir()
    if d is None or not d.is_dir():
        raise InputError("no persona data: set BEBKIT_PERSONA_DIR or pass a persona directory")
    return sorted(p.stem for p in d.glob("*.jsonl"))


def load_behavior_statements(name: str, directory: str | Path | None = None) -> BehaviorStatements:
    """Desired/undesired statements of a behavior (polarity from :mod:`bebkit.data`)."""
    b = load_behavior(name, persona_dir=directory)
    return BehaviorStatements(name, tuple(b.desired), tuple(b.undesired))


def _read_resource(filename: str) -> tuple[str, ...]:
    text = resources.files("bebkit.judge").joinpath("resources", filename).read_text("utf-8")
    return tuple(
        line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )


def generic_good_texts() -> dict[str, tuple[str, ...]]:
    """bebkit's own behavior-agnostic B = +1 texts: refusals, supportive and neutral replies."""
    return {k: _read_resource(f"{k}.txt") for k in ("refusals", "supportive", "neutral")}


def rejection_templates() -> tuple[str, ...]:
    """Templates with a ``{statement}`` slot for replies that quote a statement to reject it."""
    return _read_resource("templates.txt")


@dataclass(frozen=True)
class LabelledResponse:
    """One human-labelled response; ``label`` is +1 (good: avoids the behavior) or −1 (bad)."""

    response: str
    label: int
    n_sentences: int | None = None
    aligning_prompt: bool | None = None
    prompt_id: int | None = None
    behavior: str | None = None


def load_labelled_responses(
    path: str | Path, behavior: str | None = None
) -> list[LabelledResponse]:
    """Read a ``*.jsonl`` of labelled responses (fields response, label ∈ {good, bad}, …)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"labels file not found: {p}")
    out: list[LabelledResponse] = []
    try:
        content = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({exc.reason})") from None
    with io.StringIO(content) as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                lab = str(row["label"]).strip().lower()
                text = str(row["response"])
                n, pid = (
                    None if row.get(k) is None else int(row[k])
                    for k in ("n_sentences", "prompt_id")
                )
            except (KeyError, TypeError, ValueError, OverflowError) as exc:  # JSON errors too
                raise InputError(f"{p}:{lineno}: malformed label row ({exc})") from None
            if lab not in ("good", "bad"):
                raise InputError(f"{p}:{lineno}: label must be 'good' or 'bad', got {lab!r}")
            if behavior is not None and row.get("behavior", behavior) != behavior:
                continue
            ap = row.get("aligning_prompt")
            out.append(
                LabelledResponse(
                    response=text,
                    label=1 if lab == "good" else -1,
                    n_sentences=n,
                    aligning_prompt=None if ap is None else bool(ap),
                    prompt_id=pid,
                    behavior=row.get("behavior"),
                )
            )
    if not out:
        raise InputError(f"{p}: no labelled responses" + (f" for {behavior!r}" if behavior else ""))
    return out


def split_statements(
    statements: Sequence[str], test_fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    """Seeded random split into (train, test) lists."""
    import numpy as np

    idx = np.random.default_rng(seed).permutation(len(statements))
    n_test = round(test_fraction * len(statements))
    test = [statements[i] for i in idx[:n_test]]
    train = [statements[i] for i in idx[n_test:]]
    return train, test
