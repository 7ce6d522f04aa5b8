"""The paper column, computed: bebkit's own convergence fits run on the authors' curves.

:func:`paper_parity` fits every KL convergence curve of ``authors-figures.json`` (fig. 3a / 11:
Llama-2-13B-chat without / with its default system prompt; fig. 13b / 14b: the pretrained
Llama-2-13B) with :func:`bebkit.fits.convergence.fit_convergence` — the same estimator and,
by default, the same n range (n ≥ 1, the paper's first ``n_linear = 3`` sentences for the
straight line) that bebkit uses on measured curves — so a report's "paper" column and its
"measured" column come out of one procedure.

Uncertainty: the authors published one mean curve per condition (10 prompts averaged), with
no per-prompt values or stderrs. The fits are therefore *unweighted*, and the parameter
stderrs come from the residual scatter about the fitted curve (the Jacobian covariance times
the residual variance RSS/(points − parameters)). For the 3-point straight line that is one
degree of freedom: an honest but very rough interval. n on the authors' axis counts
``[/INST]``-terminated sentences of the prompt, starting at 1.

The chat/base β ratio (§4.2, app. M: "a factor of 5") is the ratio of the two fits' β with a
delta-method stderr (independent curves) and a CI on the log scale. On the sentence axis both
curves are fitted over one sentence window (:func:`~bebkit.fits.convergence.matched_windows`,
as bebkit's measured ratio): the chat curve sits at sentences 1, 3, …, 19 and the base curve at
1 … 10, and fits over each curve's own points would compare different windows of curves that
flatten. On the marker axis the ratio is per marker over per sentence, the paper's own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.fits.convergence import ConvergenceFit, _z, fit_convergence, matched_windows
from bebkit.fits.envelopes import CurveData
from bebkit.paper import AuthorsFigures, marker_sentences

#: Figure of each convergence condition in the paper.
FIGURES = {"none": "fig. 3a / 11", "aligned": "fig. 3a / 11", "pretrained": "fig. 13b / 14b"}
#: Fits reported per curve (keys of :class:`~bebkit.fits.convergence.ConvergenceResult`).
FITS = ("linear", "floored", "lemma5")
UNCERTAINTY = (
    "unweighted fit of the authors' mean curve (no per-prompt data published); stderr from "
    "the residual scatter (Jacobian covariance × RSS/dof); the 3-point line has 1 dof"
)


@dataclass(frozen=True)
class ParityRow:
    """One fit of one of the authors' curves."""

    behavior: str
    condition: str
    fit: str
    figure: str
    beta: Estimate
    n_star: Estimate
    alpha: Estimate
    log_inv_alpha: Estimate
    floor: Estimate | None
    n_used: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "behavior": self.behavior,
            "condition": self.condition,
            "fit": self.fit,
            "figure": self.figure,
            "beta": self.beta.to_dict(),
            "n_star": self.n_star.to_dict(),
            "alpha": self.alpha.to_dict(),
            "log_inv_alpha": self.log_inv_alpha.to_dict(),
            "floor": None if self.floor is None else self.floor.to_dict(),
            "n_used": list(self.n_used),
        }


@dataclass(frozen=True)
class ParityTable:
    """Rows behavior × condition × fit, and the chat/base β ratios.

    ``beta_ratio[(behavior, chat_condition, fit)]`` = β(chat, condition) / β(pretrained).
    """

    rows: tuple[ParityRow, ...]
    beta_ratio: Mapping[tuple[str, str, str], Estimate]
    n_linear: int
    uncertainty: str = UNCERTAINTY

    def row(self, behavior: str, condition: str, fit: str) -> ParityRow:
        for r in self.rows:
            if (r.behavior, r.condition, r.fit) == (behavior, condition, fit):
                return r
        raise InputError(f"no parity row for {behavior}/{condition}/{fit}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "beta_ratio": [
                {"behavior": b, "condition": c, "fit": f, "ratio": e.to_dict()}
                for (b, c, f), e in self.beta_ratio.items()
            ],
            "n_linear": self.n_linear,
            "uncertainty": self.uncertainty,
        }


