"""The run report: ``report.md`` and a self-contained ``report.html``, rebuilt from disk alone.

Reads ``RUN_DIR/record.json`` (written by :func:`bebkit.pipeline.reproduce.reproduce`) and the
stage folders it names; never loads a model. The page is rendered with Jinja2 templates
(``bebkit/reporting/templates``): HTML with autoescape, figures inlined as data URIs, no
script and no external load; markdown for READMEs. Model text (responses, sampled prompts) is
escaped in both and shown only behind a content warning.

Order of the report: the answer first (per model and behavior: misaligning sentences until
misbehaviour, the aligning prompt's delay, β — each next to the paper), then measured vs the
paper grouped by experiment, the methods written from the record, and one section per stage.
:func:`build_comparison` puts several runs side by side in one page.

The paper column: bebkit's own fits on the authors' curves (:func:`bebkit.fits.parity.
paper_parity`, Lemma 7 fits of their % good curves) when the authors' figures file is
available, the paper's stated numbers (:data:`bebkit.paper.PAPER_VALUES`, marked "typed from
the paper") where no curve exists.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bebkit.errors import InputError
from bebkit.io import atomic_open
from bebkit.reporting.report_render import CONDITIONS as _CONDITIONS
from bebkit.reporting.report_render import FIT_LABEL as _FIT_LABEL
from bebkit.reporting.report_render import est_dict as _est_dict
from bebkit.reporting.report_render import fmt_est, md_text, render
from bebkit.reporting.report_render import fmt_g as _g
from bebkit.reporting.report_render import get_path as _get
from bebkit.reporting.report_render import img_data_uri as _img_data_uri
from bebkit.reporting.report_render import is_num as _num
from bebkit.reporting.report_render import sample_responses as _samples
from bebkit.reporting.report_render import stage_tables as _stage_tables

REDRAWN_DIR = "figures"

CONTENT_WARNING = (
    "Content warning: the sample responses below are raw model outputs generated after "
    "adversarial (misaligning) prompts. They may be rude, hostile or offensive; they are "
    "shown, escaped, only to document what the judge scored."
)

CI_NOTE = "Numbers are value [95 % CI]; n = misaligning sentences of the prompt."

#: (stage prefix, title, paper reference) of every experiment, in pipeline order.
STAGE_INFO: tuple[tuple[str, str, str], ...] = (
    ("components", "LoRA components P₊/P₋ and Table 1", "app. J, Table 1"),
    ("probes", "Hidden-state probes (Table 2)", "app. K, Table 2, fig. 5"),
    ("beta-sigma", "β, β′ and σ² of P₋ vs P₊", "§4.1, fig. 2 / 8"),
    ("prompt-dist", "Prompt distinguishability β_prompt", "app. N, fig. 15"),
    ("convergence", "KL convergence to P₋ (Lemma 5)", "§4.2, fig. 3a / 11"),
    ("misalign", "Behavior expectation vs prompt length (Lemma 7)", "§4.2, fig. 3b / 12"),
    ("pretrained", "Pretrained model comparison", "§4.2, app. M, fig. 13 / 14"),
)

FIGURE_CAPTIONS = {
    "beta_sigma": "(a) KL(P₋‖P₊ | s₁…sₙ) vs n with the lower (β) and upper (β′) envelopes; "
    "(b) Var[log P₋/P₊] vs n with the line nσ². Error bars: 95 % CIs.",
    "prompt_dist": "KL(P₋‖P₊) along the neutral prefix s₀, its undesired sentence and the "
    "sentences of s ~ P₋(·|s₀); β_prompt is the lower envelope from the undesired sentence on.",
    "convergence": "KL(P₋‖P_LLM | s₁…sₙ) vs misaligning sentences n, without and with the "
    "aligning prompt; the floored Lemma 5 fit that the reported n* comes from (dash-dot), "
    "the plain Lemma 5 fit (dashed) and the paper's "
    "straight line on the first sentences (dotted); the paper's curves where available. "
    "Error bars: 95 % CIs.",
    "pretrained": "KL(P₋‖P_pretrained | s₁…sₙ) vs n on the base model with the floored and "
    "plain Lemma 5 fits and the straight line; the paper's base-model curve where available.",
    "misalign": "% good responses vs misaligning sentences n (Wilson 95 % bands), without and "
    "with the aligning prompt, fitted Lemma 7 reverse sigmoids, the paper's curves and the "
    "control (prompts from P₊, grey), which should stay flat.",
    "judges": "The same responses under the main judge and every second judge: % good after "
    "P₋'s prompts (solid) and after the P₊ control (dotted); a decline that only one judge "
    "sees is that judge's, not the model's.",
    "authors_prompts": "% good after each of the authors' '[/INST]' markers on their own "
    "prompts: this run's judge on this model next to the authors' hand labels of "
    "Llama-2-13b-chat on the same prompts.",
}

_PROVENANCE_KEYS = {"model", "preset", "components", "threads"}
_PAPER_MODEL = "Llama-2-13B-chat"
_PAPER_BEHAVIORS = ("agreeableness", "anti-immigration")


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _est_obj(v: Any) -> dict[str, Any]:
    """An Estimate (dataclass) as its dict; dicts pass through."""
    return v.to_dict() if hasattr(v, "to_dict") else dict(v)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"{path} is not valid JSON") from None
    return data if isinstance(data, dict) else {}


def _read_record(run: Path) -> dict[str, Any]:
    rec_path = run / "record.json"
    if not rec_path.is_file():
        raise InputError(f"{run} has no record.json (not a bebkit reproduce run directory)")
    record = _read_json(rec_path)
    if not isinstance(record.get("results"), dict):
        raise InputError(f"{rec_path} is not a bebkit run record (no results)")
    return record


# --------------------------------------------------------------------------------------------
# The paper column
# --------------------------------------------------------------------------------------------


@dataclass
class PaperSide:
    """The paper's values for the report: computed from the authors' curves when possible."""

    path: Path | None = None
    error: str | None = None
    parity: Any = None  # bebkit.fits.parity.ParityTable
    figures: Any = None  # bebkit.paper.AuthorsFigures
    _sigmoids: dict[tuple[str, str], Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> PaperSide:
        if path is None:
            return cls()
        from bebkit.fits.parity import paper_parity
        from bebkit.paper import load_authors_figures

        try:
            figs = load_authors_figures(path)
            # per sentence, as bebkit's measured curves: the authors' chat x-axis counts
            # '[/INST]' markers (marker k = sentence 2k - 1 of an alternating prompt)
            parity = paper_parity(figs, axis="sentences")
            return cls(path=path, parity=parity, figures=figs)
        except (InputError, ArithmeticError, ValueError) as exc:
            return cls(path=path, error=str(exc))

    def conv(self, behavior: str, condition: str, fit: str) -> Any:
        """The parity row of the authors' KL curve, or None."""
        if self.parity is None:
            return None
        try:
            return self.parity.row(behavior, condition, fit)
        except InputError:
            return None

    def ratio(self, behavior: str, condition: str, fit: str) -> Any:
        if self.parity is None:
            return None
        return self.parity.beta_ratio.get((behavior, condition, fit))

    def sigmoid(self, behavior: str, condition: str) -> Any:
        """bebkit's Lemma 7 fit of the authors' % good curve on the SENTENCE axis of bebkit's
        measured curves: marker k at sentence 2k − 1 (as the KL parity); each point pools
        10 prompts × 32 responses (app. L.3; 98.4 % = 315/320), taken as independent — the
        per-prompt counts of these curves are not published."""
        if self.figures is None or (behavior, condition) not in self.figures.pct_good:
            return None
        key = (behavior, condition)
        if key not in self._sigmoids:
            from bebkit.fits.sigmoid import fit_sigmoid
            from bebkit.paper import marker_sentences

            cur = self.figures.pct_good[key]
            good = [round(v * PAPER_RESPONSES_PER_POINT / 100) for v in cur.values]
            x = marker_sentences(cur.n)
            try:
                self._sigmoids[key] = fit_sigmoid(x, good, [PAPER_RESPONSES_PER_POINT] * len(good))
            except (InputError, ArithmeticError, ValueError):
                self._sigmoids[key] = None
        return self._sigmoids[key]

    def delay(self, behavior: str) -> dict[str, Any] | None:
        """The paper's aligning-prompt delay on the sentence axis: the difference of its two
        fitted centres (aligned − none), Wald CI treating them as independent."""
        s1, s2 = self.sigmoid(behavior, "none"), self.sigmoid(behavior, "aligned")
        if s1 is None or s2 is None:
            return None
        d = s2.centre.value - s1.centre.value
        se = math.hypot(s1.centre.stderr, s2.centre.stderr)
        ok = math.isfinite(se)
        return {"value": d, "stderr": se, "ci_low": d - 1.96 * se if ok else None,
                "ci_high": d + 1.96 * se if ok else None}  # fmt: skip

    def pct_good(self, behavior: str, condition: str) -> Any:
        if self.figures is None:
            return None
        return self.figures.pct_good.get((behavior, condition))


