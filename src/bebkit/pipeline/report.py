"""The run report: ``report.md`` and a self-contained ``report.html``, rebuilt from disk alone.

Reads ``RUN_DIR/record.json`` (written by :func:`bebkit.pipeline.reproduce.reproduce`) and the
stage folders it names; never loads a model. Model outputs are HTML-escaped and shown only
behind a content warning.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bebkit.errors import InputError
from bebkit.io import atomic_open

CONTENT_WARNING = (
    "Content warning: the sample responses below are raw model outputs generated after "
    "adversarial (misaligning) prompts. They may be rude, hostile or offensive; they are "
    "shown, escaped, only to document what the judge scored."
)

# The paper's headline numbers (Llama-2-13B-chat / LLaMA 7B–30B), for side-by-side display.
PAPER = {
    "table1": "97–100 % (LLaMA 7B/30B, app. J)",
    "table2": "95.2 % ± 4.7 % mean (LLaMA 7B, app. K)",
    "beta": "≈ 20 agreeableness, ≈ 12 anti-immigration (fig. 2)",
    "beta_prime": "≈ 30 (fig. 2)",
    "sigma2": "≈ 50 (fig. 2)",
    "n_star": "≈ 3 sentences (fig. 3a)",
    "beta_ratio": "≈ 5 (Llama-2-13B chat vs base, app. M)",
    "beta_prompt": "≈ 20 (fig. 15, app. N)",
    # % good of 32 responses at sentence 1 → 10 (fig. 3b / 12; the authors' result files).
    "good_agreeableness_none": "100 % → 2.5 % (n = 1 → 10)",
    "good_agreeableness_aligned": "100 % → 2.8 % (n = 1 → 10)",
    "good_anti-immigration_none": "100 % → 8.8 % (n = 1 → 10)",
    "good_anti-immigration_aligned": "100 % → 21.2 % (n = 1 → 10)",
    "delay": "aligning prompt delays misalignment by ≈ 1–3 sentences (fig. 3b/12)",
}


def _est(d: Any, digits: int = 3, *, percent: bool = False) -> str:
    """``value ± stderr [lo, hi] (n)`` from an Estimate dict (or nested ``{"estimate": …}``).

    ``percent=True`` shows a fraction as ``v % [lo, hi] (n)`` (the CI carries the uncertainty).
    """
    if not isinstance(d, Mapping):
        return "—"
    if "estimate" in d and isinstance(d["estimate"], Mapping):
        d = d["estimate"]
    v = d.get("value")
    if not isinstance(v, int | float):
        return "—"

    def num(x: float) -> str:
        return f"{100 * x:.1f}" if percent else f"{x:.{digits}g}"

    out = num(v) + (" %" if percent else "")
    se = d.get("stderr")
    if not percent and isinstance(se, int | float) and se == se and not d.get("exact"):
        out += f" ± {se:.2g}"
    lo, hi = d.get("ci_low"), d.get("ci_high")
    if isinstance(lo, int | float) and isinstance(hi, int | float):
        out += f" [{num(lo)}, {num(hi)}]"
    if d.get("n"):
        out += f" (n={d['n']})"
    return out


def _get(d: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(p)
    return d


def _summary_lines(stage: str, result: Mapping[str, Any]) -> list[str]:
    """Each experiment's own text summary (reused from the pipeline modules)."""
    fn: Callable[[Any], list[str]] | None = None
    try:
        if stage.startswith("beta-sigma"):
            from bebkit.pipeline.beta_sigma import summary_lines as fn
        elif stage.startswith("prompt-dist"):
            from bebkit.pipeline.prompt_dist import summary_lines as fn
        elif stage.startswith(("convergence", "pretrained")):
            from bebkit.pipeline.convergence import summary_lines as fn
        elif stage.startswith("misalign"):
            from bebkit.pipeline.misalign import summary_lines as fn
    except ImportError:  # pragma: no cover - all modules ship together
        return []
    if fn is None:
        return []
    try:
        return list(fn(dict(result)))
    except (KeyError, TypeError, ValueError, AttributeError):
        return ["(summary unavailable for this result)"]


