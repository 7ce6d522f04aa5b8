"""The experiment registry: derived cache keys, generated CLI options, typed results.

The key tests change every settings field of every experiment, the persona data and the
paper's figures file in turn, and check that exactly the stages that read the changed thing
(and the stages that read those) get a new key — no more, no fewer.
"""

from __future__ import annotations

import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

from bebkit.errors import InputError
from bebkit.pipeline.config import ReproduceConfig, load_config
from bebkit.pipeline.registry import (
    RUN_FIELDS,
    ComponentOptions,
    Settings,
    experiments,
    field_type,
)
from bebkit.pipeline.reproduce import build_stages
from bebkit.pipeline.session import ComponentProvider
from bebkit.pipeline.stages import Stage, plan_keys

ROWS = {
    "alpha": (["I help people.", "I share my work."], ["I hurt people.", "I never share."]),
    "beta": (["We work together.", "You like others."], ["We work alone.", "You hurt others."]),
}


def _persona(root: Path) -> Path:
    d = root / "persona"
    d.mkdir(exist_ok=True)
    for name, (good, bad) in ROWS.items():
        rows = [{"statement": s, "answer_matching_behavior": " No"} for s in good]
        rows += [{"statement": s, "answer_matching_behavior": " Yes"} for s in bad]
        (d / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return d


def _figures(root: Path, value: float = 3.0) -> Path:
    p = root / "authors-figures.json"
    p.write_text(
        json.dumps({"KL_Pminus_vs_model_per_sentence_1to10": {"chat_agree_noalign": [value]}})
    )
    return p


def _config(root: Path, **over: Any) -> ReproduceConfig:
    data: dict[str, Any] = {
        "name": "t",
        "aligned_model": "tiny-aligned",
        "pretrained_model": "tiny-base",
        "behaviors": ["alpha", "beta"],
        "persona_dir": str(root / "persona"),
        "paper_figures": str(root / "authors-figures.json"),
        "probe": {"behaviors": ["alpha"]},
        # experiments a config runs only when asked: on here, so their keys are tested too
        **{e.section: {"enabled": True} for e in experiments().values() if not e.default_enabled},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(data.get(k), dict):
            data[k] = {**data[k], **v}
        else:
            data[k] = v
    return ReproduceConfig.model_validate(data)


def _keys(cfg: ReproduceConfig) -> tuple[dict[str, str], list[Stage]]:
    stages = build_stages(cfg, ComponentProvider(cfg.components, lambda _m: None), lambda _m: None)
    return plan_keys(stages, cfg.seed), stages


def _downstream(stages: list[Stage], changed: set[str]) -> set[str]:
    """``changed`` plus every stage that reads one of them, transitively."""
    out = set(changed)
    for st in stages:  # stages are in dependency order
        if any(d in out for d in st.deps):
            out.add(st.name)
    return out


def _alternative(name: str, info: Any, current: Any) -> Any:
    """A valid value different from ``current`` for a settings field."""
    special = {
        "conditions": ("none",),
        "judge_hypotheses": ("neg", "base"),
        "second_judges": ("minilm",),
        "neutral": ("It is sunny today.",),
        "layers": ("last",),
        "behaviors": ("alpha", "beta"),
        "undesired_sentence": "I hurt people.",
        "paper_behavior": "agreeableness",
    }
    if name in special and special[name] != current:
        return special[name]
    typ, optional = field_type(info.annotation)
    origin = typing.get_origin(typ)
    lo = next(
        (getattr(m, "ge", None) for m in info.metadata if getattr(m, "ge", None) is not None), None
    )
    hi = next(
        (getattr(m, "lt", None) for m in info.metadata if getattr(m, "lt", None) is not None), None
    )
    if typ is bool:
        return not current
    if origin is typing.Literal:
        return next(c for c in typing.get_args(typ) if c != current)
    if typ is int or (optional and typ is int):
        base = current if current is not None else (lo or 0) + 5
        return base + 1
    if typ is float:
        if current is None:
            return 0.5
        return current / 2 if hi is not None else current + 0.25
    if typ is str:
        return (current or "text") + " changed"
    raise AssertionError(f"no alternative for {name}: {info.annotation}")


def _cases() -> list[tuple[str, str]]:
    cases = []
    for exp in experiments().values():
        for name in exp.settings.key_fields():
            if name in RUN_FIELDS or (exp.name, name) == ("pretrained", "conditions"):
                continue  # run-level fields are tested below; pretrained has one condition
            cases.append((exp.name, name))
    return cases


@pytest.mark.parametrize(("exp_name", "field"), _cases())
def test_every_settings_field_changes_exactly_its_readers(
    tmp_path: Path, exp_name: str, field: str
) -> None:
    _persona(tmp_path)
    _figures(tmp_path)
    exp = experiments()[exp_name]
    base = _config(tmp_path)
    keys0, stages = _keys(base)
    current = base.settings_for(exp, "alpha" if exp.per_behavior else None).model_dump()[field]
    new = _alternative(field, exp.settings.model_fields[field], current)
    keys1, _ = _keys(_config(tmp_path, **{exp.section: {field: new}}))
    own = {exp.stage_name(b) for b in (base.behaviors if exp.per_behavior else (None,))}
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    assert changed == _downstream(stages, own), (exp_name, field, new)


@pytest.mark.parametrize(
    ("key", "value"),
    [("aligning_prompt", "Be kind."), ("format", "newline"), ("seed", 7)],
)
def test_run_level_fields_change_exactly_the_experiments_that_declare_them(
    tmp_path: Path, key: str, value: Any
) -> None:
    _persona(tmp_path)
    _figures(tmp_path)
    base = _config(tmp_path)
    keys0, stages = _keys(base)
    keys1, _ = _keys(_config(tmp_path, **{key: value}))
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    field = {"format": "fmt"}.get(key, key)
    own = set()
    for exp in experiments().values():
        if field in exp.settings.model_fields and base.enabled(exp):
            if key == "format" and (exp.model_role == "pretrained" or not exp.format_from_run):
                continue  # the pretrained model has its own format; beta/sigma keep newline
            for b in base.behaviors if exp.per_behavior else (None,):
                own.add(exp.stage_name(b))
    if key == "seed":
        own = set(keys0)  # every stage's seed derives from the run seed
    assert own and changed == _downstream(stages, own)


def test_misalign_key_includes_the_aligning_prompt_with_convergence_disabled(
    tmp_path: Path,
) -> None:
    """The staleness of the hand-written keys: the misalign stage used the run's aligning
    prompt but its key left it out, so with convergence disabled a changed prompt reused a
    stale result (the old build_stages gave equal keys here)."""
    _persona(tmp_path)
    _figures(tmp_path)
    off = {"convergence": {"enabled": False}, "pretrained_model": None}
    a, _ = _keys(_config(tmp_path, **off))
    b, _ = _keys(_config(tmp_path, **off, aligning_prompt="Always be kind to everyone."))
    assert "convergence-alpha" not in a
    assert a["misalign-alpha"] != b["misalign-alpha"]
    assert a["beta-sigma-alpha"] == b["beta-sigma-alpha"]


def test_precision_enters_exactly_the_keys_of_the_stages_that_call_a_model(
    tmp_path: Path,
) -> None:
    """bf16 arithmetic moves every stage that calls a model (and their readers); float32 adds
    nothing to any key, so float32 runs made before the option keep theirs."""
    _persona(tmp_path)
    _figures(tmp_path)
    no_align = {"align": {"enabled": False}}  # align runs in float32 only (tested below)
    cfg = _config(tmp_path, **no_align)
    keys0, stages = _keys(cfg)
    same, _ = _keys(_config(tmp_path, precision="float32", **no_align))
    assert same == keys0
    half, _ = _keys(_config(tmp_path, precision="bfloat16", **no_align))
    by_stage = {
        e.stage_name(b): e
        for e in experiments().values()
        for b in (None, *cfg.behaviors)
        if (b is None) != e.per_behavior
    }
    calls = {s.name for s in stages if cfg.model_for(by_stage[s.name]) is not None}
    assert calls
    changed = {k for k in keys0 if keys0[k] != half[k]}
    assert changed == _downstream(stages, calls)
    # pinned, not only compared with itself: the entries the keys have always held
    from bebkit.pipeline.registry import RunOptions

    assert RunOptions().key_material() == {}
    assert RunOptions(precision="bfloat16").key_material() == {"precision": "bfloat16"}
    bad = tmp_path / "c.yaml"
    bad.write_text(yaml.safe_dump({"precision": "float16"}))
    with pytest.raises(InputError, match="precision"):
        load_config(bad)
    # align with bf16 fails when the config is read, not hours into the run
    bad.write_text(yaml.safe_dump({"precision": "bfloat16", "pretrained_model": "tiny-base",
                                   "align": {"enabled": True}}))  # fmt: skip
    with pytest.raises(InputError, match="align runs in float32 only"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"precision": "bfloat16"}))
    assert load_config(bad).precision == "bfloat16"


