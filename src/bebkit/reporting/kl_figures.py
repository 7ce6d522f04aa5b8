"""Figures of the KL experiments (§4.1–4.2; fig. 2, 3a, 8, 11, 13b, 14b, 15), in the paper's style.

* :func:`plot_beta_sigma` — (a) ``KL(P₋‖P₊ | s₁…sₙ)`` vs n with the β (lower) and β′ (upper)
  lines, (b) ``Var_{s~P₋}[log P₋(s)/P₊(s)]`` vs n with the line ``n σ²`` (fig. 2 / 8);
* :func:`plot_prompt_dist` — the same KL along ``s₀ ⊕ s``, ``s ~ P₋(·|s₀)`` (fig. 15);
* :func:`plot_convergence` — ``KL(P₋‖P_LLM | s)`` vs n per condition with the Lemma 5 fit and
  the straight line ``log 1/α − βn`` on the first sentences (fig. 3a / 11 / 13b / 14b);
* :func:`load_reference_kl` — the paper's numbers from ``authors-figures.json``.

Every figure is written as PNG and SVG (same stem). Error bars are 95% CIs of the estimates.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.behavior import ALIGN, NO_ALIGN
from bebkit.io import atomic_open

Curve = tuple[np.ndarray, np.ndarray]

_SHORT = {
    "agreeableness": ("agreeableness", "agree"),
    "anti-immigration": ("anti_immigration", "anti"),
}


def load_reference_kl(path: str | Path, behavior: str) -> dict[str, Curve]:
    """The paper's KL numbers for ``behavior`` (Llama-2-13B(-chat)), ``{key: (n, y)}``.

    Keys: ``beta_kl`` (fig. 2a / 8, n = 1…15), ``variance`` (fig. 2b / 8, n = 0…15),
    ``conv_none`` / ``conv_aligned`` (fig. 3a / 11, chat, n = 1…10), ``pretrained``
    (fig. 13b / 14b, base model, n = 1…10). Empty when the paper has no curve for it.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"reference file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise InputError(f"{p}: not valid JSON") from None
    names = _SHORT.get(behavior)
    if names is None:
        return {}
    long, short = names
    out: dict[str, Curve] = {}

    def put(key: str, vals: Any, start: int) -> None:
        if isinstance(vals, list) and vals:
            y = np.asarray(vals, dtype=np.float64)
            out[key] = (np.arange(start, start + y.size, dtype=np.float64), y)

    put(
        "beta_kl",
        data.get("beta_KL_Pminus_vs_chat_INSTwrapped_per_sentence_1to15", {}).get(long),
        1,
    )
    put("variance", data.get("variance_logratio_vs_sentences_0to15", {}).get(long), 0)
    conv = data.get("KL_Pminus_vs_model_per_sentence_1to10", {})
    put("conv_none", conv.get(f"chat_{short}_noalign"), 1)
    put("conv_aligned", conv.get(f"chat_{short}_align"), 1)
    put("pretrained", conv.get(f"base_{short}"), 1)
    return out


#: Legend label of the paper's curves on a chat-model (convergence) or base-model figure.
REFERENCE_LABELS = {
    "convergence": "paper (Llama-2-13B-chat)",
    "pretrained": "paper (Llama-2-13B base)",
}


def condition_reference(reference: Mapping[str, Curve] | None, kind: str) -> dict[str, Curve]:
    """The paper's curves of :func:`load_reference_kl` keyed by condition for a KL figure.

    ``kind="convergence"``: ``{"none": conv_none, "aligned": conv_aligned}`` (fig. 3a / 11);
    ``kind="pretrained"``: ``{"none": pretrained}`` (the base model, fig. 13b / 14b).
    """
    ref = reference or {}
    keys = {"none": "pretrained"} if kind == "pretrained" else {
        "none": "conv_none", "aligned": "conv_aligned"
    }  # fmt: skip
    return {c: ref[k] for c, k in keys.items() if k in ref}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(text: str, limit: int = 90) -> str:
    """Model text for a matplotlib label: one line, truncated, no mathtext (``$``)."""
    t = " ".join(text.split())
    t = t if len(t) <= limit else t[: limit - 1] + "…"
    return t.replace("$", r"\$")


def save_figure(fig: Any, path: str | Path) -> dict[str, str]:
    """Write ``fig`` as ``<stem>.png`` and ``<stem>.svg`` atomically; return both paths."""
    p = Path(path).with_suffix("")
    out = {}
    import matplotlib as mpl

    for ext in ("png", "svg"):
        target = p.with_suffix(f".{ext}")
        # SVGs without a date and with fixed element ids: redrawing the same record gives the
        # same bytes (reports redraw on every build; archived runs stay diff-free)
        meta = {"Date": None} if ext == "svg" else None
        with atomic_open(target, "wb") as fh, mpl.rc_context({"svg.hashsalt": "bebkit"}):
            fig.savefig(fh, format=ext, dpi=120, metadata=meta)
        out[ext] = str(target)
    _plt().close(fig)
    return out


