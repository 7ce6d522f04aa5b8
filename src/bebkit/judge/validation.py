"""A validation protocol for judges that cannot be tuned to: a development / locked split of
every human-label set, fixed by a seed written here before any result was looked at.

Protocol (issue 14):

1. :func:`split_labels` puts each labelled response in the *development* or the *locked* part
   by a keyed hash ``sha256(LOCK_SEED, behavior, normalised response)`` compared with
   ``locked_fraction``. The hash of a row never depends on the other rows, so adding rows (a
   new prompt, a new behavior, a new model) never moves an existing row between parts; and
   identical responses (``"I cannot fulfill your request."`` is sampled hundreds of times) always
   fall in the same part, so the locked part holds no copy of a development text. Each row is
   an independent Bernoulli(locked_fraction) draw, so every stratum — prompt id × condition ×
   label — is split in that proportion in expectation (stratified without depending on the
   other rows; exact per-stratum quotas would move rows when rows are added). The realised
   fraction of each stratum is reported (:meth:`LabelSplit.strata`).
2. Design choices are made on the development part only; :data:`DEV_CHOICES` lists them.
3. :func:`locked_evaluation` reports κ, accuracy, balanced accuracy (bootstrap CIs) and the
   false-positive / false-negative rates (Wilson CIs) on the locked part only, overall, per
   behavior and per condition (with / without the aligning prompt).

"Positive" means the behavior is present (human label bad, B = −1): the false-positive rate is
the share of human-good responses the judge calls bad, the false-negative rate the share of
human-bad responses it calls good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bebkit.errors import InputError, check_range
from bebkit.estimate import Estimate, wilson_interval
from bebkit.judge.data import LabelledResponse

#: The seed of the development / locked split. Fixed in the code on the day the protocol was
#: written, BEFORE any judge was scored on either part; never change it to move rows.
LOCK_SEED = "bebkit-judge-lock-2024-issue14"
#: Share of each label set that is locked (scored only for the final report).
LOCKED_FRACTION = 0.5

#: What was looked at on the DEVELOPMENT part of the agreeableness labels (never the locked
#: part), and what it decided. Everything not listed was fixed a priori.
DEV_CHOICES: tuple[str, ...] = (
    "compared on dev (kappa, 4219 rows): minilm-linear (persona + generic + reject templates) "
    "0.544; stance judge [e, s*e, s] with the full 2x2 set 0.344; plain-e 2x2 set 0.262; "
    "2x2 set without reject/negation of desired 0.37; without negations 0.40",
    "decision from dev: the stance judge does NOT replace the probe judge as default; "
    "kind='stance' stays an option, features='interaction' kept as its default (0.344 > 0.262)",
    "first sentence as the judged unit: kept from the paper (App. L.3), not tuned",
    "later dev comparisons (kappa on dev; probe designs on the bundled encoders, MiniLM / "
    "SmolLM2 middle layer): kNN on MiniLM k=1/5/25 0.52/0.46/0.39; max cosine to undesired "
    "vs the rest 0.52; logistic probe on persona statements only 0.05 / 0.23, + generic "
    "replies 0.45 / 0.60, + quote-and-reject templates (the defaults) 0.54 / 0.60-0.61; "
    "standardising on the unlabelled judged texts 0.29, CORAL 0.00 (MiniLM); + negated "
    "undesired statements as good 0.40 (label-free negation flips 0.13 -> 0.83 on "
    "agreeableness, but the share of negated desired statements judged bad falls 0.58 -> "
    "0.02: a 'negation means good' shortcut); the best decision threshold chosen on the dev labels themselves (a fit to "
    "labels, not adopted) 0.66 / 0.70; SmolLM2-135M-Instruct asked few-shot 'Good or Bad?' "
    "(persona examples in the prompt) AUC 0.47 on 300 dev rows, chance",
    "decision from dev: no probe design changes; no threshold on these encoders reaches "
    "kappa 0.8 even on the part it is chosen on, so the target needs a stronger encoder "
    "or judge model than the bundled ones",
)


def _normalise(text: str) -> str:
    return " ".join(text.split()).casefold()


def lock_score(row: LabelledResponse, seed: str = LOCK_SEED) -> float:
    """Uniform [0, 1) number from the row's behavior and normalised text (and nothing else)."""
    h = hashlib.sha256()
    for part in (seed, row.behavior or "", _normalise(row.response)):
        h.update(part.encode("utf-8") + b"\x00")
    return int.from_bytes(h.digest()[:8], "big") / 2.0**64


def is_locked(
    row: LabelledResponse, locked_fraction: float = LOCKED_FRACTION, seed: str = LOCK_SEED
) -> bool:
    """Whether ``row`` belongs to the locked part."""
    return lock_score(row, seed) < locked_fraction