def test_persona_data_enters_keys_by_content(tmp_path: Path) -> None:
    persona = _persona(tmp_path)
    _figures(tmp_path)
    keys0, stages = _keys(_config(tmp_path))
    # Same content under another folder: no key moves (content, not path).
    other = tmp_path / "copy"
    other.mkdir()
    for f in persona.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    same, _ = _keys(_config(tmp_path, persona_dir=str(other)))
    assert same == keys0
    # One statement of `beta` edited: exactly beta's stages move (probes read only alpha).
    path = persona / "beta.jsonl"
    path.write_text(path.read_text().replace("We work alone.", "We work alone, always."))
    keys1, _ = _keys(_config(tmp_path))
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    assert changed == {s.name for s in stages if s.name.endswith("-beta")}
    # …and alpha's statements move the probes stage too.
    path = persona / "alpha.jsonl"
    path.write_text(path.read_text().replace("I never share.", "I rarely share."))
    keys2, _ = _keys(_config(tmp_path))
    changed = {k for k in keys1 if keys1[k] != keys2[k]}
    assert changed == {s.name for s in stages if s.name.endswith("-alpha")} | {"probes"}


def test_paper_figures_enter_keys_by_content(tmp_path: Path) -> None:
    _persona(tmp_path)
    _figures(tmp_path, 3.0)
    keys0, stages = _keys(_config(tmp_path))
    _figures(tmp_path, 4.0)
    keys1, _ = _keys(_config(tmp_path))
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    readers = {
        e.stage_name(b)
        for e in experiments().values()
        if e.reads_paper_figures
        for b in ("alpha", "beta")
    }
    assert changed == _downstream(stages, readers)
    assert "components-alpha" not in changed and "probes" not in changed