def _errorbar(ax: Any, x: np.ndarray, est: Sequence[Estimate], **kw: Any) -> None:
    y = np.array([e.value for e in est])
    lo = np.array([e.ci_low if e.ci_low is not None else e.value for e in est])
    hi = np.array([e.ci_high if e.ci_high is not None else e.value for e in est])
    ax.errorbar(x, y, yerr=[np.maximum(y - lo, 0), np.maximum(hi - y, 0)], capsize=3, **kw)


def plot_beta_sigma(
    n_kl: np.ndarray,
    kl: Sequence[Estimate],
    n_var: np.ndarray,
    var: Sequence[Estimate],
    *,
    beta: Estimate,
    beta_prime: Estimate,
    sigma2: Estimate,
    path: str | Path,
    title: str = "",
    reference: Mapping[str, Curve] | None = None,
    reference_label: str = "paper",
) -> dict[str, str]:
    """Fig. 2 / 8: KL with β, β′ lines (a) and the log-ratio variance with ``n σ²`` (b)."""
    plt = _plt()
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    _errorbar(a, n_kl, kl, fmt="o-", color="C0", label="ours (95% CI over prompts)")
    a.axhline(beta.value, color="red", lw=1.5, label=f"β = {beta.value:.3g} (lower envelope)")
    a.axhline(beta_prime.value, color="red", ls="--", lw=1.2,
              label=f"β′ = {beta_prime.value:.3g} (upper envelope)")  # fmt: skip
    if reference and "beta_kl" in reference:
        rx, ry = reference["beta_kl"]
        a.plot(rx, ry, ":x", color="gray", label=f"{reference_label}")
    a.set_xlabel("|s| (sentences of the prompt s ~ P₋)")
    a.set_title("(a) D_KL(P₋(·|s) ‖ P₊(·|s))", fontsize=10)
    a.grid(alpha=0.3)
    a.legend(fontsize=7)
    _errorbar(b, n_var, var, fmt="o-", color="C0", label="ours (bootstrap 95% CI)")
    grid = np.linspace(0, float(np.max(n_var)), 50)
    b.plot(grid, sigma2.value * grid, color="red", lw=1.5,
           label=f"|s|·σ², σ² = {sigma2.value:.3g}")  # fmt: skip
    if reference and "variance" in reference:
        rx, ry = reference["variance"]
        b.plot(rx, ry, ":x", color="gray", label=f"{reference_label}")
    b.set_xlabel("|s| (sentences of the prompt s ~ P₋)")
    b.set_title("(b) Var_{s~P₋}[log P₋(s)/P₊(s)]", fontsize=10)
    b.grid(alpha=0.3)
    b.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_prompt_dist(
    x_prefix: np.ndarray,
    kl_prefix: Sequence[Estimate],
    x_prompt: np.ndarray,
    kl_prompt: Sequence[Estimate],
    *,
    beta: Estimate | None,
    s0_text: str,
    path: str | Path,
    title: str = "",
    reference: Mapping[str, Curve] | None = None,
    reference_label: str = "paper",
) -> dict[str, str]:
    """Fig. 15: KL along the neutral prefix, the undesired sentence and then ``s ~ P₋(·|s₀)``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    _errorbar(ax, x_prefix, kl_prefix, fmt="s", color="gray",
              label="inside s₀ (neutral sentences, then the undesired one)")  # fmt: skip
    _errorbar(ax, x_prompt, kl_prompt, fmt="o-", color="C0", label="s₀ ⊕ s, s ~ P₋(·|s₀)")
    if beta is not None:
        ax.axhline(beta.value, color="red", lw=1.5, label=f"β = {beta.value:.3g} (lower envelope)")
    if reference and "beta_kl" in reference:
        rx, ry = reference["beta_kl"]
        ax.plot(rx + float(x_prompt[0]) - 1, ry, ":x", color="gray",
                label=f"{reference_label} (unprompted, fig. 2a), shifted")  # fmt: skip
    ax.set_xlabel("sentences in s₀ ⊕ s")
    ax.set_ylabel("D_KL(P₋(·|s₀ ⊕ s) ‖ P₊(·|s₀ ⊕ s))")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title((title + "\n" if title else "") + f"s₀ = “{_safe(s0_text)}”", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_convergence(
    curves: Mapping[str, tuple[np.ndarray, Sequence[Estimate]]],
    fits: Mapping[str, Any],
    *,
    path: str | Path,
    title: str = "",
    note: str = "",
    reference: Mapping[str, Curve] | None = None,
    reference_label: str = "paper",
) -> dict[str, str]:
    """Fig. 3a / 11 / 13b: KL(P₋‖P_LLM) vs n with the floored Lemma 5 fit that the report's n*
    comes from (dash-dot, when present), the plain Lemma 5 fit (dashed) and the
    first-sentences line (dotted).

    ``fits[label]`` is a :class:`~bebkit.fits.convergence.ConvergenceResult` or None;
    ``reference`` maps the same labels to the paper's ``(n, KL)``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (label, (x, est)) in enumerate(curves.items()):
        col = f"C{i}"
        _errorbar(ax, x.astype(float), est, fmt="o-", color=col, label=f"{label} (95% CI)")
        res = fits.get(label)
        if res is not None:
            grid = np.linspace(float(x.min()), float(x.max()), 200)
            lem, lin, flo = res.lemma5, res.linear, res.floored
            if flo is not None:
                c = flo.floor.value if flo.floor is not None else 0.0
                ax.plot(grid, flo.predict(grid), "-.", color=col, lw=1.6,
                        label=f"floored Lemma 5 fit (reported): log 1/α = "
                        f"{flo.log_inv_alpha.value:.3g}, β = {flo.beta.value:.3g}, "
                        f"c = {c:.3g}, n* = {flo.n_star.value:.3g}")  # fmt: skip
            ax.plot(grid, lem.predict(grid), "--", color=col, lw=1.1,
                    label=f"Lemma 5 fit: log 1/α = {lem.log_inv_alpha.value:.3g}, "
                    f"β = {lem.beta.value:.3g}, n* = {lem.n_star.value:.3g}")  # fmt: skip
            g2 = np.linspace(min(lin.n_used), max(lin.n_used), 20)
            ax.plot(g2, lin.predict(g2), ":", color=col, lw=2,
                    label=f"line on n = {int(min(lin.n_used))}..{int(max(lin.n_used))}: "
                    f"β_eff = {lin.beta.value:.3g}, n* = {lin.n_star.value:.3g}")  # fmt: skip
        if reference and label in reference:
            rx, ry = reference[label]
            ax.plot(rx, ry, "x:", color=col, alpha=0.6, label=f"{reference_label}: {label}")
    ax.set_xlabel("sentences of the misaligning prompt (s ~ P₋)")
    ax.set_ylabel("D_KL(P₋(·|s) ‖ P_LLM(·|s))")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6.5)
    if title:  # wrapped: a long model pair otherwise runs off the figure's edge
        ax.set_title("\n".join(textwrap.wrap(title, 110)), fontsize=8.5)
    lines = textwrap.wrap(note, 140) if note else []
    if lines:
        fig.text(0.01, 0.005, "\n".join(lines), fontsize=6.5, color="dimgray")
    fig.tight_layout(rect=(0, 0.03 * len(lines), 1, 1))
    return save_figure(fig, path)


