"""Smoke test of the benchmark harness on a tiny random in-process model (no timing asserts)."""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("peft")

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `benchmarks` is a top-level package next to `src/`
    sys.path.insert(0, str(ROOT))

from benchmarks.common import BenchContext, Goal, tiny_context  # noqa: E402
from benchmarks.run import BENCHMARKS, render, run_all  # noqa: E402

from benchmarks import baseline_kl, ceiling, end_to_end, memory, profile_kl, scaling, variance  # noqa: E402


@pytest.fixture(scope="module")
def ctx(tmp_path_factory: pytest.TempPathFactory) -> BenchContext:
    import torch

    torch.set_num_threads(1)
    return tiny_context(tmp_path_factory.mktemp("run"))


def _finite_rows(rows: list[list[object]]) -> None:
    for row in rows:
        for cell in row:
            if isinstance(cell, float):
                assert math.isfinite(cell), row


def test_baseline_matches_its_definition(ctx: BenchContext) -> None:
    res = baseline_kl.run(ctx)
    assert [r[0] for r in res.rows][:2] == [
        "paper (generate, top-k 5)",
        "paper (generate, top-k off)",
    ]
    assert [r[0] for r in res.rows][2:] == [
        "bebkit kl_curve (mc)",
        "bebkit kl_curve (rb_cv)",
        "bebkit kl_curve (mc, bf16)",
    ]
    assert len(res.rows[0]) == 4 + len(ctx.sizes.ns)
    _finite_rows(res.rows)
    assert {g.name for g in res.goals} and all(math.isfinite(g.measured) for g in res.goals)
    # issue #15's goal, for the float32 path and the opt-in bf16 path
    assert [g.threshold for g in res.goals if g.name.startswith("speed-up")] == [15.0, 15.0]
    # the bf16 row ran on the bf16 copy: the same seed as the float32 mc row, other numbers
    runs = {r["label"]: r for r in res.data["runs"]}
    v32 = runs["bebkit kl_curve (mc)"]["values"]
    v16 = runs["bebkit kl_curve (mc, bf16)"]["values"]
    assert v16 != v32 and all(math.isfinite(v) for row in v16 for v in row)
    for run in res.data["runs"]:
        assert run["tokens"] > 0 and run["seconds"] > 0
        assert len(run["values"]) == len(ctx.prompts)
    # the note's decode share is the sizes' N·(T−1) per cell over bebkit's counted tokens
    sz = ctx.sizes
    decode = len(ctx.prompts) * len(sz.ns) * sz.n_samples * (sz.n_tokens - 1)
    share = 100 * decode / runs["bebkit kl_curve (mc)"]["tokens"]
    assert any(f"{share:.0f} % of its tokens are KV-cached decode steps" in n for n in res.notes)


def test_baseline_full_pass_scoring_equals_bebkit_scoring(ctx: BenchContext) -> None:
    """The baseline's per-continuation full forward pass gives bebkit's KV-cached log-probs."""
    import torch

    p = ctx.p_neg
    pre = ctx.prompts[0].context(p, 1)
    ys = [[5, 6, 7], [8, 9, 10]]
    ours = p.continuation_logprobs(pre, ys).totals
    with torch.inference_mode(), ctx.components.activated("neg"):
        theirs = [baseline_kl._full_pass_logprob(ctx.components.torch_model, pre, y) for y in ys]
    assert ours == pytest.approx(theirs, abs=1e-4)


def test_baseline_generate_gives_fixed_length(ctx: BenchContext) -> None:
    import torch

    torch.manual_seed(0)
    pre = ctx.prompts[0].context(ctx.p_neg, 0)
    with torch.inference_mode(), ctx.components.activated("neg"):
        ys = baseline_kl._generate_batch(ctx.components.torch_model, pre, 3, 5, None, 1)
    assert [len(y) for y in ys] == [5, 5, 5]


def test_variance_and_ceiling_and_scaling(ctx: BenchContext) -> None:
    for mod in (variance, ceiling, scaling, profile_kl):
        res = mod.run(ctx)
        assert res.rows, mod.__name__
        _finite_rows(res.rows)
        if mod is ceiling:
            # both precisions' stages as the pipeline runs them, each against its own ceiling
            assert {"kl_curve", "logratio", "kl_curve_bf16", "logratio_bf16"} <= set(
                res.data["stages"]
            )
            assert [g.name for g in res.goals][:2] == [
                "worst of KL curve / log-ratio stage vs fp32 forward ceiling",
                "worst of KL curve / log-ratio stage (bf16 path) vs bf16 forward ceiling",
            ]
    assert "bench_scaling" not in ctx.components.adapters  # scratch adapter cleaned up
    assert set(ctx.components.adapters) == {"neg", "pos"}