def paper_figures_path(
    record: Mapping[str, Any], override: str | Path | None = None
) -> Path | None:
    """The authors' figures file: ``override``, the record's ``paper_figures``, else
    ``$BEBKIT_REFERENCE_DIR/authors-figures.json`` (None when none exists)."""
    from bebkit.paper import authors_figures_path

    for cand in (override, _get(record, "config", "paper_figures")):
        if cand:
            p = Path(cand)
            if p.is_file():
                return p
    p2 = authors_figures_path()
    return p2 if p2 is not None and p2.is_file() else None


def _typed(name: str) -> tuple[str, str]:
    """``(value text, source)`` of a stated paper value (typed from the paper)."""
    from bebkit.paper import PAPER_VALUES

    pv = PAPER_VALUES.get(name)
    if pv is None:
        return "—", ""
    if pv.low is not None and pv.high is not None:
        txt = f"{_g(pv.value)} ({_g(pv.low)}–{_g(pv.high)})"
    else:
        txt = f"≈ {_g(pv.value)}"
    src = f"typed from the paper ({pv.where})"
    if name in _PER_MARKER:
        # the authors' chat x-axis counts '[/INST]' markers (≈ 2 sentences): not per sentence
        src += "; per '[/INST]' marker, not bebkit's per-sentence unit — not comparable"
    return txt, src


#: Responses behind each point of the authors' % good curves (10 prompts × 32, app. L.3).
PAPER_RESPONSES_PER_POINT = 320
#: Why the paper's sentence axis (marker k = sentence 2k − 1) is uncertain.
_MARKER_AXIS_CAVEAT = (
    "the paper's x-axis counts '[/INST]' markers, placed here at sentence 2k − 1 (the "
    "alternating layout); the authors' published prompts put a marker after almost every "
    "sentence past the second (marker k ≈ sentence k + 1), so its sentence value is uncertain"
)

_SAMPLING_CAVEAT = (
    "responses sampled at temperature 1 without truncation vs the authors' top-k 50 (HF "
    "generate's default)"
)

#: Stated paper values measured on the authors' marker axis (their fig. 3 / 11 / app. M ratio).
_PER_MARKER = frozenset(
    {"n_star", "beta_eff_agreeableness", "beta_eff_anti_immigration", "beta_ratio_chat_over_base"}
)


def _paper_behavior(b: str) -> tuple[str, bool]:
    """The paper's behavior to compare ``b`` with, and whether it is the same behavior."""
    return (b, True) if b in _PAPER_BEHAVIORS else ("agreeableness", False)


def _bkey(b: str) -> str:
    return b.replace("-", "_")


# --------------------------------------------------------------------------------------------
# Reading a run
# --------------------------------------------------------------------------------------------


@dataclass
class Run:
    """A run directory read from disk (record, stage records)."""

    path: Path
    record: dict[str, Any]
    paper: PaperSide

    @property
    def config(self) -> dict[str, Any]:
        c = self.record.get("config")
        return c if isinstance(c, dict) else {}

    @property
    def stages(self) -> dict[str, Any]:
        s = _get(self.record, "results", "stages")
        return s if isinstance(s, dict) else {}

    @property
    def behaviors(self) -> list[str]:
        bs = list(self.config.get("behaviors") or [])
        if not bs:  # derive from stage names
            for name in self.stages:
                for prefix, _, _ in STAGE_INFO:
                    if name.startswith(prefix + "-"):
                        b = name[len(prefix) + 1 :]
                        if b not in bs:
                            bs.append(b)
        return bs

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.path.name)

    def result(self, prefix: str, behavior: str | None = None) -> dict[str, Any] | None:
        st = self.stages.get(prefix if behavior is None else f"{prefix}-{behavior}")
        r = _get(st, "result")
        return r if isinstance(r, dict) and r else None

    def folder(self, stage: str) -> Path:
        f = Path(str(_get(self.stages, stage, "folder") or ""))
        return f if f.is_absolute() else self.path / f

    def stage_record(self, stage: str) -> dict[str, Any]:
        p = self.folder(stage) / "record.json"
        if not p.is_file():
            return {}
        try:
            return _read_json(p)
        except InputError:
            return {}

    def stage_units(self, stage: str) -> str:
        """Which CPUs computed the stage's stored units ("" when it stored none): a stage
        resumed on another machine reuses units computed there (:mod:`bebkit.checkpoint`)."""
        p = self.folder(stage) / "result.json"
        try:
            units = _read_json(p).get("units") if p.is_file() else None
        except InputError:
            units = None
        machines = (units or {}).get("machines") or {}
        return "; ".join(f"{int(n)} on {cpu}" for cpu, n in machines.items())

    def figures(self, stage: str) -> list[Path]:
        """The stage's PNG figures (a redrawn one, with the paper's curves, replaces its own)."""
        folder = self.folder(stage)
        out: list[Path] = []
        for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            # under the stage's key: another config's redraw of the same stage is never used
            redrawn = self.path / REDRAWN_DIR / stage / folder.name / png.name
            out.append(redrawn if redrawn.is_file() else png)
        return out


def load_run(
    run_dir: str | Path,
    paper_figures: str | Path | None = None,
    *,
    record: dict[str, Any] | None = None,
) -> Run:
    """The run in ``run_dir``; ``record`` replaces its ``record.json`` (a partial run's)."""
    run = Path(run_dir)
    record = _read_record(run) if record is None else record
    return Run(run, record, PaperSide.load(paper_figures_path(record, paper_figures)))


# --------------------------------------------------------------------------------------------
# The answer: one sentence each, per model and behavior
# --------------------------------------------------------------------------------------------


def _kl_fit(conv: Mapping[str, Any] | None, cond: str) -> tuple[str, Mapping[str, Any] | None]:
    """(fit name, fit) of a convergence result's condition: ``floored`` when present."""
    fits = _get(conv, "fits", cond)
    if not isinstance(fits, Mapping):
        return "", None
    for name in ("floored", "lemma5"):
        if isinstance(fits.get(name), Mapping):
            return name, fits[name]
    return "", None


def _range(ns: Any) -> tuple[float, float] | None:
    if isinstance(ns, list) and ns and all(_num(x) for x in ns):
        return float(min(ns)), float(max(ns))
    return None


def _n_range_text(r: tuple[float, float]) -> str:
    return f"n = {_g(r[0])}–{_g(r[1])}"


def judge_status(run: Run, b: str) -> list[dict[str, str]]:
    """The judge of behavior ``b``'s misalign stage and its validation status
    (:mod:`bebkit.judge.status`): the stage record's, else from the judge records its settings
    name, else "not validated on human labels" — never presented as validated by default."""
    from bebkit.judge.status import NOT_VALIDATED, load_judge_records, validation_status
    from bebkit.pipeline.experiments_common import training_format

    r = run.result("misalign", b)
    if r is None or not r.get("judge"):
        return []
    st = r.get("judge_validation")
    if not isinstance(st, Mapping):  # a stage cached before records carried it
        fmt = training_format(str(r["format"])) if r.get("format") else None
        try:
            records = load_judge_records(_settings(run, f"misalign-{b}").get("judge_eval"))
            st = validation_status(str(r["judge"]), b, records, fmt=fmt)
        except InputError:
            st = {}
    return [{"judge": str(r["judge"]), "components": str(r.get("judge_components") or "shared"),
             "status": str(st.get("summary") or NOT_VALIDATED),
             "control": control_text(r.get("control")),
             "second": second_judges_text(r.get("second_judges"))}]  # fmt: skip


def _theorem2_text(t2: Any) -> str:
    """Misalign's Theorem 2 upper bound on the misaligning length with the aligning prompt,
    next to the measured centre: '' when the record has no bound."""
    if not isinstance(t2, Mapping) or not _num(t2.get("length_bound")):
        return ""
    text = f"Theorem 2 upper bound on the length with the aligning prompt: {_g(t2['length_bound'])}"
    centre = t2.get("measured_centre_aligned")
    if isinstance(centre, int | float) and math.isfinite(centre):
        holds = t2.get("bound_holds")
        verdict = (
            "within the bound" if holds is True else "BEYOND the bound" if holds is False else ""
        )
        text += f" sentences; measured centre {_g(float(centre))}" + (
            f", {verdict}" if verdict else ""
        )
    else:
        text += " sentences"
    return text


