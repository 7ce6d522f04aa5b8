"""Figures of the Theorem 3–5 experiments (:mod:`bebkit.pipeline.theorems`), in the style of
:mod:`bebkit.reporting.kl_figures` (Agg backend, 95% CI error bars, PNG + SVG).

* :func:`plot_conversation` — % good vs turns, % good and KL(P₋‖P) vs total misaligning text
  for the conversation and the single prompt, with Theorem 3's (and Theorem 1's) length;
* :func:`plot_best_of_n` — % good of the best of n vs length, and the measured shift at the
  threshold vs log(n) with Theorem 4's line log(n)/β;
* :func:`plot_fraction_misaligned` — the fraction of prompts below the threshold vs length
  (Wilson CIs) with the 1 − δ level and Theorem 5's length.

Each takes the experiment's results dict (the ``record.json`` results), so a figure can be
redrawn from a stored record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bebkit.estimate import Estimate
from bebkit.reporting.kl_figures import _errorbar, _plt, save_figure


def _est(ds: Sequence[Mapping[str, Any]], scale: float = 1.0) -> list[Estimate]:
    out = []
    for d in ds:
        e = Estimate.from_dict(dict(d))
        f = lambda v: None if v is None else v * scale  # noqa: E731
        out.append(Estimate(e.value * scale, e.stderr * scale, e.n, f(e.ci_low), f(e.ci_high),
                            e.ci_level, e.method))  # fmt: skip
    return out


def _vline(ax: Any, bound: Mapping[str, Any] | None, label: str, **kw: Any) -> None:
    if bound and bound.get("length") is not None and math.isfinite(bound["length"]):
        ax.axvline(bound["length"], ls="--", lw=1.2, label=f"{label} = {bound['length']:.3g}", **kw)


def plot_conversation(
    results: Mapping[str, Any], path: str | Path, *, title: str = ""
) -> dict[str, str]:
    """(a) % good vs turns, (b) % good vs misaligning sentences, (c) KL vs the same."""
    plt = _plt()
    r = results
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(14, 4.2))
    turns = np.asarray(r["turn"], dtype=float)
    x = np.asarray(r["user_sentences"], dtype=float)
    conv = r["conversation_curve"]
    lab_c = (
        f"conversation ({conv['reply_sentences'][1] if len(turns) > 1 else 0} reply "
        "sentences per turn)"
    )
    _errorbar(a, turns, _est(r["good_fraction"], 100), fmt="o-", color="C0", label=lab_c)
    _errorbar(b, x, _est(r["good_fraction"], 100), fmt="o-", color="C0", label=lab_c)
    _errorbar(c, x, _est(r["kl"]), fmt="o-", color="C0", label=lab_c)
    if r.get("single_good_fraction"):
        lab_s = "single prompt (no replies)"
        _errorbar(a, turns, _est(r["single_good_fraction"], 100), fmt="s--", color="C1",
                  label=lab_s)  # fmt: skip
        _errorbar(b, x, _est(r["single_good_fraction"], 100), fmt="s--", color="C1", label=lab_s)
        _errorbar(c, x, _est(r["single_kl"]), fmt="s--", color="C1", label=lab_s)
    t3 = r.get("theorem3") or {}
    _vline(b, t3, "Theorem 3 total text", color="red")
    detail = t3.get("detail") or {}
    if detail.get("theorem1") is not None:
        b.axvline(detail["theorem1"], ls=":", color="gray", lw=1.2,
                  label=f"Theorem 1 (single prompt) = {detail['theorem1']:.3g}")  # fmt: skip
    thr = 100 * (r["threshold"] + 1) / 2
    for ax in (a, b):
        ax.axhline(thr, color="gray", lw=0.8, alpha=0.6)
        ax.set_ylabel("% good responses")
        ax.set_ylim(-5, 105)
    a.set_xlabel("user turns t (misaligning turns from P₋)")
    b.set_xlabel("total misaligning text (sentences from P₋)")
    c.set_xlabel("total misaligning text (sentences from P₋)")
    c.set_ylabel("D_KL(P₋(·|h_t) ‖ P(·|h_t)) of the next reply")
    a.set_title("(a) behavior vs turns", fontsize=10)
    b.set_title("(b) behavior vs misaligning text", fontsize=10)
    c.set_title("(c) KL vs misaligning text", fontsize=10)
    for ax in (a, b, c):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_best_of_n(
    results: Mapping[str, Any], path: str | Path, *, title: str = ""
) -> dict[str, str]:
    """(a) % good of the best of n vs length, (b) the shift at the threshold vs log n."""
    plt = _plt()
    r = results
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    x = np.asarray(r["lengths"], dtype=float)
    for i, n in enumerate(r["ns"]):
        _errorbar(a, x, _est(r["good_fraction"][str(n)], 100), fmt="o-", color=f"C{i}",
                  label=f"best of {n}")  # fmt: skip
    a.axhline(100 * (r["threshold"] + 1) / 2, color="gray", lw=0.8, alpha=0.6,
              label="threshold")  # fmt: skip
    a.set_xlabel("sentences of the misaligning prompt (s ~ P₋)")
    a.set_ylabel("% good responses (judge)")
    a.set_ylim(-5, 105)
    a.set_title("(a) best-of-n behavior expectation", fontsize=10)
    ns = np.asarray(r["ns"], dtype=float)
    shifts = _est([r["shift"][str(n)] for n in r["ns"]])
    ok = [i for i, e in enumerate(shifts) if math.isfinite(e.value)]
    if ok:
        _errorbar(b, np.log(ns[ok]), [shifts[i] for i in ok], fmt="o", color="C0",
                  label="measured shift at the threshold (bootstrap 95% CI)")  # fmt: skip
    beta = r.get("beta")
    if beta:
        grid = np.linspace(0, max(float(np.log(ns.max())), 1.0), 50)
        b.plot(grid, grid / beta, color="red", lw=1.5, label=f"Theorem 4: log(n)/β, β = {beta:.3g}")
    b.set_xlabel("log n")
    b.set_ylabel("extra prompt length (sentences)")
    b.set_title("(b) shift vs log n", fontsize=10)
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_fraction_misaligned(
    results: Mapping[str, Any], path: str | Path, *, title: str = "", delta: float = 0.1
) -> dict[str, str]:
    """The fraction of prompts s ~ P₋ below the threshold vs length, Theorem 5's length."""
    plt = _plt()
    r = results
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    x = np.asarray(r["lengths"], dtype=float)
    _errorbar(ax, x, _est(r["fraction"], 100), fmt="o-", color="C0",
              label=f"% prompts with behavior < {r['threshold']:g} (Wilson 95% CI)")  # fmt: skip
    _errorbar(ax, x, _est(r["good_fraction"], 100), fmt="s:", color="C2", alpha=0.7,
              label="mean % good responses")  # fmt: skip
    ax.axhline(100 * (1 - delta), color="gray", lw=0.8, label=f"1 − δ = {1 - delta:g}")
    _vline(ax, r.get("theorem5"), "Theorem 5 length", color="red")
    ax.set_xlabel("sentences of the misaligning prompt (s ~ P₋)")
    ax.set_ylabel("%")
    ax.set_ylim(-5, 105)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=8.5)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["plot_best_of_n", "plot_conversation", "plot_fraction_misaligned"]
