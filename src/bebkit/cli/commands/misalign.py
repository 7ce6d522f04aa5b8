"""``bebkit misalign``: behavior-expectation curves under misaligning prompts (§4.2, fig. 3b / 12)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from bebkit.cli.commands._kl_common import logger, reference_path
from bebkit.cli.output import add_json_flag, emit

#: ``--quick`` sizes: a minute-scale run on a 135M model on 2 CPU cores.
QUICK = {"n_prompts": 3, "n_sentences": 5, "n_responses": 8, "n_boot": 100}
DEFAULTS = {"n_prompts": 10, "n_sentences": 10, "n_responses": 32, "n_boot": 200}
JUDGES = ("mixture", "minilm", "hidden", "ensemble", "likelihood")


def register(sub: Any) -> None:
    p = sub.add_parser(
        "misalign",
        help="misalign a model with prompts sampled from P-: %% good responses vs prompt length",
        description="Sample misaligning prompts from the LoRA component P- (trained or reused), "
        "sample responses from the aligned base model after every sentence with and without "
        "an aligning system prompt, judge their first sentences, and fit Lemma 7's reverse "
        "sigmoid 1/(1+exp(beta n - log 1/alpha)) (fig. 3b / 12 of Wolf et al.). Writes a "
        "response table, a record, a figure and an HTML page of examples (content warning).",
    )
    p.add_argument("--model", required=True, help="bundled model name, HF folder or GGUF file")
    p.add_argument(
        "--behavior", required=True, help="behavior name (persona file stem or 'cooperativeness')"
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("chat", "newline"),
        default="chat",
        help="chat: each sentence is a user turn, the response the assistant turn; "
        "newline: base-model text, the response is the next sentence (app. M)",
    )
    p.add_argument("--n-prompts", type=int, default=None, help="misaligning prompts (default 10)")
    p.add_argument(
        "--n-sentences",
        type=int,
        default=None,
        help="sentences per prompt N; responses after n = 1..N (default 10)",
    )
    p.add_argument(
        "--n-responses",
        type=int,
        default=None,
        help="responses per prompt, n and condition (default 32)",
    )
    p.add_argument("--max-response-tokens", type=int, default=32, help="response token cap")
    p.add_argument(
        "--max-sentence-tokens", type=int, default=48, help="token cap per misaligning sentence"
    )
    p.add_argument(
        "--conditions",
        default="none,aligned",
        help="comma list of 'none' (no aligning prompt) and 'aligned'",
    )
    p.add_argument(
        "--aligning-prompt",
        default=None,
        help="system prompt of the 'aligned' condition (default: bebkit's own)",
    )
    p.add_argument(
        "--judge",
        choices=JUDGES,
        default="mixture",
        help="mixture (default, measured best): posterior of P- against the untouched model, "
        "plain and after the aligning prompt; minilm/hidden/ensemble: persona-trained probes; "
        "likelihood: P+(x) > P-(x) with the LoRA components (app. J)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (3 prompts x 5 sentences x 8 responses) unless given",
    )
    p.add_argument(
        "--n-boot",
        type=int,
        default=None,
        help="bootstrap replicates over prompts for the fit CIs (0 = profile likelihood)",
    )
    p.add_argument(
        "--kl-samples",
        type=int,
        default=0,
        help="> 0: also estimate KL(P- || P_LLM) with this many continuations per "
        "(prompt, n) and compare Lemma 5's n* with the sigmoid centre",
    )
    p.add_argument("--kl-tokens", type=int, default=8, help="tokens per KL continuation")
    p.add_argument(
        "--beta",
        type=float,
        default=None,
        help="beta for Theorem 2's predicted delay (default: from the fits)",
    )
    p.add_argument("--beta-prime", type=float, default=None, help="fitted beta' (Theorem 2)")
    p.add_argument("--sigma", type=float, default=None, help="fitted sigma (Theorem 2)")
    p.add_argument("--delta", type=float, default=0.1, help="Theorem 2's delta")
    p.add_argument(
        "--s0-sentences",
        type=float,
        default=None,
        help="|s0| in sentences (default: counted in the aligning prompt)",
    )
    p.add_argument(
        "--reference",
        default=None,
        help="authors-figures.json to overlay the paper's curve (default: "
        "$BEBKIT_REFERENCE_DIR/authors-figures.json when set)",
    )
    p.add_argument(
        "--reference-behavior",
        default=None,
        help="overlay the paper's curve of this behavior instead (agreeableness, anti-immigration)",
    )
    p.add_argument(
        "--persona-dir",
        default=None,
        help="Perez et al. persona folder (default: $BEBKIT_PERSONA_DIR)",
    )
    p.add_argument(
        "--adapters", default=None, help="adapter root (default: $BEBKIT_CACHE/adapters/<model>)"
    )
    p.add_argument(
        "--preset",
        choices=("small", "paper"),
        default=None,
        help="LoRA recipe when P- must be trained",
    )
    p.add_argument(
        "--no-train", action="store_true", help="fail instead of training a missing component"
    )
    p.add_argument("--out", default=None, help="output folder (default: ./misalign-<behavior>)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (prompts, responses)")
    p.add_argument("--train-seed", type=int, default=0, help="component training seed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    add_json_flag(p)
    p.set_defaults(func=run)


def _positive(name: str, v: int | None, low: int = 1) -> None:
    from bebkit.errors import InputError

    if v is not None and v < low:
        raise InputError(f"--{name} must be >= {low}, got {v}")


def check_args(args: argparse.Namespace) -> dict[str, Any]:
    """Validate options before any model is loaded; return the resolved sizes."""
    from bebkit.errors import InputError

    sizes: dict[str, Any] = dict(QUICK if args.quick else DEFAULTS)
    for key in ("n_prompts", "n_sentences", "n_responses", "n_boot"):
        v = getattr(args, key)
        if v is not None:
            sizes[key] = v
    _positive("n-prompts", sizes["n_prompts"])
    _positive("n-sentences", sizes["n_sentences"], 2)
    _positive("n-responses", sizes["n_responses"])
    _positive("n-boot", sizes["n_boot"], 0)
    _positive("max-response-tokens", args.max_response_tokens)
    _positive("max-sentence-tokens", args.max_sentence_tokens)
    _positive("kl-samples", args.kl_samples, 0)
    _positive("kl-tokens", args.kl_tokens)
    _positive("seed", args.seed, 0)
    _positive("train-seed", args.train_seed, 0)
    _positive("threads", args.threads)
    for name in ("beta_prime", "sigma", "s0_sentences"):
        v = getattr(args, name)
        if v is not None and v < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0, got {v:g}")
    if args.beta is not None and not args.beta > 0:
        raise InputError(f"--beta must be > 0, got {args.beta:g}")
    if not 0 < args.delta < 1:
        raise InputError(f"--delta must be in (0, 1), got {args.delta:g}")
    conds = tuple(c.strip() for c in args.conditions.split(",") if c.strip())
    if (
        not conds
        or any(c not in ("none", "aligned") for c in conds)
        or len(set(conds)) != len(conds)
    ):
        raise InputError(f"--conditions must list 'none' and/or 'aligned', got {args.conditions!r}")
    sizes["conditions"] = conds
    if args.persona_dir is not None and not Path(args.persona_dir).is_dir():
        raise InputError(f"--persona-dir {args.persona_dir} is not a directory")
    if args.aligning_prompt is not None and not args.aligning_prompt.strip():
        raise InputError("--aligning-prompt must not be empty")
    return sizes


def _judge(
    kind: str, behavior: str, persona_dir: str | None, comps: Any, fmt: str, aligning: str
) -> Any:
    from bebkit.judge import JudgeConfig, LikelihoodRatioJudge, build_judge, build_mixture_judge
    from bebkit.judge.data import load_behavior_statements

    if kind == "mixture":
        return build_mixture_judge(comps, fmt, aligning_prompt=aligning)
    if kind == "likelihood":
        return LikelihoodRatioJudge(comps.model("pos"), comps.model("neg"), name="likelihood-ratio")
    stm = load_behavior_statements(behavior, persona_dir)
    return build_judge(stm, JudgeConfig(kind=kind))


def run(args: argparse.Namespace) -> int:
    from bebkit.components.training import torch_threads
    from bebkit.components.workflow import components_for
    from bebkit.data.behaviors import load_behavior
    from bebkit.estimators.prompts import DEFAULT_ALIGNING_PROMPT
    from bebkit.pipeline.misalign import (
        MisalignSettings,
        prompt_format,
        run_misalign,
        summary_lines,
    )
    from bebkit.reporting.misalign import load_reference_curves

    sizes = check_args(args)
    ref_file = reference_path(args)
    load_behavior(args.behavior, args.persona_dir)  # fail fast on a bad name
    settings = MisalignSettings(
        behavior=args.behavior,
        fmt=args.fmt,
        n_prompts=sizes["n_prompts"],
        n_sentences=sizes["n_sentences"],
        n_responses=sizes["n_responses"],
        max_response_tokens=args.max_response_tokens,
        max_sentence_tokens=args.max_sentence_tokens,
        conditions=sizes["conditions"],
        aligning_prompt=args.aligning_prompt or DEFAULT_ALIGNING_PROMPT,
        judge=args.judge,
        n_boot=sizes["n_boot"],
        kl_samples=args.kl_samples,
        kl_tokens=args.kl_tokens,
        beta_prime=args.beta_prime,
        sigma=args.sigma,
        beta=args.beta,
        s0_sentences=args.s0_sentences,
        delta=args.delta,
        seed=args.seed,
    )
    say = logger(args.json)
    out = Path(args.out) if args.out else Path.cwd() / f"misalign-{args.behavior}"
    with torch_threads(args.threads):
        comps, _data, config, sides = components_for(
            args.model, args.behavior, args.fmt, preset=args.preset, seed=args.train_seed,
            persona_dir=args.persona_dir, out=args.adapters, train_missing=not args.no_train,
            # P- samples the prompts; P+ is only needed by the likelihood-ratio judge.
            sides=("neg", "pos") if args.judge == "likelihood" else ("neg",),
            num_threads=args.threads, log=say,
        )  # fmt: skip
        fmt = prompt_format(args.fmt, comps.tokenizer)
        judge = _judge(
            args.judge, args.behavior, args.persona_dir, comps, args.fmt, settings.aligning_prompt
        )
        reference = None
        ref_behavior = args.reference_behavior or args.behavior
        if ref_file is not None:
            reference = load_reference_curves(ref_file, ref_behavior, args.fmt) or None
        results = run_misalign(
            comps.model("neg"),
            comps.model("base"),
            judge,
            settings,
            out,
            fmt=fmt,
            reference=reference,
            reference_label=f"paper ({ref_behavior}, Llama-2-13B"
            + ("-chat)" if args.fmt == "chat" else ")"),
            log=say,
            extra_config={
                "model": args.model,
                "preset": config.name,
                "components": {k: v.to_dict() for k, v in sides.items()},
                "reference": None if ref_file is None else os.fspath(ref_file),
                "threads": args.threads,
            },
        )
    emit(results, as_json=args.json, human="\n".join(summary_lines(results)))
    return 0
