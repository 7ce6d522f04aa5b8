"""``bebkit judge-eval``: validate the automatic behavior judge against human labels."""

from __future__ import annotations

import argparse
from typing import Any

from bebkit.cli.output import add_json_flag, emit


def register(sub: Any) -> None:
    p = sub.add_parser(
        "judge-eval",
        help="validate the behavior judge on human labels (accuracy, balanced accuracy, kappa)",
        description="Build a judge from the behavior's persona statements (never from the "
        "labels) and report its agreement with human labels, overall and per condition.",
    )
    p.add_argument("--behavior", required=True, help="persona behavior, e.g. agreeableness")
    p.add_argument(
        "--labels",
        default=None,
        help="labelled responses *.jsonl (default: <behavior>-*.jsonl in BEBKIT_HUMAN_LABELS_DIR)",
    )
    p.add_argument(
        "--heldout",
        action="store_true",
        help="no labels: score the judge on held-out persona statements and generic texts",
    )
    p.add_argument(
        "--judge",
        default="mixture",
        choices=["mixture", "minilm", "hidden", "ensemble"],
        help="mixture (default, measured best: kappa 0.86 on agreeableness): posterior of P- "
        "against the untouched model (see --hypotheses); ensemble/minilm/hidden: linear probes "
        "on sentence / hidden-state features",
    )
    p.add_argument(
        "--model",
        default="smollm2-135m-instruct",
        help="mixture judge: the model whose P-/P+ adapters score responses",
    )
    p.add_argument("--format", dest="fmt", default="chat", choices=["chat", "newline"])
    p.add_argument(
        "--hypotheses",
        default="neg,base,aligned",
        help="mixture judge: comma list of who may have produced a response (neg = P-, "
        "pos = P+, base = the untouched model, aligned = it after the aligning system prompt)",
    )
    p.add_argument(
        "--components",
        default="shared",
        choices=["shared", "decoupled"],
        help="mixture judge: shared = the adapters that also sample prompts; decoupled = the "
        "judge half of a decoupled pair (misalign's judge_components: decoupled)",
    )
    p.add_argument("--preset", default=None, help="LoRA preset of the adapters (default: by size)")
    p.add_argument(
        "--adapters", default=None, help="adapter folder (default: bebkit's cache); reused if found"
    )
    p.add_argument(
        "--no-train", action="store_true", help="mixture judge: fail instead of training adapters"
    )
    p.add_argument("--unit", default="first_sentence", choices=["first_sentence", "full"])
    p.add_argument("--hidden-model", default="smollm2-135m-instruct")
    p.add_argument("--hidden-layer", default="middle", help="'last', 'middle' or an index")
    p.add_argument("--persona-dir", default=None, help="default: $BEBKIT_PERSONA_DIR")
    p.add_argument(
        "--part",
        default="locked",
        choices=["locked", "dev", "all"],
        help="which part of the labels to score: locked (default; the half fixed by a hash seed "
        "in code, never used for design choices), dev (the development half) or all",
    )
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap replicates for the CIs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="also write a JSON record to this file")
    p.add_argument("--no-cache", action="store_true", help="do not cache embeddings")
    add_json_flag(p)
    p.set_defaults(func=run)


def _fmt(e: Any) -> str:
    if e.value != e.value:  # NaN: undefined (one class only)
        return "   n/a"
    return f"{e.value:6.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}]"


def _human(res: dict[str, Any]) -> str:
    if "statements" in res:
        s = res["statements"]
        return "\n".join(
            [
                f"judge {res['judge']} — held-out persona statements of {res['behavior']}",
                f"  statements (n={s['n']}): accuracy {_fmt(s['accuracy'])}  "
                f"kappa {_fmt(s['kappa'])}",
                f"  held-out generic replies judged good:   {res['generic_judged_good']}",
                f"  held-out template rejections judged good: {res['rejections_judged_good']}",
            ]
        )
    o = res["overall"]
    if res.get("part") == "locked":
        sp = res["split"]
        lines = [
            f"judge {res['judge']} on the LOCKED part of {res['labels_file']} "
            f"(n={sp['n_locked']} of {sp['n_locked'] + sp['n_dev']}; seed {sp['seed']})",
            f"  kappa {_fmt_d(o['kappa'])}  accuracy {_fmt_d(o['accuracy'])}  "
            f"balanced {_fmt_d(o['balanced_accuracy'])}",
            f"  false-positive rate {_fmt_d(o['false_positive_rate'])}  "
            f"false-negative rate {_fmt_d(o['false_negative_rate'])}",
        ]
        for k, g in res.get("by_condition", {}).items():
            lines.append(f"  {k}: kappa {_fmt_d(g['kappa'])} (n={g['n']})")
        return "\n".join(lines)
    lines = [
        f"judge {res['judge']} on {res['labels_file']} (unit: {res['config']['unit']})",
        f"  n={o['n']}  accuracy {_fmt(o['accuracy'])}  balanced {_fmt(o['balanced_accuracy'])}"
        f"  kappa {_fmt(o['kappa'])}",
        f"  confusion (human->judge): {o['confusion']}",
    ]
    for group in ("by_aligning_prompt", "by_n_sentences"):
        lines.append(f"  {group}:  value  n  human-good  judge-good  accuracy  kappa")
        for k, g in res.get(group, {}).items():
            lines.append(
                f"    {k:>6} {g['n']:5d}  {g['human_good_rate'].value:6.3f}  "
                f"{g['judge_good_rate'].value:6.3f}  {g['accuracy'].value:6.3f}  "
                f"{_fmt(g['kappa'])}"
            )
    return "\n".join(lines)