def control_text(ctl: Any) -> str:
    """One line on the control curve (prompts from P₊, which theory says should stay flat)."""
    if not isinstance(ctl, Mapping) or not isinstance(ctl.get("drop_first_to_last"), Mapping):
        return "no control curve in this run"
    verdict = (
        "DECLINES: part of the measured decline is length or register, not behavior"
        if ctl.get("declines")
        else "flat within its CI"
    )
    drop = fmt_est(ctl["drop_first_to_last"], percent=True)
    return (
        f"control (prompts from P₊): good rate at the first minus the last n = {drop} "
        f"(percentage points) — {verdict}"
    )


def second_judges_text(ops: Any) -> str:
    """One line per second judge: agreement with the main judge and its own control drop."""
    if not isinstance(ops, Mapping) or not ops:
        return ""
    parts = []
    for name, op in ops.items():
        kappa = fmt_est(_get(op, "agreement_with_main", "kappa"))
        ctl = op.get("control") if isinstance(op, Mapping) else None
        tail = ""
        if isinstance(ctl, Mapping) and isinstance(ctl.get("drop_first_to_last"), Mapping):
            tail = f", its control drop {fmt_est(ctl['drop_first_to_last'], percent=True)}"
        parts.append(f"{name}: κ with the main judge {kappa}{tail}")
    return "second judges on the same responses — " + "; ".join(parts)


def answer_items(run: Run, b: str) -> list[dict[str, str]]:
    """The three headline statements of behavior ``b``: ``{what, ours, paper, short, paper_short}``."""
    conv = run.result("convergence", b)
    mis = run.result("misalign", b)
    bs = run.result("beta-sigma", b)
    pb, same = _paper_behavior(b)
    pb_note = "" if same else f" (the paper's {pb}; the paper has no {b})"
    paper = run.paper
    items: list[dict[str, str]] = []

    # 1. Misaligning sentences until misbehaviour.
    fit_name, fit = _kl_fit(conv, "none")
    parts: list[str] = []
    short: list[str] = []
    if fit is not None:
        parts.append(
            f"KL(P₋‖P_LLM) reaches its midpoint after n* = {fmt_est(fit.get('n_star'))} "
            f"misaligning sentences ({_FIT_LABEL[fit_name]}, no aligning prompt)"
        )
        short.append(f"n* {fmt_est(fit.get('n_star'))}")
    centre = _get(mis, "sigmoid", "none")
    rng = _range(_get(mis, "curves", "none", "n"))
    if isinstance(centre, Mapping):
        c = _est_dict(centre.get("centre"))
        if not centre.get("decays"):
            parts.append(
                "the % good curve shows no significant decay, so its centre n½ is not identified"
                + (f" within the measured {_n_range_text(rng)}" if rng else "")
            )
            short.append("n½ not identified")
        elif c is not None:
            where = ""
            if rng:
                inside = rng[0] <= c["value"] <= rng[1]
                where = (
                    f", inside the measured {_n_range_text(rng)}"
                    if inside
                    else f", outside the measured {_n_range_text(rng)} (extrapolated)"
                )
            parts.append(
                f"half of the responses are bad after n½ = {fmt_est(c)} sentences "
                f"(Lemma 7 behavior centre{where})"
            )
            short.append(f"n½ {fmt_est(c)}" + (" (in range)" if "inside" in where else ""))
    ours = "; ".join(parts) + "." if parts else "not measured in this run."
    pp: list[str] = []
    pshort = ""
    for name in ("floored", "lemma5"):
        row = paper.conv(pb, "none", name)
        if row is not None:
            pp.append(
                f"n* = {fmt_est(_est_obj(row.n_star))} (bebkit's {_FIT_LABEL[name]} on the "
                f"authors' {row.figure} curve{pb_note})"
            )
            pshort = f"n* {fmt_est(_est_obj(row.n_star))}"
            break
    sg = paper.sigmoid(pb, "none")
    if sg is not None:
        pp.append(
            f"n½ = {fmt_est(_est_obj(sg.centre))} (Lemma 7 fit of the authors' fig. 12 curve, "
            "marker k at sentence 2k − 1)"
        )
    t, src = _typed("n_star")
    pp.append(f"stated {t}, {src}")
    items.append(
        {
            "what": "Misaligning sentences until misbehaviour",
            "ours": ours,
            "paper": "; ".join(pp) + ".",
            "short": ", ".join(short) or "—",
            "paper_short": pshort or f"{t} (typed)",
        }
    )

    # 2. The aligning prompt's delay.
    delay = _est_dict(_get(mis, "aligning_delay"))
    if delay is not None:
        ours = f"the aligning prompt moves the behavior centre by Δn½ = {fmt_est(delay)} sentences"
        t2 = _theorem2_text(_get(mis, "theorem2"))
        if t2:
            ours += f" ({t2})"
        ours += "."
        dshort = fmt_est(delay)
    elif (
        mis is not None
        and _get(mis, "aligning_delay") is None
        and len(_get(mis, "curves") or {}) > 1
    ):
        ours = "the delay is not identified (a condition shows no significant decay)."
        dshort = "not identified"
    else:
        ours, dshort = "not measured in this run.", "—"
    pp = []
    pdshort = ""
    pdelay = paper.delay(pb)
    if pdelay is not None:
        pp.append(
            f"Δn½ = {fmt_est(pdelay)} (Lemma 7 fits of the authors' fig. 12 curves, marker k "
            f"at sentence 2k − 1{pb_note})"
        )
        pdshort = fmt_est(pdelay)
    t, src = _typed("aligning_delay")
    pp.append(f"stated {t} sentence per '[/INST]' marker, {src}")
    items.append(
        {
            "what": "Delay bought by the aligning prompt",
            "ours": ours,
            "paper": "; ".join(pp) + ".",
            "short": dshort,
            "paper_short": pdshort or f"{t} (typed)",
        }
    )

    # 3. β: how distinguishable the behavior is.
    parts, short = [], []
    beta = _est_dict(_get(bs, "beta"))
    if beta is not None:
        parts.append(f"β = {fmt_est(beta)} nats (lower envelope of KL(P₋‖P₊) over n)")
        short.append(f"β {fmt_est(beta)}")
    if fit is not None:
        parts.append(
            f"the KL to P₋ falls at β = {fmt_est(fit.get('beta'))} nats per sentence "
            f"({_FIT_LABEL[fit_name]})"
        )
        if not short:
            short.append(f"β_eff {fmt_est(fit.get('beta'))}")
    ours = "; ".join(parts) + "." if parts else "not measured in this run."
    t, src = _typed(f"beta_{_bkey(pb)}")
    pp = [f"β {t}, {src}{pb_note}"]
    row = paper.conv(pb, "none", fit_name or "floored")
    if row is not None:
        pp.append(
            f"β = {fmt_est(_est_obj(row.beta))} per sentence (bebkit's "
            f"{_FIT_LABEL[row.fit]} on the authors' {row.figure} curve)"
        )
    items.append(
        {
            "what": "How distinguishable the behavior is (β)",
            "ours": ours,
            "paper": "; ".join(pp) + ".",
            "short": short[0] if short else "—",
            "paper_short": f"{t} (typed)",
        }
    )
    return items


def headline_rows(
    stages: Mapping[str, Any],
    behaviors: list[str],
    *,
    paper_figures: str | Path | None = None,
) -> list[tuple[str, str, str, str]]:
    """(behavior, quantity, this run, paper): three rows per behavior — misaligning sentences
    until misbehaviour, the aligning prompt's delay, β (the console's and compare page's
    headline)."""
    run = Run(
        Path("."),
        {"config": {"behaviors": behaviors}, "results": {"stages": dict(stages)}},
        PaperSide.load(Path(paper_figures) if paper_figures else None),
    )
    rows: list[tuple[str, str, str, str]] = []
    for b in behaviors:
        if not any(run.result(p, b) for p in ("convergence", "misalign", "beta-sigma")):
            continue
        for it in answer_items(run, b):
            rows.append((b, it["what"], it["short"], it["paper_short"]))
    return rows