__all__ = [
    "load_reference_kl",
    "plot_beta_sigma",
    "plot_convergence",
    "plot_prompt_dist",
    "save_figure",
]


CONDITION_LABELS = {NO_ALIGN: "no aligning prompt", ALIGN: "aligning prompt"}


def convergence_figure(
    results: Mapping[str, Any],
    path: str | Path,
    *,
    n_tokens: int,
    note: str = "",
    reference: Mapping[str, Any] | None = None,
    reference_label: str = "paper",
) -> dict[str, str]:
    """Fig. 3a / 11 / 13b from a convergence (or pretrained) ``results`` dict alone.

    The same function draws the figure during a run and redraws it later from the stored
    record (e.g. with the paper's curves added), so both pictures are identical by construction.
    ``reference`` maps a condition (``none``/``aligned``) to the paper's ``(n, KL)``.
    """
    from bebkit.fits.convergence import ConvergenceResult

    curves: dict[str, Any] = {}
    n_prompts = 0
    for c, cv in results["curves"].items():
        est = [Estimate.from_dict(e) for e in cv["estimates"]]
        curves[CONDITION_LABELS.get(c, c)] = (np.asarray(cv["n"], dtype=np.float64), est)
        n_prompts = max(n_prompts, len(cv.get("per_prompt") or []))
    fits = {
        CONDITION_LABELS.get(c, c): None if f is None else ConvergenceResult.from_dict(f)
        for c, f in (results.get("fits") or {}).items()
    }
    first: Mapping[str, Any] = next(iter(results["curves"].values()), {})
    # what one KL sample is: a whole next sentence (capped) or a fixed number of tokens
    if first.get("unit") == "sentence":
        per = f"{first.get('n_samples', '?')} sentences (≤ {first.get('max_tokens', '?')} tok) per point"
    else:
        per = f"{first.get('n_samples', '?')}×{n_tokens} tok per point"
    title = (
        f"{results['target_model']} vs P₋ = {results['neg_model']} — {results['behavior']} "
        f"({results['format']}); {n_prompts} prompts, {results['estimator']}, {per}"
    )
    ref = {CONDITION_LABELS[c]: v for c, v in (reference or {}).items() if c in CONDITION_LABELS}
    return plot_convergence(
        curves,
        fits,
        path=path,
        title=title,
        note=note,
        reference=ref,
        reference_label=reference_label,
    )
