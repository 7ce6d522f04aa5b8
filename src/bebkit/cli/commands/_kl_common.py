"""Options and model set-up shared by the KL subcommands (beta-sigma, prompt-distinguishability,
convergence, pretrained). Not a subcommand itself (leading underscore)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from bebkit.cli.output import add_json_flag

SIZE_KEYS = ("n_prompts", "n_sentences", "n_samples", "n_tokens", "n_boot")


def add_common(
    p: argparse.ArgumentParser,
    *,
    default_model: str | None,
    default_fmt: str,
    defaults: Mapping[str, int],
    quick: Mapping[str, int],
) -> None:
    """The options every KL experiment takes (sizes default to ``defaults``; ``--quick``)."""
    p.add_argument(
        "--model",
        required=default_model is None,
        default=default_model,
        help="bundled model name, HF folder or GGUF file"
        + (f" (default {default_model})" if default_model else ""),
    )
    p.add_argument(
        "--behavior", required=True, help="behavior name (persona file stem or 'cooperativeness')"
    )
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("chat", "newline"),
        default=default_fmt,
        help=f"prompt layout and the P- adapter's training format (default {default_fmt})",
    )
    size_help = ", ".join(f"{k} {v}" for k, v in quick.items())
    p.add_argument("--quick", action="store_true", help=f"small sizes ({size_help})")
    p.add_argument("--n-prompts", type=int, default=None,
                   help=f"prompts s ~ P- for the KL curve (default {defaults['n_prompts']})")  # fmt: skip
    p.add_argument("--n-sentences", type=int, default=None,
                   help=f"sentences per prompt (default {defaults['n_sentences']})")  # fmt: skip
    p.add_argument("--n-samples", type=int, default=None,
                   help=f"continuations per (prompt, n) (default {defaults['n_samples']})")  # fmt: skip
    p.add_argument("--n-tokens", type=int, default=None,
                   help=f"tokens per continuation, all scored (default {defaults['n_tokens']})")  # fmt: skip
    p.add_argument("--n-boot", type=int, default=None,
                   help=f"bootstrap replicates for CIs (default {defaults['n_boot']})")  # fmt: skip
    p.add_argument(
        "--estimator",
        choices=("rb", "rb_cv", "mc"),
        default="rb",
        help="KL estimator: rb = Rao-Blackwellised (exact next-token KL summed along each "
        "path), rb_cv = with control variate, mc = the paper's plain Monte Carlo",
    )
    p.add_argument("--max-sentence-tokens", type=int, default=48, help="token cap per sentence")
    p.add_argument("--fit-n-min", type=int, default=1,
                   help="fit over prompt lengths n >= this (default 1, as the paper)")  # fmt: skip
    p.add_argument("--reference", default=None,
                   help="authors-figures.json to overlay the paper's curve (default: "
                   "$BEBKIT_REFERENCE_DIR/authors-figures.json when set)")  # fmt: skip
    p.add_argument("--persona-dir", default=None,
                   help="Perez et al. persona folder (default: $BEBKIT_PERSONA_DIR)")  # fmt: skip
    p.add_argument("--adapters", default=None,
                   help="adapter root (default: $BEBKIT_CACHE/adapters/<model>)")  # fmt: skip
    p.add_argument("--preset", choices=("small", "paper"), default=None,
                   help="LoRA recipe when an adapter must be trained")  # fmt: skip
    p.add_argument("--n-train", type=int, default=None,
                   help="training statements per side of the adapters (default: the preset's "
                   "450, fewer for small behaviors); part of the adapter's reuse key")  # fmt: skip
    p.add_argument("--no-train", action="store_true",
                   help="fail instead of training a missing adapter")  # fmt: skip
    p.add_argument("--out", default=None, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--train-seed", type=int, default=0, help="adapter training seed")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    add_json_flag(p)


def positive(name: str, v: float | None, low: float = 1) -> None:
    from bebkit.errors import InputError

    if v is not None and v < low:
        raise InputError(f"--{name} must be >= {low:g}, got {v:g}")


def resolve_sizes(
    args: argparse.Namespace, defaults: Mapping[str, int], quick: Mapping[str, int]
) -> dict[str, Any]:
    """Sizes from ``--quick`` / defaults overridden by explicit options, validated."""
    from bebkit.errors import InputError

    sizes: dict[str, Any] = {**defaults, **(quick if args.quick else {})}
    for key in sizes:
        v = getattr(args, key, None)
        if v is not None:
            sizes[key] = int(v)
    lows = {"n_samples": 2, "n_boot": 100, "n_var_prompts": 3}
    for key, v in sizes.items():
        positive(key.replace("_", "-"), v, lows.get(key, 1))
    positive("max-sentence-tokens", args.max_sentence_tokens)
    positive("fit-n-min", args.fit_n_min, 0)
    positive("seed", args.seed, 0)
    positive("train-seed", args.train_seed, 0)
    positive("threads", args.threads)
    positive("n-train", args.n_train, 3)
    if args.persona_dir is not None and not Path(args.persona_dir).is_dir():
        raise InputError(f"--persona-dir {args.persona_dir} is not a directory")
    return sizes


def reference_path(args: argparse.Namespace) -> Path | None:
    from bebkit.errors import InputError
    from bebkit.paths import reference_dir

    if args.reference is not None:
        p = Path(args.reference)
        if not p.is_file():
            raise InputError(f"--reference {p} is not a file")
        return p
    d = reference_dir()
    if d is not None and (d / "authors-figures.json").is_file():
        return d / "authors-figures.json"
    return None


def load_reference(args: argparse.Namespace, behavior: str | None = None) -> tuple[Any, str | None]:
    """The paper's curves for the behavior (``{}`` when none) and the file used."""
    from bebkit.reporting.kl_figures import load_reference_kl

    ref = reference_path(args)
    if ref is None:
        return {}, None
    return load_reference_kl(ref, behavior or args.behavior), os.fspath(ref)


def read_record(path: str, option: str) -> dict[str, Any]:
    from bebkit.errors import InputError

    p = Path(path)
    if not p.is_file():
        raise InputError(f"{option} {p} is not a file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise InputError(f"{option} {p}: not valid JSON") from None
    if not isinstance(data, dict):
        raise InputError(f"{option} {p}: not a record")
    return data


def logger(as_json: bool) -> Callable[[str], None]:
    stream = sys.stderr if as_json else sys.stdout

    def say(msg: str) -> None:
        stream.write(msg + "\n")
        stream.flush()

    return say


def components(
    args: argparse.Namespace,
    model: str,
    fmt: str,
    sides: Sequence[str],
    say: Callable[[str], None],
) -> tuple[Any, Any, dict[str, Any]]:
    """Load ``model``, train-or-reuse the adapters in ``sides``; return (components, prompt
    format, provenance dict for the record)."""
    from bebkit.components.workflow import components_for
    from bebkit.pipeline.misalign import prompt_format

    comps, _data, config, status = components_for(
        model, args.behavior, fmt, preset=args.preset, n_train=args.n_train,
        seed=args.train_seed, persona_dir=args.persona_dir, out=args.adapters,
        train_missing=not args.no_train, sides=tuple(sides), num_threads=args.threads, log=say,
    )  # fmt: skip
    prov = {
        "model": model,
        "preset": config.name,
        "n_train": args.n_train,
        "components": {k: v.to_dict() for k, v in status.items()},
        "threads": args.threads,
    }
    return comps, prompt_format(fmt, comps.tokenizer), prov


def out_dir(args: argparse.Namespace, kind: str) -> Path:
    return Path(args.out) if args.out else Path.cwd() / f"{kind}-{args.behavior}"
