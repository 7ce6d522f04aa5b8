"""``bebkit pretrained``: KL convergence on a pretrained model and β_aligned/β_pretrained (app. M)."""

from __future__ import annotations

import argparse
from typing import Any

from bebkit.cli.commands import _kl_common as common
from bebkit.cli.commands.convergence import add_fit_options, check_fit_options
from bebkit.cli.output import emit

DEFAULTS = {"n_prompts": 10, "n_sentences": 10, "n_samples": 64, "n_tokens": 8, "n_boot": 1000}
QUICK = {"n_prompts": 3, "n_sentences": 4, "n_samples": 16, "n_tokens": 8, "n_boot": 200}


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pretrained",
        help="KL(P- || P_pretrained) vs prompt length on a base model, beta ratio (fig. 13b)",
        description="The convergence experiment on a pretrained (unaligned) model in the newline "
        "format with its own P- adapter (trained or reused): KL(P-(.|s) || P_pre(.|s)) vs n, "
        "Lemma 5 and straight-line fits, and beta_aligned / beta_pretrained with a CI when a "
        "`bebkit convergence` record of the aligned model is given. Writes record.json and "
        "pretrained.png/.svg.",
    )
    common.add_common(p, default_model="gemma-3-270m", default_fmt="newline", defaults=DEFAULTS,
                      quick=QUICK)  # fmt: skip
    add_fit_options(p)
    p.add_argument("--aligned-record", default=None,
                   help="record.json of `bebkit convergence` on the aligned model (for the ratio)")  # fmt: skip
    p.add_argument("--same-family", action="store_true",
                   help="the aligned model is this base model's own aligned version")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bebkit.components.training import torch_threads
    from bebkit.data.behaviors import load_behavior
    from bebkit.pipeline.convergence import summary_lines
    from bebkit.pipeline.pretrained import (
        PretrainedSettings,
        aligned_betas_from_record,
        run_pretrained,
    )
    from bebkit.reporting.kl_figures import condition_reference

    sizes: dict[str, Any] = common.resolve_sizes(args, DEFAULTS, QUICK)
    check_fit_options(args)
    aligned, aligned_model = None, None
    if args.aligned_record is not None:
        rec = common.read_record(args.aligned_record, "--aligned-record")
        aligned = aligned_betas_from_record(rec)
        aligned_model = (rec.get("results") or {}).get("target_model")
    reference, ref_file = common.load_reference(args)
    load_behavior(args.behavior, args.persona_dir)
    settings = PretrainedSettings(
        behavior=args.behavior, fmt=args.fmt, estimator=args.estimator,
        max_sentence_tokens=args.max_sentence_tokens, fit_n_min=args.fit_n_min, seed=args.seed,
        n_linear=args.n_linear, epsilon=args.epsilon, delta=args.delta, **sizes,
    )  # fmt: skip
    ref = condition_reference(reference, "pretrained")
    say = common.logger(args.json)
    with torch_threads(args.threads):
        comps, fmt, prov = common.components(args, args.model, args.fmt, ("neg",), say)
        results = run_pretrained(
            comps.model("neg"),
            comps.model("base"),
            settings,
            common.out_dir(args, "pretrained"),
            aligned_beta=aligned,
            aligned_model=aligned_model,
            fmt=fmt,
            reference=ref,
            reference_label="paper (Llama-2-13B base)",
            same_family=args.same_family,
            log=say,
            extra_config={**prov, "reference": ref_file, "aligned_record": args.aligned_record},
        )
    emit(results, as_json=args.json, human="\n".join(summary_lines(results)))
    return 0