def test_component_options_enter_exactly_the_stages_using_components(tmp_path: Path) -> None:
    _persona(tmp_path)
    _figures(tmp_path)
    keys0, stages = _keys(_config(tmp_path))
    keys1, _ = _keys(_config(tmp_path, components={"n_train": 40}))
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    cfg = _config(tmp_path)
    users = {
        e.stage_name(b)
        for e in experiments().values()
        if cfg.enabled(e) and e.uses_components
        for b in (cfg.behaviors if e.per_behavior else (None,))
    }
    assert users and changed == _downstream(stages, users)


def test_component_use_is_declared() -> None:
    """Reading the run's P-/P+ (``sides``) or training components on models an experiment
    makes itself (``trains_components``) is what makes the component options enter a key."""
    import dataclasses

    exps = experiments()
    assert not exps["probe"].uses_components  # hidden states of the bare model only
    assert exps["align"].trains_components and exps["align"].uses_components
    for e in exps.values():
        assert e.uses_components == (bool(e.sides) or e.trains_components)
    own_only = dataclasses.replace(exps["probe"], sides=(), trains_components=True)
    assert own_only.uses_components


def test_an_experiment_training_its_own_components_is_keyed_by_the_options(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The declaration, not ``sides``, decides: the align stage with no sides of the run's
    model still moves with the component options it trains its variants' P-/P+ with."""
    import dataclasses

    from bebkit.pipeline import registry

    _persona(tmp_path)
    _figures(tmp_path)
    exp = registry.experiments()["align"]
    monkeypatch.setitem(registry._REGISTRY, "align", dataclasses.replace(exp, sides=()))
    keys0, _ = _keys(_config(tmp_path))
    keys1, _ = _keys(_config(tmp_path, components={"n_train": 40}))
    assert keys0["align-alpha"] != keys1["align-alpha"]
    off = dataclasses.replace(exp, sides=(), trains_components=False)
    monkeypatch.setitem(registry._REGISTRY, "align", off)
    keys2, _ = _keys(_config(tmp_path))
    keys3, _ = _keys(_config(tmp_path, components={"n_train": 40}))
    assert keys2["align-alpha"] == keys3["align-alpha"]


def test_fields_outside_the_key_are_declared(tmp_path: Path) -> None:
    """A field leaves the key only by its ``not_in_key`` declaration, and changing it moves
    no key."""
    _persona(tmp_path)
    _figures(tmp_path)
    keys0, _ = _keys(_config(tmp_path))
    for name, info in ComponentOptions.model_fields.items():
        declared = (
            isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get("key") is False
        )
        assert (name not in ComponentOptions.key_fields()) == declared
    keys1, _ = _keys(_config(tmp_path, components={"adapters": "/elsewhere", "no_train": True}))
    assert keys1 == keys0
    keys2, _ = _keys(_config(tmp_path, probe={"batch_size": 3}))
    assert keys2 == keys0
    for exp in experiments().values():
        for name, info in exp.settings.model_fields.items():
            declared = (
                isinstance(info.json_schema_extra, dict)
                and info.json_schema_extra.get("key") is False
            )
            assert (name not in exp.settings.key_fields()) == declared


def test_version_bump_moves_the_stage_and_its_readers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import dataclasses

    from bebkit.pipeline import registry

    _persona(tmp_path)
    _figures(tmp_path)
    keys0, stages = _keys(_config(tmp_path))
    exp = registry.experiments()["beta-sigma"]
    monkeypatch.setitem(registry._REGISTRY, "beta-sigma", dataclasses.replace(exp, version="999"))
    keys1, _ = _keys(_config(tmp_path))
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    assert changed == _downstream(stages, {"beta-sigma-alpha", "beta-sigma-beta"})


def test_every_settings_field_is_a_cli_option_and_a_yaml_key() -> None:
    from bebkit.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for exp in experiments().values():
        p = sub.choices[exp.name]  # type: ignore[attr-defined]
        dests = {a.dest for a in p._actions}
        assert set(exp.settings.model_fields) <= dests, exp.name
        assert {"json", "quick", "model", "out"} <= dests
        assert {f"{r.replace('-', '_')}_record" for r in exp.reads} <= dests
        if exp.uses_components:
            assert set(ComponentOptions.model_fields) <= dests, exp.name
        else:
            assert not set(ComponentOptions.key_fields()) & dests, exp.name


def test_quick_and_paper_constructors() -> None:
    for exp in experiments().values():
        assert issubclass(exp.settings, Settings)
        required = {"behavior": "alpha", "behaviors": ("alpha",)}
        args = {k: v for k, v in required.items() if k in exp.settings.model_fields}
        paper, quick = exp.settings.paper(**args), exp.settings.quick(**args)
        for k, v in exp.settings.QUICK.items():
            assert getattr(quick, k) == v
        assert paper == exp.settings(**args)


def test_bad_section_values_are_one_line(tmp_path: Path) -> None:
    _persona(tmp_path)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"convergence": {"n_prompts": 0}}))
    with pytest.raises(InputError, match=r"convergence\.n_prompts must be >= 1"):
        load_config(cfg)
    cfg.write_text(yaml.safe_dump({"convergence": {"behavior": "x"}}))
    with pytest.raises(InputError, match="set for the whole run"):
        load_config(cfg)
    cfg.write_text(yaml.safe_dump({"nonsense": {}}))
    with pytest.raises(InputError, match="nonsense: unknown key"):
        load_config(cfg)


