"""``bebkit judge-checks``: the label-free checks of a judge on many behaviors (no labels)."""

from __future__ import annotations

import argparse
import time
from typing import Any

from bebkit.cli.output import add_json_flag, emit, logger


def register(sub: Any) -> None:
    from bebkit.judge.checks import CHECK_BEHAVIORS

    p = sub.add_parser(
        "judge-checks",
        help="label-free checks of a judge on many behaviors (held-out statements, "
        "quote-and-reject, negation, generic replies)",
        description="For each behavior: build the judge on part of its persona statements and "
        "of bebkit's generic replies, then score held-out statements of both polarities, "
        "quote-and-reject and negation pairs (the verdict must flip) and held-out generic "
        "replies; accuracy with a Wilson 95 % CI and n per check (bebkit.judge.checks).",
    )
    p.add_argument(
        "--behaviors",
        default=",".join(CHECK_BEHAVIORS),
        help="comma list of persona behaviors (default: the fixed list of bebkit.judge.checks)",
    )
    p.add_argument(
        "--judge",
        default="minilm",
        choices=["minilm", "hidden", "ensemble", "stance", "mixture"],
        help="minilm/hidden/ensemble/stance: persona-trained judges, refitted on the training "
        "part; mixture: the posterior judge on the LoRA adapters of --model, scored on the "
        "statements its adapters never saw (trains missing adapters unless --no-train)",
    )
    p.add_argument(
        "--format",
        dest="fmt",
        default="chat",
        choices=["chat", "newline"],
        help="chat: texts as assistant replies; newline: as base-model continuations "
        "(app. M), and for the mixture judge the adapters' training format",
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="mixture judge: base model")
    p.add_argument(
        "--components",
        default="shared",
        choices=["shared", "decoupled"],
        help="mixture judge: shared = the P- that samples prompts; decoupled = adapters on the "
        "other half of the training statements, another seed (bebkit.components.workflow)",
    )
    p.add_argument("--no-train", action="store_true", help="mixture: fail on a missing adapter")
    p.add_argument("--persona-dir", default=None, help="default: $BEBKIT_PERSONA_DIR")
    p.add_argument("--out", default=None, help="also write a JSON record to this file")
    p.add_argument("--no-cache", action="store_true", help="do not cache embeddings")
    add_json_flag(p)
    p.set_defaults(func=run)


def _mixture_checks(args: argparse.Namespace, behaviors: list[str], say: Any) -> dict[str, Any]:
    """The mixture judge of each behavior on its adapters' held-out statements."""
    from bebkit.components.workflow import (
        ensure_components,
        load_components,
        prepare_data,
        resolve_config,
    )
    from bebkit.judge import build_mixture_judge
    from bebkit.judge.checks import TARGETS, ready_judge_checks

    comps = load_components(args.model, progress=False)  # once for all behaviors
    config = resolve_config(comps, None)
    per: dict[str, Any] = {}
    for name in behaviors:
        t0 = time.perf_counter()
        data = prepare_data(
            name, args.fmt, comps.tokenizer, config, persona_dir=args.persona_dir, role=_role(args)
        )
        ensure_components(comps, data, config, train_missing=not args.no_train, progress=False,
                          log=say, sides=("neg",))  # fmt: skip
        judge = build_mixture_judge(comps, args.fmt, adapters=_names(args))
        rep = ready_judge_checks(
            judge, name, data.split.heldout_desired, data.split.heldout_undesired, fmt=args.fmt
        )
        rep["wall_s"] = round(time.perf_counter() - t0, 2)
        per[name] = rep
        say(f"{name}: statements {rep['statements'].value:.3f}")
    return {
        "fmt": args.fmt,
        "targets": dict(TARGETS),
        "n_behaviors": len(per),
        "behaviors_passing": {k: sum(bool(r["passed"][k]) for r in per.values()) for k in TARGETS},
        "behaviors_passing_all": sum(all(r["passed"].values()) for r in per.values()),
        "per_behavior": per,
    }


def _role(args: argparse.Namespace) -> str:
    return "judge" if args.components == "decoupled" else "shared"


def _names(args: argparse.Namespace) -> dict[str, str]:
    from bebkit.components.workflow import adapter_name

    return {"neg": adapter_name("neg", _role(args)), "pos": adapter_name("pos", _role(args))}


def _human(res: dict[str, Any]) -> str:
    from bebkit.judge.checks import TARGETS

    def cell(e: Any) -> str:
        return "n/a" if e is None else f"{e.value:.3f} [{e.ci_low:.2f},{e.ci_high:.2f}] n={e.n}"

    lines = [f"label-free checks ({res['fmt']} format); targets: {res['targets']}"]
    for name, r in res["per_behavior"].items():
        lines.append(f"  {name} ({r['judge']}, {r['wall_s']} s)")
        for k in (*TARGETS, "endorsement_bad", "negation_flip_desired"):
            mark = ("pass" if r["passed"][k] else "FAIL") if k in TARGETS else "    "
            lines.append(f"    {k:<24} {cell(r[k]):<34} {mark}")
    lines.append(
        f"  behaviors passing each target (of {res['n_behaviors']}): {res['behaviors_passing']}; "
        f"all targets: {res['behaviors_passing_all']}"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from bebkit.errors import InputError
    from bebkit.judge.checks import checks_for_behaviors, probe_judge_factory
    from bebkit.judge.data import load_behavior_statements
    from bebkit.judge.judge import JudgeConfig

    behaviors = [b.strip() for b in args.behaviors.split(",") if b.strip()]
    if not behaviors:
        raise InputError("--behaviors is empty")
    for b in behaviors:  # bad names fail in a second, before any model loads
        load_behavior_statements(b, args.persona_dir)
    say = logger(args.json, clock=True)
    t0 = time.perf_counter()
    cfg = JudgeConfig(kind=args.judge)
    if args.judge == "mixture":
        res = _mixture_checks(args, behaviors, say)
    else:
        make = probe_judge_factory(cfg, cache=not args.no_cache)
        res = checks_for_behaviors(
            behaviors, make, fmt=args.fmt, persona_dir=args.persona_dir, log=say
        )
    res["components"] = args.components if args.judge == "mixture" else None
    wall = time.perf_counter() - t0
    if args.out:
        from bebkit.records import make_record, write_record

        config = {**cfg.model_dump(), "fmt": args.fmt, "behaviors": behaviors,
                  "model": args.model if args.judge == "mixture" else None}  # fmt: skip
        record = make_record(
            "judge-checks", config=config, seed=None, results=res, timings={"wall": wall}
        )
        write_record(args.out, record)
    emit(res, as_json=args.json, human=_human(res))
    return 0
