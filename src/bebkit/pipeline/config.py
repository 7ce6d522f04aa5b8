"""The ``bebkit reproduce`` configuration: frozen, validated, loaded from YAML.

Run-level keys (models, behaviors, formats, the aligning prompt, the seed) are declared here;
every other top-level key is the section of a registered experiment, validated by that
experiment's own ``Settings`` (:mod:`bebkit.pipeline.registry`) — the same class its CLI
subcommand is generated from, so a size has one name and one default everywhere. A section
may say ``enabled: false``. A wrong key or value is one clear error line naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from bebkit.data.formats import DEFAULT_ALIGNING_PROMPT
from bebkit.errors import InputError
from bebkit.pipeline.experiments_common import PromptLayout
from bebkit.pipeline.registry import (
    RUN_FIELDS,
    ComponentOptions,
    Experiment,
    Precision,
    RunOptions,
    Settings,
    build_settings,
    experiments,
    precision_error,
)
from bebkit.pipeline.stages import derive_seed


class ReproduceConfig(BaseModel):
    """Everything ``bebkit reproduce`` needs; ``quick`` overrides sections for CI and demos."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "run"
    seed: int = Field(0, ge=0)
    aligned_model: str = "smollm2-135m-instruct"
    pretrained_model: str | None = None
    behaviors: tuple[str, ...] = ("cooperativeness",)
    persona_dir: str | None = None
    format: PromptLayout = "alternating"
    pretrained_format: PromptLayout = "newline"
    aligning_prompt: str = Field(DEFAULT_ALIGNING_PROMPT, min_length=1)
    paper_figures: str | None = None
    components: ComponentOptions = ComponentOptions()
    #: a scoring or prefix-encoding batch that runs out of memory is rerun in halves, same
    #: numbers up to float32 rounding (:mod:`bebkit.models.hf`); false: the run fails instead
    split_on_oom: bool = True
    #: the arithmetic of the experiments' model calls. ``bfloat16`` runs them on an inference
    #: copy of the weights and adapters (log-softmax still float32; adapters are trained in
    #: float32 either way) — ~3× faster on CPUs with native bf16 (AMX / AVX512-BF16), checked
    #: against float32 by ``benchmarks/precision.py``. Enters the key of every stage that calls
    #: a model; float32 adds nothing, so float32 runs keep their keys.
    precision: Precision = "float32"
    #: experiment sections by experiment name (YAML: their ``section`` names at top level)
    sections: dict[str, dict[str, Any]] = Field(default_factory=dict)
    quick: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="per-section overrides applied by --quick"
    )

    @model_validator(mode="before")
    @classmethod
    def _collect_sections(cls, data: Any) -> Any:
        """Move the experiments' top-level sections into ``sections`` (unknown keys stay and
        are rejected as extra)."""
        if not isinstance(data, dict):
            return data
        by_section = {e.section: e.name for e in experiments().values()}
        data = dict(data)
        sections = data.pop("sections", None) or {}
        if not isinstance(sections, dict):
            raise ValueError("sections must be a mapping")
        sections = dict(sections)
        for key in list(data):
            if key in by_section:
                sections[by_section[key]] = data.pop(key) or {}
        data["sections"] = sections
        return data

    @model_validator(mode="after")
    def _check(self) -> ReproduceConfig:
        if not self.behaviors:
            raise ValueError("behaviors must name at least one behavior")
        exps = experiments()
        sections = {e.section for e in exps.values()} | {"components"}
        for section in self.quick:
            if section not in sections:
                raise ValueError(f"quick: unknown section {section!r}")
        for name, values in self.sections.items():
            if name not in exps:
                raise ValueError(f"sections: unknown experiment {name!r}")
            if not isinstance(values, dict):
                raise ValueError(f"{exps[name].section} must be a mapping")
            bad = RUN_FIELDS & set(values)
            if bad:
                raise ValueError(
                    f"{exps[name].section}.{sorted(bad)[0]} is set for the whole run, "
                    "not per section"
                )
        for exp in exps.values():  # refused when the config is read, not hours into the run
            msg = precision_error(exp, self.precision) if self.enabled(exp) else None
            if msg:
                raise ValueError(f"precision: {msg}")
        return self

    @property
    def run_options(self) -> RunOptions:
        """The options that join the key of every stage that calls a model."""
        return RunOptions(precision=self.precision)

    def enabled(self, exp: Experiment) -> bool:
        """Whether the run includes ``exp`` (its section's ``enabled``; pretrained needs a
        pretrained model)."""
        if exp.model_role == "pretrained" and not self.pretrained_model:
            return False
        return bool(self.sections.get(exp.name, {}).get("enabled", exp.default_enabled))

    def model_for(self, exp: Experiment) -> str | None:
        if exp.model_role == "pretrained":
            return self.pretrained_model
        return None if exp.model_role == "none" else self.aligned_model

    def settings_for(self, exp: Experiment, behavior: str | None) -> Settings:
        """The experiment's Settings for ``behavior``: its section, plus the run-level fields
        it declares (behavior, format, seed derived from the stage name, aligning prompt)."""
        values = {k: v for k, v in self.sections.get(exp.name, {}).items() if k != "enabled"}
        fields = exp.settings.model_fields
        run: dict[str, Any] = {
            "behavior": behavior,
            "fmt": None
            if not exp.format_from_run
            else self.pretrained_format
            if exp.model_role == "pretrained"
            else self.format,
            "seed": derive_seed(self.seed, exp.stage_name(behavior)),
            "aligning_prompt": self.aligning_prompt,
        }
        values.update({k: v for k, v in run.items() if k in fields and v is not None})
        if "behaviors" in fields and "behaviors" not in values:
            values["behaviors"] = self.behaviors
        return build_settings(exp.settings, values, style=f"yaml:{exp.section}")

    def with_quick(self) -> ReproduceConfig:
        """Apply the ``quick`` overrides (validated like the rest)."""
        data = self.model_dump()
        sections = data.pop("sections")
        for section, overrides in self.quick.items():
            if section == "components":
                data["components"] = {**data["components"], **overrides}
                continue
            name = next(e.name for e in experiments().values() if e.section == section)
            sections[name] = {**sections.get(name, {}), **overrides}
        data["sections"] = sections
        data["quick"] = {}
        return _validate(data, "quick overrides")

    def validate_sections(self) -> None:
        """Build every enabled stage's settings once, so a bad value fails before any work."""
        for exp in experiments().values():
            if self.enabled(exp):
                for b in self.behaviors if exp.per_behavior else (None,):
                    self.settings_for(exp, b)


def _validate(data: Mapping[str, Any], origin: str) -> ReproduceConfig:
    try:
        cfg = ReproduceConfig.model_validate(dict(data))
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if loc[:1] == ["sections"] and len(loc) > 1 and loc[1] in experiments():
            loc = [experiments()[loc[1]].section, *loc[2:]]
        where = ".".join(loc) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        raise InputError(f"{origin}: {where}: {msg}") from None
    try:
        cfg.validate_sections()
    except InputError as exc:
        raise InputError(f"{origin}: {exc}") from None
    return cfg


def read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """A YAML file whose top level is a mapping; one-line :class:`InputError` otherwise."""
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
    return data


def load_config(path: str | Path) -> ReproduceConfig:
    """Load and validate a YAML config; errors name the file and the offending key."""
    return _validate(read_yaml_mapping(path), str(path))


__all__ = ["ReproduceConfig", "load_config"]
