"""``bebkit sweep CONFIG.yaml``: models × behaviors × experiments on Ray, resumable, with a
sweep report (see bebkit.pipeline.sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bebkit.cli.output import add_json_flag, emit, logger


def register(sub: Any) -> None:
    p = sub.add_parser(
        "sweep",
        help="run a grid of models x behaviors x experiments on Ray (resumable) with a report",
        description="Every (model, behavior, experiment) unit of the config is a Ray task on "
        "a replica of its model (one base model per replica, adapters switched per behavior), "
        "cached by the content hash of its settings and data: a killed sweep resumes and a "
        "larger grid reuses finished units. Writes sweep.json, results.csv/.parquet, "
        "report.html and figures/. Exit code 1 when any unit failed.",
    )
    p.add_argument("config", help="sweep YAML config (see configs/sweep-*.yaml)")
    p.add_argument("--out", default=None, help="sweep directory (default sweeps/<config name>)")
    p.add_argument(
        "--address",
        default=None,
        help="Ray cluster to use: 'auto' or ray://HOST:PORT (default: a local Ray started here)",
    )
    p.add_argument(
        "--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all cores)"
    )
    p.add_argument("--quick", action="store_true", help="apply the config's `quick` overrides")
    p.add_argument("--persona-dir", default=None, help="persona folder (overrides the config)")
    p.add_argument(
        "--progress-every", type=float, default=10.0, help="seconds between progress lines"
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write report-partial.html / results-partial.csv of the units "
        "finished so far (safe while the sweep is still running into the same folder); exit 1 "
        "when any unit failed",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bebkit.errors import InputError
    from bebkit.pipeline.sweep import load_sweep_config, run_sweep

    if args.num_cpus is not None and args.num_cpus < 1:
        raise InputError(f"--num-cpus must be >= 1, got {args.num_cpus}")
    if args.address and args.num_cpus:
        raise InputError("--num-cpus sizes a local Ray; it cannot be used with --address")
    if args.report_only and (args.address or args.num_cpus):
        raise InputError("--report-only runs nothing: it takes no --address or --num-cpus")
    overrides = {"persona_dir": args.persona_dir} if args.persona_dir else None
    cfg = load_sweep_config(args.config, quick=args.quick, overrides=overrides)
    out = Path(args.out) if args.out else Path("sweeps") / cfg.name
    summary = run_sweep(
        cfg,
        out,
        address=args.address,
        num_cpus=args.num_cpus,
        log=logger(args.json, clock=True),
        progress_every=args.progress_every,
        execute=not args.report_only,
    )
    code = 1 if summary["status"] == "failed" or summary["failed"] else 0
    brief = {k: v for k, v in summary.items() if k != "units"}
    brief["sweep_dir"] = str(out)
    if args.json:
        emit(brief, as_json=True)
        return code
    lines = [
        f"sweep {cfg.name}: {summary['n_units']} units — {summary['done']} run, "
        f"{summary['cached']} cached, {summary['failed']} failed"
        + (f", {summary['pending']} not finished" if summary.get("pending") else "")
        + f" ({summary['wall_this_invocation']:.0f}s)",
    ]
    for uid, err in summary["failures"].items():
        lines.append(f"  FAILED {uid}: {err}")
    rep = summary.get("report", {})
    if rep:
        lines.append(f"report: {rep.get('html')}\ntable:  {rep.get('csv')}")
    emit(brief, as_json=False, human="\n".join(lines))
    return code
