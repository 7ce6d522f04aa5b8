"""The sweep report: every unit's headline numbers with CIs as one table (``results.csv``,
``results.parquet``, a sortable ``report.html``) and the figures a researcher wants at a glance:
Table 1 accuracy per behavior, β and n* across behaviors, β vs probe accuracy, models side by
side. Rows come from :func:`bebkit.pipeline.sweep.result_rows` (plain dicts)."""

from __future__ import annotations

import csv
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "model",
    "behavior",
    "experiment",
    "quantity",
    "value",
    "stderr",
    "ci_low",
    "ci_high",
    "ci_level",
    "n",
    "status",
    "seconds",
    "key",
    "error",
)

TABLE1 = "classify:table1.accuracy"
BETA = "beta-sigma:beta"
PROBE_PREFIX = "probe:accuracy["
NSTAR = re.compile(r"^convergence:fits\.([^.]+)\.linear\.n_star$")


def _num(v: Any) -> float:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return math.nan
    return f


def _short(model: str) -> str:
    return Path(model).name or model


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path:
    from bebkit.io import atomic_open

    with atomic_open(path) as fh:
        w = csv.DictWriter(fh, fieldnames=list(COLUMNS), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    return path


def write_parquet(path: Path, rows: Sequence[Mapping[str, Any]]) -> Path | None:
    """The same table as Parquet (None when pyarrow is not installed)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    types = {
        "value": pa.float64(),
        "stderr": pa.float64(),
        "ci_low": pa.float64(),
        "ci_high": pa.float64(),
        "ci_level": pa.float64(),
        "n": pa.int64(),
        "seconds": pa.float64(),
    }
    schema = pa.schema([(c, types.get(c, pa.string())) for c in COLUMNS])
    cols: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    for r in rows:
        for c in COLUMNS:
            v = r.get(c)
            if c in types and v is not None:
                v = int(v) if c == "n" else float(v)
            elif v is not None:
                v = str(v)
            cols[c].append(v)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.table(cols, schema=schema), tmp)
    tmp.replace(path)
    return path


def _values(
    rows: Sequence[Mapping[str, Any]], quantity: str
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {behavior: row}}`` of one quantity."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r.get("quantity") == quantity and math.isfinite(_num(r.get("value"))):
            out.setdefault(str(r["model"]), {})[str(r["behavior"])] = dict(r)
    return out


def _probe_quantity(rows: Sequence[Mapping[str, Any]]) -> str | None:
    qs = [str(r["quantity"]) for r in rows if str(r.get("quantity")).startswith(PROBE_PREFIX)]
    if not qs:
        return None
    return "probe:accuracy[last]" if "probe:accuracy[last]" in qs else qs[0]


def _err(r: Mapping[str, Any]) -> tuple[float, float]:
    v, lo, hi = _num(r.get("value")), _num(r.get("ci_low")), _num(r.get("ci_high"))
    return (v - lo if math.isfinite(lo) else 0.0, hi - v if math.isfinite(hi) else 0.0)


def figure_table1(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Table 1 accuracy per behavior (Wilson CI), behaviors sorted, models side by side."""
    import matplotlib.pyplot as plt

    data = _values(rows, TABLE1)
    if not data:
        return None
    behaviors = sorted(
        {b for m in data.values() for b in m},
        key=lambda b: -sum(_num(m[b]["value"]) for m in data.values() if b in m),
    )
    models = list(data)
    h = 0.8 / len(models)
    # room for the longest behavior name left of the axes (persona names run to 70 chars)
    width = 4.5 + 0.055 * max(len(b) for b in behaviors)
    fig, ax = plt.subplots(figsize=(width, 1.4 + 0.22 * len(behaviors) * max(1, len(models) / 2)))
    for j, m in enumerate(models):
        ys, xs, errs = [], [], []
        for i, b in enumerate(behaviors):
            if b in data[m]:
                ys.append(i + (j - (len(models) - 1) / 2) * h)
                xs.append(_num(data[m][b]["value"]))
                errs.append(_err(data[m][b]))
        ax.barh(ys, xs, height=h, xerr=list(zip(*errs, strict=True)) if errs else None,
                label=_short(m), capsize=2)  # fmt: skip
    ax.set_yticks(range(len(behaviors)), behaviors, fontsize=7)
    ax.invert_yaxis()
    ax.axvline(0.9, color="grey", lw=0.8, ls="--")
    ax.set_xlim(0, 1.02)
    ax.set_xlabel("Table 1 held-out accuracy (log P+ > log P-), 95% CI")
    # above the axes: inside, it covers the lowest bars
    ax.legend(fontsize=7, loc="lower right", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _strip(ax: Any, groups: Mapping[str, list[float]], ylabel: str) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for i, vals in enumerate(groups.values()):
        v = np.asarray(vals, dtype=float)
        ax.scatter(i + rng.uniform(-0.15, 0.15, v.size), v, s=14, alpha=0.7)
        if v.size:
            ax.hlines(np.median(v), i - 0.3, i + 0.3, color="k", lw=1.2)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=7, rotation=20)
    ax.set_ylabel(ylabel)


def figure_beta_nstar(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """β (beta-sigma) and n* (convergence, per condition) across behaviors, per model."""
    import matplotlib.pyplot as plt

    beta = {
        _short(m): [_num(r["value"]) for r in d.values()] for m, d in _values(rows, BETA).items()
    }
    nstar: dict[str, list[float]] = {}
    for q in sorted({str(r.get("quantity")) for r in rows if NSTAR.match(str(r.get("quantity")))}):
        cond = NSTAR.match(q).group(1)  # type: ignore[union-attr]
        for m, d in _values(rows, q).items():
            nstar.setdefault(f"{_short(m)} ({cond})", []).extend(
                _num(r["value"]) for r in d.values()
            )
    panels = [(g, lab) for g, lab in ((beta, "β (KL envelope)"), (nstar, "n* (sentences)")) if g]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for ax, (groups, label) in zip(axes[0], panels, strict=True):
        _strip(ax, groups, label)
        ax.set_title(f"{label.split(' ')[0]} across behaviors (median: line)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure_beta_vs_probe(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """β against the behavior's probe accuracy (how separable it is in the hidden states)."""
    import matplotlib.pyplot as plt

    pq = _probe_quantity(rows)
    beta = _values(rows, BETA)
    probe = _values(rows, pq) if pq else {}
    pairs = {m: [(probe[m][b], beta[m][b]) for b in beta[m] if b in probe.get(m, {})] for m in beta}
    if not any(pairs.values()):
        return None
    fig, ax = plt.subplots(figsize=(5, 4))
    for m, pts in pairs.items():
        if pts:
            x = [_num(p["value"]) for p, _ in pts]
            y = [_num(b["value"]) for _, b in pts]
            xe = list(zip(*[_err(p) for p, _ in pts], strict=True))
            ye = list(zip(*[_err(b) for _, b in pts], strict=True))
            ax.errorbar(x, y, xerr=xe, yerr=ye, fmt="o", ms=4, capsize=2, label=_short(m))
    ax.set_xlabel(f"probe accuracy ({pq})")
    ax.set_ylabel("β (beta-sigma)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def figure_models(rows: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Models side by side: each headline quantity's mean over behaviors (±1.96 SE)."""
    import matplotlib.pyplot as plt
    import numpy as np

    qs = [TABLE1, _probe_quantity(rows), BETA]
    qs += sorted({str(r.get("quantity")) for r in rows if NSTAR.match(str(r.get("quantity")))})
    panels = [(q, _values(rows, q)) for q in qs if q]
    panels = [(q, d) for q, d in panels if d]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    for ax, (q, d) in zip(axes[0], panels, strict=True):
        models = list(d)
        means, ses = [], []
        for m in models:
            v = np.asarray([_num(r["value"]) for r in d[m].values()])
            means.append(float(v.mean()))
            ses.append(float(1.96 * v.std(ddof=1) / np.sqrt(v.size)) if v.size > 1 else 0.0)
        ax.bar(range(len(models)), means, yerr=ses, capsize=3)
        ax.set_xticks(range(len(models)), [_short(m) for m in models], fontsize=7, rotation=20)
        ax.set_title(f"{q}\n(mean over behaviors)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


_SORT_JS = """<script>
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.style.cursor = 'pointer';
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    var key = function (tr) { var c = tr.cells[col]; var v = c.dataset.v;
      return v !== undefined && v !== '' ? parseFloat(v) : c.textContent; };
    Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b);
      var r = (typeof x === 'number' && typeof y === 'number') ? x - y : String(x).localeCompare(String(y));
      return asc ? r : -r;
    }).forEach(function (tr) { body.appendChild(tr); });
  });
});
</script>"""


def _cell(r: Mapping[str, Any] | None) -> str:
    if r is None:
        return "<td></td>"
    v, lo, hi = _num(r.get("value")), _num(r.get("ci_low")), _num(r.get("ci_high"))
    if not math.isfinite(v):
        return '<td data-v="">n/a</td>'
    ci = f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) and math.isfinite(hi) else ""
    return f'<td data-v="{v!r}">{v:.3g}<small>{html.escape(ci)}</small></td>'


def render_html(
    rows: Sequence[Mapping[str, Any]], figures: Mapping[str, str], title: str, suffix: str = ""
) -> str:
    """One page: counts, figures, the (model, behavior) × quantity table, the failures."""
    esc = html.escape
    quantities = list(dict.fromkeys(str(r["quantity"]) for r in rows if r.get("quantity")))
    keyed: dict[tuple[str, str], dict[str, Mapping[str, Any]]] = {}
    failed: dict[tuple[str, str], int] = {}
    for r in rows:
        k = (str(r["model"]), str(r["behavior"]))
        keyed.setdefault(k, {})
        if r.get("quantity"):
            keyed[k][str(r["quantity"])] = r
        if r.get("status") == "failed":
            failed[k] = failed.get(k, 0) + 1
    units = {(r["model"], r["behavior"], r["experiment"]): r for r in rows}
    n_fail = sum(1 for r in units.values() if r.get("status") == "failed")
    n_pending = sum(1 for r in units.values() if r.get("status") == "pending")
    pending = f"; {n_pending} not finished yet (empty cells)" if n_pending else ""
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{esc(title)}</title><style>body{{font-family:sans-serif;margin:1.5em}}"
        "table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;"
        "padding:2px 6px;text-align:right}td:first-child,td:nth-child(2){text-align:left}"
        "th{background:#eee}small{color:#666}img{max-width:100%}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
        f"<p>{len(units)} units over {len(keyed)} (model, behavior) rows; "
        f"{n_fail} failed{pending}. Cells: value [95% CI]. Click a column header to sort.</p>",
    ]
    for label, rel in figures.items():
        parts.append(f"<h2>{esc(label)}</h2><img src='{esc(rel)}' alt='{esc(label)}'>")
    head = "".join(f"<th>{esc(q)}</th>" for q in quantities)
    parts.append(
        "<h2>Results</h2><table class='sortable'><thead><tr><th>model</th><th>behavior</th>"
        f"{head}<th>failed units</th></tr></thead><tbody>"
    )
    for (m, b), qs in keyed.items():
        cells = "".join(_cell(qs.get(q)) for q in quantities)
        nf = failed.get((m, b), 0)
        parts.append(
            f"<tr><td>{esc(_short(m))}</td><td>{esc(b)}</td>{cells}<td data-v='{nf}'>{nf}</td></tr>"
        )
    parts.append("</tbody></table>")
    fails = [r for r in units.values() if r.get("status") == "failed"]
    if fails:
        parts.append("<h2>Failed units</h2><table><tr><th>model</th><th>behavior</th>"
                     "<th>experiment</th><th>error</th></tr>")  # fmt: skip
        for r in fails:
            parts.append(
                f"<tr><td>{esc(_short(str(r['model'])))}</td><td>{esc(str(r['behavior']))}</td>"
                f"<td>{esc(str(r['experiment']))}</td><td>{esc(str(r.get('error')))}</td></tr>"
            )
        parts.append("</table>")
    csv_name, pq_name = f"results{suffix}.csv", f"results{suffix}.parquet"
    parts.append(f"<p>Full table: <a href='{csv_name}'>{csv_name}</a>, "
                 f"<a href='{pq_name}'>{pq_name}</a>.</p>")  # fmt: skip
    parts.append(_SORT_JS + "</body></html>")
    return "\n".join(parts)


def write_report(
    root: Path, rows: Sequence[Mapping[str, Any]], *, title: str, suffix: str = ""
) -> dict[str, str]:
    """Write the table files, the figures and ``report.html`` into ``root``; their paths.
    ``suffix`` names another set (``report-partial.html``, ``results-partial.csv``,
    ``figures-partial/``) beside the sweep's own."""
    import matplotlib

    matplotlib.use("Agg")
    from bebkit.io import atomic_open

    figdir = root / f"figures{suffix}"
    figdir.mkdir(parents=True, exist_ok=True)
    out: dict[str, str] = {"csv": str(write_csv(root / f"results{suffix}.csv", rows))}
    pq = write_parquet(root / f"results{suffix}.parquet", rows)
    if pq is not None:
        out["parquet"] = str(pq)
    figures: dict[str, str] = {}
    for label, name, fn in (
        ("Table 1 accuracy per behavior", "table1_accuracy.png", figure_table1),
        ("β and n* across behaviors", "beta_nstar.png", figure_beta_nstar),
        ("β vs probe accuracy", "beta_vs_probe.png", figure_beta_vs_probe),
        ("Models side by side", "models.png", figure_models),
    ):
        p = fn(rows, figdir / name)
        if p is not None:
            figures[label] = f"{figdir.name}/{name}"
            out[name.removesuffix(".png")] = str(p)
    page = root / f"report{suffix}.html"
    with atomic_open(page) as fh:
        fh.write(render_html(rows, figures, title, suffix))
    out["html"] = str(page)
    return out


__all__ = ["COLUMNS", "render_html", "write_csv", "write_parquet", "write_report"]
