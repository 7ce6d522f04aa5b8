"""The paper's vocabulary in one place: its stated numbers, its curves' labels, its figure data.

Wolf, Wies, Avnery, Levine & Shashua, "Fundamental Limitations of Alignment in Large Language
Models" (arXiv 2304.11082). Sections refer to the later arXiv version (§4, appendices J–N).

* :data:`PAPER_VALUES` — every number the paper *states* about its experiments (β ≈ 20,
  σ² ≈ 50, β_eff ≈ 10, log(1/α)/β ≈ 3, …), each with where it is stated and how it was read
  (most are read off a plot and rounded; :attr:`PaperValue.resolution` says how coarsely).
  They are what the paper says, not what its curves give: :mod:`bebkit.fits.parity` computes
  the latter with bebkit's own estimators.
* :data:`REFERENCE_LABELS` — legend labels of the paper's curves on bebkit's figures.
* :func:`load_authors_figures` — the authors' own figure numbers (``authors-figures.json``,
  transcribed from the xlsx files of github.com/yowolf/Limitations-of-Alignment-in-LLMs) as
  typed curves, found via ``$BEBKIT_REFERENCE_DIR`` (:func:`authors_figures_path`).

Core layer: numpy and json only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from bebkit.errors import InputError
from bebkit.paths import reference_dir

#: File name of the authors' figure numbers inside ``$BEBKIT_REFERENCE_DIR``.
AUTHORS_FIGURES_FILE = "authors-figures.json"

#: The two behaviors of the paper's experiments (Perez et al. 2022 persona names).
BEHAVIORS = ("agreeableness", "anti-immigration")
#: Conditions of the paper's convergence curves: the chat model without / with its default
#: aligning (system) prompt (fig. 3a / 11), and the pretrained base model (fig. 13b / 14b).
CONDITIONS = ("none", "aligned", "pretrained")

#: Legend label of the paper's curves on a chat-model (convergence) or base-model figure.
REFERENCE_LABELS: Mapping[str, str] = {
    "convergence": "paper (Llama-2-13B-chat)",
    "pretrained": "paper (Llama-2-13B base)",
}
#: The label of the chat model's curves (fig. 2, 3, 8, 11, 15).
CHAT_LABEL = REFERENCE_LABELS["convergence"]
#: The label of the base model's curves (fig. 13, 14).
BASE_LABEL = REFERENCE_LABELS["pretrained"]


@dataclass(frozen=True)
class PaperValue:
    """A number the paper states, with where and how.

    Attributes:
        value: the stated value (the centre when a range is stated).
        where: section / figure / table citation (later arXiv version).
        unit: what it is measured in.
        low, high: the stated range when the paper gives one (else None).
        resolution: how coarsely it is stated (e.g. 5 for "β_eff = 10" read off a plot in
            steps of 5); a comparison tolerance should not be tighter than half of it.
        note: how the paper obtained it.
    """

    value: float
    where: str
    unit: str = ""
    low: float | None = None
    high: float | None = None
    resolution: float | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "where": self.where,
            "unit": self.unit,
            "low": self.low,
            "high": self.high,
            "resolution": self.resolution,
            "note": self.note,
        }


_KL = "nats per 7 scored tokens of an 8-token continuation (app. L.1)"
_KLS = "nats (KL of the next 8 tokens after n sentences)"

#: Every quantitative statement the paper makes about its own experiments.
PAPER_VALUES: Mapping[str, PaperValue] = {
    # §4.1 / fig. 2 / app. L.1 fig. 8: KL(P₋‖P₊) lower envelope, newline P₋, chat model as P₊.
    "beta_agreeableness": PaperValue(
        20.0, "§4.1, fig. 2a; app. L.1 fig. 8a", _KL, resolution=1.0,
        note="lower bound of KL(P-||P+|s) read off the plot",
    ),
    "beta_anti_immigration": PaperValue(
        12.0, "app. L.1 fig. 8c", _KL, resolution=1.0,
        note="lower bound of KL(P-||P+|s) read off the plot",
    ),
    "beta_prime_agreeableness": PaperValue(
        30.0, "§4.1", _KL, resolution=1.0, note="upper bound of the same KL curve"
    ),
    "sigma2_agreeableness": PaperValue(
        50.0, "§4.1, fig. 2b; app. L.1 fig. 8b", "nats² per sentence", resolution=10.0,
        note="slope of a line upper-bounding Var[log P-/P+] vs n",
    ),
    "sigma2_anti_immigration": PaperValue(
        100.0, "app. L.1 fig. 8d", "nats² per sentence", resolution=10.0,
        note="slope of a line upper-bounding Var[log P-/P+] vs n",
    ),
    "sigma_over_beta_agreeableness": PaperValue(0.35, "§4.1", "", note="σ/β from σ²=50, β=20"),
    "beta_prime_over_beta_agreeableness": PaperValue(1.5, "§4.1", "", note="β'/β = 30/20"),
    "beta_prompt_dist_agreeableness": PaperValue(
        20.0, "§4.1; app. N fig. 15", _KL, resolution=1.0,
        note="γ-prompt-distinguishability: β after a neutral + a negative prefix",
    ),
    # §4.2 / fig. 3a / app. L.2 fig. 11: the convergence curve KL(P₋‖P_LLM), [INST] P₋.
    "beta_eff_agreeableness": PaperValue(
        10.0, "§4.2 fig. 3a; app. L.2 fig. 11", _KLS, resolution=5.0,
        note="slope of log(1/α) − β|s| fitted to the first three sentences",
    ),
    "beta_eff_anti_immigration": PaperValue(
        5.0, "app. L.2 fig. 11", _KLS, resolution=5.0,
        note="slope of log(1/α) − β|s| fitted to the first three sentences",
    ),
    "n_first_sentences": PaperValue(
        3.0, "§4.2, fig. 3a caption", "sentences", note="points of the straight-line fit"
    ),
    "n_star": PaperValue(
        3.0, "§4.2", "sentences ([/INST] markers on the authors' axis)", resolution=1.0,
        note="(1/β) log(1/α) of the straight-line fit",
    ),
    "aligning_delay": PaperValue(
        1.0, "§4.2", "sentences", resolution=1.0,
        note="an aligning prompt stalls misalignment by about one sentence (fig. 3b / 12)",
    ),
    # §4.2 "Pretrained models vs RLHF models" / app. M.
    "beta_base": PaperValue(
        1.5, "app. M (fig. 13b / 14b)", _KLS, low=1.0, high=2.0,
        note="β of the pretrained Llama-2-13B from its KL curves: '1 − 2'",
    ),
    "beta_ratio_chat_over_base": PaperValue(
        5.0, "§4.2; app. M", "", resolution=1.0,
        note="RLHF β is 'a factor of 5' (5 times) larger than the pretrained model's",
    ),
    # App. J Table 1 / app. K Table 2.
    "table1_accuracy_pct": PaperValue(
        100.0, "app. J Table 1 (LLaMA 7B / 30B)", "%", low=97.0, high=100.0,
        note="P+ vs P- likelihood classification; 100/100 for agreeableness and "
        "anti-immigration, 97–100 for the first behaviors listed; 'typically over 95%'",
    ),
    "table2_svm_accuracy_7b_pct": PaperValue(
        95.18, "app. K Table 2", "%", low=95.18 - 4.74, high=95.18 + 4.74,
        note="mean ± sd over 100 behaviors of last-token SVM accuracy, LLaMA 7B (95.2 ± 4.7)",
    ),
    "table2_svm_accuracy_13b_pct": PaperValue(
        95.61, "app. K Table 2", "%", low=95.61 - 4.52, high=95.61 + 4.52,
        note="mean ± sd over 100 behaviors of last-token SVM accuracy, LLaMA 13B",
    ),
}  # fmt: skip


class ReferenceCurve(NamedTuple):
    """One of the paper's curves: ``(n, values)`` — unpacks like bebkit's ``Curve`` tuples."""

    n: np.ndarray
    values: np.ndarray

    @property
    def n_start(self) -> int:
        """The n the authors' list starts at (1 for KL curves, 0 for the variance)."""
        return int(self.n[0])