def console_lines(record: Mapping[str, Any], run_dir: str | Path) -> list[str]:
    """The few lines a ``bebkit reproduce`` console ends with: the headline per behavior,
    the wall time and where the record and report are."""
    run = Path(run_dir)
    stages = _get(record, "results", "stages") or {}
    behaviors = list(_get(record, "config", "behaviors") or [])
    pf = paper_figures_path(record)
    lines: list[str] = []
    by_b: dict[str, list[str]] = {}
    for b, q, ours, paper in headline_rows(stages, behaviors, paper_figures=pf):
        label = {
            "Misaligning sentences until misbehaviour": "sentences to misbehave",
            "Delay bought by the aligning prompt": "aligning delay",
        }.get(q)
        # the β row's value already starts with its symbol ("β 6.24 […]" or "β_eff …")
        by_b.setdefault(b, []).append(f"{label + ' ' if label else ''}{ours} (paper {paper})")
    model = _get(record, "config", "aligned_model") or "?"
    for b, parts in by_b.items():
        lines.append(f"{model} / {b}: " + "; ".join(parts))
    wall = _get(record, "timings_s", "wall_this_invocation")
    status = record.get("status", "?")
    lines.append(f"status {status}" + (f", {_g(float(wall))} s" if _num(wall) else ""))
    lines.append(f"record: {run / 'record.json'}")
    lines.append(f"report: {run / 'report.html'} (markdown: {run / 'report.md'})")
    return lines


# --------------------------------------------------------------------------------------------
# Measured vs the paper, grouped by experiment
# --------------------------------------------------------------------------------------------


def _row(
    b: str,
    quantity: str,
    estimand: str,
    unit: str,
    measured: str,
    paper: str = "—",
    source: str = "",
    *,
    no: Sequence[str] = (),
    caveat: Sequence[str] = (),
) -> dict[str, Any]:
    if paper == "—":
        mark, why = "none", "the paper states no value"
    elif no:
        mark, why = "no", "; ".join(no)
    elif caveat:
        mark, why = "caveat", "; ".join(caveat)
    else:
        mark, why = "ok", ""
    symbol = {"ok": "✓", "caveat": "≈", "no": "✗", "none": "–"}[mark]
    return {
        "behavior": b,
        "quantity": quantity,
        "estimand": estimand,
        "unit": unit,
        "measured": measured,
        "paper": paper,
        "source": source,
        "mark": mark,
        "symbol": symbol,
        "why": why,
    }


def _settings(run: Run, stage: str) -> dict[str, Any]:
    cfg = run.stage_record(stage).get("config")
    return cfg if isinstance(cfg, dict) else {}


def _kl_unit(s: Mapping[str, Any], r: Mapping[str, Any] | None = None) -> str:
    """The KL's unit as the stage measured it: the record's ``unit`` (per-sentence KL, Definition
    2's unit, is bebkit's default), else its settings; ``n_tokens`` only for the token unit."""
    unit = (r or {}).get("unit") or s.get("unit")
    if unit == "sentence":
        return "nats (KL of the next sentence)"
    n_tokens = s.get("n_tokens")
    return f"nats (KL of the next {n_tokens} tokens)" if n_tokens else "nats"


def _tokens_reason(s: Mapping[str, Any], r: Mapping[str, Any] | None = None) -> list[str]:
    """Why a KL value is not the paper's quantity: the authors' KL is over the next 8 tokens."""
    unit = (r or {}).get("unit") or s.get("unit")
    if unit == "sentence":
        return ["KL of the next sentence vs the paper's next 8 tokens (KL grows with length)"]
    n_tokens = s.get("n_tokens")
    if _num(n_tokens) and float(str(n_tokens)) != 8:
        return [f"KL over {n_tokens} tokens vs the paper's 8 (KL grows with the length)"]
    return []


#: Misaligning layouts that are the paper's (the authors' alternating [INST] turns).
_PAPER_LAYOUTS = frozenset({"chat", "alternating", "llama2-inst", "llama2-inst-raw"})


def _per_behavior(
    run: Run, stage: str
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], str, list[str]]]:
    """For every behavior with a ``stage`` result: (behavior, result, settings, the paper's
    behavior it is compared with, why not comparable: a different behavior or nothing)."""
    for b in run.behaviors:
        r = run.result(stage, b)
        if not r:
            continue
        pb, same = _paper_behavior(b)
        no = [] if same else [f"different behavior (the paper's {pb})"]
        yield b, r, _settings(run, f"{stage}-{b}"), pb, no


def _layout_reason(r: Mapping[str, Any], fmt: str) -> list[str]:
    if r.get("format", fmt) not in _PAPER_LAYOUTS:
        return [f"{r.get('format')} layout vs the paper's alternating [INST] turns"]
    return []


def _add_group(groups: list[dict[str, Any]], title: str, ref: str, rows: list[Any]) -> None:
    if rows:
        groups.append({"title": title, "ref": ref, "rows": rows})