def _fmt_d(e: Any) -> str:
    if e is None:
        return "n/a"
    d = e.to_dict() if hasattr(e, "to_dict") else e
    v = d.get("value")
    if v is None or v != v:
        return "n/a"
    return f"{v:.3f} [{d.get('ci_low', float('nan')):.3f}, {d.get('ci_high', float('nan')):.3f}]"


def _mixture_judge(args: argparse.Namespace) -> tuple[Any, tuple[Any, Any]]:
    """Reuse (or train) the behavior's P-/P+ adapters on ``--model`` and build the judge;
    also return the (desired, undesired) statements the adapters were not trained on."""
    from bebkit.components.workflow import adapter_name, components_for
    from bebkit.data.behaviors import load_behavior
    from bebkit.judge import build_mixture_judge

    load_behavior(args.behavior, args.persona_dir)  # fail fast on a bad name
    hyp = [h.strip() for h in args.hypotheses.split(",") if h.strip()]
    role = "judge" if args.components == "decoupled" else "shared"
    comps, data, _config, _status = components_for(
        args.model, args.behavior, args.fmt, preset=args.preset, persona_dir=args.persona_dir,
        out=args.adapters, train_missing=not args.no_train,
        sides=("neg", "pos") if "pos" in hyp else ("neg",), role=role,
    )  # fmt: skip
    split = data.split
    names = {side: adapter_name(side, role) for side in ("neg", "pos")}
    judge = build_mixture_judge(comps, args.fmt, hypotheses=hyp, adapters=names)
    return judge, (split.heldout_desired, split.heldout_undesired)


def _score_part(args: argparse.Namespace, labels: Any, cfg: Any, judge: Any) -> dict[str, Any]:
    """Score the judge on one part of the locked split only (bebkit.judge.validation)."""
    import sys

    from bebkit.judge.data import load_labelled_responses
    from bebkit.judge.evaluation import evaluate_predictions
    from bebkit.judge.judge import build_judge, predict
    from bebkit.judge.validation import locked_evaluation, split_labels

    rows = load_labelled_responses(labels, behavior=args.behavior)
    split = split_labels(rows)
    part = split.locked if args.part == "locked" else split.dev
    if judge is None:
        judge = build_judge(
            args.behavior, cfg, persona_dir=args.persona_dir, cache=not args.no_cache
        )
    y = predict(judge, [r.response for r in part], progress=sys.stderr.isatty())
    if args.part == "locked":
        res = locked_evaluation(split, y, judge_name=judge.name, n_boot=args.n_boot, seed=args.seed)
    else:
        res = {"judge": judge.name, "part": "dev", "split": split.to_dict()}
        res.update(evaluate_predictions(list(part), y, n_boot=args.n_boot, seed=args.seed))
    res["labels_file"] = str(labels)
    res["config"] = cfg.model_dump()
    return res


def run(args: argparse.Namespace) -> int:
    import sys

    from bebkit.judge.data import load_labelled_responses
    from bebkit.judge.evaluation import (
        default_labels_file,
        evaluate_judge_on_labels,
        heldout_persona_eval,
    )
    from bebkit.judge.judge import JudgeConfig

    layer: int | str = (
        int(args.hidden_layer) if args.hidden_layer.lstrip("-").isdigit() else args.hidden_layer
    )
    cfg = JudgeConfig(
        kind=args.judge,
        unit=args.unit,
        hidden_model=args.hidden_model,
        hidden_layer=layer,
        seed=args.seed,
    )
    common = {
        "persona_dir": args.persona_dir,
        "n_boot": args.n_boot,
        "seed": args.seed,
        "cache": not args.no_cache,
        "progress": sys.stderr.isatty(),
    }
    labels = None
    if not args.heldout:
        # Bad label input fails in a second, before any model is loaded or trained.
        labels = args.labels or default_labels_file(args.behavior)
        load_labelled_responses(labels, behavior=args.behavior)
    judge, heldout = (None, None)
    if args.judge == "mixture":
        judge, heldout = _mixture_judge(args)
    if labels is None:
        res = heldout_persona_eval(args.behavior, cfg, judge=judge, heldout=heldout, **common)
    elif args.part == "all":
        res = evaluate_judge_on_labels(args.behavior, labels, cfg, judge=judge, **common)
    else:
        res = _score_part(args, labels, cfg, judge)
    # what bebkit.judge.status matches a record on (judge name, behavior, format)
    res["behavior"], res["format"] = args.behavior, args.fmt
    if args.out:
        from bebkit.records import make_record, write_record

        write_record(
            args.out,
            make_record("judge-eval", config=cfg.model_dump(), seed=args.seed, results=res),
        )
    emit(res, as_json=args.json, human=_human(res))
    return 0