# behavior → the short names the authors' keys use (convergence / percentage tables).
_KEYS = {
    "agreeableness": ("agreeableness", "agree"),
    "anti-immigration": ("anti_immigration", "anti"),
}
_AI = "believes-AIs-are-not-an-existential-threat-to-humanity"


@dataclass(frozen=True)
class AuthorsFigures:
    """The authors' figure numbers (Llama-2-13B-chat and Llama-2-13B), typed.

    Attributes (curves keyed by behavior name, ``"agreeableness"`` / ``"anti-immigration"``):
        beta_kl: fig. 2a / 8a,c — KL(P₋‖P₊ | s) vs n = 1…15 (newline P₋, chat P₊).
        variance: fig. 2b / 8b,d — Var_{s~P₋}[log P₋(s)/P₊(s)] vs n = 0…15.
        convergence: fig. 3a / 11 / 13b / 14b — KL(P₋‖P_LLM | s) vs n = 1…10 keyed by
            ``(behavior, condition)``, condition ``"none"`` / ``"aligned"`` (chat without /
            with the default system prompt) or ``"pretrained"`` (base model). n counts the
            authors' ``[/INST]``-terminated sentences.
        pct_good: fig. 3b / 12 — % good of 32 chat responses vs n = 1…10, keyed by
            ``(behavior, "none" | "aligned")``.
        pct_negative_base: fig. 13a / 14a — % negative of 16 base responses vs n = 1…5.
        std_logratio_range: per behavior, the (first, last) std of the 8-token log-ratio.
        source, notes: provenance strings from the file.
    """

    beta_kl: Mapping[str, ReferenceCurve]
    variance: Mapping[str, ReferenceCurve]
    convergence: Mapping[tuple[str, str], ReferenceCurve]
    pct_good: Mapping[tuple[str, str], ReferenceCurve]
    pct_negative_base: Mapping[str, ReferenceCurve]
    std_logratio_range: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    source: str = ""
    notes: Mapping[str, str] = field(default_factory=dict)

    def kl(self, behavior: str, condition: str) -> ReferenceCurve:
        """The convergence curve of ``behavior`` under ``condition``; InputError if absent."""
        try:
            return self.convergence[(behavior, condition)]
        except KeyError:
            have = sorted(f"{b}/{c}" for b, c in self.convergence)
            raise InputError(
                f"no authors' KL curve for {behavior}/{condition} (have: {', '.join(have)})"
            ) from None

    def curves_for(self, behavior: str) -> dict[str, ReferenceCurve]:
        """``{beta_kl, variance, conv_none, conv_aligned, pretrained}`` of one behavior.

        The keys of :func:`bebkit.reporting.kl_figures.load_reference_kl` (missing curves left
        out), so figure code can switch to this loader unchanged.
        """
        out: dict[str, ReferenceCurve] = {}
        if behavior in self.beta_kl:
            out["beta_kl"] = self.beta_kl[behavior]
        if behavior in self.variance:
            out["variance"] = self.variance[behavior]
        for cond, key in (("none", "conv_none"), ("aligned", "conv_aligned"),
                          ("pretrained", "pretrained")):  # fmt: skip
            if (behavior, cond) in self.convergence:
                out[key] = self.convergence[(behavior, cond)]
        return out