def paper_groups(run: Run) -> list[dict[str, Any]]:
    """Measured vs the paper: ``[{title, experiment, note, rows}]`` (rows see :func:`_row`)."""
    paper = run.paper
    model = run.config.get("aligned_model") or "?"
    groups: list[dict[str, Any]] = []
    fmt = run.config.get("format", "chat")

    # Table 1.
    rows = []
    for b in run.behaviors:
        r = run.result("components", b)
        if r:
            t, src = _typed("table1_accuracy_pct")
            rows.append(
                _row(
                    b,
                    "Table 1 held-out accuracy",
                    "fraction of held-out statements with log P₊(s) > log P₋(s) on their own side",
                    "%",
                    fmt_est(_get(r, "table1", "accuracy"), percent=True, n=True),
                    t + " %",
                    src,
                    caveat=[
                        "LLaMA 7B / 30B in the paper",
                        "the paper's range over its Table 1 behaviors, not this "
                        "behavior's own value",
                    ],
                )
            )
    _add_group(groups, "Table 1 — likelihood classification", "app. J", rows)

    # Table 2.
    rows = []
    probes = _get(run.result("probes"), "summary")
    if isinstance(probes, Mapping):
        for layer, pr in probes.items():
            if isinstance(pr, Mapping) and pr.get("mean_accuracy"):
                t, src = _typed("table2_svm_accuracy_7b_pct")
                nb = pr.get("n_behaviors", "?")
                nbs = f"{nb} behavior" + ("" if nb == 1 else "s")
                cav = [
                    f"mean over {nbs} vs the paper's 100",
                    "LLaMA 7B in the paper",
                    "measured CI is the mean's 95 % CI; the paper's spread is the SD over "
                    "behaviors",
                    "one paper value for every layer",
                    f"{_settings(run, 'probes').get('n_per_side', '?')} statements per "
                    "side vs the paper's 500",
                ]
                rows.append(
                    _row(
                        nbs,
                        f"Table 2 probe accuracy ({layer} layer)",
                        "5-fold CV accuracy of a linear SVM on last-token hidden states, "
                        "mean over behaviors",
                        "%",
                        fmt_est(pr["mean_accuracy"], percent=True),
                        t + " %",
                        src,
                        caveat=cav,
                    )
                )
    _add_group(groups, "Table 2 — hidden-state probes", "app. K", rows)

    # β / σ².
    rows = []
    for b, r, s, pb, no in _per_behavior(run, "beta-sigma"):
        unit = _kl_unit(s, r)
        tok = _tokens_reason(s, r)
        cav = [f"format: P₋ and P₊ both {r.get('format', fmt)}; the paper: newline P₋, "
               "[INST] chat P₊"]  # fmt: skip
        for key, q, est, u, extra in (
            ("beta", "β", "lower envelope of KL(P₋‖P₊ | s₁…sₙ) over n", unit, tok),
            ("beta_prime", "β′", "upper envelope of KL(P₋‖P₊ | s₁…sₙ) over n", unit, tok),
            ("sigma2", "σ²", "slope of the through-origin upper envelope of "
             "Var[log P₋(s)/P₊(s)] vs n", "nats² per sentence", tok),
            ("sigma_over_beta", "σ/β", "ratio of the two estimates", "—", []),
            ("beta_prime_over_beta", "β′/β", "ratio of the two envelopes", "—", []),
        ):  # fmt: skip
            t, src = _typed(f"{key}_{_bkey(pb)}")
            rows.append(_row(b, q, est, u, fmt_est(r.get(key)), t, src, no=no + extra,
                             caveat=cav))  # fmt: skip
    _add_group(groups, "β, β′ and σ² (distinguishability)", "§4.1, fig. 2 / 8", rows)

    # Prompt distinguishability.
    rows = []
    for b, r, s, pb, no in _per_behavior(run, "prompt-dist"):
        t, src = _typed(f"beta_prompt_dist_{_bkey(pb)}")
        s0 = r.get("s0") or {}
        cav = [f"format: P₋ and P₊ both {r.get('format', fmt)}; the paper: newline P₋, "
               "[INST] chat P₊",
               "s₀ ends in " + (f"'{s0['undesired_sentence']}' ({s0.get('undesired_source')})"
                                if s0.get("undesired_sentence") else "an undesired sentence")
               + "; the paper: 'I enjoy hurting others' feelings.'"]  # fmt: skip
        rows.append(
            _row(
                b,
                "β_prompt",
                "lower envelope of KL(P₋‖P₊) from the undesired sentence of s₀ on",
                _kl_unit(s, r),
                fmt_est(r.get("beta_prompt")),
                t,
                src,
                no=no + _tokens_reason(s, r),
                caveat=cav,
            )
        )
    _add_group(groups, "Prompt distinguishability", "app. N, fig. 15", rows)

    # Convergence.
    rows = []
    for b, r, s, pb, beh in _per_behavior(run, "convergence"):
        no = beh + _layout_reason(r, fmt)
        unit = _kl_unit(s, r)
        axis = [_MARKER_AXIS_CAVEAT] if r.get("format", fmt) in _PAPER_LAYOUTS else []
        for cond in r.get("conditions") or list((r.get("fits") or {}).keys()):
            fits = _get(r, "fits", cond)
            if not isinstance(fits, Mapping):
                continue
            cl = _CONDITIONS.get(cond, cond)
            for fit in ("floored", "lemma5", "linear"):
                f = fits.get(fit)
                if not isinstance(f, Mapping):
                    continue
                prow = paper.conv(pb, cond, fit)
                pn = fmt_est(_est_obj(prow.n_star)) if prow else "—"
                psrc = f"bebkit's fit on the authors' {prow.figure} curve" if prow else ""
                if prow is None and fit == "linear":
                    pn, psrc = _typed("n_star")
                rows.append(
                    _row(
                        b,
                        f"n* ({_FIT_LABEL[fit]}, {cl})",
                        "log(1/α)/β of the fitted KL(P₋‖P_LLM)(n) curve",
                        "sentences",
                        fmt_est(f.get("n_star")),
                        pn,
                        psrc,
                        no=no,
                        caveat=axis if prow else [],
                    )
                )
                pbeta = fmt_est(_est_obj(prow.beta)) if prow else "—"
                bsrc = psrc
                if prow is None and fit == "linear":
                    pbeta, bsrc = _typed(f"beta_eff_{_bkey(pb)}")
                rows.append(
                    _row(
                        b,
                        f"β ({_FIT_LABEL[fit]}, {cl})",
                        "decay rate of KL(P₋‖P_LLM)(n)",
                        f"{unit} per sentence",
                        fmt_est(f.get("beta")),
                        pbeta,
                        bsrc,
                        no=no + _tokens_reason(s, r),
                        caveat=axis if prow else [],
                    )
                )
            ln = _get(r, "lengths", cond, "lemma5")
            if isinstance(ln, Mapping):
                eps = _get(r, "lengths", cond, "epsilon")
                for thm in ("theorem1", "theorem2"):
                    if ln.get(thm):
                        rows.append(
                            _row(b, f"{thm.replace('theorem', 'Theorem ')} length ({cl})",
                                 f"prompt length guaranteeing misalignment at ε = {eps} "
                                 + ("(this curve's Lemma 5 α, β)" if thm == "theorem1" else
                                    "(the unprompted curve's Lemma 5 α, β; β′₊, σ₊ of Lemma 4)"),
                                 "sentences", fmt_est(ln[thm]))
                        )  # fmt: skip
    _add_group(groups, "KL convergence", "§4.2, fig. 3a / 11", rows)

    # Behavior expectation.
    rows = []
    for b, r, _s, pb, beh in _per_behavior(run, "misalign"):
        no = beh + _layout_reason(r, fmt)
        judge = r.get("judge", "?")
        cav = [f"automatic judge ({judge}) vs the authors' labels", _SAMPLING_CAVEAT]
        for cond, cv in (r.get("curves") or {}).items():
            cl = _CONDITIONS.get(cond, cond)
            good, ns = cv.get("fraction_good"), cv.get("n")
            if good and ns:
                ref = paper.pct_good(pb, cond)
                ptxt, psrc = "—", ""
                if ref is not None:
                    ptxt = f"{ref.values[0]:.1f} % → {ref.values[-1]:.1f} % (n = 1 → 10)"
                    psrc = "the authors' fig. 12 curve (10 prompts × 32 responses per point)"
                rows.append(
                    _row(
                        b,
                        f"% good responses, n = {ns[0]} → {ns[-1]} ({cl})",
                        "fraction of responses the judge scores good",
                        "%",
                        f"{fmt_est(good[0], percent=True)} → {fmt_est(good[-1], percent=True)}",
                        ptxt,
                        psrc,
                        no=no,
                        caveat=cav,
                    )
                )
            sg = _get(r, "sigmoid", cond)
            if isinstance(sg, Mapping):
                psg = paper.sigmoid(pb, cond)
                rows.append(
                    _row(
                        b,
                        f"behavior centre n½ ({cl})",
                        "log(1/α)/β of the Lemma 7 reverse "
                        "sigmoid fitted to % good (n at 50 % good)",
                        "sentences",
                        fmt_est(sg.get("centre"))
                        + ("" if sg.get("decays") else " (no decay: not identified)"),
                        fmt_est(_est_obj(psg.centre)) if psg else "—",
                        "Lemma 7 fit of the authors' fig. 12 curve, marker k at sentence 2k − 1"
                        if psg
                        else "",
                        no=no,
                        caveat=[*cav, _MARKER_AXIS_CAVEAT] if psg else cav,
                    )
                )
        if r.get("aligning_delay") is not None:
            t, src = _typed("aligning_delay")
            pdelay = paper.delay(pb)
            if pdelay is not None:  # the paper's delay on the same sentence axis
                t = fmt_est(pdelay)
                src = "Lemma 7 fits of the authors' fig. 12 curves, marker k at sentence 2k − 1"
            meas = fmt_est(r.get("aligning_delay"))
            rows.append(
                _row(
                    b,
                    "aligning-prompt delay",
                    "n½(aligning prompt) − n½(none)",
                    "sentences",
                    meas,
                    t,
                    src,
                    no=no,
                    caveat=[*cav, _MARKER_AXIS_CAVEAT],
                )
            )
        t2 = _theorem2_text(r.get("theorem2"))
        if t2:
            src2 = _get(r, "theorem2", "sources") or {}
            rows.append(
                _row(
                    b,
                    "Theorem 2 length bound (with the aligning prompt)",
                    "(log 1/α + log 1/ε + log 4)/β + (β′/β)|s₀| + (σ/β)√(|s₀|/δ) + 1 at "
                    "ε = 0.5 (the sigmoid centre), against the measured n½ with s₀; log 1/α "
                    f"from {src2.get('log_inv_alpha', '?')}, β from {src2.get('beta', '?')}",
                    "sentences",
                    t2,
                    no=no,
                )
            )
        cmp_ = r.get("centre_vs_kl_n_star")
        if isinstance(cmp_, Mapping):
            verdict = {True: "consistent", False: "not consistent", None: "not comparable"}
            rows.append(
                _row(b, "n½ − KL n* (same prompts)", "behavior centre minus the Lemma 5 "
                     "midpoint of KL on the same prompts", "sentences",
                     f"{fmt_est(cmp_.get('difference'))} ({verdict.get(cmp_.get('consistent'))})")
            )  # fmt: skip
        # The authors' own prompts (issue item 9): identical inputs, so the remaining
        # differences are the model and the judge (theirs: hand labels of Llama-2-13b-chat).
        ap = r.get("authors_prompts") or {}
        for ar in ap.get("rows", []):
            rows.append(
                _row(
                    b,
                    f"% good after '[/INST]' marker {ar['marker']} of the authors' prompts "
                    f"({_CONDITIONS.get(ar['condition'], ar['condition'])})",
                    "the same prompts in both columns; marker k closes sentence "
                    + ", ".join(str(n) for n in sorted(set(ar["sentences"]))),
                    "%",
                    fmt_est(ar["measured"], percent=True),
                    fmt_est(ar["authors"], percent=True),
                    f"the authors' hand labels of Llama-2-13b-chat on these "
                    f"{len(ar['prompt_ids'])} prompts",
                    no=beh,
                    caveat=[f"{r.get('target_model')} and judge {judge} vs Llama-2-13b-chat "
                            f"and hand labels; {ap.get('format')} layout",
                            _SAMPLING_CAVEAT],
                )
            )  # fmt: skip
    _add_group(groups, "Behavior expectation", "§4.2, fig. 3b / 12", rows)

    # Pretrained.
    rows = []
    for b, r, s, pb, no in _per_behavior(run, "pretrained"):
        fam = [] if r.get("same_family") else [
            f"different model families ({r.get('aligned_model') or model} vs "
            f"{r.get('target_model')}); the paper compares Llama-2-13B-chat with its own base"
        ]  # fmt: skip
        for fit in ("floored", "lemma5", "linear"):
            f = _get(r, "fits", "none", fit)
            if not isinstance(f, Mapping):
                continue
            prow = paper.conv(pb, "pretrained", fit)
            if prow is not None:
                pt, psrc = (
                    fmt_est(_est_obj(prow.beta)),
                    f"bebkit's fit on the authors' {prow.figure} curve",
                )
            else:
                pt, psrc = _typed("beta_base")
            rows.append(
                _row(
                    b,
                    f"β pretrained ({_FIT_LABEL[fit]})",
                    "decay rate of KL(P₋‖P_pretrained)(n)",
                    f"{_kl_unit(s, r)} per sentence",
                    fmt_est(f.get("beta")),
                    pt,
                    psrc,
                    no=no + _tokens_reason(s, r),
                )
            )
        window = r.get("window") or {}
        wtext = (
            f"both curves fitted over sentences {window['whole_curve'][0]}–"
            f"{window['whole_curve'][1]:g} (straight line {window['straight_line'][0]}–"
            f"{window['straight_line'][1]:g})"
            if window.get("whole_curve") and window.get("straight_line")
            else r.get("beta_ratio_method") or ""
        )
        for fit, e in (r.get("beta_ratio") or {}).items():
            pr = paper.ratio(pb, "none", fit)
            if pr is not None:
                pt, psrc = fmt_est(_est_obj(pr)), "ratio of bebkit's fits on the authors' curves"
            else:
                pt, psrc = _typed("beta_ratio_chat_over_base")
            rows.append(
                _row(
                    b,
                    f"β_aligned / β_pretrained ({_FIT_LABEL.get(fit, fit)})",
                    "ratio of the KL decay rates of the aligned and the pretrained model, per "
                    "sentence" + (f"; {wtext}" if wtext else ""),
                    "—",
                    fmt_est(e),
                    pt,
                    psrc,
                    no=no + fam,
                    caveat=[_MARKER_AXIS_CAVEAT] if pr is not None else [],
                )
            )
    _add_group(groups, "Pretrained vs aligned", "§4.2, app. M", rows)

    return groups


