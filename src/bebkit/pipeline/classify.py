"""Table 1 (appendix J): train or reuse the LoRA components P₊/P₋ of a behavior and classify its
held-out statements as desired iff log P₊(s) > log P₋(s)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bebkit.pipeline.experiments_common import PromptLayout, behavior_field
from bebkit.pipeline.registry import (
    EstimateField,
    Experiment,
    Result,
    RunContext,
    Settings,
    register,
)


class ClassifySettings(Settings):
    """Which behavior and training format; the LoRA recipe is the run's component options."""

    behavior: str = behavior_field()
    fmt: PromptLayout = Field(
        "alternating", description="training-text format of the adapters (app. J)"
    )


class Table1(BaseModel):
    """Held-out classification accuracy overall and per side (Wilson CIs)."""

    model_config = ConfigDict(extra="allow")
    accuracy: EstimateField
    accuracy_desired: EstimateField
    accuracy_undesired: EstimateField


class ClassifyResult(Result):
    behavior: str
    format: str
    preset: str
    table1: Table1


def _run(ctx: RunContext, s: ClassifySettings) -> ClassifyResult:
    from bebkit.components.workflow import classify_heldout
    from bebkit.records import make_record, write_record

    comps = ctx.components(s.behavior, s.fmt, ("neg", "pos"))
    assert ctx.model is not None
    prep = ctx.provider.prepared(ctx.model, s.behavior, s.fmt)  # what the adapters trained on
    table1 = classify_heldout(comps, prep.data, num_threads=ctx.provider.threads)
    preset = prep.config.name
    res = {"behavior": s.behavior, "format": s.fmt, "preset": preset, "table1": table1.to_dict()}
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_record(
        ctx.out / "record.json",
        make_record(
            "classify", config={**s.model_dump(), **ctx.provenance}, seed=None, results=res
        ),
    )
    out: ClassifyResult = ClassifyResult.from_json(res)
    return out


def summary_lines(r: ClassifyResult) -> list[str]:
    a, d, u = r.table1.accuracy, r.table1.accuracy_desired, r.table1.accuracy_undesired

    def f(e: Any) -> str:
        return f"{e.value:.3f} [{e.ci_low:.3f}, {e.ci_high:.3f}] (n={e.n})"

    return [
        f"Table 1, {r.behavior} ({r.format}, {r.preset} preset): desired iff log P+ > log P-",
        f"  overall   {f(a)}",
        f"  desired   {f(d)}",
        f"  undesired {f(u)}",
    ]


EXPERIMENT = register(
    Experiment(
        name="classify",
        settings=ClassifySettings,
        result=ClassifyResult,
        version="2",
        stage="components",
        run=_run,
        summary=summary_lines,
        help="train (or reuse) the P- / P+ LoRA adapters of a behavior, then Table 1: "
        "held-out likelihood classification",
        description="Train (or reuse) the behavior's P- / P+ LoRA adapters and classify its "
        "held-out statements as desired iff log P+(s) > log P-(s) (appendix J, Table 1).",
        sides=("neg", "pos"),
        aliases=("train",),
    )
)

__all__ = ["EXPERIMENT", "ClassifyResult", "ClassifySettings", "Table1"]
