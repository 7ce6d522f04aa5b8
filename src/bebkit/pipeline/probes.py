"""The Table 2 / fig. 5 experiment (appendix K): linear probes of desired vs undesired persona
statements on last-token hidden states, per behavior and layer, with PCA scatters.

The probe itself (5-fold CV linear SVM) is an estimator (:mod:`bebkit.estimators.probes`);
this module is the experiment around it: settings, the table, the registration.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from pydantic import Field, field_validator

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.probes import ProbeConfig, ProbeScore, pca_scatter, probe_score, sample_sides
from bebkit.pipeline.registry import Experiment, Result, RunContext, Settings, not_in_key, register


@dataclass
class ProbeTable:
    """Table-2-style results: one :class:`ProbeScore` per (behavior, layer), plus summaries."""

    model: str
    config: ProbeConfig
    scores: list[ProbeScore] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)
    timings_s: dict[str, float] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Per layer: mean and std of the accuracy over behaviors (the paper: 95.2 % ± 4.7 % on LLaMA 7B)."""
        out: dict[str, Any] = {}
        for layer in dict.fromkeys(s.layer for s in self.scores):
            accs = [s.accuracy.value for s in self.scores if s.layer == layer]
            est = Estimate.from_samples(accs, method="mean over behaviors")
            out[layer] = {
                "mean_accuracy": est,
                "std_over_behaviors": float(np.std(accs, ddof=1)) if len(accs) > 1 else None,
                "min_accuracy": float(min(accs)),
                "n_behaviors": len(accs),
                "n_above_90pct": int(sum(a > 0.9 for a in accs)),
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "config": self.config.model_dump(),
            "scores": [s.to_dict() for s in self.scores],
            "summary": self.summary(),
            "plots": self.plots,
        }

    def markdown(self) -> str:
        """Behavior × layer table of accuracy (%) and fold std (%)."""
        layers = list(dict.fromkeys(s.layer for s in self.scores))
        head = "| behavior | " + " | ".join(f"{ly} acc % | {ly} err %" for ly in layers) + " |"
        sep = "|---|" + "---|---|" * len(layers)
        rows = [head, sep]
        for b in dict.fromkeys(s.behavior for s in self.scores):
            cells = []
            for ly in layers:
                s = next(x for x in self.scores if x.behavior == b and x.layer == ly)
                cells.append(f"{100 * s.accuracy.value:.1f} | {100 * s.fold_std:.2f}")
            rows.append(f"| {b} | " + " | ".join(cells) + " |")
        summ = self.summary()
        cells = [
            f"{100 * summ[ly]['mean_accuracy'].value:.1f} | "
            f"{100 * (summ[ly]['std_over_behaviors'] or 0.0):.2f}"
            for ly in layers
        ]
        rows.append("| **mean (std over behaviors)** | " + " | ".join(cells) + " |")
        return "\n".join(rows)


def run_probe_table(
    behaviors: Sequence[str],
    *,
    model_name: str = "smollm2-135m-instruct",
    config: ProbeConfig | None = None,
    persona_dir: str | Path | None = None,
    out_dir: str | Path | None = None,
    plots: bool = True,
    model: Any = None,
    tokenizer: Any = None,
    progress: bool = False,
) -> ProbeTable:
    """Probe every behavior at every configured layer; write PCA PNGs under ``out_dir``.

    ``model``/``tokenizer`` may be passed directly (tests build tiny random ones);
    otherwise :func:`bebkit.judge.encoders.load_causal_lm` loads ``model_name``.
    """
    from bebkit.judge.data import read_persona_sides
    from bebkit.judge.encoders import load_causal_lm, pooled_hidden_states, resolve_layer

    cfg = config or ProbeConfig()
    if not behaviors:
        raise InputError("no behaviors to probe")
    for ly in cfg.layers:  # syntax check of layer names before the (slow) model load
        if isinstance(ly, str):
            resolve_layer(ly, 10**6)
    # Read every persona file first, so a typo in a behavior name fails fast.
    sides = {b: read_persona_sides(b, persona_dir) for b in behaviors}
    t0 = time.perf_counter()
    if model is None or tokenizer is None:
        model, tokenizer = load_causal_lm(model_name)
    n_layers = int(model.config.num_hidden_layers)
    layer_idx = {str(ly): resolve_layer(ly, n_layers) for ly in cfg.layers}
    table = ProbeTable(model=model_name, config=cfg)
    table.timings_s["load"] = time.perf_counter() - t0
    t_feat = t_fit = 0.0
    for b in behaviors:
        matching, other = sides[b]
        texts, y = sample_sides(matching, other, cfg.n_per_side, cfg.seed)
        t1 = time.perf_counter()
        feats = pooled_hidden_states(
            model,
            tokenizer,
            texts,
            sorted(set(layer_idx.values())),
            pooling="last",
            batch_size=cfg.batch_size,
            progress=progress,
            description=f"hidden states: {b}",
        )
        t2 = time.perf_counter()
        for name, idx in layer_idx.items():
            table.scores.append(probe_score(b, name, idx, feats[idx], y, cfg))
            if plots and out_dir is not None:
                p = pca_scatter(
                    feats[idx],
                    y,
                    Path(out_dir) / "pca" / f"{b}.{name}.png",
                    title=f"{b} — {model_name}, layer {name} ({idx}/{n_layers})",
                )
                table.plots[f"{b}/{name}"] = str(p)
        t_feat += t2 - t1
        t_fit += time.perf_counter() - t2
    table.timings_s.update({"hidden_states": t_feat, "svm_and_plots": t_fit})
    return table