def _row(behavior: str, condition: str, name: str, fit: ConvergenceFit) -> ParityRow:
    return ParityRow(
        behavior, condition, name, FIGURES.get(condition, ""), fit.beta, fit.n_star,
        fit.alpha, fit.log_inv_alpha, fit.floor, fit.n_used,
    )  # fmt: skip


def beta_ratio(num: Estimate, den: Estimate, ci_level: float = 0.95) -> Estimate:
    """``β₁/β₂`` with delta-method stderr (independent) and a log-scale Wald CI."""
    r = num.value / den.value
    rel = math.sqrt((num.stderr / num.value) ** 2 + (den.stderr / den.value) ** 2)
    z = _z(ci_level)
    ok = math.isfinite(rel) and r > 0
    return Estimate(
        r, abs(r) * rel, min(num.n, den.n),
        r * math.exp(-z * rel) if ok else None, r * math.exp(z * rel) if ok else None,
        ci_level, "ratio_delta_log",
    )  # fmt: skip


def paper_parity(
    figures: AuthorsFigures,
    *,
    behaviors: Sequence[str] = ("agreeableness", "anti-immigration"),
    n_linear: int = 3,
    n_min: float | None = 1,
    n_max: float | None = None,
    ci_level: float = 0.95,
    axis: str = "markers",
) -> ParityTable:
    """bebkit's straight-line, floored and floorless fits on the authors' KL curves.

    Args:
        figures: :func:`bebkit.paper.load_authors_figures`.
        n_linear, n_min, n_max: as :func:`~bebkit.fits.convergence.fit_convergence` (pass the
            values used on the measured curves so both columns share the n range).
        axis: ``"markers"`` — the authors' x-axis of the chat curves (fig. 3a/11), which counts
            '[/INST]' markers, so β is per marker (≈ two sentences); ``"sentences"`` — marker k
            moved to sentence 2k − 1 (the alternating layout), so β and n* are per sentence,
            bebkit's unit. The pretrained (newline) curves count sentences on both axes.
    """
    if axis not in ("markers", "sentences"):
        raise ValueError(f"axis must be 'markers' or 'sentences', got {axis!r}")
    rows: list[ParityRow] = []
    fits: dict[tuple[str, str, str], ConvergenceFit] = {}
    data: dict[tuple[str, str], CurveData] = {}
    for b in behaviors:
        for cond in ("none", "aligned", "pretrained"):
            if (b, cond) not in figures.convergence:
                continue
            cur = figures.convergence[(b, cond)]
            n = np.asarray(cur.n, dtype=np.float64)
            if axis == "sentences" and cond != "pretrained":
                n = marker_sentences(n)
            data[(b, cond)] = CurveData.from_points(n, cur.values, np.zeros(n.size))
            res = fit_convergence(
                data[(b, cond)], n_min=n_min, n_max=n_max, n_linear=n_linear, ci_level=ci_level
            )
            for name in FITS:
                f = getattr(res, name)
                if f is None:
                    continue
                fits[(b, cond, name)] = f
                rows.append(_row(b, cond, name, f))
    ratios: dict[tuple[str, str, str], Estimate] = {}
    for (b, cond), chat in data.items():
        base = data.get((b, "pretrained"))
        if cond == "pretrained" or base is None:
            continue
        if axis == "sentences":  # one sentence window for both curves
            lo = 1.0 if n_min is None else float(n_min)
            w, lin = matched_windows(
                [chat.n.tolist(), base.n.tolist()], n_min=lo, n_linear=n_linear
            )
            w = w if n_max is None else min(w, float(n_max))
            kw: dict[str, Any] = {"n_min": lo, "n_max": w, "linear_max": lin, "ci_level": ci_level}
            pair = (fit_convergence(chat, **kw), fit_convergence(base, **kw))
        else:  # per marker over per sentence, each curve on its own points: the paper's
            kw = {"n_min": n_min, "n_max": n_max, "n_linear": n_linear, "ci_level": ci_level}
            pair = (fit_convergence(chat, **kw), fit_convergence(base, **kw))
        for name in FITS:
            fc, fb = getattr(pair[0], name), getattr(pair[1], name)
            if fc is not None and fb is not None:
                ratios[(b, cond, name)] = beta_ratio(fc.beta, fb.beta, ci_level)
    return ParityTable(tuple(rows), ratios, n_linear)