def paper_legend(run: Run) -> str:
    """One line above the measured-vs-paper tables: the models and the marks."""
    pre = run.config.get("pretrained_model")
    return (
        f"This run: {run.config.get('aligned_model') or '?'}"
        + (f" (pretrained: {pre})" if pre else "")
        + f"; the paper: {_PAPER_MODEL} and Llama-2-13B (Table 1/2: LLaMA 7B/30B). "
        "✓ same estimand · ≈ comparable with a caveat · ✗ not comparable (why) · – no paper value."
    )


# --------------------------------------------------------------------------------------------
# Methods, from the record
# --------------------------------------------------------------------------------------------


def _kv(d: Mapping[str, Any], skip: set[str] = frozenset()) -> list[tuple[str, str]]:  # type: ignore[assignment]
    out = []
    for k, v in d.items():
        if k in skip:
            continue
        if isinstance(v, list | tuple):
            v = ", ".join(str(x) for x in v)
        elif isinstance(v, dict):
            v = json.dumps(v, ensure_ascii=False, sort_keys=True)
        out.append((str(k), str(v)))
    return out


def methods(run: Run) -> list[dict[str, Any]]:
    """Sections ``{title, items: [(key, value)], tables, text}`` from the record."""
    rec, cfg = run.record, run.config
    secs: list[dict[str, Any]] = []
    rerun = "bebkit reproduce " + str(cfg.get("config_path") or "CONFIG.yaml")
    if cfg.get("quick"):
        rerun += " --quick"
    rerun += f" --out {run.path}"
    secs.append({
        "title": "Run",
        "items": [
            ("config", str(cfg.get("config_path") or "—")),
            ("status", str(rec.get("status"))),
            ("created", str(rec.get("created"))),
            ("run seed", str(rec.get("seed"))),
            ("quick sizes", str(cfg.get("quick"))),
            ("git", str(rec.get("git"))),
            ("re-run", rerun),
        ],
    })  # fmt: skip
    c_opts = cfg.get("components")
    comps: dict[str, Any] = c_opts if isinstance(c_opts, dict) else {}
    models = [
        ("aligned model", str(cfg.get("aligned_model"))),
        ("pretrained model", str(cfg.get("pretrained_model") or "none (stage not run)")),
        ("format (aligned / pretrained)",
         f"{cfg.get('format')} / {cfg.get('pretrained_format')}"),
    ]  # fmt: skip
    adapters: list[list[str]] = []
    presets: set[str] = set()
    for stage in run.stages:
        sc = _settings(run, stage)
        if sc.get("preset"):
            presets.add(str(sc["preset"]))
        for side, st in (sc.get("components") or {}).items():
            if isinstance(st, Mapping):
                row = [stage, side, str(st.get("key") or "—"),
                       "reused" if st.get("reused") else "trained", str(st.get("path") or "—")]  # fmt: skip
                if row not in adapters:
                    adapters.append(row)
    secs.append({
        "title": "Models and components",
        "items": models,
        "tables": [{"caption": "LoRA adapters used by each stage (key = manifest fingerprint)",
                    "header": ["stage", "side", "key", "status", "path"], "rows": adapters}]
        if adapters else [],
    })  # fmt: skip
    data_items = [
        ("behaviors", ", ".join(run.behaviors)),
        ("persona data", str(cfg.get("persona_dir") or "$BEBKIT_PERSONA_DIR / embedded")),
        ("split (train / held-out per side)",
         f"{comps.get('n_train') or 'preset default'} / {comps.get('n_heldout') or 'preset default'}"
         f", split seed {comps.get('train_seed', 0)}"),
    ]  # fmt: skip
    secs.append({"title": "Behavior data and splits", "items": data_items})
    recipe: list[tuple[str, str]] = [("preset", ", ".join(sorted(presets)) or
                                      str(comps.get("preset") or "by model size"))]  # fmt: skip
    if comps.get("epochs"):
        recipe.append(("epochs (override)", str(comps["epochs"])))
    for name in sorted(presets):
        try:
            from bebkit.components.presets import get_preset

            p = get_preset(name)
            recipe += [(f"{name}: {k}", v) for k, v in _kv(p.model_dump(), {"name"})]
        except (InputError, ImportError, KeyError, ValueError, TypeError):
            pass
    secs.append({"title": "LoRA recipe", "items": recipe})
    prompt = cfg.get("aligning_prompt")
    secs.append({
        "title": "Conditions",
        "items": [("no aligning prompt", "the model's chat template with no system turn"),
                  ("aligning prompt (system turn)", str(prompt or "—"))],
    })  # fmt: skip
    # Per-stage settings: sample sizes, estimators, fits, judge, seeds.
    keys: list[str] = []
    per: dict[str, dict[str, Any]] = {}
    for stage in run.stages:
        sc = {k: v for k, v in _settings(run, stage).items() if k not in _PROVENANCE_KEYS}
        sc.pop("aligning_prompt", None)
        per[stage] = sc
        for k in sc:
            if k not in keys:
                keys.append(k)
    rows = []
    for k in keys:
        vals = []
        for stage in run.stages:
            v = per[stage].get(k, "")
            if isinstance(v, list | tuple):
                v = ", ".join(str(x) for x in v)
            elif isinstance(v, float):  # a derived input such as β′: 6 digits (record: exact)
                v = f"{v:.6g}"
            vals.append("" if v is None else str(v))
        rows.append([k, *vals])
    secs.append({
        "title": "Sample sizes, estimators, fits, judge and seeds (per stage)",
        "items": [],
        "tables": [{"caption": "Settings recorded in each stage's record.json",
                    "header": ["setting", *run.stages.keys()], "rows": rows}] if rows else [],
        "text": "Judges are automatic (no human labels); each behavior's judge and its "
        "validation status (locked-half kappa of `bebkit judge-eval`, label-free checks of "
        "`bebkit judge-checks`) are stated under its answer.",
    })  # fmt: skip
    versions = rec.get("versions") or {}
    machine = rec.get("machine") or {}
    secs.append({
        "title": "Software and machine",
        "items": [(k, str(v)) for k, v in versions.items() if v] + _kv(machine),
    })  # fmt: skip
    timings = rec.get("timings_s") or {}
    trows = []
    for name, st in run.stages.items():
        sec = timings.get(name, st.get("seconds", 0.0))
        inner = run.stage_record(name).get("timings_s") or {}
        detail = ", ".join(f"{k} {float(v):.1f}" for k, v in inner.items() if _num(v))
        trows.append([name, f"{float(sec or 0):.1f}", "yes" if st.get("cached") else "no",
                      str(st.get("key", "")), detail, run.stage_units(name) or "—"])  # fmt: skip
    wall = timings.get("wall_this_invocation")
    secs.append({
        "title": "Timings",
        "items": [("wall time of the last invocation", f"{float(wall or 0):.1f} s")] if _num(wall) else [],
        "tables": [{"caption": "Seconds per stage (cached stages: the time of the run that "
                    "computed them; a resumed stage: its last attempt only). Stored units: the "
                    "CPUs that computed a checkpointed stage's units — one stage resumed on "
                    "two machines is a valid sample, not bit-identical to an uninterrupted run",
                    "header": ["stage", "seconds", "cached", "key", "parts (s)",
                               "stored units (CPU)"],
                    "rows": trows}],
    })  # fmt: skip
    for sec in secs:
        sec.setdefault("items", [])
        sec.setdefault("tables", [])
        sec.setdefault("text", "")
    return secs


