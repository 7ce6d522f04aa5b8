"""``bebkit convergence``: KL(P₋ ‖ P_LLM) vs misaligning-prompt length, α, β, n* (fig. 3a / 11)."""

from __future__ import annotations

import argparse
import math
from typing import Any

from bebkit.cli.commands import _kl_common as common
from bebkit.cli.output import emit

DEFAULTS = {"n_prompts": 10, "n_sentences": 10, "n_samples": 64, "n_tokens": 8, "n_boot": 1000}
QUICK = {"n_prompts": 3, "n_sentences": 4, "n_samples": 16, "n_tokens": 8, "n_boot": 200}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "convergence",
        help="KL(P- || P_LLM) vs prompt length with and without an aligning prompt (fig. 3a)",
        description="Sample prompts s ~ P- (chat: one sentence per user turn), estimate "
        "KL(P-(.|s) || P_LLM(.|s)) for the aligned model after every sentence, with and without "
        "the aligning system prompt, and fit Lemma 5 log(1 + exp(log 1/alpha - beta n)) and the "
        "paper's straight line on the first sentences: alpha, beta, n* = log(1/alpha)/beta and "
        "Theorem 1/2 lengths with CIs. Writes record.json and convergence.png/.svg.",
    )
    common.add_common(p, default_model=None, default_fmt="chat", defaults=DEFAULTS, quick=QUICK)
    add_fit_options(p)
    p.add_argument("--conditions", default="none,aligned",
                   help="comma list of 'none' (no aligning prompt) and 'aligned'")  # fmt: skip
    p.add_argument("--aligning-prompt", default=None,
                   help="system prompt of the 'aligned' condition (default: bebkit's own)")  # fmt: skip
    p.add_argument("--beta-sigma-record", default=None,
                   help="record.json of `bebkit beta-sigma`: beta' and sigma for Theorem 2")  # fmt: skip
    p.add_argument("--beta-prime", type=float, default=None, help="beta' for Theorem 2")
    p.add_argument("--sigma", type=float, default=None, help="sigma for Theorem 2")
    p.add_argument("--s0-sentences", type=float, default=None,
                   help="|s0| in sentences (default: counted in the aligning prompt)")  # fmt: skip
    p.set_defaults(func=run)


def add_fit_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--n-linear", type=int, default=3,
                   help="points of the straight-line fit (the paper: first 3 sentences)")  # fmt: skip
    p.add_argument("--epsilon", type=float, default=0.1, help="Theorem 1/2 epsilon")
    p.add_argument("--delta", type=float, default=0.1, help="Theorem 2 delta")


def check_fit_options(args: argparse.Namespace) -> None:
    from bebkit.errors import InputError

    common.positive("n-linear", args.n_linear, 2)
    for name in ("epsilon", "delta"):
        v = getattr(args, name)
        if not 0 < v < 1:
            raise InputError(f"--{name} must be in (0, 1), got {v:g}")


def theorem2_inputs(args: argparse.Namespace) -> tuple[float | None, float | None, str | None]:
    """β′ and σ from the options or a beta-sigma record (options win)."""
    from bebkit.errors import InputError

    bp, sg, src = args.beta_prime, args.sigma, None
    if args.beta_sigma_record is not None:
        rec = common.read_record(args.beta_sigma_record, "--beta-sigma-record")
        res = rec.get("results", rec)
        try:
            if bp is None:
                bp = float(res["beta_prime"]["estimate"]["value"])
            if sg is None:
                sg = math.sqrt(max(0.0, float(res["sigma2"]["estimate"]["value"])))
        except (KeyError, TypeError, ValueError):
            raise InputError("--beta-sigma-record is not a beta-sigma record") from None
        src = args.beta_sigma_record
    for name, v in (("beta-prime", bp), ("sigma", sg)):
        if v is not None and not v >= 0:
            raise InputError(f"--{name} must be >= 0, got {v:g}")
    return bp, sg, src


def run(args: argparse.Namespace) -> int:
    from bebkit.components.training import torch_threads
    from bebkit.data.behaviors import load_behavior
    from bebkit.errors import InputError
    from bebkit.estimators.prompts import DEFAULT_ALIGNING_PROMPT
    from bebkit.pipeline.convergence import ConvergenceSettings, run_convergence, summary_lines
    from bebkit.reporting.kl_figures import condition_reference

    sizes: dict[str, Any] = common.resolve_sizes(args, DEFAULTS, QUICK)
    check_fit_options(args)
    conds = tuple(c.strip() for c in args.conditions.split(",") if c.strip())
    if (
        not conds
        or any(c not in ("none", "aligned") for c in conds)
        or len(set(conds)) != len(conds)
    ):
        raise InputError(f"--conditions must list 'none' and/or 'aligned', got {args.conditions!r}")
    if args.aligning_prompt is not None and not args.aligning_prompt.strip():
        raise InputError("--aligning-prompt must not be empty")
    common.positive("s0-sentences", args.s0_sentences, 0)
    bp, sg, bs_src = theorem2_inputs(args)
    reference, ref_file = common.load_reference(args)
    load_behavior(args.behavior, args.persona_dir)
    settings = ConvergenceSettings(
        behavior=args.behavior, fmt=args.fmt, estimator=args.estimator,
        max_sentence_tokens=args.max_sentence_tokens, fit_n_min=args.fit_n_min, seed=args.seed,
        conditions=conds, aligning_prompt=args.aligning_prompt or DEFAULT_ALIGNING_PROMPT,
        n_linear=args.n_linear, epsilon=args.epsilon, delta=args.delta, beta_prime=bp, sigma=sg,
        s0_sentences=args.s0_sentences, **sizes,
    )  # fmt: skip
    ref = {c: v for c, v in condition_reference(reference, "convergence").items() if c in conds}
    say = common.logger(args.json)
    with torch_threads(args.threads):
        comps, fmt, prov = common.components(args, args.model, args.fmt, ("neg",), say)
        results = run_convergence(
            comps.model("neg"),
            comps.model("base"),
            settings,
            common.out_dir(args, "convergence"),
            fmt=fmt,
            reference=ref,
            reference_label="paper (Llama-2-13B-chat)",
            log=say,
            extra_config={**prov, "reference": ref_file, "beta_sigma_record": bs_src},
        )
    emit(results, as_json=args.json, human="\n".join(summary_lines(results)))
    return 0