def test_memory_children(ctx: BenchContext) -> None:
    res = memory.run(ctx)
    assert res.data["full"]["components"] == ["base", "neg", "pos"]
    assert res.data["base"]["peak_rss_mib"] > 0 and res.goals[0].measured > 0


def test_end_to_end_reads_record_timings(ctx: BenchContext) -> None:
    from bebkit.records import make_record, write_record

    assert ctx.run_dir is not None
    rec = make_record("demo", config={}, seed=0, results={}, timings={"prompts": 1.5, "kl": 2.5})
    write_record(ctx.run_dir / "record.json", rec)
    res = end_to_end.run(ctx)
    assert [(r[0], r[2]) for r in res.rows] == [("prompts", 1.5), ("kl", 2.5)]
    assert res.rows[1][3] == pytest.approx(62.5)


def test_end_to_end_percent_is_of_the_pipeline_total(ctx: BenchContext) -> None:
    """A stage's nested record is a part of that stage: it must not inflate the denominator."""
    from bebkit.records import make_record, write_record

    assert ctx.run_dir is not None
    top = make_record(
        "reproduce",
        config={"name": "paper-x", "quick": False},
        seed=0,
        results={},
        timings={"a": 30.0, "b": 10.0, "wall_this_invocation": 41.0},
    )
    write_record(ctx.run_dir / "record.json", top)
    nested = make_record("kl", config={}, seed=0, results={}, timings={"kl": 20.0})
    write_record(ctx.run_dir / "stages" / "a" / "k" / "record.json", nested)
    res = end_to_end.run(ctx)
    pct = {(r[1], r[0]): r[3] for r in res.rows}
    assert pct[("record.json", "a")] == pytest.approx(75.0)
    assert pct[("stages/a/k/record.json", "kl")] == pytest.approx(50.0)
    assert "paper-x" in res.title and "--quick" not in res.title