def headline_rows(
    stages: Mapping[str, Any], behaviors: list[str]
) -> list[tuple[str, str, str, str]]:
    """(behavior, quantity, ours, paper) rows of the headline table."""
    from bebkit.pipeline.convergence import CONDITION_LABELS

    conditions = tuple(CONDITION_LABELS.items())
    rows: list[tuple[str, str, str, str]] = []
    probes = _get(stages, "probes", "result", "summary")
    if isinstance(probes, Mapping):
        for layer, pr in probes.items():
            if isinstance(pr, Mapping) and pr.get("mean_accuracy"):
                rows.append(
                    (
                        f"{pr.get('n_behaviors', '?')} behaviors",
                        f"Table 2 probe accuracy, mean over behaviors ({layer} layer)",
                        _est(pr["mean_accuracy"]),
                        PAPER["table2"],
                    )
                )
    for b in behaviors:
        r = lambda name, b=b: _get(stages, f"{name}-{b}", "result")  # noqa: E731
        t1 = r("components")
        if t1:
            rows.append(
                (
                    b,
                    "Table 1 held-out accuracy P₊ vs P₋",
                    _est(_get(t1, "table1", "accuracy")),
                    PAPER["table1"],
                )
            )
        bs = r("beta-sigma")
        if bs:
            rows.append((b, "β (lower envelope of KL(P₋‖P))", _est(bs.get("beta")), PAPER["beta"]))
            rows.append((b, "β′ (upper envelope)", _est(bs.get("beta_prime")), PAPER["beta_prime"]))
            rows.append((b, "σ² (variance slope)", _est(bs.get("sigma2")), PAPER["sigma2"]))
        pdist = r("prompt-dist")
        if pdist and pdist.get("beta_prompt"):
            rows.append(
                (
                    b,
                    "β_prompt (prompt distinguishability, KL after s₀ + n sentences)",
                    _est(pdist["beta_prompt"]),
                    PAPER["beta_prompt"],
                )
            )
        cv = r("convergence")
        if cv:
            for cond, label in conditions:
                fit = _get(cv, "fits", cond)
                if not fit:
                    continue
                for m, mlabel in (("lemma5", "Lemma 5 fit"), ("linear", "straight line")):
                    rows.append((b, f"α ({mlabel}, {label})", _est(_get(fit, m, "alpha")), "—"))
                    rows.append(
                        (
                            b,
                            f"β ({mlabel}, {label})",
                            _est(_get(fit, m, "beta")),
                            "≈ 10 (fig. 3a line)",
                        )
                    )
                    rows.append(
                        (
                            b,
                            f"n* = log(1/α)/β ({mlabel}, {label})",
                            _est(_get(fit, m, "n_star")),
                            PAPER["n_star"],
                        )
                    )
            for cond, label in conditions:
                ln = _get(cv, "lengths", cond, "lemma5")
                if not isinstance(ln, Mapping):
                    continue
                eps = _get(cv, "lengths", cond, "epsilon")
                for thm in ("theorem1", "theorem2"):
                    if ln.get(thm):
                        rows.append(
                            (
                                b,
                                f"{thm.replace('theorem', 'Theorem ')} prompt length for "
                                f"ε = {eps} (Lemma 5 parameters, {label})",
                                _est(ln[thm]),
                                "—",
                            )
                        )
        ms = r("misalign")
        if ms:
            for cond, label in conditions:
                curve = _get(ms, "curves", cond)
                good = curve.get("fraction_good") if isinstance(curve, Mapping) else None
                ns = curve.get("n") if isinstance(curve, Mapping) else None
                if good and ns:
                    rows.append(
                        (
                            b,
                            f"% good responses, n = {ns[0]} → {ns[-1]} ({label})",
                            f"{_est(good[0], percent=True)} → {_est(good[-1], percent=True)}",
                            PAPER.get(f"good_{b}_{cond}", "—"),
                        )
                    )
                centre = _get(ms, "sigmoid", cond, "centre")
                if centre:
                    rows.append(
                        (b, f"Lemma 7 sigmoid centre, sentences ({label})", _est(centre), "—")
                    )
            if ms.get("aligning_delay"):
                pred = _get(ms, "theorem2_delay", "predicted")
                pred_s = f"; Theorem 2 predicts {pred:.3g}" if isinstance(pred, int | float) else ""
                rows.append(
                    (
                        b,
                        "aligning-prompt delay, sentences (measured"
                        + (", vs Theorem 2)" if pred_s else ")"),
                        _est(ms["aligning_delay"]) + pred_s,
                        PAPER["delay"],
                    )
                )
        pt = r("pretrained")
        for m, mlabel in (("lemma5", "Lemma 5 fit"), ("linear", "straight line")):
            beta_pt = _get(pt, "fits", "none", m, "beta")
            if beta_pt:
                model = pt.get("target_model", "pretrained") if pt else "pretrained"
                rows.append((b, f"β pretrained ({model}, {mlabel})", _est(beta_pt), "—"))
        if pt and isinstance(pt.get("beta_ratio"), Mapping):
            for m, e in pt["beta_ratio"].items():
                rows.append(
                    (
                        b,
                        f"β_aligned / β_pretrained ({m}; different model families)",
                        _est(e),
                        PAPER["beta_ratio"],
                    )
                )
    return rows


