"""``bebkit reproduce CONFIG.yaml``: the whole paper pipeline, resumable (see bebkit.pipeline.reproduce)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from bebkit.cli.output import add_json_flag, emit, logger


def register(sub: Any) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run the paper's pipeline from a YAML config (resumable) and write a report",
        description="Train/reuse P+ and P- -> Table 1 -> probes -> beta/beta'/sigma^2 -> "
        "prompt-distinguishability -> convergence (alpha, beta, n*) -> behavior-expectation "
        "curves with the judge -> pretrained comparison -> record.json + report.md/html. "
        "Finished stages are cached by a hash of their config; a rerun skips them.",
    )
    p.add_argument("config", help="YAML config (see configs/)")
    p.add_argument("--quick", action="store_true", help="apply the config's `quick` sizes")
    p.add_argument("--out", default=None, help="run directory (default runs/<config name>)")
    p.add_argument(
        "--paper-figures", default=None, help="the authors' figure numbers (authors-figures.json)"
    )
    p.add_argument("--persona-dir", default=None, help="persona folder (overrides the config)")
    p.add_argument(
        "--no-recompute",
        action="store_true",
        help="stop (exit 1) instead of recomputing a cached stage whose files fail their "
        "integrity check",
    )
    p.add_argument(
        "--no-split-on-oom",
        action="store_true",
        help="fail on out-of-memory instead of rerunning the batch in halves "
        "(config: split_on_oom: false)",
    )
    p.add_argument(
        "--report-only",
        action="store_true",
        help="run nothing: write record-partial.json and report-partial.md/.html from the "
        "stages already finished for this config (safe beside a run in progress)",
    )
    add_json_flag(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bebkit.errors import InputError
    from bebkit.pipeline.config import load_config
    from bebkit.pipeline.report import console_lines, headline_rows
    from bebkit.pipeline.reproduce import report_partial, reproduce

    cfg = load_config(args.config)
    updates: dict[str, Any] = {}
    if args.paper_figures:
        if not Path(args.paper_figures).is_file():
            raise InputError(f"--paper-figures {args.paper_figures} is not a file")
        updates["paper_figures"] = args.paper_figures
    if args.persona_dir:
        if not Path(args.persona_dir).is_dir():
            raise InputError(f"--persona-dir {args.persona_dir} is not a directory")
        updates["persona_dir"] = args.persona_dir
    if args.no_split_on_oom:
        updates["split_on_oom"] = False
    if updates:
        cfg = cfg.model_copy(update=updates)
    out = Path(args.out) if args.out else Path("runs") / cfg.name
    if args.report_only:
        if args.no_recompute or args.no_split_on_oom:
            raise InputError("--report-only runs nothing: it takes no --no-recompute or "
                             "--no-split-on-oom")  # fmt: skip
        rec = report_partial(cfg, out, quick=args.quick, log=logger(args.json, clock=True),
                             config_path=args.config)  # fmt: skip
        res = rec["results"]
        summary = {
            "run_dir": str(out), "status": rec["status"],
            "record": str(out / "record-partial.json"),
            "report": str(out / "report-partial.html"),
            "finished": sorted(res["stages"]), "pending": res["pending"],
        }  # fmt: skip
        human = [f"{out}: {len(res['stages'])} stage(s) finished, {len(res['pending'])} not"]
        human += [f"  not finished: {p}" for p in res["pending"]]
        human.append(f"report: {summary['report']}")
        emit(summary, as_json=args.json, human="\n".join(human))
        return 0
    record = reproduce(
        cfg,
        out,
        quick=args.quick,
        log=logger(args.json, clock=True),
        config_path=args.config,
        recompute=not args.no_recompute,
    )
    stages = record["results"]["stages"]
    rows = headline_rows(stages, list(cfg.behaviors))
    summary = {
        "run_dir": str(out),
        "status": record["status"],
        "record": str(out / "record.json"),
        "report": str(out / "report.html"),
        "stages": {k: {"seconds": v["seconds"], "cached": v["cached"]} for k, v in stages.items()},
        "headline": [
            {"behavior": b, "quantity": q, "bebkit": o, "paper": p} for b, q, o, p in rows
        ],
    }
    emit(summary, as_json=args.json, human="\n".join(console_lines(record, out)))
    return 0
