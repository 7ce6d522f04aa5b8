"""The alignment experiment (issue 16) end to end through ``bebkit.cli.main`` on a tiny
in-process model: SFT + DPO variants at two strengths × two seeds, each with its own P₋/P₊,
measured before and after; the saved adapters reload to the measured model; the over-seed
summary's arithmetic; bad input; the quick config."""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bebkit.cli import main
from bebkit.estimate import Estimate
from bebkit.pipeline.align import change_from, seed_mean, verdict

pytest.importorskip("trl")

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
ARGS = ["--behavior", "cooperativeness", "--methods", "sft+dpo", "--max-steps", "6",
        "--n-strengths", "2", "--n-seeds", "2", "--n-sft", "16", "--n-pairs", "16",
        "--sft-lr", "0.01", "--dpo-lr", "0.01", "--dpo-beta", "0.5", "--lora-r", "4",
        "--batch-size", "4", "--n-prompts", "3", "--n-sentences", "3", "--n-responses", "2",
        "--n-samples", "2", "--max-sentence-tokens", "5", "--max-response-tokens", "5",
        "--n-boot", "0", "--n-train", "12", "--n-heldout", "6", "--epochs", "1",
        "--seed", "3", "--threads", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    from tests.cli.test_misalign_cli import _tiny_model_dir

    root = tmp_path_factory.mktemp("align")
    model = _tiny_model_dir(root)
    old = os.environ.get("BEBKIT_CACHE")
    os.environ["BEBKIT_CACHE"] = str(root / "cache")
    yield {"model": model, "root": root}
    if old is None:
        os.environ.pop("BEBKIT_CACHE", None)
    else:
        os.environ["BEBKIT_CACHE"] = old


@pytest.fixture(scope="module")
def run(tiny: dict[str, Path]) -> dict[str, Any]:
    out = tiny["root"] / "out"
    assert main(["align", "--model", str(tiny["model"]), *ARGS, "--out", str(out)]) == 0
    rec: dict[str, Any] = json.loads((out / "record.json").read_text())
    return {"out": out, "record": rec, "results": rec["results"]}


def test_variants_train_and_are_measured(run: dict[str, Any]) -> None:
    r = run["results"]
    assert run["record"]["kind"] == "align" and run["record"]["seed"] == 3
    names = [v["name"] for v in r["variants"]]
    assert names == ["sft+dpo-3-s3", "sft+dpo-3-s4", "sft+dpo-6-s3", "sft+dpo-6-s4"]
    for v in r["variants"]:
        t = v["training"]
        # SFT lowers the replies' NLL; DPO then raises the preference margin
        assert t["sft_nll_after"] < t["sft_nll_before"], v["name"]
        assert t["margin_after"] > t["margin_before"], v["name"]
        assert len(t["dpo_losses"]) == v["steps"]
        # every model is measured in the same units as the model before
        assert set(v["values"]) == set(r["before"])
        acc = v["values"]["table1_accuracy"]
        assert acc["n"] == 12 and 0 <= acc["value"] <= 1  # 6 held out per side
        d = run["out"] / "models" / v["name"]
        assert (d / "table1" / "record.json").is_file()
        assert (d / "misalign" / "record.json").is_file()
        assert any((d / "components").rglob("adapter_model.safetensors"))  # its own P-/P+
    assert r["lengths"] == [0, 1, 2, 3]  # newline layout: a response after every sentence
    assert all(f"good_n{n}" in r["before"] for n in r["lengths"])
    assert Path(r["files"]["figure"]).read_bytes()[:4] == b"\x89PNG"


def test_groups_and_changes_follow_from_the_variants(run: dict[str, Any]) -> None:
    r = run["results"]
    assert set(r["groups"]) == {"sft+dpo-3", "sft+dpo-6"}
    for name, g in r["groups"].items():
        vals = [v["values"]["table1_accuracy"]["value"] for v in r["variants"]
                if f"{v['method']}-{v['steps']}" == name]  # fmt: skip
        mean = g["mean"]["table1_accuracy"]
        assert mean["n"] == 2 and mean["value"] == pytest.approx(sum(vals) / 2)
        ch = r["change"][name]["table1_accuracy"]
        assert ch["value"] == pytest.approx(mean["value"] - r["before"]["table1_accuracy"]["value"])
        assert r["verdicts"][name]["table1_accuracy"] == verdict(Estimate.from_dict(ch))
    assert len(r["conjecture"]) == 2


def test_saved_adapters_reload_to_the_measured_model(
    run: dict[str, Any], tiny: dict[str, Path]
) -> None:
    """The adapter written for a variant is the one its margin was measured on, and its data
    came from the components' training split (Table 1's held-out statements unseen)."""
    from bebkit.components.alignment import alignment_data, merged_model, preference_margins
    from bebkit.components.workflow import load_components
    from bebkit.pipeline.registry import ComponentOptions
    from bebkit.pipeline.session import ComponentProvider

    opts = ComponentOptions(n_train=12, n_heldout=6, epochs=1)
    split = (
        ComponentProvider(opts, lambda _m: None)
        .data(str(tiny["model"]), "cooperativeness", "newline")
        .split
    )
    data = alignment_data(split.train_desired, split.train_undesired, n_sft=16, n_pairs=16, seed=3)
    held = set(split.heldout_desired) | set(split.heldout_undesired)
    assert not {x.prompt.rstrip(".") for x in data.pairs} & {h.rstrip(".") for h in held}
    v = run["results"]["variants"][-1]
    base = load_components(str(tiny["model"]), progress=False)
    merged = merged_model(base.base_model, v["adapter_dir"])
    margin = float(preference_margins(merged, base.tokenizer, data.pairs, chat=True).mean())
    assert margin == pytest.approx(v["training"]["margin_after"], abs=1e-4)


def test_seed_summary_arithmetic() -> None:
    e = seed_mean([1.0, 2.0, 3.0])
    assert e is not None and e.value == 2.0 and e.n == 3
    assert e.stderr == pytest.approx(1 / math.sqrt(3))
    assert e.ci_high == pytest.approx(2.0 + 4.302653 / math.sqrt(3), rel=1e-5)  # t_{0.975, 2}
    one = seed_mean([5.0, None, float("nan")])  # type: ignore[list-item]
    assert one is not None and one.n == 1 and one.ci_low is None
    before = Estimate(1.0, 0.1, 10, 0.8, 1.2, 0.95)
    ch = change_from(e, before)
    assert ch is not None and ch.value == pytest.approx(1.0)
    half = math.hypot(e.ci_high - e.value, 0.2)  # type: ignore[operator]  # each side's own CI
    assert ch.ci_low == pytest.approx(1.0 - half) and verdict(ch) == "no significant change"
    assert verdict(Estimate(3.0, 0.1, 3, 2.8, 3.2, 0.95)) == "raised"
    assert verdict(Estimate(-3.0, 0.1, 3, -3.2, -2.8, 0.95)) == "lowered"
    assert verdict(change_from(one, before)) == "untested"
    assert seed_mean([]) is None and change_from(None, before) is None


def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "never"
    assert main(["align", "--model", "x", "--behavior", "cooperativeness", "--n-seeds", "0",
                 "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith("error: --n-seeds must be >= 1, got 0")
    assert not out.exists()
    assert main(["align", "--model", "x", "--behavior", "nope", "--out", str(out)]) == 2
    capsys.readouterr()
    assert main(["align", "--model", "x", "--behavior", "cooperativeness", "--max-steps", "2",
                 "--n-strengths", "3", "--out", str(out)]) == 2  # fmt: skip
    assert (
        capsys.readouterr().err.strip().endswith("--n-strengths: must be <= max_steps (2), got 3")
    )
    assert not out.exists()


def test_reduced_precision_is_refused_by_one_rule_everywhere(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """align trains models: the command line (before anything is written), a run config (when
    it is read) and a library call with a bf16 provider all refuse bf16 with the same line."""
    from dataclasses import replace

    from bebkit.errors import InputError
    from bebkit.pipeline.align import run_align
    from bebkit.pipeline.config import ReproduceConfig
    from bebkit.pipeline.registry import RunContext, experiments, precision_error

    exps = experiments()
    assert {e.name for e in exps.values() if e.float32_only} == {"align"}
    line = "align runs in float32 only (precision: float32), not bfloat16"
    assert precision_error(exps["align"], "bfloat16") == line
    assert precision_error(exps["align"], "float32") is None
    assert all(precision_error(e, "bfloat16") is None for e in exps.values() if e.name != "align")
    out = tmp_path / "never"
    assert main(["align", "--model", "x", "--behavior", "cooperativeness", "--precision",
                 "bfloat16", "--out", str(out)]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].endswith(f"--precision: {line}") and not out.exists()
    with pytest.raises(ValueError, match=re.escape(line)):
        ReproduceConfig(pretrained_model="p", precision="bfloat16", align={"enabled": True})
    # the rule reads the flag, not the name: any float32-only experiment is refused
    other = replace(exps["probe"], float32_only=True)
    assert precision_error(other, "bfloat16") == line.replace("align", "probe")

    class Half:
        precision = "bfloat16"

    ctx = RunContext(out=out, log=lambda _m: None, provider=Half(), model="x")  # type: ignore[arg-type]
    with pytest.raises(InputError, match=f"^{re.escape(line)}$"):
        run_align(ctx, exps["align"].settings(behavior="cooperativeness"))
    assert not out.exists()


def test_quick_config_enables_align_only_where_asked() -> None:
    from bebkit.pipeline.config import load_config
    from bebkit.pipeline.registry import experiments

    exp = experiments()["align"]
    assert not exp.default_enabled
    for name, components in (("align-quick.yaml", "before"), ("align-mid.yaml", "own")):
        cfg = load_config(CONFIGS / name)
        assert {e.name for e in experiments().values() if cfg.enabled(e)} == {"align"}
        assert cfg.pretrained_model == "gemma-3-270m"
        s = cfg.settings_for(exp, "cooperativeness")
        assert s.n_seeds >= 3 and s.n_strengths >= 2, name  # type: ignore[attr-defined]
        assert s.variant_components == components, name  # type: ignore[attr-defined]
    for other in ("paper-smollm2.yaml", "demo.yaml", "theorems-quick.yaml"):
        assert not load_config(CONFIGS / other).enabled(exp), other


def test_reproduce_runs_the_align_stage_and_reports(tiny: dict[str, Path]) -> None:
    """The generated reproduce stage: an align-only config on the tiny model runs, writes the
    stage's record and a report, and a rerun reuses the stage."""
    from bebkit.pipeline.config import ReproduceConfig
    from bebkit.pipeline.registry import experiments
    from bebkit.pipeline.reproduce import reproduce

    off = {e.section: {"enabled": False} for e in experiments().values() if e.name != "align"}
    flags = dict(zip(ARGS[2::2], ARGS[3::2], strict=False))
    sizes = {k.lstrip("-").replace("-", "_"): v for k, v in flags.items()
             if k not in ("--behavior", "--seed", "--threads", "--n-train", "--n-heldout",
                          "--epochs")}  # fmt: skip
    cfg = ReproduceConfig.model_validate({
        "name": "align-tiny", "pretrained_model": str(tiny["model"]),
        "aligned_model": str(tiny["model"]), "behaviors": ["cooperativeness"],
        "components": {"n_train": 12, "n_heldout": 6, "epochs": 1},
        **off, "align": {"enabled": True, **sizes, "n_seeds": 1, "n_strengths": 1,
                          "variant_components": "before"},
    })  # fmt: skip
    out = tiny["root"] / "run"
    rec = reproduce(cfg, out)
    stage = next((out / "stages").glob("align-cooperativeness/*/record.json"))
    assert json.loads(stage.read_text())["kind"] == "align"
    assert (out / "report.md").is_file()
    first = rec["results"]["stages"]["align-cooperativeness"]
    assert not first["cached"] and first["result"]["behavior"] == "cooperativeness"
    # variant_components=before: no P-/P+ trained for the variant, Table 1 still measured
    v = first["result"]["variants"][0]
    assert v["values"]["table1_accuracy"]["n"] == 12
    assert not (stage.parent / "models" / v["name"] / "components").exists()
    again = reproduce(cfg, out)["results"]["stages"]["align-cooperativeness"]
    assert again["cached"] and again["key"] == first["key"]


def test_envelopes_are_the_beta_sigma_experiments_own_numbers(tiny: dict[str, Path]) -> None:
    """``--envelopes``: every model gets β, β′, σ² from the β/σ² experiment; the model
    before's equal, exactly, those of ``bebkit beta-sigma`` run on its own with the
    settings :func:`envelope_settings` derives (same cached P₋, P₊ = the model itself)."""
    from bebkit.pipeline.align import ENVELOPES, AlignSettings, envelope_settings

    flags = dict(zip(ARGS[::2], ARGS[1::2], strict=True))
    flags.update({"--methods": "dpo", "--n-seeds": "1", "--n-strengths": "1",
                  "--max-steps": "2"})  # fmt: skip
    args = [x for kv in flags.items() for x in kv]
    out = tiny["root"] / "env"
    assert main(["align", "--model", str(tiny["model"]), *args, "--envelopes",
                 "--variant-components", "before", "--out", str(out)]) == 0  # fmt: skip
    r = json.loads((out / "record.json").read_text())["results"]
    assert "not_measured" not in r and "envelopes" in r["estimands"]
    for values in (r["before"], *(v["values"] for v in r["variants"])):
        assert set(ENVELOPES.values()) <= set(values)
        assert all(values[k] is not None and math.isfinite(values[k]["value"])
                   for k in ENVELOPES.values())  # fmt: skip
    for name in ("before", r["variants"][0]["name"]):
        assert (out / "models" / name / "beta_sigma" / "record.json").is_file()
    assert set(ENVELOPES.values()) <= set(r["change"]["dpo-2"])

    s = envelope_settings(AlignSettings.model_validate({
        k.lstrip("-").replace("-", "_"): v for k, v in flags.items()
        if k not in ("--n-train", "--n-heldout", "--epochs", "--threads")}))  # fmt: skip
    alone = tiny["root"] / "env-alone"
    assert main(["beta-sigma", "--model", str(tiny["model"]), "--behavior", "cooperativeness",
                 "--format", s.fmt, "--n-prompts", str(s.n_prompts),
                 "--n-sentences", str(s.n_sentences), "--n-var-prompts", str(s.n_var_prompts),
                 "--n-samples", str(s.n_samples),
                 "--max-sentence-tokens", str(s.max_sentence_tokens),
                 "--n-boot", str(s.n_boot), "--p-plus", s.p_plus, "--seed", str(s.seed),
                 "--n-train", "12", "--n-heldout", "6", "--epochs", "1", "--threads", "1",
                 "--out", str(alone)]) == 0  # fmt: skip
    ref = json.loads((alone / "record.json").read_text())["results"]
    for key, name in ENVELOPES.items():
        assert r["before"][name] == ref[key]["estimate"], key


def test_a_killed_align_stage_resumes_at_the_first_unfinished_model(
    tiny: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each model's measurement is a checkpoint unit kept with its files: a ``reproduce``
    SIGKILLed right after the first variant is stored (another process, so another temp
    folder) leaves the model before and that variant; the rerun reuses both (it logs so),
    aligns only the second, and publishes the uninterrupted run's results — paths included —
    and every model's files (own P-/P+ included)."""

    import yaml
    from tests.pipeline.test_reproduce import kill_reproduce_after_unit

    from bebkit.pipeline.config import ReproduceConfig
    from bebkit.pipeline.registry import experiments
    from bebkit.pipeline.reproduce import reproduce

    # One torch thread count for every attempt, in this process (whatever an earlier test
    # left set) and in the killed one: units of another thread count are recomputed by design.
    monkeypatch.setenv("BEBKIT_NUM_THREADS", "1")
    off = {e.section: {"enabled": False} for e in experiments().values() if e.name != "align"}
    raw = {
        "name": "align-resume", "pretrained_model": str(tiny["model"]),
        "aligned_model": str(tiny["model"]), "behaviors": ["cooperativeness"],
        "components": {"n_train": 12, "n_heldout": 6, "epochs": 1},
        **off, "align": {"enabled": True, "methods": "dpo", "max_steps": 2, "n_strengths": 1,
                          "n_seeds": 2, "n_sft": 16, "n_pairs": 16, "dpo_lr": 0.01,
                          "lora_r": 4, "batch_size": 4, "n_prompts": 2, "n_sentences": 2,
                          "n_responses": 2, "n_samples": 2, "max_sentence_tokens": 5,
                          "max_response_tokens": 5, "n_boot": 0},
        "seed": 3,
    }  # fmt: skip
    cfg = ReproduceConfig.model_validate(raw)
    clean = reproduce(cfg, tiny["root"] / "resume-clean")
    want = clean["results"]["stages"]["align-cooperativeness"]["result"]
    names = [v["name"] for v in want["variants"]]  # seeds derived from the run's seed
    assert len(names) == 2

    cfg_file = tmp_path / "align.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    run = tmp_path / "killed"
    stage = run / "stages" / "align-cooperativeness"
    pattern = str(stage / ".partial-*" / "units" / f"model-{names[0]}.json")
    kill_reproduce_after_unit(cfg_file, run, pattern, os.environ, tmp_path)
    (partial,) = stage.glob(".partial-*")
    stored = sorted(p.name for p in (partial / "units").glob("*.json"))
    assert stored == ["model-before.json", f"model-{names[0]}.json"]

    lines: list[str] = []
    again = reproduce(cfg, run, log=lines.append)
    got = again["results"]["stages"]["align-cooperativeness"]["result"]
    assert any("resumed: reused 2 finished units of an earlier attempt, computed 1" in x
               for x in lines), lines  # fmt: skip
    for key in ("before", "groups", "change", "verdicts", "variants"):
        assert got[key] == want[key], key  # adapter_dir included: re-rooted, not the dead tmp
    (published,) = [p for p in stage.iterdir() if (p / "record.json").is_file()]
    for v in got["variants"]:
        assert (published / v["adapter_dir"] / "adapter_model.safetensors").is_file()
    for name in ("before", *names):
        assert (published / "models" / name / "table1" / "record.json").is_file(), name
    for name in names:
        comps = published / "models" / name / "components"
        assert len(list(comps.rglob("adapter_model.safetensors"))) == 2, name
    assert not list(stage.glob(".partial-*"))