@dataclass(frozen=True)
class LabelSplit:
    """Disjoint development and locked rows of one label set (input order kept)."""

    dev: tuple[LabelledResponse, ...]
    locked: tuple[LabelledResponse, ...]
    seed: str
    locked_fraction: float

    def strata(self) -> dict[str, dict[str, float]]:
        """Realised locked share per stratum ``behavior|prompt_id|aligning_prompt|label``."""
        counts: dict[str, list[int]] = {}
        for part, rows in ((0, self.dev), (1, self.locked)):
            for r in rows:
                key = f"{r.behavior}|{r.prompt_id}|{r.aligning_prompt}|{r.label}"
                counts.setdefault(key, [0, 0])[part] += 1
        return {
            k: {"n": float(d + lk), "locked_share": lk / (d + lk)}
            for k, (d, lk) in sorted(counts.items())
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "locked_fraction": self.locked_fraction,
            "n_dev": len(self.dev),
            "n_locked": len(self.locked),
        }


def split_labels(
    rows: Sequence[LabelledResponse],
    *,
    locked_fraction: float = LOCKED_FRACTION,
    seed: str = LOCK_SEED,
) -> LabelSplit:
    """Split a label set into development and locked parts (see the module docstring)."""
    check_range("locked_fraction", locked_fraction, low=0.0, high=1.0)
    dev: list[LabelledResponse] = []
    locked: list[LabelledResponse] = []
    for r in rows:
        (locked if is_locked(r, locked_fraction, seed) else dev).append(r)
    return LabelSplit(tuple(dev), tuple(locked), seed, locked_fraction)


def _bootstrap(
    y_true: np.ndarray, y_pred: np.ndarray, n_boot: int, seed: int, ci_level: float
) -> dict[str, Estimate]:
    from bebkit.judge.evaluation import agreement

    a = agreement(y_true, y_pred, n_boot=n_boot, ci_level=ci_level, seed=seed)
    return {k: a[k] for k in ("kappa", "accuracy", "balanced_accuracy")}


def error_rates(
    y_true: np.ndarray, y_pred: np.ndarray, ci_level: float = 0.95
) -> dict[str, Estimate | None]:
    """False-positive rate P(judged bad | human good), false-negative rate P(judged good |
    human bad), with Wilson intervals; ``None`` when the class is absent."""
    good, bad = y_true == 1, y_true == -1
    fp = int(np.sum(good & (y_pred == -1)))
    fn = int(np.sum(bad & (y_pred == 1)))
    return {
        "false_positive_rate": wilson_interval(fp, int(good.sum()), ci_level)
        if good.any()
        else None,
        "false_negative_rate": wilson_interval(fn, int(bad.sum()), ci_level) if bad.any() else None,
    }


def agreement_report(
    y_true: np.ndarray, y_pred: np.ndarray, *, n_boot: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """κ, accuracy, balanced accuracy (bootstrap) and FPR / FNR (Wilson) of one group."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.size == 0:
        raise InputError("no rows to evaluate")
    out: dict[str, Any] = {"n": int(y_true.size)}
    out.update(_bootstrap(y_true, y_pred, n_boot, seed, 0.95))
    out.update(error_rates(y_true, y_pred))
    out["human_bad_share"] = wilson_interval(int(np.sum(y_true == -1)), int(y_true.size))
    out["judge_bad_share"] = wilson_interval(int(np.sum(y_pred == -1)), int(y_true.size))
    return out


def locked_evaluation(
    split: LabelSplit,
    y_pred_locked: Sequence[int] | np.ndarray,
    *,
    judge_name: str = "",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """The report of a judge on the LOCKED part: overall, per behavior, per condition.

    ``y_pred_locked`` are the judge's ±1 verdicts on ``split.locked`` in order. The record
    carries the split's seed and sizes and :data:`DEV_CHOICES`, so a reader sees what was
    chosen where.
    """
    rows = split.locked
    y_pred = np.asarray(y_pred_locked, dtype=np.int64)
    if y_pred.shape != (len(rows),):
        raise InputError(f"need {len(rows)} verdicts for the locked rows, got {y_pred.shape}")
    y_true = np.asarray([r.label for r in rows], dtype=np.int64)
    report: dict[str, Any] = {
        "judge": judge_name,
        "part": "locked",
        "split": split.to_dict(),
        "dev_choices": list(DEV_CHOICES),
        "overall": agreement_report(y_true, y_pred, n_boot=n_boot, seed=seed),
    }
    groups: dict[str, dict[str, Any]] = {}
    for name, key in (
        ("behavior", lambda r: r.behavior),
        ("condition", lambda r: r.aligning_prompt),
    ):
        values = sorted({key(r) for r in rows if key(r) is not None}, key=str)
        per: dict[str, Any] = {}
        for v in values:
            m = np.asarray([key(r) == v for r in rows])
            label = {True: "with_aligning_prompt", False: "without_aligning_prompt"}.get(v, str(v))
            per[label if name == "condition" else str(v)] = agreement_report(
                y_true[m], y_pred[m], n_boot=n_boot, seed=seed
            )
        groups[f"by_{name}"] = per
    report.update(groups)
    return report