def test_results_round_trip_through_json() -> None:
    from bebkit.estimate import Estimate

    e = Estimate(1.5, 0.1, 10, 1.3, 1.7, 0.95, "m").to_dict()
    nan = Estimate(float("nan"), float("nan"), 3).to_dict()
    fit = {"log_inv_alpha": e, "beta": e, "n_star": nan, "extra": [1, 2]}
    samples = {
        "beta-sigma": {"behavior": "b", "format": "chat", "beta": {"estimate": e},
                       "beta_prime": {"estimate": e}, "sigma2": {"estimate": e}, "sigma": e,
                       "kl": {"n": [0, 1]}},
        "convergence": {"behavior": "b", "format": "chat", "target_model": "m",
                        "conditions": ["none"], "fits": {"none": {"lemma5": fit, "linear": fit}}},
        "classify": {"behavior": "b", "format": "chat", "preset": "small",
                     "table1": {"accuracy": e, "accuracy_desired": e, "accuracy_undesired": e}},
    }  # fmt: skip
    for name, data in samples.items():
        cls = experiments()[name].result
        r = cls.from_json(data)
        again = cls.from_json(json.loads(json.dumps(r.to_json())))
        assert again.to_json() == r.to_json()
    r = experiments()["convergence"].result.from_json(samples["convergence"])
    assert r.fits["none"].lemma5.beta == Estimate.from_dict(e)
    with pytest.raises(InputError, match="ConvergenceOutcome"):
        experiments()["convergence"].result.from_json({"behavior": "b"})


