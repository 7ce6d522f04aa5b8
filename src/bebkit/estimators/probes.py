"""Linear probes on hidden states: are desired and undesired statements separable? (App. K)

Wolf et al. (arXiv 2304.11082, App. K, fig. 4–5, Table 2) feed the *statement only* of each
Perez et al. (2022) persona item to the model, take the hidden state at the last token, and
train a linear SVM to tell the two sides of the behavior apart; accuracy is the mean of a
5-fold cross-validation and the "error" its standard deviation over folds. Separable
clusters support the decomposition P = αP₋ + (1−α)P₊ of the model's distribution
(App. K, eq. 108–120).

Here: features are standardised (z-scored inside each CV fold, so no test statistics leak
into training), the SVM is ``sklearn.svm.LinearSVC``, folds are stratified and seeded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from bebkit.errors import InputError
from bebkit.estimate import Estimate


class ProbeConfig(BaseModel):
    """Settings of a probe run (App. K used 500 statements per side, 5 folds)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_per_side: int = Field(default=200, ge=5)
    layers: tuple[int | str, ...] = ("last", "middle")
    folds: int = Field(default=5, ge=2)
    C: float = Field(default=1.0, gt=0)
    seed: int = 0
    batch_size: int = Field(default=32, ge=1)


@dataclass(frozen=True)
class ProbeScore:
    """CV accuracy of one (behavior, layer): ``accuracy`` = mean over folds ± stderr,
    ``fold_std`` = std over folds (the paper's "Error" column)."""

    behavior: str
    layer: str
    layer_index: int
    accuracy: Estimate
    fold_std: float
    fold_accuracies: tuple[float, ...]
    n_per_side: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "behavior": self.behavior,
            "layer": self.layer,
            "layer_index": self.layer_index,
            "accuracy": self.accuracy.to_dict(),
            "fold_std": self.fold_std,
            "fold_accuracies": list(self.fold_accuracies),
            "n_per_side": self.n_per_side,
        }


def cv_svm_accuracy(
    X: np.ndarray, y: np.ndarray, *, folds: int = 5, C: float = 1.0, seed: int = 0
) -> tuple[float, float, list[float]]:
    """``(mean, std, per-fold)`` accuracy of StandardScaler + LinearSVC under stratified k-fold CV."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise InputError(f"features must be [N, D] with N = len(y), got {X.shape} and {y.shape}")
    counts = np.unique(y, return_counts=True)[1]
    if counts.size != 2 or counts.min() < folds:
        raise InputError(f"need two classes with at least {folds} examples each")
    pipe = make_pipeline(StandardScaler(), LinearSVC(C=C, dual="auto", max_iter=20000))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_score(pipe, X, y, cv=cv, scoring="accuracy")
    return float(scores.mean()), float(scores.std(ddof=1)), [float(s) for s in scores]


def probe_score(
    behavior: str,
    layer: str,
    layer_index: int,
    X: np.ndarray,
    y: np.ndarray,
    config: ProbeConfig,
) -> ProbeScore:
    """Wrap :func:`cv_svm_accuracy` as a :class:`ProbeScore` (stderr = fold std / √k)."""
    mean, std, per_fold = cv_svm_accuracy(X, y, folds=config.folds, C=config.C, seed=config.seed)
    acc = Estimate.from_samples(per_fold, method=f"{config.folds}-fold-cv")
    acc = Estimate(mean, acc.stderr, len(y), acc.ci_low, acc.ci_high, acc.ci_level, acc.method)
    return ProbeScore(behavior, layer, layer_index, acc, std, tuple(per_fold), int(np.sum(y == 1)))


def sample_sides(
    matching: Sequence[str], not_matching: Sequence[str], n_per_side: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Seeded sample of ``min(n_per_side, side size)`` distinct statements per side; y = +1
    matching.

    Each side is deduplicated (:func:`~bebkit.data.dedupe`: persona files repeat statements,
    up to 37 times on a side) and statements found on both sides are dropped, as in Table 1's
    split: a repeat in a training fold and its copy in the test fold would be scored as
    generalisation.
    """
    from bebkit.data import dedupe, statement_key

    matching, not_matching = dedupe(matching), dedupe(not_matching)
    both = {statement_key(s) for s in matching} & {statement_key(s) for s in not_matching}
    matching = [s for s in matching if statement_key(s) not in both]
    not_matching = [s for s in not_matching if statement_key(s) not in both]
    rng = np.random.default_rng(seed)
    k = min(n_per_side, len(matching), len(not_matching))
    a = [matching[i] for i in rng.choice(len(matching), size=k, replace=False)]
    b = [not_matching[i] for i in rng.choice(len(not_matching), size=k, replace=False)]
    return a + b, np.asarray([1] * k + [-1] * k, dtype=np.int64)


def pca_scatter(
    X: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    *,
    title: str = "",
    labels: tuple[str, str] = ("matching behavior", "not matching"),
) -> Path:
    """PNG of the first two principal components of standardised X, coloured by side (fig. 5)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    Z = PCA(n_components=2, random_state=0).fit_transform(StandardScaler().fit_transform(X))
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for val, lab, colour in ((1, labels[0], "tab:blue"), (-1, labels[1], "tab:red")):
        m = y == val
        ax.scatter(Z[m, 0], Z[m, 1], s=8, alpha=0.6, c=colour, label=lab)
    ax.set_xlabel("PC1")
    ax.set_ylabel("PC2")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