def test_run_all_reports_failures_and_renders(
    ctx: BenchContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(_ctx: BenchContext) -> object:
        raise RuntimeError("broken on purpose")

    monkeypatch.setitem(BENCHMARKS, "variance", boom)
    results = run_all(ctx, ["variance", "e2e"], log=lambda _m: None)
    assert results[0].title.endswith("(FAILED)") and "broken on purpose" in results[0].rows[0][0]
    text = render(results, quick=True, ctx=ctx, total_s=1.0)
    assert text.startswith("# bebkit benchmarks") and "## 5. End to end" in text
    # the header names the command that reproduces the file: threads and the benchmarks run
    assert (
        f"`python -m benchmarks.run --quick --model tiny --threads {ctx.num_threads} "
        "--only variance --only e2e` on" in text
    )


def test_goal_direction() -> None:
    assert Goal("a", 12.0, 10.0).met and not Goal("a", 9.0, 10.0).met
    assert Goal("m", 1.2, 1.5, higher_is_better=False).met
    assert not Goal("m", float("nan"), 1.5).met
    # a near miss shows the digits that make it one
    assert Goal("s", 14.980710636607828, 15.0).line() == "s: 14.98× (goal ≥ 15.0×) — MISSED"
    assert Goal("s", 15.0004, 15.0).line() == "s: 15.0004× (goal ≥ 15.0×) — met"
    assert Goal("s", 15.0, 15.0).line() == "s: 15.0× (goal ≥ 15.0×) — met"


def test_blank_skip_benchmark_compares_both_samplers(ctx: BenchContext) -> None:
    from benchmarks import blank_skip

    res = blank_skip.run(ctx)
    assert [r[0].split(" ")[0] for r in res.rows] == ["native", "resumed"]
    _finite_rows(res.rows)
    assert res.rows[0][-1] == res.rows[1][-1] > 0  # same number of sentences on both paths
    assert "blank" in BENCHMARKS


def test_sweep_workers_benchmark_writes_a_valid_grid_and_compares_worker_counts(
    ctx: BenchContext, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The sweep config it writes is a valid sweep config of the embedded behavior (no persona
    folder), and the table's speed-up and units/min are computed from each run's own wall time
    and record (two real sweeps are too slow for the unit tests: ``--only sweep`` runs them)."""
    from bebkit.pipeline.sweep import load_sweep_config, plan_sweep
    from benchmarks import sweep_workers

    monkeypatch.delenv("BEBKIT_PERSONA_DIR", raising=False)
    cfg = tmp_path / "sweep.yaml"
    sweep_workers._config(cfg, sweep_workers._behaviors(4), "smollm2-135m-instruct")
    loaded = load_sweep_config(cfg)
    assert list(loaded.grid.behaviors) == ["cooperativeness"]
    assert {u.experiment for u in plan_sweep(loaded)} == {"classify", "probe"}

    walls = {1: 120.0, 2: 80.0}
    seen: list[int] = []

    def fake(cfg_path: Path, out: Path, cache: Path, workers: int) -> tuple[float, dict]:
        seen.append(workers)
        assert cfg_path.read_text() == cfg.read_text() and out.name.endswith(str(workers))
        units = [{"status": "done", "seconds": 50.0}, {"status": "done", "seconds": 40.0}]
        return walls[workers], {"units": [*units, {"status": "failed", "seconds": None}],
                                "failed": 1}  # fmt: skip

    monkeypatch.setattr(sweep_workers, "_sweep", fake)
    res = sweep_workers.run(ctx)
    assert seen == [1, 2]
    one, two = res.rows
    assert one[:3] == [1, 2, 1] and two[:3] == [2, 2, 1]
    assert one[4] == pytest.approx(60 * 2 / 120.0) and two[4] == pytest.approx(60 * 2 / 80.0)
    assert one[5] == pytest.approx(1.0) and two[5] == pytest.approx(1.5)
    assert one[6] == two[6] == pytest.approx(90.0)
    assert "sweep" in BENCHMARKS


def test_sentence_kl_benchmark_restores_the_sampler_and_compares_both(
    ctx: BenchContext,
) -> None:
    import bebkit.estimators.kl as kl
    import bebkit.models.hf as hf
    from benchmarks import sentence_kl

    room, budget = hf._with_decode_room, kl._DIST_BUDGET_BYTES
    res = sentence_kl.run(ctx)
    assert [r[0].split(":")[0] for r in res.rows] == ["now", "wave 4"]
    _finite_rows(res.rows)
    assert res.rows[0][-1] == res.rows[1][-1] > 0  # same number of sentences on both paths
    # the old path really ran under the old budget, and everything was put back
    v, cap, n = ctx.p_neg.vocab_size, kl.DEFAULT_MAX_SENTENCE_TOKENS, ctx.sizes.n_samples
    assert res.data["old"]["rows_per_draw"] == min(sentence_kl.OLD_BUDGET // (cap * v * 8), n)
    assert res.data["new"]["rows_per_draw"] == min(kl._dist_chunk(ctx.p_neg, cap), n)
    assert hf._with_decode_room is room
    assert budget == kl._DIST_BUDGET_BYTES
    assert "sentence_kl" in BENCHMARKS


def test_precision_benchmark_compares_bf16_with_float32_and_leaves_the_source_alone(
    ctx: BenchContext,
) -> None:
    import torch

    from benchmarks import precision

    res = precision.run(ctx)
    assert [r[0] for r in res.rows] == ["float32", "bf16"]
    d = res.data
    assert {p.dtype for p in ctx.components.torch_model.parameters()} == {torch.float32}
    for name in ("float32", "bf16"):
        assert math.isfinite(d["kl"][name]["kl"]) and d["kl"][name]["se"] > 0
    # the log-ratio comparison is paired on the same prompts: bf16 moves it, a little
    assert d["d_logratio"] != 0.0 and abs(d["d_logratio"]) < 1.0
    assert d["kl_ok"] == (abs(d["d_kl"]) <= d["se_kl"])
    assert d["se_kl"] == d["kl"]["float32"]["se"] and d["se_d_kl"] > 0  # paired by prefix
    assert d["logratio_ok"] == (abs(d["d_logratio"]) <= d["se_logratio"])
    assert [g.met for g in res.goals] == [d["kl_ok"], d["logratio_ok"]]
    assert "precision" in BENCHMARKS


def _est(v: float, se: float) -> dict[str, float]:
    return {"value": v, "stderr": se, "ci_low": v - 1.96 * se, "ci_high": v + 1.96 * se}


def _rec(stages: dict[str, object]) -> dict[str, object]:
    return {"results": {"stages": {k: {"seconds": 2.0, "result": r} for k, r in stages.items()}}}


def test_precision_e2e_pairs_every_estimate_by_stage_and_path() -> None:
    from benchmarks import precision_e2e as pe

    a = _rec({"beta-x": {"beta": {"estimate": _est(6.0, 0.2)}, "curve": [_est(1.0, 0.1),
              _est(2.0, 0.1)], "n": 3}, "only-a": {"e": _est(1.0, 1.0)}})  # fmt: skip
    b = _rec({"beta-x": {"beta": {"estimate": _est(6.1, 0.2)}, "curve": [_est(1.0, 0.1),
              _est(9.0, 0.1)]}, "only-b": {"e": _est(1.0, 1.0)}})  # fmt: skip
    pairs = pe.paired_estimates(a, b)
    assert [p.path for p in pairs] == ["beta-x.beta.estimate", "beta-x.curve[0]", "beta-x.curve[1]"]
    s = pe.compare(a, b)
    # 6.0 vs 6.1: z = 0.1 / √0.08 = 0.35 (agrees); 2.0 vs 9.0: z = 7 / √0.02 = 49.5 (disagrees)
    assert (s["n_pairs"], s["n_tested"], s["n_disagree"], s["n_inside"]) == (3, 3, 1, 2)
    assert s["worst"][0]["path"] == "beta-x.curve[1]"
    assert s["max_abs_z"] == pytest.approx(7.0 / math.sqrt(0.02))
    same = pe.compare(a, a)  # only-a pairs with itself too
    assert (same["n_pairs"], same["n_disagree"], same["n_inside"]) == (4, 0, 4)


def test_precision_e2e_flags_a_planted_bias_and_not_noise() -> None:
    """Replicates drawn around the same values disagree at about the chance rate; a bias of
    3 combined stderrs is flagged in most pairs."""
    import numpy as np

    from benchmarks import precision_e2e as pe

    rng = np.random.default_rng(0)
    truth = rng.normal(0, 5, 400)
    se = 0.3

    def run(shift: float) -> dict[str, object]:
        vals = truth + shift + rng.normal(0, se, truth.size)
        return _rec({"s": {"xs": [_est(float(v), se) for v in vals]}})

    base = run(0.0)
    noise = pe.compare(base, run(0.0))
    assert noise["n_tested"] == 400 and 0.01 < noise["n_disagree"] / 400 < 0.10
    biased = pe.compare(base, run(3 * se * math.sqrt(2)))
    assert biased["n_disagree"] / 400 > 0.7


def test_precision_e2e_runs_float32_bf16_and_a_reseeded_float32_control(
    ctx: BenchContext, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring: the float32 run reads the config as is, the bf16 run the same config with
    ``precision: bfloat16``, the control float32 with the seed + 1; the goal compares bf16's
    disagreement rate with the control's."""
    import json

    import yaml

    from benchmarks import precision_e2e as pe

    cfg = tmp_path / "demo.yaml"
    cfg.write_text("name: demo\nseed: 3\nbehaviors: [cooperativeness]\n")
    seen: list[dict[str, object]] = []
    shifts = {"bf16": 0.05, "reseeded": 0.0}

    def fake(config: Path, out: Path) -> tuple[float, str]:
        data = yaml.safe_load(config.read_text())
        seen.append(data)
        kind = "bf16" if data.get("precision") == "bfloat16" else (
            "reseeded" if data["seed"] == 4 else "float32")  # fmt: skip
        shift = shifts.get(kind, 0.0)
        stages = {"beta-sigma-c": {"beta": _est(5.0 + shift, 0.5)},
                  "conv-c": {"xs": [_est(float(i) + shift, 0.01) for i in range(9)]}}  # fmt: skip
        rec = _rec(stages)
        rec["results"]["stages"]["beta-sigma-c"]["seconds"] = 4.0 if kind == "bf16" else 10.0  # type: ignore[index]
        out.mkdir(parents=True)
        (out / "record.json").write_text(json.dumps(rec))
        nested = out / "stages" / "beta-sigma-c" / f"key-{kind}"
        nested.mkdir(parents=True)
        kl_s = 2.0 if kind == "bf16" else 6.0
        (nested / "record.json").write_text(json.dumps({"timings_s": {"kl": kl_s}}))
        return 1.0, "reproduce"

    monkeypatch.setattr(pe, "_run_reproduce", fake)
    res = pe.run(replace(ctx, reproduce_config=cfg))
    # the control first (it trains the adapters the timed runs then share)
    assert [(d.get("precision"), d["seed"]) for d in seen] == [
        ("float32", 4),
        (None, 3),
        ("bfloat16", 3),
    ]
    assert seen[2]["name"] == "demo" and seen[2]["behaviors"] == ["cooperativeness"]
    # a stage's own parts line up by stage name, whatever the stage keys
    assert ["  beta-sigma-c › kl", 6.0, 2.0, 3.0] in res.rows
    assert res.rows[0] == ["beta-sigma-c", 10.0, 4.0, 2.5]
    # bf16 moves the 9 tight estimates by 5 stderrs, the reseeded control moves nothing
    assert res.data["summary"]["n_disagree"] == 9 and res.data["control"]["n_disagree"] == 0
    assert not res.goals[0].met and res.goals[0].threshold == 0.0
    shifts.update(bf16=0.0, reseeded=0.05)  # now the control moves and bf16 does not
    seen.clear()
    res = pe.run(replace(ctx, reproduce_config=cfg))
    assert res.goals[0].met and res.goals[0].threshold == 10.0
    cfg.write_text("name: demo\nprecision: bfloat16\n")
    with pytest.raises(ValueError, match="already sets precision"):
        pe.run(replace(ctx, reproduce_config=cfg))
