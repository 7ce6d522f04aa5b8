"""The run report's record-only pieces: estimate and markdown formatting, the per-stage tables
and sample rows built from a stage's stored result, and the Jinja2 templates' environment.
Everything here reads records (dicts, files of a stage folder), never the pipeline."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

FIT_LABEL = {"floored": "floored Lemma 5 fit", "lemma5": "Lemma 5 fit", "linear": "straight line"}


CONDITIONS = {"none": "no aligning prompt", "aligned": "aligning prompt"}


def get_path(d: Any, *path: str) -> Any:
    """``d[p0][p1]…``, or None where a level is missing or not a mapping."""
    for p in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(p)
    return d


def is_num(x: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def fmt_g(x: float, digits: int = 3) -> str:
    """``digits`` significant digits; large numbers without an exponent."""
    if abs(x) >= 10**digits:
        return f"{x:.0f}"
    return f"{x:.{digits}g}"


def est_dict(d: Any) -> Mapping[str, Any] | None:
    """The Estimate dict of ``d`` (or of ``d["estimate"]``) when it has a finite value."""
    if isinstance(d, Mapping) and isinstance(d.get("estimate"), Mapping):
        d = d["estimate"]
    if isinstance(d, Mapping) and is_num(d.get("value")):
        return d
    return None


def fmt_est(d: Any, digits: int = 3, *, percent: bool = False, n: bool = False) -> str:
    """``value [lo, hi]`` from an Estimate dict (or ``{"estimate": …}``); ``—`` if absent.

    ``percent`` shows a fraction in %; ``n`` appends ``(n=…)``.
    """
    e = est_dict(d)
    if e is None:
        return "—"
    scale = 100.0 if percent else 1.0

    def f(x: Any) -> str:
        return f"{scale * float(x):.1f}" if percent else fmt_g(float(x), digits)

    out = f(e["value"]) + (" %" if percent else "")
    lo, hi = e.get("ci_low"), e.get("ci_high")
    if is_num(lo) or is_num(hi):
        out += f" [{f(lo) if is_num(lo) else '−∞'}, {f(hi) if is_num(hi) else '∞'}]"
    elif not e.get("exact"):
        out += " [CI n/a]"
    if n and e.get("n"):
        out += f" (n={e['n']})"
    return out


def img_data_uri(path: Path) -> str:
    """An image file as a ``data:`` URI (self-contained HTML)."""
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+!|~>])")


def md_text(text: Any) -> str:
    """Model or user text made inert for markdown: HTML-escaped, markdown punctuation
    backslash-escaped (no link, image or code span can form), one line."""
    s = " ".join(str(text).split())
    return _MD_SPECIAL.sub(r"\\\1", html.escape(s, quote=True))


def md_cell(text: Any) -> str:
    """Our own (trusted) text in a markdown table cell: only ``|`` and newlines matter."""
    return " ".join(str(text).split()).replace("|", "\\|")


def curve_table(ns: Sequence[Any], cols: Mapping[str, Sequence[Any]], *, percent: bool = False,
                 caption: str, xlabel: str = "n") -> dict[str, Any]:  # fmt: skip
    """A table of estimate columns over prompt lengths ``ns``."""
    header = [xlabel, *cols.keys()]
    rows = []
    for i, n in enumerate(ns):
        rows.append([str(n), *[fmt_est(c[i], percent=percent) if i < len(c) else "—"
                               for c in cols.values()]])  # fmt: skip
    return {"caption": caption, "header": header, "rows": rows}


def stage_tables(prefix: str, r: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The tables of one stage's stored result (``prefix``: the stage name without behavior)."""
    t: list[dict[str, Any]] = []
    if prefix == "components":
        t1 = r.get("table1") or {}
        t.append({"caption": f"Table 1: held-out classification ({r.get('preset')} preset)",
                  "header": ["statements", "accuracy [95 % CI] (n)"],
                  "rows": [[k.replace("accuracy_", "") if k != "accuracy" else "all",
                            fmt_est(t1.get(k), percent=True, n=True)]
                           for k in ("accuracy", "accuracy_desired", "accuracy_undesired")]})  # fmt: skip
    elif prefix == "probes":
        summ = r.get("summary") or {}
        t.append({"caption": "Mean probe accuracy per layer",
                  "header": ["layer", "mean accuracy", "std over behaviors", "behaviors"],
                  "rows": [[str(ly), fmt_est(s.get("mean_accuracy"), percent=True),
                            f"{100 * float(s.get('std_over_behaviors') or 0):.1f} %",
                            str(s.get("n_behaviors"))]
                           for ly, s in summ.items() if isinstance(s, Mapping)]})  # fmt: skip
        scores = r.get("scores") or []
        if scores:
            t.append({"caption": "Per behavior and layer (k-fold CV accuracy)",
                      "header": ["behavior", "layer", "accuracy"],
                      "rows": [[str(s.get("behavior")), str(s.get("layer")),
                                fmt_est(s.get("accuracy"), percent=True)] for s in scores]})  # fmt: skip
    elif prefix == "beta-sigma":
        kl = r.get("kl") or {}
        lr = r.get("log_ratio") or {}
        if kl.get("n"):
            t.append(curve_table(kl["n"], {"KL(P₋‖P₊)": kl.get("estimates") or []},
                                  caption="KL(P₋‖P₊ | s₁…sₙ) per n"))  # fmt: skip
        if lr.get("n"):
            t.append(curve_table(lr["n"], {"Var[log P₋/P₊]": lr.get("variance") or []},
                                  caption="Variance of the log-ratio per n"))  # fmt: skip
        t.append({"caption": "Fits", "header": ["quantity", "estimate"],
                  "rows": [[q, fmt_est(r.get(k))] for q, k in
                           (("β", "beta"), ("β′", "beta_prime"), ("σ²", "sigma2"), ("σ", "sigma"),
                            ("σ/β", "sigma_over_beta"), ("β′/β", "beta_prime_over_beta"))]})  # fmt: skip
    elif prefix == "prompt-dist":
        pk = r.get("prefix_kl") or {}
        kl = r.get("kl") or {}
        rows = [
            [str(x), "s₀", fmt_est(e)]
            for x, e in zip(pk.get("x") or [], pk.get("estimates") or [], strict=False)
        ]
        rows += [
            [str(x), "s", fmt_est(e)]
            for x, e in zip(kl.get("x") or [], kl.get("estimates") or [], strict=False)
        ]
        t.append({"caption": "KL(P₋‖P₊) along s₀ ⊕ s (x = sentences so far)",
                  "header": ["x", "part", "KL"], "rows": rows})  # fmt: skip
        t.append({"caption": "β_prompt", "header": ["quantity", "estimate"],
                  "rows": [["β_prompt", fmt_est(r.get("beta_prompt"))],
                           ["max KL inside the neutral prefix", fmt_est(r.get("neutral_kl_max"))],
                           ["KL after the undesired sentence", fmt_est(r.get("undesired_kl"))]]})  # fmt: skip
    elif prefix in ("convergence", "pretrained"):
        curves = r.get("curves") or {}
        if curves:
            first = next(iter(curves.values()))
            t.append(curve_table(first.get("n") or [],
                                  {CONDITIONS.get(c, c): cv.get("estimates") or []
                                   for c, cv in curves.items()},
                                  caption="KL(P₋‖P_LLM | s₁…sₙ) per n"))  # fmt: skip
        rows = []
        for c, fits in (r.get("fits") or {}).items():
            if not isinstance(fits, Mapping):
                rows.append([CONDITIONS.get(c, c), "failed", "—", "—", "—"])
                continue
            for fit in ("floored", "lemma5", "linear"):
                f = fits.get(fit)
                if isinstance(f, Mapping):
                    rows.append([CONDITIONS.get(c, c), FIT_LABEL[fit],
                                 fmt_est(f.get("log_inv_alpha")), fmt_est(f.get("beta")),
                                 fmt_est(f.get("n_star"))])  # fmt: skip
        if rows:
            t.append({"caption": "Fits (log 1/α, β per sentence, n* = log(1/α)/β)",
                      "header": ["condition", "fit", "log 1/α", "β", "n*"], "rows": rows})  # fmt: skip
        lrows = []
        for c, ln in (r.get("lengths") or {}).items():
            for fit in ("lemma5", "linear"):
                part = ln.get(fit) if isinstance(ln, Mapping) else None
                if isinstance(part, Mapping):
                    lrows.append([CONDITIONS.get(c, c), FIT_LABEL[fit],
                                  fmt_est(part.get("theorem1")), fmt_est(part.get("theorem2")),
                                  "; ".join(str(part[k]) for k in ("note", "theorem1_note",
                                            "theorem2_note") if part.get(k))])  # fmt: skip
        if lrows:
            t.append({"caption": "Theorem 1 / 2 prompt lengths (sentences)",
                      "header": ["condition", "fit", "Theorem 1", "Theorem 2", "note"],
                      "rows": lrows})  # fmt: skip
        if r.get("beta_ratio"):
            t.append({"caption": "β_aligned / β_pretrained", "header": ["fit", "ratio"],
                      "rows": [[FIT_LABEL.get(k, k), fmt_est(v)]
                               for k, v in r["beta_ratio"].items()]})  # fmt: skip
    elif prefix == "misalign":
        curves = r.get("curves") or {}
        bad = r.get("format") == "newline"
        key = "fraction_bad" if bad else "fraction_good"
        if curves:
            first = next(iter(curves.values()))
            t.append(curve_table(first.get("n") or [],
                                  {CONDITIONS.get(c, c): cv.get(key) or [] for c, cv in curves.items()},
                                  percent=True,
                                  caption=f"% {'bad' if bad else 'good'} responses per n "
                                  "(Wilson 95 % CI)"))  # fmt: skip
        rows = []
        for c, f in (r.get("sigmoid") or {}).items():
            if not isinstance(f, Mapping):
                rows.append([CONDITIONS.get(c, c), "failed", "—", "—", "—"])
                continue
            rows.append([CONDITIONS.get(c, c), fmt_est(f.get("centre")), fmt_est(f.get("beta")),
                         fmt_est(f.get("log_inv_alpha")),
                         "yes" if f.get("decays") else "no (n½ not identified)"])  # fmt: skip
        if rows:
            t.append({"caption": "Lemma 7 fits", "header": ["condition", "centre n½", "β",
                      "log 1/α", "decays"], "rows": rows})  # fmt: skip
        extra = []
        if r.get("aligning_delay") is not None:
            extra.append(["aligning-prompt delay Δn½", fmt_est(r.get("aligning_delay"))])
        td = r.get("theorem2")
        if isinstance(td, Mapping) and is_num(td.get("length_bound")):
            src = td.get("sources") or {}
            extra.append(["Theorem 2 upper bound on the length with the aligning prompt",
                          f"{fmt_g(td['length_bound'])} (log 1/α = "
                          f"{fmt_g(float(td.get('log_inv_alpha') or 0))} from "
                          f"{src.get('log_inv_alpha')}; β = {fmt_g(float(td.get('beta') or 0))} "
                          f"from {src.get('beta')}; |s₀| = {td.get('s0_sentences')})"])  # fmt: skip
        ns = get_path(r, "kl", "fit", "lemma5", "n_star")
        if ns:
            extra.append(["KL n* on the same prompts (Lemma 5)", fmt_est(ns)])
        if extra:
            t.append({"caption": "Delay and KL midpoint", "header": ["quantity", "estimate"],
                      "rows": extra})  # fmt: skip
    return t