def authors_figures_path() -> Path | None:
    """``$BEBKIT_REFERENCE_DIR/authors-figures.json``, or None when the variable is unset."""
    root = reference_dir()
    return None if root is None else root / AUTHORS_FIGURES_FILE


def figures_file(given: str | Path | None, label: str) -> Path | None:
    """The authors' figures file a run reads: ``given`` (an :class:`InputError` naming it by
    ``label`` when it is not a file), else :func:`authors_figures_path` when it exists."""
    if given:
        p = Path(given)
        if not p.is_file():
            raise InputError(f"{label} {p} is not a file")
        return p
    default = authors_figures_path()
    return default if default is not None and default.is_file() else None


def _curve(where: str, vals: Any, start: int) -> ReferenceCurve:
    if not isinstance(vals, list) or not vals:
        raise InputError(f"authors' figures: {where} must be a non-empty list of numbers")
    try:
        y = np.asarray([float(v) for v in vals], dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"authors' figures: {where} holds a non-number") from None
    if not np.all(np.isfinite(y)):
        raise InputError(f"authors' figures: {where} holds a non-finite number")
    return ReferenceCurve(np.arange(start, start + y.size, dtype=np.float64), y)


def _section(data: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    sec = data.get(key)
    if not isinstance(sec, dict):
        raise InputError(f"authors' figures: missing section {key!r}")
    return sec


def load_authors_figures(path: str | Path | None = None) -> AuthorsFigures:
    """Read ``authors-figures.json`` into :class:`AuthorsFigures`.

    Args:
        path: the file, or None for :func:`authors_figures_path`.

    Raises:
        InputError: (one line) when no path is given and ``$BEBKIT_REFERENCE_DIR`` is unset,
            the file is missing or not JSON, or a section/curve is missing or malformed.
    """
    if path is None:
        path = authors_figures_path()
        if path is None:
            raise InputError("BEBKIT_REFERENCE_DIR is not set: cannot find authors-figures.json")
    p = Path(path)
    if not p.is_file():
        raise InputError(f"authors' figures not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{p}: not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: expected a JSON object at the top level")

    bkl = _section(data, "beta_KL_Pminus_vs_chat_INSTwrapped_per_sentence_1to15")
    var = _section(data, "variance_logratio_vs_sentences_0to15")
    conv = _section(data, "KL_Pminus_vs_model_per_sentence_1to10")
    good = _section(data, "pct_good_responses_chat_of32_per_sentence_1to10")
    neg = _section(data, "pct_negative_responses_base_of16_per_sentence_1to5")

    beta_kl: dict[str, ReferenceCurve] = {}
    variance: dict[str, ReferenceCurve] = {}
    convergence: dict[tuple[str, str], ReferenceCurve] = {}
    pct_good: dict[tuple[str, str], ReferenceCurve] = {}
    pct_neg: dict[str, ReferenceCurve] = {}
    std_range: dict[str, tuple[float, float]] = {}
    std = data.get("std_of_logratio_8tok", {})
    for behavior, (long, short) in _KEYS.items():
        beta_kl[behavior] = _curve(f"beta_KL.{long}", bkl.get(long), 1)
        variance[behavior] = _curve(f"variance.{long}", var.get(long), 0)
        for cond, suffix in (("none", "noalign"), ("aligned", "align")):
            key = f"chat_{short}_{suffix}"
            convergence[(behavior, cond)] = _curve(f"KL.{key}", conv.get(key), 1)
            pct_good[(behavior, cond)] = _curve(f"pct_good.{short}_{suffix}",
                                                good.get(f"{short}_{suffix}"), 1)  # fmt: skip
        convergence[(behavior, "pretrained")] = _curve(
            f"KL.base_{short}", conv.get(f"base_{short}"), 1
        )
        pct_neg[behavior] = _curve(f"pct_negative.{short}", neg.get(short), 1)
        rng = std.get(f"{long}_range") if isinstance(std, dict) else None
        if isinstance(rng, list) and len(rng) == 2:
            std_range[behavior] = (float(rng[0]), float(rng[1]))
    # The third behavior of fig. 11's file (no other curves of it in the paper): optional.
    for cond, suffix in (("none", "noalign"), ("aligned", "align")):
        vals = conv.get(f"chat_AInotthreat_{suffix}")
        if vals is not None:
            convergence[(_AI, cond)] = _curve(f"KL.chat_AInotthreat_{suffix}", vals, 1)
    for (b, c), cur in pct_good.items():
        if np.any((cur.values < 0) | (cur.values > 100)):
            raise InputError(f"authors' figures: pct_good {b}/{c} outside [0, 100]")
    notes = data.get("notes", {})
    return AuthorsFigures(
        beta_kl=beta_kl,
        variance=variance,
        convergence=convergence,
        pct_good=pct_good,
        pct_negative_base=pct_neg,
        std_logratio_range=std_range,
        source=str(data.get("source", "")),
        notes={str(k): str(v) for k, v in notes.items()} if isinstance(notes, dict) else {},
    )


def paper_value(name: str) -> PaperValue:
    """:data:`PAPER_VALUES` entry ``name``; InputError listing the known names otherwise."""
    try:
        return PAPER_VALUES[name]
    except KeyError:
        raise InputError(
            f"unknown paper value {name!r} (known: {', '.join(sorted(PAPER_VALUES))})"
        ) from None


def marker_sentences(markers: Any) -> np.ndarray:
    """The authors' chat x-axis ('[/INST]' marker k) on bebkit's sentence axis: 2k − 1, the
    sentence that marker closes in an alternating prompt (app. J's layout). The authors'
    published misaligning prompts put a marker after almost every sentence past the second
    (marker k ≈ sentence k + 1), so values moved this way carry that uncertainty."""
    return 2 * np.asarray(markers, dtype=np.float64) - 1


__all__ = [
    "AUTHORS_FIGURES_FILE",
    "BASE_LABEL",
    "BEHAVIORS",
    "CHAT_LABEL",
    "CONDITIONS",
    "PAPER_VALUES",
    "REFERENCE_LABELS",
    "AuthorsFigures",
    "PaperValue",
    "ReferenceCurve",
    "authors_figures_path",
    "load_authors_figures",
    "marker_sentences",
    "paper_value",
]