class ProbeSettings(Settings):
    """Settings of the probe experiment (App. K used 500 statements per side, 5 folds)."""

    QUICK: ClassVar[Mapping[str, Any]] = {"n_per_side": 40}

    behaviors: tuple[str, ...] = Field(
        description="comma list of persona behaviors, or 'all' (every file of the persona folder)"
    )
    n_per_side: int = Field(200, ge=5, description="statements per side")
    layers: tuple[int | str, ...] = Field(
        ("last", "middle"), description="comma list of last | middle | a layer index"
    )
    folds: int = Field(5, ge=2, description="cross-validation folds")
    C: float = Field(1.0, gt=0, description="SVM regularisation")
    seed: int = Field(0, ge=0, description="statement sampling and fold seed")
    batch_size: int = not_in_key(32, "statements per forward pass")
    plots: bool = Field(True, description="write PCA scatter PNGs")

    @field_validator("behaviors")
    @classmethod
    def _behaviors(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        names = tuple(b.strip() for b in v if b.strip())
        if not names:
            raise ValueError("must name at least one behavior")
        return names

    def probe_config(self) -> ProbeConfig:
        return ProbeConfig(
            n_per_side=self.n_per_side,
            layers=self.layers,
            folds=self.folds,
            C=self.C,
            seed=self.seed,
            batch_size=self.batch_size,
        )

    def resolved_behaviors(self, persona_dir: str | Path | None) -> tuple[str, ...]:
        """``behaviors`` with ``all`` expanded to every persona behavior."""
        if self.behaviors != ("all",):
            return self.behaviors
        from bebkit.judge.data import persona_file_names

        return tuple(persona_file_names(persona_dir))


class ProbeResult(Result):
    """Per (behavior, layer) CV accuracy and the per-layer summary; plots as extra fields."""

    model: str
    scores: list[dict[str, Any]]
    summary: dict[str, Any]


def _run(ctx: RunContext, s: ProbeSettings) -> ProbeResult:
    from bebkit.judge.data import read_persona_sides
    from bebkit.judge.encoders import resolve_layer
    from bebkit.records import make_record, write_record

    behaviors = list(s.resolved_behaviors(ctx.persona_dir))
    for b in behaviors:  # bad names and layers fail before the (slow) model load
        read_persona_sides(b, ctx.persona_dir)
    for ly in s.layers:
        if isinstance(ly, str):
            resolve_layer(ly, 10**6)
    comps = ctx.base()
    table = run_probe_table(
        behaviors,
        model_name=comps.name,
        config=s.probe_config(),
        persona_dir=ctx.persona_dir,
        out_dir=ctx.out,
        plots=s.plots,
        model=comps.base_model,
        tokenizer=comps.tokenizer,
    )
    ctx.out.mkdir(parents=True, exist_ok=True)
    (ctx.out / "table2.md").write_text(table.markdown() + "\n", encoding="utf-8")
    result = table.to_dict()
    write_record(
        ctx.out / "record.json",
        make_record(
            "probe",
            config={**s.model_dump(), **ctx.provenance, "model": comps.name},
            seed=s.seed,
            results=result,
            timings=table.timings_s,
        ),
    )
    out: ProbeResult = ProbeResult.from_json(result)
    return out


def summary_lines(r: ProbeResult) -> list[str]:
    lines = [f"Table 2 probes on {r.model}:"]
    for ly, sm in r.summary.items():
        m = sm["mean_accuracy"]
        lines.append(
            f"  layer {ly}: mean accuracy {100 * m['value']:.1f}% (std over "
            f"{sm['n_behaviors']} behaviors {100 * (sm['std_over_behaviors'] or 0):.1f}%)"
        )
    return lines


EXPERIMENT = register(
    Experiment(
        name="probe",
        settings=ProbeSettings,
        result=ProbeResult,
        version="3",  # 3: statements deduplicated per side, none on both sides (no repeat across CV folds)
        stage="probes",
        run=_run,
        summary=summary_lines,
        help="Table-2-style SVM probe accuracies of desired vs undesired statements",
        description="Last-token hidden states of statement-only persona inputs, k-fold CV "
        "accuracy of a linear SVM per behavior and layer, PCA scatter PNGs (fig. 5).",
        per_behavior=False,
        default_model="smollm2-135m-instruct",
    )
)

__all__ = ["EXPERIMENT", "ProbeResult", "ProbeSettings", "ProbeTable", "run_probe_table"]
