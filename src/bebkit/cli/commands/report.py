"""``bebkit report RUN_DIR [RUN_DIR ...]``: rebuild a run's report from disk alone, or compare
several runs side by side in one page."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bebkit.cli.output import add_json_flag, emit


def register(sub: Any) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild a run's report from disk (no model is loaded); with several run "
        "directories, a side-by-side comparison page",
    )
    p.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="`bebkit reproduce` run directories"
    )
    p.add_argument(
        "--paper-figures",
        default=None,
        help="the paper's numbers (authors-figures.json): redraw the KL convergence figures "
        "with the paper's curves into RUN_DIR/figures/ and compute the paper column from "
        "the authors' curves (default: the run's paper_figures or $BEBKIT_REFERENCE_DIR)",
    )
    p.add_argument(
        "--out",
        default=None,
        help="folder of compare.md / compare.html when comparing runs (default: the first run)",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bebkit.pipeline.report import redraw_run_figures, write_comparison, write_report

    if args.paper_figures is not None and not Path(args.paper_figures).is_file():
        from bebkit.errors import InputError

        raise InputError(f"--paper-figures {args.paper_figures} is not a file")
    redrawn: list[str] = []
    reports: list[dict[str, str]] = []
    for run_dir in args.run_dirs:
        # every KL figure is redrawn from its stage's record (with the paper's curves when a
        # figures file is given or found), so a reused stage's older figure is never shown
        redrawn += [str(p) for p in redraw_run_figures(run_dir, args.paper_figures)]
        md, page = write_report(run_dir, paper_figures=args.paper_figures, redraw=False)
        reports.append({"report_md": str(md), "report_html": str(page)})
    out: dict[str, Any] = {**reports[0], "redrawn_figures": redrawn}
    human = "\n".join(f"wrote {r['report_md']} and {r['report_html']}" for r in reports)
    if len(args.run_dirs) > 1:
        folder = Path(args.out) if args.out else Path(args.run_dirs[0])
        cmd, cpage = write_comparison(args.run_dirs, folder, paper_figures=args.paper_figures)
        out.update(reports=reports, compare_md=str(cmd), compare_html=str(cpage))
        human += f"\ncomparison: {cpage} (markdown: {cmd})"
    emit(out, as_json=args.json, human=human)
    return 0