def _responses(folder: Path, k: int = 6) -> list[dict[str, Any]]:
    path = folder / "responses.jsonl"
    if not path.is_file():
        return []
    rows = [
        json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    if not rows:
        return []
    n_max = max(int(r.get("n", 0)) for r in rows)
    last = [r for r in rows if int(r.get("n", 0)) == n_max]
    return last[:k]


def _img_data_uri(path: Path) -> str:
    mime = "image/svg+xml" if path.suffix == ".svg" else "image/png"
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def build_report(run_dir: str | Path) -> tuple[str, str]:
    """(markdown, html) for a run directory."""
    run = Path(run_dir)
    rec_path = run / "record.json"
    if not rec_path.is_file():
        raise InputError(f"{run} has no record.json (not a bebkit reproduce run directory)")
    try:
        record = json.loads(rec_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise InputError(f"{rec_path} is not valid JSON") from None
    cfg = record.get("config", {})
    stages: dict[str, Any] = _get(record, "results", "stages") or {}
    behaviors = list(cfg.get("behaviors") or [])
    md: list[str] = []
    h: list[str] = []

    title = f"bebkit report — {cfg.get('name', run.name)}"
    md += [f"# {title}", ""]
    h += [f"<h1>{html.escape(title)}</h1>"]
    meta = [
        ("status", record.get("status")),
        ("aligned model", cfg.get("aligned_model")),
        ("pretrained model", cfg.get("pretrained_model")),
        ("behaviors", ", ".join(behaviors)),
        ("format", cfg.get("format")),
        ("quick sizes", cfg.get("quick")),
        ("seed", record.get("seed")),
        ("git", record.get("git")),
        ("created", record.get("created")),
        ("versions", ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items() if v)),
    ]
    md += [f"- **{k}**: {v}" for k, v in meta]
    h += (
        ["<ul>"]
        + [f"<li><b>{html.escape(k)}</b>: {html.escape(str(v))}</li>" for k, v in meta]
        + ["</ul>"]
    )
    err = _get(record, "results", "error")
    if err:
        md += ["", f"**The run failed:** {err}"]
        h += [f"<p><b>The run failed:</b> {html.escape(str(err))}</p>"]

    rows = headline_rows(stages, behaviors)
    md += [
        "",
        "## Measured vs the paper",
        "",
        "Every number is value ± stderr [95 % CI] (n). Paper values: Llama-2-13B(-chat) and LLaMA 7B–30B.",
        "",
        "| behavior | quantity | bebkit (this run) | paper |",
        "|---|---|---|---|",
    ]
    md += [f"| {b} | {q} | {o} | {p} |" for b, q, o, p in rows]
    h += [
        "<h2>Measured vs the paper</h2>",
        "<table><tr><th>behavior</th><th>quantity</th><th>bebkit</th><th>paper</th></tr>",
    ]
    h += [
        f"<tr><td>{html.escape(b)}</td><td>{html.escape(q)}</td><td>{html.escape(o)}</td><td>{html.escape(p)}</td></tr>"
        for b, q, o, p in rows
    ]
    h += ["</table>"]

    timing = record.get("timings_s") or {}
    md += ["", "## Stages", "", "| stage | seconds | cached |", "|---|---|---|"]
    h += ["<h2>Stages</h2><table><tr><th>stage</th><th>seconds</th><th>cached</th></tr>"]
    for name, st in stages.items():
        secs = f"{float(timing.get(name, st.get('seconds', 0.0))):.1f}"
        md.append(f"| {name} | {secs} | {st.get('cached')} |")
        h.append(f"<tr><td>{html.escape(name)}</td><td>{secs}</td><td>{st.get('cached')}</td></tr>")
    h.append("</table>")

    for name, st in stages.items():
        folder = Path(st.get("folder", ""))
        if not folder.is_absolute():
            folder = run / folder
        result = st.get("result") or {}
        md += ["", f"## {name}", ""]
        h += [f"<h2>{html.escape(name)}</h2>"]
        if name == "probes":
            table2 = folder / "table2.md"
            if table2.is_file():
                md += [table2.read_text(encoding="utf-8")]
                h += [f"<pre>{html.escape(table2.read_text(encoding='utf-8'))}</pre>"]
        lines = _summary_lines(name, result)
        if lines:
            md += ["```", *lines, "```"]
            h += [f"<pre>{html.escape(chr(10).join(lines))}</pre>"]
        redrawn = run / REDRAWN_DIR / name
        for png in sorted(folder.glob("*.png")) if folder.is_dir() else []:
            if (redrawn / png.name).is_file():  # the same figure with the paper's curves added
                png = redrawn / png.name
            rel = png.relative_to(run) if png.is_relative_to(run) else png
            md += [f"![{png.stem}]({rel})", ""]
            h += [
                f'<figure><img src="{_img_data_uri(png)}" alt="{html.escape(png.stem)}" style="max-width:100%"><figcaption>{html.escape(png.stem)}</figcaption></figure>'
            ]
        samples = _responses(folder) if name.startswith("misalign") else []
        if samples:
            md += [
                f"> **{CONTENT_WARNING}**",
                "",
                "<details><summary>sample responses (escaped)</summary>",
                "",
            ]
            h += [
                f'<p class="warn"><b>{html.escape(CONTENT_WARNING)}</b></p>',
                "<details><summary>sample responses (escaped)</summary><ul>",
            ]
            for s in samples:
                text = str(s.get("first_sentence") or s.get("text") or "")
                label = f"n={s.get('n')}, {s.get('condition')}, judge P(good)={s.get('p_good', s.get('prob_good', '?'))}"
                # Inside a code span Markdown renders no HTML; only backticks and newlines could
                # break out of it, so those are neutralised instead of HTML-escaping.
                safe = " ".join(text.replace("`", "'").split())
                md.append(f"- {label}: `{safe}`")
                h.append(f"<li>{html.escape(label)}: <code>{html.escape(text)}</code></li>")
            md += ["", "</details>"]
            h += ["</ul></details>"]

    md += [
        "",
        "## Limitations",
        "",
        "P₊/P₋ are LoRA proxies trained on persona statements, not the model's true mixture "
        "components; behavior is scored by an automatic judge instead of hand labels; the "
        "models are small (135M–270M). The pretrained/aligned comparison uses two different "
        "model families unless configured otherwise.",
    ]
    h += [
        "<h2>Limitations</h2><p>P₊/P₋ are LoRA proxies trained on persona statements, not the "
        "model's true mixture components; behavior is scored by an automatic judge instead of "
        "hand labels; the models are small. The pretrained/aligned comparison uses two "
        "different model families unless configured otherwise.</p>"
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px}"
        ".warn{background:#fff3cd;padding:.5em}pre{background:#f6f6f6;padding:.5em;overflow:auto}"
    )
    page = (
        f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>" + "\n".join(h) + "</body></html>"
    )
    return "\n".join(md) + "\n", page


