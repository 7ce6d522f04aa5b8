"""``bebkit report RUN_DIR``: rebuild report.md / report.html from a run directory alone."""

from __future__ import annotations

import argparse
from typing import Any

from bebkit.cli.output import add_json_flag, emit


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="rebuild a run's report from disk (no model is loaded)")
    p.add_argument("run_dir", help="a `bebkit reproduce` run directory")
    p.add_argument(
        "--reference",
        default=None,
        help="the paper's numbers (authors-figures.json): redraw the KL convergence figures "
        "with the paper's curves into RUN_DIR/figures/ before building the report",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bebkit.pipeline.report import redraw_kl_figures, write_report

    redrawn: list[str] = []
    if args.reference is not None:
        redrawn = [str(p) for p in redraw_kl_figures(args.run_dir, args.reference)]
    md, page = write_report(args.run_dir)
    emit(
        {"report_md": str(md), "report_html": str(page), "redrawn_figures": redrawn},
        as_json=args.json,
        human=f"wrote {md} and {page}",
    )
    return 0
