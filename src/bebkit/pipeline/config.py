"""The ``bebkit reproduce`` configuration: frozen, validated, loaded from YAML.

A wrong key or value is one clear error line naming it (``InputError``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bebkit.data.formats import DEFAULT_ALIGNING_PROMPT
from bebkit.errors import InputError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ComponentsConfig(_Frozen):
    """LoRA P₊/P₋ training (appendix J)."""

    preset: Literal["small", "paper"] = "small"
    n_train: int | None = Field(default=None, ge=3, description="statements per side for training")
    n_heldout: int | None = Field(default=None, ge=1, description="held-out statements per side")
    epochs: int | None = Field(default=None, ge=1)
    order: Literal["rotations", "permutations"] = "rotations"


class ProbeConfig(_Frozen):
    """Hidden-state probes (appendix K)."""

    enabled: bool = True
    n_per_side: int = Field(default=200, ge=10)
    layers: tuple[str, ...] = ("last", "middle")
    behaviors: tuple[str, ...] = ()


class BetaSigmaConfig(_Frozen):
    """β, β′, σ² from KL(P₋‖P₊) and the log-ratio variance (§4.1, fig. 2/8)."""

    enabled: bool = True
    n_prompts: int = Field(default=10, ge=2)
    n_sentences: int = Field(default=15, ge=1)
    n_continuations: int = Field(default=64, ge=2)
    n_tokens: int = Field(default=8, ge=1)
    n_variance_prompts: int = Field(default=30, ge=3)
    reference: Literal["model", "pos"] = "model"


class ConvergenceConfig(_Frozen):
    """KL(P₋‖P_LLM) vs n, with and without aligning prompt (§4.2, fig. 3a/11)."""

    enabled: bool = True
    n_prompts: int = Field(default=10, ge=2)
    n_sentences: int = Field(default=10, ge=2)
    n_continuations: int = Field(default=64, ge=2)
    n_tokens: int = Field(default=8, ge=1)


class MisalignConfig(_Frozen):
    """Behavior-expectation curves with the judge (§4.2, fig. 3b/12)."""

    enabled: bool = True
    n_prompts: int = Field(default=10, ge=1)
    n_sentences: int = Field(default=10, ge=1)
    n_responses: int = Field(default=32, ge=1)
    max_response_tokens: int = Field(default=32, ge=4)
    judge: Literal["mixture", "minilm", "hidden", "ensemble"] = "mixture"
    #: who the mixture judge weighs (``neg`` always; see bebkit.judge.build_mixture_judge)
    judge_hypotheses: tuple[Literal["neg", "pos", "base", "aligned"], ...] = (
        "neg",
        "base",
        "aligned",
    )


class PromptDistConfig(_Frozen):
    """Prompt-distinguishability after a neutral prefix (appendix N, fig. 15)."""

    enabled: bool = True
    n_prompts: int = Field(default=10, ge=2)
    n_sentences: int = Field(default=8, ge=1)
    n_continuations: int = Field(default=64, ge=2)
    n_tokens: int = Field(default=8, ge=1)


class ReproduceConfig(_Frozen):
    """Everything ``bebkit reproduce`` needs; ``quick`` overrides sizes for CI and demos."""

    name: str = "run"
    seed: int = 0
    aligned_model: str = "smollm2-135m-instruct"
    pretrained_model: str | None = None
    behaviors: tuple[str, ...] = ("cooperativeness",)
    persona_dir: str | None = None
    format: Literal["chat", "newline"] = "chat"
    pretrained_format: Literal["chat", "newline"] = "newline"
    aligning_prompt: str = DEFAULT_ALIGNING_PROMPT
    components: ComponentsConfig = ComponentsConfig()
    probes: ProbeConfig = ProbeConfig()
    beta_sigma: BetaSigmaConfig = BetaSigmaConfig()
    prompt_distinguishability: PromptDistConfig = PromptDistConfig()
    convergence: ConvergenceConfig = ConvergenceConfig()
    misalign: MisalignConfig = MisalignConfig()
    quick: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-section overrides applied by --quick"
    )
    reference: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ReproduceConfig:
        if not self.behaviors:
            raise ValueError("behaviors must name at least one behavior")
        known = set(type(self).model_fields)
        for section in self.quick:
            if section not in known:
                raise ValueError(f"quick: unknown section {section!r}")
        return self

    def with_quick(self) -> ReproduceConfig:
        """Apply the ``quick`` overrides (validated like the rest)."""
        data = self.model_dump()
        for section, overrides in self.quick.items():
            if isinstance(data.get(section), dict):
                data[section] = {**data[section], **overrides}
            else:
                data[section] = overrides
        data["quick"] = {}
        return _validate(data, "quick overrides")


def _validate(data: dict[str, Any], origin: str) -> ReproduceConfig:
    try:
        return ReproduceConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise InputError(f"{origin}: {where}: {err['msg']}") from None


def load_config(path: str | Path) -> ReproduceConfig:
    """Load and validate a YAML config; errors name the file and the offending key."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(f"{p}:{line} is not valid YAML") from None
    if not isinstance(data, dict):
        raise InputError(f"{p}: top level must be a mapping")
    return _validate(data, str(p))
