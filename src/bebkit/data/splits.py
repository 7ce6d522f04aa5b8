"""Seeded train / held-out splits of a behavior (appendix J: 450 of the 500 statements per side
train ``P₋`` / ``P₊``; the rest stay held out for classification checks and prompts).

Before splitting each side is deduplicated (case, whitespace and final punctuation ignored),
and statements that occur on *both* sides are dropped (contradictory labels), so no statement
can appear in both train and held-out, nor as both desired and undesired.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from bebkit.data.behaviors import Behavior
from bebkit.errors import InputError


@dataclass(frozen=True)
class BehaviorSplit:
    """Disjoint train / held-out statements of both sides of a behavior."""

    train_desired: tuple[str, ...]
    train_undesired: tuple[str, ...]
    heldout_desired: tuple[str, ...]
    heldout_undesired: tuple[str, ...]
    seed: int
    behavior: str = ""

    def content_hash(self) -> str:
        """SHA-256 (hex) of the behavior name, seed and all four statement lists — a cache key
        for anything trained on this split."""
        payload = json.dumps(
            {
                "behavior": self.behavior,
                "seed": self.seed,
                "train_desired": self.train_desired,
                "train_undesired": self.train_undesired,
                "heldout_desired": self.heldout_desired,
                "heldout_undesired": self.heldout_undesired,
            },
            sort_keys=True,
            ensure_ascii=False,
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def to_dict(self) -> dict[str, object]:
        return {
            "behavior": self.behavior,
            "seed": self.seed,
            "n_train_desired": len(self.train_desired),
            "n_train_undesired": len(self.train_undesired),
            "n_heldout_desired": len(self.heldout_desired),
            "n_heldout_undesired": len(self.heldout_undesired),
            "content_hash": self.content_hash(),
        }


def statement_key(statement: str) -> str:
    """Normalised form used to detect duplicates: casefolded, single-spaced, no final ``.!?``."""
    return " ".join(statement.split()).rstrip(" .!?").casefold()


def dedupe(statements: Iterable[str]) -> list[str]:
    """Statements with duplicates (by :func:`statement_key`) removed, first occurrence kept."""
    seen: set[str] = set()
    out: list[str] = []
    for s in statements:
        k = statement_key(s)
        if k and k not in seen:
            seen.add(k)
            out.append(s)
    return out


def _check_count(name: str, value: int, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise InputError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def split_behavior(
    behavior: Behavior, n_train: int = 450, n_heldout: int = 50, seed: int = 0
) -> BehaviorSplit:
    """Draw ``n_train`` + ``n_heldout`` distinct statements per side without replacement.

    Each side uses its own stream ``default_rng([seed, side])``, so the desired split does not
    depend on how many undesired statements there are. Raises :class:`InputError` when a side
    has fewer than ``n_train + n_heldout`` distinct statements.
    """
    n_train = _check_count("n_train", n_train, 1)
    n_heldout = _check_count("n_heldout", n_heldout, 0)
    seed = _check_count("seed", seed, 0)
    desired = dedupe(behavior.desired)
    undesired = dedupe(behavior.undesired)
    both = {statement_key(s) for s in desired} & {statement_key(s) for s in undesired}
    desired = [s for s in desired if statement_key(s) not in both]
    undesired = [s for s in undesired if statement_key(s) not in both]
    need = n_train + n_heldout
    parts: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    for side_id, (side, pool) in enumerate((("desired", desired), ("undesired", undesired))):
        if len(pool) < need:
            raise InputError(
                f"behavior {behavior.name!r}: found {len(pool)} distinct {side} statements, "
                f"need {need} (n_train={n_train} + n_heldout={n_heldout}); "
                "lower n_train/n_heldout"
            )
        order = np.random.default_rng([seed, side_id]).permutation(len(pool))
        chosen = [pool[i] for i in order[:need]]
        parts.append((tuple(chosen[:n_train]), tuple(chosen[n_train:])))
    (train_d, held_d), (train_u, held_u) = parts
    return BehaviorSplit(train_d, train_u, held_d, held_u, seed, behavior.name)


#: Roles of a decoupled pair of components: ``generator`` samples the misaligning prompts,
#: ``judge`` scores the responses (issue 14: the judge must not score its own generator).
DECOUPLED_ROLES: tuple[str, ...] = ("generator", "judge")


def decoupled_split(split: BehaviorSplit, role: str) -> BehaviorSplit:
    """The part of ``split`` one role trains on: each side's training statements cut in two
    disjoint halves, the generator's the first ⌈n/2⌉ and the judge's the rest.

    The training lists are already in the seeded random order of :func:`split_behavior`, so
    each half is a random subset fixed by the split seed. The held-out statements are kept
    whole for both roles (neither trains on them; the checks score on them).
    """
    if role not in DECOUPLED_ROLES:
        raise InputError(f"role must be one of {', '.join(DECOUPLED_ROLES)}, got {role!r}")

    def half(train: tuple[str, ...]) -> tuple[str, ...]:
        cut = (len(train) + 1) // 2
        return train[:cut] if role == "generator" else train[cut:]

    if min(len(split.train_desired), len(split.train_undesired)) < 6:
        # each half must hold one training group of three statements
        raise InputError(
            f"behavior {split.behavior!r}: need >= 6 training statements per side to split "
            "them between a generator and a judge"
        )
    return BehaviorSplit(
        half(split.train_desired),
        half(split.train_undesired),
        split.heldout_desired,
        split.heldout_undesired,
        split.seed,
        split.behavior,
    )