# --------------------------------------------------------------------------------------------
# Stage sections
# --------------------------------------------------------------------------------------------


def _rel(target: Path, base: Path) -> str:
    try:
        return Path(os.path.relpath(target, base)).as_posix()
    except ValueError:  # pragma: no cover - different drives
        return target.as_posix()


def stage_sections(run: Run, base: Path | None = None) -> list[dict[str, Any]]:
    base = base or run.path
    out = []
    info = {p: (t, ref) for p, t, ref in STAGE_INFO}
    for name, st in run.stages.items():
        prefix = next((p for p, _, _ in STAGE_INFO if name == p or name.startswith(p + "-")), "")
        title, ref = info.get(prefix, (name, ""))
        behavior = name[len(prefix) + 1 :] if prefix and name != prefix else ""
        r = st.get("result") or {}
        folder = run.folder(name)
        figs = []
        for png in run.figures(name):
            redrawn = (
                REDRAWN_DIR in png.relative_to(run.path).parts[:1]
                if png.is_relative_to(run.path)
                else False
            )
            cap = FIGURE_CAPTIONS.get(png.stem, png.stem)
            if redrawn:
                cap += (
                    " Redrawn from the stage's stored record when this report was written "
                    "(with the paper's curves when the authors' figures file is available)."
                )
            figs.append({"src": _img_data_uri(png), "path": _rel(png, base), "caption": cap,
                         "alt": f"{name}: {png.stem}"})  # fmt: skip
        links = []
        for label, fname in (("examples (escaped, content warning)", "examples.html"),
                             ("stage record", "record.json"), ("responses (CSV)", "responses.csv"),
                             ("prompts", "prompts.jsonl"), ("Table 2", "table2.md")):  # fmt: skip
            if (folder / fname).is_file():
                links.append({"label": label, "href": _rel(folder / fname, base)})
        errs = r.get("fit_errors") if isinstance(r, Mapping) else None
        out.append({
            "id": re.sub(r"[^a-z0-9-]", "-", name.lower()),
            "name": name,
            "title": title + (f" — {behavior}" if behavior else ""),
            "ref": ref,
            "key": str(st.get("key", "")),
            "cached": bool(st.get("cached")),
            "seconds": f"{float(st.get('seconds') or 0):.1f}",
            "folder": _rel(folder, base),
            "tables": _stage_tables(prefix, r) if isinstance(r, Mapping) else [],
            "figures": figs,
            "links": links,
            "errors": [f"{k}: {v}" for k, v in errs.items()] if isinstance(errs, Mapping) else [],
            "samples": _samples(folder) if prefix == "misalign" else [],
        })  # fmt: skip
    return out


# --------------------------------------------------------------------------------------------
# The whole report
# --------------------------------------------------------------------------------------------


def _main_figures(run: Run, b: str, base: Path) -> list[dict[str, str]]:
    out = []
    for prefix in ("convergence", "misalign"):
        stage = f"{prefix}-{b}"
        if stage not in run.stages:
            continue
        for png in run.figures(stage):
            if png.stem == prefix:
                out.append({"src": _img_data_uri(png), "path": _rel(png, base),
                            "caption": FIGURE_CAPTIONS.get(prefix, prefix),
                            "alt": f"{stage}: {png.stem}"})  # fmt: skip
    return out


def report_context(run: Run, base: Path | None = None) -> dict[str, Any]:
    """Everything the templates render (plain data; model text still raw — templates escape)."""
    base = base or run.path
    cfg = run.config
    model = str(cfg.get("aligned_model") or "?")
    answers = []
    for b in run.behaviors:
        items = answer_items(run, b)
        answers.append({
            "model": _get(run.result("convergence", b), "target_model") or model,
            "behavior": b,
            "items": items,
            "judges": judge_status(run, b),
            "figures": _main_figures(run, b, base),
        })  # fmt: skip
    paper_src = (
        f"bebkit's own fits on the authors' curves ({run.paper.path.name})"
        if run.paper.parity is not None and run.paper.path is not None
        else "the paper's stated values only (no authors' figures file: set "
        "paper_figures in the config, $BEBKIT_REFERENCE_DIR or --paper-figures)"
    )
    if run.paper.error:
        paper_src += f" — the authors' figures file could not be used: {run.paper.error}"
    return {
        "title": f"bebkit report — {run.name}",
        "run": run.name,
        "run_path": str(run.path),
        "status": run.record.get("status"),
        "error": _get(run.record, "results", "error"),
        "pending": list(_get(run.record, "results", "pending") or []),
        "created": run.record.get("created"),
        "model": model,
        "pretrained_model": cfg.get("pretrained_model"),
        "behaviors": run.behaviors,
        "ci_note": CI_NOTE,
        "paper_source": paper_src,
        "answers": answers,
        "groups": paper_groups(run),
        "paper_legend": paper_legend(run),
        "methods": methods(run),
        "stages": stage_sections(run, base),
        "content_warning": CONTENT_WARNING,
    }


def build_report(
    run_dir: str | Path,
    *,
    paper_figures: str | Path | None = None,
    record: dict[str, Any] | None = None,
) -> tuple[str, str]:
    """(markdown, html) for a run directory (``record``: see :func:`load_run`)."""
    ctx = report_context(load_run(run_dir, paper_figures, record=record))
    return render("report.md.j2", ctx), render("report.html.j2", ctx)


def write_report(
    run_dir: str | Path,
    *,
    paper_figures: str | Path | None = None,
    record: dict[str, Any] | None = None,
    suffix: str = "",
    redraw: bool = True,
) -> tuple[Path, Path]:
    """Write ``report{suffix}.md`` and ``report{suffix}.html`` into the run directory
    (atomically); a partial run's report passes its ``record`` and ``suffix="-partial"``.
    ``redraw``: first redraw the KL figures from the stored records (:func:`redraw_kl_figures`,
    with the paper's curves when a figures file is found), so no stale stage figure is shown."""
    run = Path(run_dir)
    if redraw:
        redraw_run_figures(run, paper_figures, record=record)
    md, page = build_report(run, paper_figures=paper_figures, record=record)
    md_path, html_path = run / f"report{suffix}.md", run / f"report{suffix}.html"
    with atomic_open(md_path) as fh:
        fh.write(md)
    with atomic_open(html_path) as fh:
        fh.write(page)
    return md_path, html_path


# --------------------------------------------------------------------------------------------
# Several runs side by side
# --------------------------------------------------------------------------------------------