def sample_responses(folder: Path, k: int = 3) -> list[dict[str, Any]]:
    """A few judged responses at the first and last n per condition (model text: escape!)."""
    path = folder / "responses.jsonl"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    if not rows:
        return []
    ns = sorted({int(r.get("n", 0)) for r in rows})
    out: list[dict[str, Any]] = []
    for n in sorted({ns[0], ns[-1]}):
        for cond in ("none", "aligned"):
            cell = [r for r in rows if int(r.get("n", 0)) == n and r.get("condition") == cond]
            for r in cell[:k]:
                p = r.get("prob_good")
                label = r.get("label")
                out.append({
                    "n": n,
                    "condition": CONDITIONS.get(cond, cond),
                    "verdict": "" if label is None else ("good" if label == 1 else "bad"),
                    "p_good": f"{p:.2f}" if is_num(p) else "",
                    "text": str(r.get("first_sentence") or r.get("text") or ""),
                })  # fmt: skip
    return out


def template_env() -> Any:
    """The Jinja2 environment of the report templates (HTML autoescaped, strict undefined)."""
    import jinja2

    folder = Path(__file__).resolve().parent / "templates"
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",), default=False),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["md"] = md_text
    env.filters["cell"] = md_cell
    return env


def render(template: str, context: Mapping[str, Any]) -> str:
    """Render one template of ``templates/`` with ``context``."""
    out: str = template_env().get_template(template).render(**context)
    return out


__all__ = [
    "CONDITIONS",
    "FIT_LABEL",
    "curve_table",
    "est_dict",
    "fmt_est",
    "fmt_g",
    "get_path",
    "img_data_uri",
    "is_num",
    "md_cell",
    "md_text",
    "render",
    "sample_responses",
    "stage_tables",
    "template_env",
]