def test_fixed_prompt_files_enter_keys_by_content(tmp_path: Path) -> None:
    _persona(tmp_path)
    _figures(tmp_path)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text('["I hurt people.", "I never share."]\n')
    b.write_bytes(a.read_bytes())
    ka, _ = _keys(_config(tmp_path, misalign={"prompts_file": str(a)}))
    kb, _ = _keys(_config(tmp_path, misalign={"prompts_file": str(b)}))
    assert ka == kb  # same content under another name
    b.write_text('["I hurt people.", "I rarely share."]\n')
    kc, _ = _keys(_config(tmp_path, misalign={"prompts_file": str(b)}))
    changed = {k for k in ka if ka[k] != kc[k]}
    assert changed == {"misalign-alpha", "misalign-beta"}
    with pytest.raises(InputError, match="prompts_file"):
        _keys(_config(tmp_path, misalign={"prompts_file": str(tmp_path / "missing.json")}))


# --------------------------------------------------------------------------------------------
# The components step: one set of inputs builds the adapters and keys them
# --------------------------------------------------------------------------------------------


def _model_folder(root: Path, weights: bytes = b"\x00" * 64) -> Path:
    d = root / "my-model"
    d.mkdir(parents=True)
    (d / "config.json").write_text('{"model_type": "llama"}')
    (d / "model.safetensors").write_bytes(weights)
    return d


def _stages_on(cfg: ReproduceConfig, stages: list[Stage], model: str) -> set[str]:
    """The stages whose experiment runs on ``model``, and their readers."""
    own = {
        e.stage_name(b)
        for e in experiments().values()
        if cfg.enabled(e) and cfg.model_for(e) == model
        for b in (cfg.behaviors if e.per_behavior else (None,))
    }
    return _downstream(stages, own)