REDRAWN_DIR = "figures"


def redraw_kl_figures(run_dir: str | Path, reference_file: str | Path) -> list[Path]:
    """Redraw every convergence / pretrained figure of a finished run with the paper's curves.

    Reads each stage's stored ``record.json`` (no model is loaded) and writes
    ``RUN/figures/<stage>/<kind>.png`` (+ ``.svg``); the stage folders are left untouched and
    :func:`build_report` shows a redrawn figure in place of the stage's own one.
    """
    from bebkit.pipeline.convergence import convergence_figure
    from bebkit.reporting.kl_figures import (
        REFERENCE_LABELS,
        condition_reference,
        load_reference_kl,
    )

    run = Path(run_dir)
    rec_path = run / "record.json"
    if not rec_path.is_file():
        raise InputError(f"{run} has no record.json (not a bebkit reproduce run directory)")
    stages = _get(_read_json(rec_path), "results", "stages") or {}
    written: list[Path] = []
    for stage, st in stages.items():
        if not stage.startswith(("convergence", "pretrained")):
            continue
        kind = "pretrained" if stage.startswith("pretrained") else "convergence"
        # The folder this run used: a stage dir may also hold other keys from older configs.
        folder = Path(st.get("folder", ""))
        rec = _read_json(
            folder / "record.json" if folder.is_absolute() else run / folder / "record.json"
        )
        res, cfg = rec.get("results") or {}, rec.get("config") or {}
        ref = condition_reference(load_reference_kl(reference_file, str(res.get("behavior"))), kind)
        if not ref:
            continue
        family = res.get("family_note")
        out = run / REDRAWN_DIR / stage / f"{kind}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        convergence_figure(
            res,
            out,
            n_tokens=int(cfg.get("n_tokens", 0)),
            note=f"note: {family}" if family else "",
            reference=ref,
            reference_label=REFERENCE_LABELS[kind],
        )
        written.append(out)
    return written


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path} is missing") from None
    except json.JSONDecodeError:
        raise InputError(f"{path} is not valid JSON") from None
    return data if isinstance(data, dict) else {}


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.md`` and ``report.html`` into the run directory (atomically)."""
    run = Path(run_dir)
    md, page = build_report(run)
    with atomic_open(run / "report.md") as fh:
        fh.write(md)
    with atomic_open(run / "report.html") as fh:
        fh.write(page)
    return run / "report.md", run / "report.html"
