"""Figure of the alignment experiment (:mod:`bebkit.pipeline.align`): each measured quantity
against alignment strength (0 = the model before), one colour per method — every seed's value
as a dot, the mean over seeds with its 95 % t interval as an error bar, the model before
with its own CI. Drawn from the record's results, so it can be redrawn from ``record.json``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from bebkit.estimate import Estimate
from bebkit.reporting.kl_figures import _errorbar, _plt, save_figure

LABELS: dict[str, str] = {
    "log_inv_alpha": "log 1/α (floored Lemma 5)",
    "beta": "β (floored Lemma 5)",
    "n_star": "n* = log(1/α)/β",
    "table1_accuracy": "Table 1 accuracy",
}
#: The β/σ² envelopes, drawn when the record has them (``envelopes=True``).
ENVELOPE_LABELS: dict[str, str] = {
    "beta_envelope": "β (lower envelope, β/σ²)",
    "beta_prime_envelope": "β′ (upper envelope)",
    "sigma2_envelope": "σ² (variance slope)",
}


def panels(results: Mapping[str, Any]) -> list[str]:
    """The quantities drawn: α, β, n*, Table 1, the β/σ² envelopes when measured and % good
    at the shortest and longest n ≥ 1."""
    lengths = [n for n in results["lengths"] if n >= 1]
    good = [f"good_n{n}" for n in sorted({lengths[0], lengths[-1]})] if lengths else []
    env = [k for k in ENVELOPE_LABELS if k in results["before"]]
    return [*LABELS, *env, *good]


def plot_alignment(
    results: Mapping[str, Any], path: str | Path, *, title: str = ""
) -> dict[str, str]:
    """One panel per quantity of :func:`panels` vs strength; PNG + SVG."""
    plt = _plt()
    keys = panels(results)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.3 * len(keys), 3.4), squeeze=False)
    methods = sorted({g["method"] for g in results["groups"].values()})
    for ax, key in zip(axes[0], keys, strict=True):
        b = results["before"].get(key)
        if b is not None:
            _errorbar(ax, np.array([0.0]), [Estimate.from_dict(b)], fmt="s", color="k",
                      label="before")  # fmt: skip
        for i, method in enumerate(methods):
            color = f"C{i}"
            for v in (v for v in results["variants"] if v["method"] == method):
                e = v["values"].get(key)
                if e is not None and e["value"] is not None:
                    ax.plot([v["strength"]], [e["value"]], ".", color=color, alpha=0.5)
            gs = sorted((g for g in results["groups"].values() if g["method"] == method),
                        key=lambda g: g["strength"])  # fmt: skip
            pts = [(g["strength"], g["mean"].get(key)) for g in gs if g["mean"].get(key)]
            if pts:
                _errorbar(ax, np.array([p[0] for p in pts]),
                          [Estimate.from_dict(p[1]) for p in pts], fmt="o-", color=color,
                          label=f"{method} (mean over seeds)")  # fmt: skip
        label = (
            LABELS.get(key)
            or ENVELOPE_LABELS.get(key)
            or f"fraction good at n = {key.removeprefix('good_n')}"
        )
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("alignment strength (steps / max)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["panels", "plot_alignment"]