def test_every_component_input_enters_the_components_key(tmp_path: Path) -> None:
    """Each field of ComponentInputs (what the provider builds the adapters from) moves the
    key; a new field without an alternative here fails, so no input is left out unseen."""
    import dataclasses

    from bebkit.components.presets import get_preset
    from bebkit.pipeline.session import ComponentInputs, component_inputs

    persona = _persona(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    for f in persona.iterdir():
        (other / f.name).write_text(f.read_text().replace("I help", "I assist"))
    base = component_inputs("m", "alpha", "alternating", ComponentOptions(), str(persona))
    alternatives = {
        "model": "m2",
        "behavior": "beta",
        "persona_dir": str(other),
        "fmt": "newline",
        "options": ComponentOptions(train_seed=3),
        "recipe": get_preset("paper"),
        "training_version": base.training_version + 1,
    }
    assert set(alternatives) == {f.name for f in dataclasses.fields(ComponentInputs)}
    for name, value in alternatives.items():
        assert dataclasses.replace(base, **{name: value}).key() != base.key(), name
    # The provider's input equals the key's input: the chat layouts share one training format.
    assert component_inputs("m", "alpha", "user-turns", ComponentOptions(), str(persona)) == base


@pytest.mark.parametrize(
    ("option", "value"),
    [("preset", "paper"), ("n_train", 40), ("n_heldout", 2), ("epochs", 3), ("train_seed", 5)],
)
def test_each_component_option_moves_exactly_the_component_users(
    tmp_path: Path, option: str, value: Any
) -> None:
    _persona(tmp_path)
    _figures(tmp_path)
    keys0, stages = _keys(_config(tmp_path))
    keys1, _ = _keys(_config(tmp_path, components={option: value}))
    users = {
        e.stage_name(b)
        for e in experiments().values()
        if e.uses_components
        for b in ("alpha", "beta")
    }
    changed = {k for k in keys0 if keys0[k] != keys1[k]}
    assert changed == _downstream(stages, users), option
    assert set(ComponentOptions.key_fields()) == {"preset", "n_train", "n_heldout", "epochs",
                                                  "train_seed"}  # fmt: skip


def test_recipe_and_training_version_enter_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Editing a preset moves the component users' keys when the run uses it — also when the
    preset is chosen by the model's size (no preset given); a training-code bump moves them."""
    from bebkit.components import manifest, presets

    _persona(tmp_path)
    _figures(tmp_path)
    cfgs = {p: _config(tmp_path, components={"preset": p}) for p in (None, "small", "paper")}
    before = {p: _keys(c)[0] for p, c in cfgs.items()}
    _, stages = _keys(cfgs[None])
    users = _downstream(
        stages,
        {e.stage_name(b) for e in experiments().values() if e.uses_components for b in ROWS},
    )
    small = presets.PRESETS["small"]
    monkeypatch.setitem(presets.PRESETS, "small", small.model_copy(update={"lr": 5e-4}))
    after = {p: _keys(c)[0] for p, c in cfgs.items()}
    for p, changed in ((None, users), ("small", users), ("paper", set())):
        assert {k for k in before[p] if before[p][k] != after[p][k]} == changed, p
    monkeypatch.setattr(manifest, "TRAINING_VERSION", manifest.TRAINING_VERSION + 1)
    bumped, _ = _keys(cfgs["paper"])
    assert {k for k in bumped if bumped[k] != after["paper"][k]} == users


def test_local_model_folders_enter_keys_by_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    _persona(tmp_path)
    _figures(tmp_path)
    folder = _model_folder(tmp_path / "a")
    cfg = _config(tmp_path, aligned_model=str(folder))
    keys0, stages = _keys(cfg)
    moved = tmp_path / "b" / "renamed"
    moved.parent.mkdir()
    shutil.move(str(folder), moved)
    keys1, _ = _keys(_config(tmp_path, aligned_model=str(moved)))
    assert keys1 == keys0  # same files under another path: every key kept
    (moved / "model.safetensors").write_bytes(b"\x01" * 64)  # same size, other weights
    keys2, _ = _keys(_config(tmp_path, aligned_model=str(moved)))
    changed = {k for k in keys0 if keys0[k] != keys2[k]}
    assert changed == _stages_on(cfg, stages, str(folder)) != set(keys0)
    (moved / "tokenizer.json").write_text("{}")  # any file the loader may read counts
    keys3, _ = _keys(_config(tmp_path, aligned_model=str(moved)))
    assert {k for k in keys2 if keys2[k] != keys3[k]} == changed


def _alpha_persona(tmp_path: Path, n: int) -> Path:
    """A persona folder with behavior ``alpha``: ``n`` desired and ``n`` undesired statements."""
    persona = tmp_path / "persona"
    persona.mkdir()
    rows = [
        {"statement": f"I help person {i}.", "answer_matching_behavior": " No"} for i in range(n)
    ]
    rows += [
        {"statement": f"I hurt person {i}.", "answer_matching_behavior": " Yes"} for i in range(n)
    ]
    (persona / "alpha.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return persona


def test_classify_prepares_the_behavior_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The components and Table 1 read one rendering of the behavior's split."""
    from types import SimpleNamespace

    from bebkit.components import workflow
    from bebkit.pipeline.registry import RunContext

    _alpha_persona(tmp_path, 4)
    calls: list[str] = []
    real = workflow.prepare_data

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(args[0])
        return real(*args, **kwargs)

    class Tokenizer:
        chat_template = None

    base = SimpleNamespace(tokenizer=Tokenizer(), n_parameters=lambda: 1000, name="tiny")
    table1 = {"accuracy": {"value": 1.0, "stderr": 0.0, "n": 2}}
    table1 |= {"accuracy_desired": table1["accuracy"], "accuracy_undesired": table1["accuracy"]}
    monkeypatch.setattr(workflow, "prepare_data", counting)
    monkeypatch.setattr(workflow, "load_components", lambda *_a, **_k: base)
    monkeypatch.setattr(workflow, "ensure_components", lambda *_a, **_k: {})
    monkeypatch.setattr(
        workflow, "classify_heldout", lambda *_a, **_k: SimpleNamespace(to_dict=lambda: table1)
    )
    exp = experiments()["classify"]
    provider = ComponentProvider(
        ComponentOptions(n_train=1 + 2, n_heldout=1), lambda _m: None,
        persona_dir=str(tmp_path / "persona"),
    )  # fmt: skip
    ctx = RunContext(out=tmp_path / "out", log=lambda _m: None, provider=provider, model="tiny")
    result = exp.run(ctx, exp.settings(behavior="alpha", fmt="newline"))
    assert calls == ["alpha"]
    assert result.preset == "small"


def test_pipeline_order_does_not_depend_on_import_order(monkeypatch: pytest.MonkeyPatch) -> None:
    """A program that imports ``misalign`` before ``beta_sigma`` registers them in that order;
    the pipeline order (and so stage planning) must not follow it."""
    from bebkit.pipeline import registry as reg

    canonical = list(reg.experiments())
    shuffled = dict(reversed(list(reg._REGISTRY.items())))
    monkeypatch.setattr(reg, "_REGISTRY", shuffled)
    order = list(reg.experiments())
    assert sorted(order) == sorted(canonical)
    # modules keep EXPERIMENT_MODULES order (within a module, registration order)
    rank = {m: i for i, m in enumerate(reg.EXPERIMENT_MODULES)}
    ranks = [rank[reg._REGISTRY[n].run.__module__] for n in order]
    assert ranks == sorted(ranks)
    assert order.index("beta-sigma") < order.index("convergence") < order.index("misalign")
    for i, name in enumerate(order):
        assert all(order.index(r) < i for r in reg._REGISTRY[name].reads if r in order), name


def test_provider_reports_the_weights_of_the_adapters_it_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``ComponentProvider.weights_sha256`` is the hash of the weights file that
    ``ensure_components`` published for that side (None for a side not loaded)."""
    import hashlib
    from types import SimpleNamespace

    from bebkit.components import workflow
    from bebkit.components.workflow import SideStatus, adapter_name
    from bebkit.integrity import write_manifest

    persona = _alpha_persona(tmp_path, 8)

    class Tokenizer:
        chat_template = None

    def ensure(_c: Any, data: Any, *_a: Any, sides: tuple[str, ...], **_k: Any) -> Any:
        out = {}
        for side in sides:  # keyed by adapter name, as ensure_components does
            name = adapter_name(side, data.role)
            folder = tmp_path / "adapters" / name
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "adapter_model.safetensors").write_bytes(name.encode())
            write_manifest(folder)
            out[name] = SideStatus(side, folder, False, {"key": name})
        return out

    base = SimpleNamespace(tokenizer=Tokenizer(), n_parameters=lambda: 1000, name="tiny")
    monkeypatch.setattr(workflow, "load_components", lambda *_a, **_k: base)
    monkeypatch.setattr(workflow, "ensure_components", ensure)
    provider = ComponentProvider(
        ComponentOptions(n_train=6, n_heldout=1), lambda _m: None, persona_dir=str(persona)
    )
    assert provider.weights_sha256("tiny", "alpha", "newline", "neg") is None
    provider.components("tiny", "alpha", "newline", ("neg",))
    assert provider.weights_sha256("tiny", "alpha", "newline", "neg") == (
        hashlib.sha256(b"neg").hexdigest()
    )
    assert provider.weights_sha256("tiny", "alpha", "newline", "pos") is None
    # a decoupled pair's generator half: its own weights, never the shared adapter's
    assert provider.weights_sha256("tiny", "alpha", "newline", "neg", "generator") is None
    provider.components("tiny", "alpha", "newline", ("neg",), "generator")
    assert provider.weights_sha256("tiny", "alpha", "newline", "neg", "generator") == (
        hashlib.sha256(b"generator_neg").hexdigest()
    )


def test_an_estimator_revision_changes_only_the_keys_that_use_that_estimator() -> None:
    """rb_cv's definition changed (leave-one-out coefficient, jackknife stderr): stages run
    with it get a new key, so no result of the old definition is reused; the default rb's key
    material is untouched, so the stages cached with it stay valid."""
    from bebkit.estimators.kl import ESTIMATOR_REVISIONS
    from bebkit.pipeline.beta_sigma import BetaSigmaSettings

    rb = BetaSigmaSettings(behavior="alpha").key_material()
    cv = BetaSigmaSettings(behavior="alpha", estimator="rb_cv").key_material()
    assert rb["estimator"] == "rb"
    assert cv["estimator"] == f"rb_cv@{ESTIMATOR_REVISIONS['rb_cv']}"
    assert {k: v for k, v in cv.items() if k != "estimator"} == {
        k: v for k, v in rb.items() if k != "estimator"
    }
    # mc's draws were laid out anew (a curve's prefixes sampled in groups): its stages too
    mc = BetaSigmaSettings(behavior="alpha", estimator="mc").key_material()
    assert mc["estimator"] == "mc@2" == f"mc@{ESTIMATOR_REVISIONS['mc']}"
    # misalign's and align's Lemma 5 curve is plain MC without an estimator field: the revision
    # enters their keys exactly when they estimate one (misalign's default 0 keeps its keys)
    from bebkit.pipeline.align import AlignSettings
    from bebkit.pipeline.misalign import MisalignSettings
    from bebkit.pipeline.theorems import ConversationSettings

    assert "kl_estimator" not in MisalignSettings(behavior="alpha").key_material()
    ms = MisalignSettings(behavior="alpha", n_samples=8).key_material()
    assert ms["kl_estimator"] == "mc@2"
    assert {k: v for k, v in ms.items() if k != "kl_estimator"} == {
        **MisalignSettings(behavior="alpha").key_material(),
        "n_samples": 8,
    }
    assert AlignSettings(behavior="alpha").key_material()["kl_estimator"] == "mc@2"
    conv = ConversationSettings(behavior="alpha")
    assert conv.key_material()["kl_estimator"] == "rb"
    assert conv.model_copy(update={"kl_estimator": "mc"}).key_material()["kl_estimator"] == "mc@2"