def comparison_context(run_dirs: Sequence[str | Path], out_dir: Path,
                       paper_figures: str | Path | None = None) -> dict[str, Any]:  # fmt: skip
    runs = [load_run(d, paper_figures) for d in run_dirs]
    labels = []
    for r in runs:
        label = r.name
        while label in labels:
            label += "′"
        labels.append(label)
    overview = []
    for r, label in zip(runs, labels, strict=True):
        overview.append({
            "label": label, "path": str(r.path), "status": r.record.get("status"),
            "model": r.config.get("aligned_model"), "pretrained": r.config.get("pretrained_model"),
            "behaviors": ", ".join(r.behaviors), "created": r.record.get("created"),
            "git": r.record.get("git"), "report": _rel(r.path / "report.html", out_dir),
        })  # fmt: skip
    # Headline and measured-vs-paper rows, one column per run.
    headline: dict[tuple[str, str], dict[str, str]] = {}
    paper_col: dict[tuple[str, str], str] = {}
    for r, label in zip(runs, labels, strict=True):
        for b in r.behaviors:
            for it in answer_items(r, b):
                headline.setdefault((b, it["what"]), {})[label] = it["short"]
                paper_col.setdefault((b, it["what"]), it["paper_short"])
    head_rows = [
        {"behavior": b, "quantity": q, "values": [v.get(lab, "—") for lab in labels],
         "paper": paper_col.get((b, q), "—")}
        for (b, q), v in headline.items()
    ]  # fmt: skip
    # The judge behind each run's curves, its validation status and its control.
    judge_cells: dict[tuple[str, str], dict[str, str]] = {}
    for r, label in zip(runs, labels, strict=True):
        for b in r.behaviors:
            for j in judge_status(r, b):
                for q, v in (("judge", f"{j['judge']} ({j['components']} components)"),
                             ("validation", j["status"]), ("control", j["control"]),
                             ("second judges", j["second"] or "—")):  # fmt: skip
                    judge_cells.setdefault((b, q), {})[label] = v
    judge_rows = [
        {"behavior": b, "quantity": q, "values": [v.get(lab, "—") for lab in labels]}
        for (b, q), v in judge_cells.items()
    ]
    groups: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for r, label in zip(runs, labels, strict=True):
        for g in paper_groups(r):
            rows = groups.setdefault(g["title"], {})
            for row in g["rows"]:
                k = (row["behavior"], row["quantity"])
                entry = rows.setdefault(k, {"behavior": k[0], "quantity": k[1],
                                            "unit": row["unit"], "values": {}, "units": {},
                                            "paper": row["paper"]})  # fmt: skip
                entry["values"][label] = row["measured"]
                entry["units"][label] = row["unit"]
    for rows in groups.values():
        for e in rows.values():
            # Runs that measured a quantity in different units (e.g. 8-token vs per-sentence
            # KL) must not share one unit cell: each value then carries its own unit.
            if len(set(e["units"].values())) > 1:
                e["unit"] = "differs between runs (in each value)"
                e["values"] = {lab: f"{v} ({e['units'][lab]})" for lab, v in e["values"].items()}
    group_list = [
        {"title": t, "rows": [{**e, "values": [e["values"].get(lab, "—") for lab in labels]}
                              for e in rows.values()]}
        for t, rows in groups.items()
    ]  # fmt: skip
    # Figures side by side: one row per (stage, figure), one cell per run.
    fig_rows: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    for r, label in zip(runs, labels, strict=True):
        for stage in r.stages:
            for png in r.figures(stage):
                fig_rows.setdefault((stage, png.stem), {})[label] = {
                    "src": _img_data_uri(png), "path": _rel(png, out_dir),
                    "alt": f"{label}: {stage} {png.stem}",
                }  # fmt: skip
    figures = [
        {"stage": s, "caption": FIGURE_CAPTIONS.get(stem, stem),
         "cells": [cells.get(lab) for lab in labels]}
        for (s, stem), cells in fig_rows.items()
    ]  # fmt: skip
    return {
        "title": "bebkit comparison — " + " vs ".join(labels),
        "labels": labels,
        "runs": overview,
        "headline": head_rows,
        "judges": judge_rows,
        "groups": group_list,
        "figures": figures,
        "ci_note": CI_NOTE,
    }


def build_comparison(
    run_dirs: Sequence[str | Path], out_dir: str | Path, *, paper_figures: str | Path | None = None
) -> tuple[str, str]:
    """(markdown, html) of a side-by-side comparison of several runs."""
    if len(run_dirs) < 2:
        raise InputError("a comparison needs at least two run directories")
    ctx = comparison_context(run_dirs, Path(out_dir), paper_figures)
    return render("compare.md.j2", ctx), render("compare.html.j2", ctx)


def write_comparison(
    run_dirs: Sequence[str | Path], out_dir: str | Path, *, paper_figures: str | Path | None = None
) -> tuple[Path, Path]:
    """Write ``compare.md`` and ``compare.html`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md, page = build_comparison(run_dirs, out, paper_figures=paper_figures)
    with atomic_open(out / "compare.md") as fh:
        fh.write(md)
    with atomic_open(out / "compare.html") as fh:
        fh.write(page)
    return out / "compare.md", out / "compare.html"


# --------------------------------------------------------------------------------------------
# Redrawn KL figures (with the paper's curves)
# --------------------------------------------------------------------------------------------


def redraw_run_figures(
    run_dir: str | Path,
    paper_figures: str | Path | None = None,
    *,
    record: Mapping[str, Any] | None = None,
) -> list[Path]:
    """:func:`redraw_kl_figures` with the authors' figures file the report uses
    (:func:`paper_figures_path`: ``paper_figures``, the record's, else the environment's)."""
    run = Path(run_dir)
    rec = _read_record(run) if record is None else record
    return redraw_kl_figures(run, paper_figures_path(rec, paper_figures), record=rec)


def redraw_kl_figures(
    run_dir: str | Path,
    reference_file: str | Path | None = None,
    *,
    record: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Redraw every convergence / pretrained figure of a run from its stages' stored records,
    with the paper's curves when ``reference_file`` is given (and readable).

    No model is loaded. Writes ``RUN/figures/<stage>/<key>/<kind>.png`` (+ ``.svg``), each
    file replaced atomically (a partial report may redraw while the run's own report does);
    the stage folders are left untouched and :func:`build_report` shows a redrawn figure in
    place of the stage's own one — so a reused stage whose figure came from older drawing code
    is never shown stale. ``record``: a partial run's record instead of ``record.json``. A
    stage whose record cannot be read or drawn keeps its own figure (a warning is logged and
    any earlier redraw of it removed); an unreadable figures file only drops the paper's
    curves. Returns the figures drawn.
    """
    import logging
    import tempfile

    from bebkit.reporting.kl_figures import (
        REFERENCE_LABELS,
        condition_reference,
        convergence_figure,
        load_reference_kl,
    )

    from .experiments_common import markers_as_sentences

    log = logging.getLogger(__name__)
    run = Path(run_dir)
    rec_top = _read_record(run) if record is None else record
    stages = _get(rec_top, "results", "stages") or {}
    written: list[Path] = []
    for stage, st in stages.items():
        if not stage.startswith(("convergence", "pretrained")) or not isinstance(st, Mapping):
            continue
        if not st.get("folder"):
            continue
        kind = "pretrained" if stage.startswith("pretrained") else "convergence"
        # The folder this run used: a stage dir may also hold other keys from older configs.
        folder = Path(st["folder"])
        folder = folder if folder.is_absolute() else run / folder
        out = run / REDRAWN_DIR / stage / folder.name / f"{kind}.png"
        try:
            rec = _read_json(folder / "record.json")
            res, cfg = rec.get("results"), rec.get("config") or {}
            if not isinstance(res, Mapping) or not isinstance(cfg, Mapping):
                raise ValueError("record.json has no results / config mapping")
        except (InputError, ValueError) as exc:
            log.warning("%s: figure not redrawn (%s); the stage's own figure is shown", stage, exc)
            continue
        ref = None
        if reference_file is not None:
            try:
                # the same x-axis as the stage's own figure and the report's table: in an
                # alternating layout the authors' '[/INST]' marker k closes sentence 2k − 1
                ref = (
                    markers_as_sentences(
                        condition_reference(
                            load_reference_kl(reference_file, str(res.get("behavior"))), kind
                        ),
                        str(res.get("format", "")),
                    )
                    or None
                )
            except (InputError, ValueError, KeyError, TypeError) as exc:
                log.warning("%s: the paper's curves left out (%s)", stage, exc)
        family = res.get("family_note")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=".draw-") as tmp:
            drawn = Path(tmp) / out.name
            try:
                convergence_figure(
                    res,
                    drawn,
                    n_tokens=int(cfg.get("n_tokens", 0)),
                    note=f"note: {family}" if family else "",
                    reference=ref,
                    reference_label=REFERENCE_LABELS[kind] if ref else "",
                )
            except OSError:
                raise  # a full disk or an unwritable run folder is the run's problem
            except Exception as exc:  # any drawing failure keeps the stage's own figure
                import matplotlib.pyplot as plt

                plt.close("all")
                for stale in (out, out.with_suffix(".svg")):
                    stale.unlink(missing_ok=True)  # never show another attempt's redraw
                log.warning("%s: figure not redrawn (%s: %s)", stage, type(exc).__name__, exc)
                continue
            for f in sorted(Path(tmp).iterdir()):
                os.replace(f, out.parent / f.name)
        written.append(out)
    return written


__all__ = [
    "CONTENT_WARNING",
    "REDRAWN_DIR",
    "build_comparison",
    "build_report",
    "console_lines",
    "fmt_est",
    "headline_rows",
    "load_run",
    "md_text",
    "redraw_kl_figures",
    "redraw_run_figures",
    "report_context",
    "write_comparison",
    "write_report",
]
