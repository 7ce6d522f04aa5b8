"""Subcommands generated from the experiment registry (bebkit.pipeline.registry).

Each registered experiment becomes ``bebkit <name>`` with one option per settings field (name,
help, choices and ranges from the field), ``--quick`` for the settings' quick sizes, the
component options when it uses LoRA components, ``--<experiment>-record`` for each experiment
it reads, ``--paper-figures`` when it overlays the paper's curves, and ``--json``. Bad input is
one line and exit 2, before any model is loaded.
"""

from __future__ import annotations

import argparse
import json
import typing
from pathlib import Path
from typing import Any

from bebkit.cli.output import add_json_flag, emit, logger
from bebkit.errors import InputError


def _base_type(annotation: Any) -> tuple[Any, bool]:
    from bebkit.pipeline.registry import field_type

    return field_type(annotation)


def _repeatable(info: Any) -> bool:
    extra = info.json_schema_extra
    return isinstance(extra, dict) and extra.get("cli") == "repeat"


def _pct(text: str) -> str:
    """Help text for argparse, which %-formats it: a literal % is written %%."""
    return text.replace("%", "%%")


def _add_field(p: argparse.ArgumentParser, name: str, info: Any) -> None:
    from bebkit.pipeline.registry import option_name

    typ, _optional = _base_type(info.annotation)
    help_ = info.description or ""
    default = info.get_default()
    origin = typing.get_origin(typ)
    kw: dict[str, Any] = {"dest": name, "default": None}
    if info.is_required():
        kw["required"] = True
    elif default is not None and not (isinstance(default, tuple) and not default):
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        help_ += f" (default {shown})" if len(str(shown)) < 60 else ""
    if typ is bool:
        # a field that defaults to True (misalign's control) gets --x / --no-x so it can be
        # switched off; others stay plain flags (argparse's --no- prefix would invert a field
        # named no_train)
        action = argparse.BooleanOptionalAction if default is True else "store_true"
        p.add_argument(option_name(name), action=action, help=_pct(help_), **kw)
        return
    if origin is typing.Literal:
        kw["choices"] = typing.get_args(typ)
    elif origin is tuple and _repeatable(info):
        kw["action"] = "append"  # items may contain commas: one option per item
        help_ += " (repeatable)"
    elif origin is tuple:
        kw["type"] = str  # a comma list, split in _values
        help_ += " (comma list)" if "comma" not in help_ else ""
    elif typ in (int, float):
        kw["type"] = typ
    p.add_argument(option_name(name), help=_pct(help_), **kw)


def _values(settings_cls: Any, args: argparse.Namespace) -> dict[str, Any]:
    """The settings fields given on the command line (comma lists split)."""
    out: dict[str, Any] = {}
    for name, info in settings_cls.model_fields.items():
        v = getattr(args, name, None)
        if v is None:  # not given (a --no-x flag gives False, kept)
            continue
        typ, _ = _base_type(info.annotation)
        if typing.get_origin(typ) is tuple and isinstance(v, list):
            v = tuple(v)
        elif typing.get_origin(typ) is tuple and isinstance(v, str):
            items = [x.strip() for x in v.split(",") if x.strip()]
            if not items:
                raise InputError(f"--{name.replace('_', '-')} needs at least one value, got {v!r}")
            ints = int in typing.get_args(typing.get_args(typ)[0]) or typing.get_args(typ)[0] is int
            v = tuple(int(x) if ints and x.lstrip("-").isdigit() else x for x in items)
        out[name] = v
    return out


def register_experiment(sub: Any, exp: Any) -> None:
    from bebkit.pipeline.registry import ComponentOptions

    p = sub.add_parser(
        exp.name,
        aliases=list(exp.aliases),
        help=_pct(exp.help),
        description=exp.description or exp.help,
    )
    p.add_argument(
        "--model",
        required=exp.default_model is None,
        default=exp.default_model,
        help="bundled model name, HF folder or GGUF file"
        + (f" (default {exp.default_model})" if exp.default_model else ""),
    )
    for name, info in exp.settings.model_fields.items():
        _add_field(p, name, info)
    p.add_argument("--quick", action="store_true", help="the experiment's small sizes")
    if exp.uses_components:
        for name, info in ComponentOptions.model_fields.items():
            _add_field(p, name, info)
    for r in exp.reads:
        p.add_argument(f"--{r}-record", default=None, help=f"record.json of `bebkit {r}`")
    if exp.reads_paper_figures:
        p.add_argument(
            "--paper-figures",
            default=None,
            help="the authors' figure numbers (authors-figures.json) to overlay (default: "
            "$BEBKIT_REFERENCE_DIR/authors-figures.json when set)",
        )
    p.add_argument("--persona-dir", default=None, help="persona folder ($BEBKIT_PERSONA_DIR)")
    p.add_argument("--out", default=None, help=f"output folder (default ./{exp.name}-<behavior>)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument(
        "--precision",
        choices=("float32", "bfloat16"),
        default="float32",
        help="arithmetic of the model calls; bfloat16 runs an inference copy (adapters are "
        "trained in float32; fast only on CPUs with native bf16; see benchmarks/precision.py)",
    )
    add_json_flag(p)
    p.set_defaults(func=lambda args: run_experiment(exp, args))