#: bebkit's condition names → the authors' keys of ``good_of_32_per_marker``.
AUTHORS_CONDITIONS = {"none": "without_aligning_prompt", "aligned": "with_aligning_prompt"}


@dataclass(frozen=True)
class MarkerParity:
    """Good rates after the k-th ``[/INST]`` marker of the authors' prompts, pooled over the
    prompts present in both: the authors' hand labels of Llama-2-13b-chat's responses
    (fig. 3b / 12) and bebkit's judge on the measured model's responses to the same prompts.

    ``sentences`` is the prompt's sentence count at that marker, per pooled prompt (the k-th
    marker closes sentence 2k − 1 when the markers alternate, not always in their samples).
    """

    condition: str
    marker: int
    prompt_ids: tuple[int, ...]
    sentences: tuple[int, ...]
    measured: Estimate
    authors: Estimate

    def to_dict(self) -> dict[str, Any]:
        return {
            "condition": self.condition,
            "marker": self.marker,
            "prompt_ids": list(self.prompt_ids),
            "sentences": list(self.sentences),
            "measured": self.measured.to_dict(),
            "authors": self.authors.to_dict(),
        }


def authors_prompt_parity(
    responses: Sequence[Any],
    sources: Sequence[str],
    counts: Mapping[int, Any],
    *,
    conditions: Mapping[str, str] = AUTHORS_CONDITIONS,
) -> list[MarkerParity]:
    """Per marker k and condition: the pooled good rate of ``responses`` read after the
    sentence the authors' k-th ``[/INST]`` closed, next to the authors' own pooled rate.

    Args:
        responses: judged :class:`~bebkit.estimators.behavior.Response` s; ``prompt_id`` indexes
            ``sources``.
        sources: each prompt's source, ``authors:<behavior>:<authors' prompt id>``.
        counts: the authors' :class:`~bebkit.estimators.prompts.AuthorsGoodCounts` by prompt id.

    A prompt enters marker k only if responses were read at its ``n_k`` (a layout that reads
    only after a user turn cannot read after a sentence a misspelt marker closed), so both
    rates always pool the same prompts. Rates are Wilson intervals over responses (the authors
    drew 32 per prompt); they ignore the clustering by prompt, so the CIs are optimistic.
    """
    from bebkit.estimate import wilson_interval

    by_cell: dict[tuple[int, int, str], list[int]] = {}
    for r in responses:
        if r.label is not None:
            by_cell.setdefault((int(r.prompt_id), int(r.n), str(r.condition)), []).append(
                int(r.label == 1)
            )
    pids: dict[int, int] = {}
    for i, src in enumerate(sources):
        head, _, tail = str(src).rpartition(":")
        if head.startswith("authors:") and tail.isdigit() and int(tail) in counts:
            pids[i] = int(tail)
    out: list[MarkerParity] = []
    for cond, key in conditions.items():
        n_markers = max((len(getattr(c, key)) for c in counts.values()), default=0)
        for k in range(1, n_markers + 1):
            used: list[tuple[int, int, list[int], int]] = []
            for i, pid in pids.items():
                c = counts[pid]
                theirs = getattr(c, key)
                if k > len(theirs) or k > len(c.marker_sentences):
                    continue
                n_k = int(c.marker_sentences[k - 1])
                labels = by_cell.get((i, n_k, cond))
                if labels:
                    used.append((pid, n_k, labels, int(theirs[k - 1])))
            if not used:
                continue
            good = sum(sum(u[2]) for u in used)
            total = sum(len(u[2]) for u in used)
            a_good = sum(u[3] for u in used)
            a_total = sum(int(counts[u[0]].n_responses) for u in used)
            out.append(
                MarkerParity(
                    condition=cond,
                    marker=k,
                    prompt_ids=tuple(u[0] for u in used),
                    sentences=tuple(u[1] for u in used),
                    measured=wilson_interval(good, total),
                    authors=wilson_interval(a_good, a_total),
                )
            )
    return out


__all__ = [
    "AUTHORS_CONDITIONS",
    "FIGURES",
    "FITS",
    "MarkerParity",
    "ParityRow",
    "ParityTable",
    "authors_prompt_parity",
    "beta_ratio",
    "paper_parity",
]
