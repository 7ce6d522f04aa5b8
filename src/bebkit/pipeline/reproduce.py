"""``bebkit reproduce``: one resumable pipeline from data to a report with the paper's figures.

Stages, in order (each cached under ``RUN_DIR/stages/<name>/<key>/`` by a content hash of its
config and upstream keys, see :mod:`bebkit.pipeline.stages`)::

    components-<b>   train / reuse P₊, P₋ (LoRA) → Table 1 likelihood classification (app. J)
    probes           hidden-state linear probes → Table 2, fig. 5 (app. K)
    beta-sigma-<b>   β, β′, σ² from KL(P₋‖P) and Var log P₋/P (§4.1, fig. 2/8)
    prompt-dist-<b>  prompt-distinguishability after a neutral prefix (app. N, fig. 15)
    convergence-<b>  KL(P₋‖P_LLM) vs n, with/without aligning prompt; α, β, n* (§4.2, fig. 3a/11)
    misalign-<b>     behavior-expectation curves with the judge (§4.2, fig. 3b/12)
    pretrained-<b>   the same KL convergence on a base model, β ratio (app. M)

then ``record.json`` and the report (``report.md``, ``report.html``). One base model per model
name is held in memory with named LoRA adapters; a stage found on disk never loads a model.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bebkit.errors import InputError
from bebkit.pipeline.config import ReproduceConfig
from bebkit.pipeline.stages import Stage, StageContext, StageOutcome, StageRunner
from bebkit.records import make_record, write_record

Log = Callable[[str], None]


def _relativize(obj: Any, root: Path) -> Any:
    """Rewrite absolute paths inside ``root`` (a stage's temp folder) as paths relative to it,
    so results stay valid after the folder is renamed into place."""
    prefix = str(root) + "/"
    if isinstance(obj, str) and obj.startswith(prefix):
        return obj[len(prefix) :]
    if isinstance(obj, dict):
        return {k: _relativize(v, root) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_relativize(v, root) for v in obj]
    return obj


@dataclass
class Session:
    """Models loaded lazily, once per process; adapters trained or reused on demand."""

    config: ReproduceConfig
    log: Log
    _components: dict[str, Any] = field(default_factory=dict)
    _loaded: dict[str, tuple[str, str]] = field(default_factory=dict)

    def components(self, model: str, behavior: str, fmt: str) -> Any:
        """The model's ComponentSet with ``neg``/``pos`` adapters of ``behavior`` loaded."""
        from bebkit.components.workflow import ensure_components

        comps = self.base(model)
        if self._loaded.get(model) != (behavior, fmt):
            data, config = self.data(model, behavior, fmt)
            ensure_components(
                comps, data, config, seed=self.config.seed, progress=True, log=self.log
            )
            self._loaded[model] = (behavior, fmt)
        return comps

    def base(self, model: str) -> Any:
        """The model's ComponentSet (loaded once), whatever adapters it holds."""
        from bebkit.components.workflow import load_components

        if model not in self._components:
            self.log(f"loading {model}")
            self._components[model] = load_components(model)
        return self._components[model]

    def data(self, model: str, behavior: str, fmt: str) -> tuple[Any, Any]:
        from bebkit.components.workflow import prepare_data, resolve_config

        comps = self.base(model)
        c = self.config.components
        overrides = {
            k: v
            for k, v in {"n_train": c.n_train, "n_heldout": c.n_heldout, "epochs": c.epochs}.items()
            if v is not None
        }
        config = resolve_config(comps, c.preset, **overrides)
        data = prepare_data(
            behavior,
            fmt,
            comps.tokenizer,
            config,
            seed=self.config.seed,
            persona_dir=self.config.persona_dir,
        )
        return data, config


def _reference(config: ReproduceConfig) -> Path | None:
    from bebkit.paths import reference_dir

    if config.reference:
        p = Path(config.reference)
        if not p.is_file():
            raise InputError(f"reference: {p} is not a file")
        return p
    d = reference_dir()
    if d is not None and (d / "authors-figures.json").is_file():
        return d / "authors-figures.json"
    return None


def build_stages(config: ReproduceConfig, session: Session) -> list[Stage]:
    """The ordered stage list for ``config`` (see module docstring)."""
    from bebkit.pipeline.misalign import prompt_format
    from bebkit.reporting.kl_figures import REFERENCE_LABELS

    cfg = config
    ref_file = _reference(cfg)
    ref_behavior_ok = {"agreeableness", "anti-immigration"}
    stages: list[Stage] = []

    def fmt_for(comps: Any, fmt: str) -> Any:
        return prompt_format(fmt, comps.tokenizer)

    def reference_kl(behavior: str, kind: str | None = None) -> Any:
        """The paper's KL curves for ``behavior``; keyed by condition when ``kind`` is given."""
        if ref_file is None or behavior not in ref_behavior_ok:
            return None
        from bebkit.reporting.kl_figures import condition_reference, load_reference_kl

        ref = load_reference_kl(ref_file, behavior)
        return (condition_reference(ref, kind) if kind else ref) or None

    for b in cfg.behaviors:

        def components_stage(ctx: StageContext, b: str = b) -> dict[str, Any]:
            from bebkit.components.workflow import classify_heldout

            comps = session.components(cfg.aligned_model, b, cfg.format)
            data, tconf = session.data(cfg.aligned_model, b, cfg.format)
            table1 = classify_heldout(comps, data)
            return {"behavior": b, "preset": tconf.name, "table1": table1.to_dict()}

        stages.append(
            Stage(
                f"components-{b}",
                components_stage,
                {
                    "model": cfg.aligned_model,
                    "format": cfg.format,
                    "components": cfg.components.model_dump(),
                    # The resolved recipe and training code version: a changed preset means
                    # new adapters, so this stage and everything downstream must recompute.
                    "training": _training_fingerprint(cfg),
                    "persona_dir": bool(cfg.persona_dir),
                },
            )
        )

    if cfg.probes.enabled:

        def probes_stage(ctx: StageContext) -> dict[str, Any]:
            from bebkit.estimators.probes import ProbeConfig, run_probe_table

            comps = session.base(cfg.aligned_model)
            table = run_probe_table(
                list(cfg.probes.behaviors or cfg.behaviors),
                model_name=cfg.aligned_model,
                config=ProbeConfig(
                    n_per_side=cfg.probes.n_per_side, layers=cfg.probes.layers, seed=ctx.seed
                ),
                persona_dir=cfg.persona_dir,
                out_dir=ctx.workdir,
                model=comps.base_model,
                tokenizer=comps.tokenizer,
            )
            ctx.path("table2.md").write_text(table.markdown() + "\n", encoding="utf-8")
            return _relativize(table.to_dict(), ctx.workdir)

        stages.append(
            Stage(
                "probes",
                probes_stage,
                {
                    "model": cfg.aligned_model,
                    **cfg.probes.model_dump(),
                    "behaviors": list(cfg.probes.behaviors or cfg.behaviors),
                },
            )
        )

    bs, pd, cv, ms = cfg.beta_sigma, cfg.prompt_distinguishability, cfg.convergence, cfg.misalign
    for b in cfg.behaviors:
        comp_dep = f"components-{b}"
        if bs.enabled:

            def beta_sigma_stage(ctx: StageContext, b: str = b) -> dict[str, Any]:
                from bebkit.pipeline.beta_sigma import BetaSigmaSettings, run_beta_sigma

                comps = session.components(cfg.aligned_model, b, cfg.format)
                ref = "pos" if bs.reference == "pos" else "base"
                settings = BetaSigmaSettings(
                    behavior=b,
                    fmt=cfg.format,
                    n_prompts=bs.n_prompts,
                    n_sentences=bs.n_sentences,
                    n_samples=bs.n_continuations,
                    n_tokens=bs.n_tokens,
                    n_var_prompts=bs.n_variance_prompts,
                    reference_model=ref,
                    seed=ctx.seed,
                )
                res = run_beta_sigma(
                    comps.model("neg"),
                    comps.model(ref),
                    settings,
                    ctx.workdir,
                    fmt=fmt_for(comps, cfg.format),
                    reference=reference_kl(b),
                    reference_label="paper (Llama-2-13B-chat)",
                    log=session.log,
                )
                return _relativize(res, ctx.workdir)

            stages.append(Stage(f"beta-sigma-{b}", beta_sigma_stage, bs.model_dump(), (comp_dep,)))
        if pd.enabled:

            def prompt_dist_stage(ctx: StageContext, b: str = b) -> dict[str, Any]:
                from bebkit.pipeline.prompt_dist import PromptDistSettings, run_prompt_dist

                comps = session.components(cfg.aligned_model, b, cfg.format)
                settings = PromptDistSettings(
                    behavior=b,
                    fmt=cfg.format,
                    n_prompts=pd.n_prompts,
                    n_sentences=pd.n_sentences,
                    n_samples=pd.n_continuations,
                    n_tokens=pd.n_tokens,
                    seed=ctx.seed,
                )
                res = run_prompt_dist(
                    comps.model("neg"),
                    comps.model("base"),
                    settings,
                    ctx.workdir,
                    fmt=fmt_for(comps, cfg.format),
                    log=session.log,
                )
                return _relativize(res, ctx.workdir)

            stages.append(
                Stage(f"prompt-dist-{b}", prompt_dist_stage, pd.model_dump(), (comp_dep,))
            )
        if cv.enabled:
            deps = (comp_dep, f"beta-sigma-{b}") if bs.enabled else (comp_dep,)

            def convergence_stage(ctx: StageContext, b: str = b) -> dict[str, Any]:
                from bebkit.pipeline.convergence import ConvergenceSettings, run_convergence

                comps = session.components(cfg.aligned_model, b, cfg.format)
                bsr = ctx.inputs.get(f"beta-sigma-{b}") or {}
                settings = ConvergenceSettings(
                    behavior=b,
                    fmt=cfg.format,
                    n_prompts=cv.n_prompts,
                    n_sentences=cv.n_sentences,
                    n_samples=cv.n_continuations,
                    n_tokens=cv.n_tokens,
                    aligning_prompt=cfg.aligning_prompt,
                    seed=ctx.seed,
                    beta_prime=_value(bsr.get("beta_prime")),
                    sigma=_value(bsr.get("sigma")),
                )
                res = run_convergence(
                    comps.model("neg"),
                    comps.model("base"),
                    settings,
                    ctx.workdir,
                    fmt=fmt_for(comps, cfg.format),
                    reference=reference_kl(b, "convergence"),
                    reference_label=REFERENCE_LABELS["convergence"],
                    log=session.log,
                )
                return _relativize(res, ctx.workdir)

            stages.append(
                Stage(
                    f"convergence-{b}",
                    convergence_stage,
                    {**cv.model_dump(), "aligning_prompt": cfg.aligning_prompt},
                    deps,
                )
            )
        if ms.enabled:
            mdeps = tuple(
                d
                for d in (
                    comp_dep,
                    f"beta-sigma-{b}" if bs.enabled else "",
                    f"convergence-{b}" if cv.enabled else "",
                )
                if d
            )

            def misalign_stage(ctx: StageContext, b: str = b) -> dict[str, Any]:
                from bebkit.judge import JudgeConfig, build_judge, build_mixture_judge
                from bebkit.pipeline.misalign import MisalignSettings, run_misalign
                from bebkit.reporting.misalign import load_reference_curves

                comps = session.components(cfg.aligned_model, b, cfg.format)
                bsr = ctx.inputs.get(f"beta-sigma-{b}") or {}
                settings = MisalignSettings(
                    behavior=b,
                    fmt=cfg.format,
                    n_prompts=ms.n_prompts,
                    n_sentences=ms.n_sentences,
                    n_responses=ms.n_responses,
                    max_response_tokens=ms.max_response_tokens,
                    aligning_prompt=cfg.aligning_prompt,
                    judge=ms.judge,
                    seed=ctx.seed,
                    beta_prime=_value(bsr.get("beta_prime")),
                    sigma=_value(bsr.get("sigma")),
                    beta=_value(bsr.get("beta")),
                )
                judge = (
                    build_mixture_judge(
                        comps,
                        cfg.format,
                        hypotheses=ms.judge_hypotheses,
                        aligning_prompt=cfg.aligning_prompt,
                    )
                    if ms.judge == "mixture"
                    else build_judge(b, JudgeConfig(kind=ms.judge), persona_dir=cfg.persona_dir)
                )
                reference = None
                if ref_file is not None and b in ref_behavior_ok:
                    reference = load_reference_curves(ref_file, b, cfg.format) or None
                res = run_misalign(
                    comps.model("neg"),
                    comps.model("base"),
                    judge,
                    settings,
                    ctx.workdir,
                    fmt=fmt_for(comps, cfg.format),
                    reference=reference,
                    reference_label="paper (Llama-2-13B-chat)",
                    log=session.log,
                )
                return _relativize(res, ctx.workdir)

            stages.append(Stage(f"misalign-{b}", misalign_stage, ms.model_dump(), mdeps))

        if cfg.pretrained_model and cv.enabled:

            def pretrained_stage(ctx: StageContext, b: str = b) -> dict[str, Any]:
                from bebkit.pipeline.pretrained import (
                    PretrainedSettings,
                    aligned_betas_from_record,
                    run_pretrained,
                )

                assert cfg.pretrained_model is not None
                comps = session.components(cfg.pretrained_model, b, cfg.pretrained_format)
                settings = PretrainedSettings(
                    behavior=b,
                    fmt=cfg.pretrained_format,
                    n_prompts=cv.n_prompts,
                    n_sentences=cv.n_sentences,
                    n_samples=cv.n_continuations,
                    n_tokens=cv.n_tokens,
                    seed=ctx.seed,
                )
                conv = ctx.inputs[f"convergence-{b}"]
                try:
                    aligned = aligned_betas_from_record({"kind": "convergence", "results": conv})
                except InputError:
                    aligned = None
                res = run_pretrained(
                    comps.model("neg"),
                    comps.model("base"),
                    settings,
                    ctx.workdir,
                    aligned_beta=aligned,
                    aligned_model=cfg.aligned_model,
                    fmt=fmt_for(comps, cfg.pretrained_format),
                    reference=reference_kl(b, "pretrained"),
                    reference_label=REFERENCE_LABELS["pretrained"],
                    log=session.log,
                )
                return _relativize(res, ctx.workdir)

            stages.append(
                Stage(
                    f"pretrained-{b}",
                    pretrained_stage,
                    {
                        **cv.model_dump(),
                        "model": cfg.pretrained_model,
                        "format": cfg.pretrained_format,
                        "components": cfg.components.model_dump(),
                        "training": _training_fingerprint(cfg),
                    },
                    (f"convergence-{b}",),
                )
            )
    return stages


def _training_fingerprint(cfg: ReproduceConfig) -> dict[str, Any]:
    """The LoRA recipe the components stage trains with (preset + overrides, code version)."""
    from bebkit.components.manifest import TRAINING_VERSION
    from bebkit.components.presets import get_preset

    c = cfg.components
    overrides = {k: v for k, v in {"epochs": c.epochs}.items() if v is not None}
    return {"recipe": get_preset(c.preset, **overrides).model_dump(), "version": TRAINING_VERSION}


def _value(d: Any) -> float | None:
    """The ``value`` of an estimate dict nested as ``{"estimate": {...}}`` or flat; None if absent."""
    if not isinstance(d, dict):
        return None
    if "estimate" in d and isinstance(d["estimate"], dict):
        d = d["estimate"]
    v = d.get("value")
    return float(v) if isinstance(v, int | float) and v == v and v >= 0 else None


def reproduce(
    config: ReproduceConfig,
    out: str | Path,
    *,
    quick: bool = False,
    log: Log | None = None,
    config_path: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) every stage of ``config`` into ``out``; write record and report."""
    from bebkit.pipeline.report import write_report

    say = log or (lambda _m: None)
    cfg = config.with_quick() if quick else config
    run_dir = Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    session = Session(cfg, say)
    runner = StageRunner(
        run_dir,
        cfg.seed,
        on_event=lambda stage, ev: say(
            {
                "cached": f"[{stage}] cached — skipped",
                "start": f"[{stage}] running",
                "done": f"[{stage}] done",
            }[ev]
        ),
    )
    runner.sweep_temp()
    stages = build_stages(cfg, session)
    t0 = time.perf_counter()
    status = "complete"
    error: str | None = None
    try:
        for stage in stages:
            runner.run(stage)
    except InputError:
        raise
    except Exception as exc:  # a failed stage: keep what finished, record the failure
        import traceback

        status = "failed"
        error = f"{type(exc).__name__}: {exc}"
        say("".join(traceback.format_exception(exc)).rstrip())
    record = build_record(
        cfg,
        runner.outcomes,
        status=status,
        error=error,
        quick=quick,
        config_path=config_path,
        wall=time.perf_counter() - t0,
    )
    write_record(run_dir / "record.json", record)
    write_report(run_dir)
    if status != "complete":
        from bebkit.errors import RunError

        raise RunError(f"stage failed ({error}); finished stages are kept in {run_dir}")
    return record


def build_record(
    cfg: ReproduceConfig,
    outcomes: dict[str, StageOutcome],
    *,
    status: str,
    error: str | None,
    quick: bool,
    config_path: str | None,
    wall: float,
) -> dict[str, Any]:
    stages = {
        name: {
            "key": o.key,
            "folder": f"stages/{name}/{o.key}",
            "cached": o.cached,
            "seconds": o.seconds,
            "result": o.result,
        }
        for name, o in outcomes.items()
    }
    results = {"stages": stages, "error": error}
    timings = {name: o.seconds for name, o in outcomes.items()}
    timings["wall_this_invocation"] = wall
    rec = make_record(
        "reproduce",
        config={**cfg.model_dump(), "quick": quick, "config_path": config_path},
        seed=cfg.seed,
        results=results,
        status=status,
        timings=timings,
    )
    rec["machine"]["node"] = platform.node()
    return rec