def _read_input(exp_name: str, path: str) -> Any:
    from bebkit.pipeline.registry import get

    option = f"--{exp_name}-record"
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{option} {p} is not a file")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise InputError(f"{option} {p}: not valid JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict):
        raise InputError(f"{option} {p}: not a record")
    kind = data.get("kind")
    if kind not in (None, exp_name):
        raise InputError(f"{option} {p}: a {kind!r} record, not {exp_name!r}")
    try:
        return get(exp_name).result.from_json(data["results"])
    except InputError as exc:
        raise InputError(f"{option} {p}: {exc}") from None


def run_experiment(exp: Any, args: argparse.Namespace) -> int:
    """Validate everything, then run ``exp`` once per behavior of ``--behavior a,b``."""
    from bebkit.components.training import torch_threads
    from bebkit.data.behaviors import load_behavior
    from bebkit.paper import figures_file
    from bebkit.pipeline.experiments_common import check_prompts_file
    from bebkit.pipeline.registry import (
        ComponentOptions,
        RunContext,
        build_settings,
        precision_error,
    )
    from bebkit.pipeline.session import ComponentProvider

    values = _values(exp.settings, args)
    if args.threads is not None and args.threads < 1:
        raise InputError(f"--threads must be >= 1, got {args.threads}")
    bad = precision_error(exp, args.precision)
    if bad:  # before anything is loaded or written
        raise InputError(f"--precision: {bad}")
    if args.persona_dir is not None and not Path(args.persona_dir).is_dir():
        raise InputError(f"--persona-dir {args.persona_dir} is not a directory")
    behaviors: list[str | None] = [None]
    if exp.per_behavior:
        names = [b.strip() for b in str(values.get("behavior", "")).split(",") if b.strip()]
        if not names:
            raise InputError("--behavior needs at least one behavior name")
        dup = sorted({b for b in names if names.count(b) > 1})
        if dup:
            raise InputError(f"--behavior lists {', '.join(dup)} more than once")
        behaviors = list(names)
    settings = [
        build_settings(exp.settings, {**values, **({"behavior": b} if b else {})}, quick=args.quick)
        for b in behaviors
    ]
    options = (
        build_settings(ComponentOptions, _values(ComponentOptions, args))
        if exp.uses_components
        else (ComponentOptions())
    )
    inputs = {
        r: _read_input(r, getattr(args, f"{r.replace('-', '_')}_record"))
        for r in exp.reads
        if getattr(args, f"{r.replace('-', '_')}_record", None)
    }
    figures = (
        figures_file(args.paper_figures, "--paper-figures") if exp.reads_paper_figures else None
    )
    for b in behaviors:  # fail fast on a bad behavior name, before any model is loaded
        if b:
            load_behavior(b, args.persona_dir)
    for name, info in exp.settings.model_fields.items():  # files too (prompts_file)
        extra, path = info.json_schema_extra, values.get(name)
        if isinstance(extra, dict) and extra.get("file") and path is not None:
            if not Path(path).is_file():
                raise InputError(f"--{name.replace('_', '-')} {path} is not a file")
            check_prompts_file(Path(path))
    say = logger(args.json)
    provider = ComponentProvider(
        options, say, persona_dir=args.persona_dir, threads=args.threads, precision=args.precision
    )
    results: dict[str, Any] = {}
    human: list[str] = []
    with torch_threads(args.threads):
        for b, s in zip(behaviors, settings, strict=True):
            tag = b or "all"
            out = Path(args.out) if args.out else Path.cwd() / f"{exp.name}-{tag}"
            if args.out and len(behaviors) > 1:
                out = out / tag
            ctx = RunContext(
                out=out,
                log=say,
                provider=provider,
                model=args.model,
                inputs=inputs,
                persona_dir=args.persona_dir,
                paper_figures=figures,
            )
            res = exp.run(ctx, s)
            results[tag] = res.to_json()
            human.extend(exp.summary(res))
    payload = next(iter(results.values())) if len(results) == 1 else {"results": results}
    emit(payload, as_json=args.json, human="\n".join(human))
    return 0


def register_all(sub: Any) -> None:
    from bebkit.pipeline.registry import experiments

    for exp in experiments().values():
        register_experiment(sub, exp)


__all__ = ["register_all", "run_experiment"]
