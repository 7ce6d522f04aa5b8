"""`bebkit sweep` on a tiny model saved to a folder, two tiny persona behaviors, a local Ray
with 2 workers shared by the module.

Covers: the sweep equals running its units one by one; a malformed behavior file and a unit
that fails inside its worker are recorded while the rest complete (exit code 1); the driver
SIGKILLed mid-sweep and rerun ends with every finished unit cached and identical numbers; the
report files; one-line config errors.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")
ray = pytest.importorskip("ray")


def _tiny_world() -> Any:
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "components" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tiny_components_sweep", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONFIG = """
name: tiny
seed: 3
models: [{model}]
behaviors: {behaviors}
experiments: {experiments}
persona_dir: {persona}
components: {{preset: small, n_train: 9, n_heldout: 3}}
beta_sigma: {{n_prompts: 2, n_sentences: 2, n_samples: 4, n_tokens: 2, n_var_prompts: 3}}
convergence: {{n_prompts: 2, n_sentences: 3, n_samples: 4, n_tokens: 2}}
resources: {{num_cpus: 1}}
"""


def _write_rows(path: Path, good: list[str], bad: list[str]) -> None:
    with path.open("w") as fh:
        for s in good:
            fh.write(json.dumps({"statement": s, "answer_matching_behavior": " No"}) + "\n")
        for s in bad:
            fh.write(json.dumps({"statement": s, "answer_matching_behavior": " Yes"}) + "\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    w = _tiny_world()
    tmp = tmp_path_factory.mktemp("sweep")
    model_dir = tmp / "tiny-model"
    w.make_llama(seed=1).save_pretrained(model_dir)
    w.make_tokenizer().save_pretrained(model_dir)
    persona = tmp / "persona"
    persona.mkdir()
    _write_rows(persona / "tinya.jsonl", w.GOOD, w.BAD)
    _write_rows(persona / "tinyb.jsonl", w.BAD, w.GOOD)  # the other polarity
    (persona / "tinybad.jsonl").write_text('{"statement": "i like", "answer_matching\n')
    _write_rows(persona / "tinyfew.jsonl", w.GOOD[:2], w.BAD[:2])  # too few to train on

    def config(name: str, behaviors: list[str], exps: list[str]) -> Path:
        p = tmp / f"{name}.yaml"
        p.write_text(
            CONFIG.format(
                model=model_dir,
                persona=persona,
                behaviors=json.dumps(behaviors),
                experiments=json.dumps(exps),
            )
        )
        return p

    return {"tmp": tmp, "config": config, "cache": tmp / "cache"}


@pytest.fixture(scope="module")
def cluster(world: dict[str, Any]) -> Any:
    """One local Ray (2 CPUs) for the module; the env reaches the workers via the driver."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def env(world: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("BEBKIT_CACHE", str(world["cache"]))
    monkeypatch.setenv("BEBKIT_NUM_THREADS", "1")
    monkeypatch.delenv("BEBKIT_REFERENCE_DIR", raising=False)
    monkeypatch.delenv("BEBKIT_PERSONA_DIR", raising=False)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def _strip(obj: Any) -> Any:
    """Results without timings (the only fields that may differ between two runs)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if "timing" not in k and k != "seconds"}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def _results(out: Path) -> dict[str, Any]:
    state = json.loads((out / "sweep.json").read_text())
    res = {}
    for u in state["units"]:
        if u["status"] in ("done", "cached"):
            p = out / u["folder"] / "stages" / u["stage"] / u["key"] / "result.json"
            res[u["id"]] = _strip(json.loads(p.read_text())["result"])
    return res


def _one_by_one(cfg: Any, units: list[Any], out: Path) -> dict[str, Any]:
    """The reference: every unit run inline, in plan order, on one fresh provider."""
    import torch

    from bebkit.pipeline.session import ComponentProvider
    from bebkit.pipeline.sweep import execute_unit

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        provider = ComponentProvider(
            cfg.run.components, lambda _m: None, persona_dir=cfg.run.persona_dir, threads=1
        )
        outcomes: dict[str, Any] = {}
        for u in units:
            deps = {d: outcomes[d] for d in u.deps}
            outcomes[u.id] = execute_unit(cfg, u, out, provider, deps)
    finally:
        torch.set_num_threads(before)
    return {k: _strip(v["result"]) for k, v in outcomes.items()}


def _cli(args: list[str], env: dict[str, str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "sweep", *args],
        capture_output=True, text=True, env=env, timeout=600, **kw,
    )  # fmt: skip


SHARED: dict[str, Any] = {}


def test_sweep_equals_one_by_one_and_records_failures(
    world: dict[str, Any], cluster: str, env: dict[str, str]
) -> None:
    from bebkit.pipeline.sweep import load_sweep_config, plan_sweep, run_sweep

    path = world["config"]("grid", ["tiny*"], ["classify", "beta-sigma"])
    cfg = load_sweep_config(path)
    out = world["tmp"] / "grid"
    summary = run_sweep(cfg, out, progress_every=5.0)

    assert summary["status"] == "failed" and summary["n_units"] == 8
    fails = summary["failures"]
    assert {k.split("/")[-2] for k in fails} == {"tinybad", "tinyfew"}
    bad = [e for k, e in fails.items() if "/tinybad/" in k]
    assert len(bad) == 2 and all(e.startswith("InputError") and "tinybad" in e for e in bad)
    assert all("\n" not in e for e in fails.values())
    done = {u["id"] for u in summary["units"] if u["status"] == "done"}
    assert len(done) == 4 and all("/tinya/" in d or "/tinyb/" in d for d in done)

    # The same units run one by one in this process give the same numbers.
    units = [u for u in plan_sweep(cfg) if u.behavior in ("tinya", "tinyb")]
    ref = _one_by_one(cfg, units, world["tmp"] / "one-by-one")
    swept = _results(out)
    assert swept == ref
    SHARED["grid"] = swept

    # The report: the table with CIs (CSV, Parquet), the sortable page, the figures.
    for name in ("results.csv", "results.parquet", "report.html", "figures/table1_accuracy.png"):
        assert (out / name).is_file(), name
    import csv

    rows = list(csv.DictReader((out / "results.csv").open()))
    acc = [r for r in rows if r["quantity"] == "classify:table1.accuracy"]
    assert {r["behavior"] for r in acc} == {"tinya", "tinyb"}
    assert all(float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"]) for r in acc)
    assert any(r["quantity"] == "beta-sigma:beta" for r in rows)
    page = (out / "report.html").read_text()
    assert "class='sortable'" in page and "tinybad" in page

    # The CLI on the same grid: finished units cached, the failures again, exit code 1.
    proc = _cli([str(path), "--out", str(out), "--address", cluster, "--json"], env)
    assert proc.returncode == 1, proc.stderr[-3000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["cached"] == 4 and res["failed"] == 4 and res["done"] == 0

    # --report-only on a larger grid (probes added): nothing runs, the finished units' numbers
    # are reported, the probe units are "not finished", sweep.json is untouched.
    state_before = (out / "sweep.json").read_bytes()
    own_report = (out / "report.html").read_bytes()
    bigger = world["config"]("grid-more", ["tiny*"], ["classify", "beta-sigma", "probe"])
    proc = _cli([str(bigger), "--out", str(out), "--report-only", "--json"], env)
    assert proc.returncode == 1, proc.stderr[-3000:]  # some units failed
    part = json.loads(proc.stdout.strip().splitlines()[-1])
    # probes of tinya, tinyb, tinyfew not run; tinybad fails at planning (3 units), tinyfew's
    # two units failed in the last sweep (read from its sweep.json, same keys)
    assert part["status"] == "partial" and part["pending"] == 3, part
    assert part["cached"] == 4 and part["failed"] == 5 and part["done"] == 0, part
    assert "starting a local Ray" not in proc.stderr
    assert (out / "sweep.json").read_bytes() == state_before
    # the sweep's own report is untouched; the partial one sits beside it
    assert (out / "report.html").read_bytes() == own_report
    rows = list(csv.DictReader((out / "results-partial.csv").open()))
    acc2 = [r for r in rows if r["quantity"] == "classify:table1.accuracy"]
    assert sorted((r["behavior"], r["value"]) for r in acc2) == sorted(
        (r["behavior"], r["value"]) for r in acc
    )
    pending = [r for r in rows if r["status"] == "pending"]
    assert {(r["behavior"], r["experiment"]) for r in pending} == {
        ("tinya", "probe"), ("tinyb", "probe"), ("tinyfew", "probe"),
    }  # fmt: skip
    partial = (out / "report-partial.html").read_text()
    assert "partial: 9 of 12 units finished" in partial and "3 not finished yet" in partial
    assert "figures-partial/table1_accuracy.png" in partial and "results-partial.csv" in partial
    bad_args = _cli([str(bigger), "--out", str(out), "--report-only", "--num-cpus", "2"], env)
    assert bad_args.returncode == 2 and len(bad_args.stderr.strip().splitlines()) == 1


def _published(out: Path) -> set[Path]:
    """Stage folders published by a sweep; a stage being written sits in a hidden
    ``.tmp-*`` folder (pathlib's glob matches hidden names) and is not published."""
    return {
        p.parent
        for p in out.glob("units/*/*/stages/*/*/result.json")
        if not p.parent.name.startswith(".")
    }


def test_kill_driver_mid_sweep_then_resume(
    world: dict[str, Any], cluster: str, env: dict[str, str]
) -> None:
    """SIGKILL the driver once a unit is on disk; the rerun reuses it and ends identical."""
    path = world["config"]("resume", ["tinya", "tinyb"], ["classify", "beta-sigma", "convergence"])
    out = world["tmp"] / "resume"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bebkit.cli", "sweep", str(path), "--out", str(out),
         "--address", cluster],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline and not _published(out):
        assert proc.poll() is None, "sweep finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = _published(out)
    assert 1 <= len(finished) < 6

    done = _cli([str(path), "--out", str(out), "--address", cluster, "--json"], env)
    assert done.returncode == 0, done.stderr[-3000:]
    res = json.loads(done.stdout.strip().splitlines()[-1])
    assert res["status"] == "complete" and res["cached"] >= len(finished)
    state = json.loads((out / "sweep.json").read_text())
    for u in state["units"]:  # every unit finished before the kill was reused
        if (out / u["folder"] / "stages" / u["stage"] / u["key"]) in finished:
            assert u["status"] == "cached"
    resumed = _results(out)
    # Units shared with the first sweep (same keys: convergence is a larger grid) agree.
    assert len(resumed) == 6
    for uid, r in SHARED.get("grid", {}).items():
        assert resumed[uid] == r

    # and equal the units run one by one (convergence reading beta-sigma included)
    from bebkit.pipeline.sweep import load_sweep_config, plan_sweep

    cfg = load_sweep_config(path)
    ref = _one_by_one(cfg, plan_sweep(cfg), world["tmp"] / "one-by-one-resume")
    assert resumed == ref


@pytest.mark.slow
def test_worker_killed_mid_unit_is_retried(
    world: dict[str, Any], cluster: str, env: dict[str, str]
) -> None:
    """SIGKILL a replica's process while it runs a unit: Ray restarts the replica, the unit is
    retried, and the sweep ends complete with the numbers of the first sweep (run alone: of
    the same units run one by one)."""
    import threading

    from bebkit.pipeline.sweep import load_sweep_config, run_sweep

    path = world["config"]("workerkill", ["tinya", "tinyb"], ["classify", "beta-sigma"])
    out = world["tmp"] / "workerkill"
    box: dict[str, Any] = {}
    t = threading.Thread(target=lambda: box.update(run_sweep(load_sweep_config(path), out)))
    t.start()
    deadline, pid = time.time() + 300, None
    while pid is None and time.time() < deadline and t.is_alive():
        for log in out.glob("logs/*beta-sigma*.log"):
            line = log.read_text().split("replica pid ")
            if len(line) > 1:
                pid = int(line[1].split()[0])
        time.sleep(0.02)
    assert pid is not None, "no unit started"
    os.kill(pid, signal.SIGKILL)
    t.join(600)
    assert box["status"] == "complete", box["failures"]
    ref = SHARED.get("grid")
    if ref is None:  # run alone (`make test-slow`): the same units run one by one
        from bebkit.pipeline.sweep import plan_sweep

        cfg = load_sweep_config(path)
        ref = _one_by_one(cfg, plan_sweep(cfg), world["tmp"] / "one-by-one-workerkill")
    assert _results(out) == ref


def test_bad_sweep_config_is_one_line(tmp_path: Path) -> None:
    from bebkit.errors import InputError
    from bebkit.pipeline.sweep import build_sweep_config, load_sweep_config

    cases = {
        "experiments: [classify, nope]": "experiments: unknown experiment 'nope'",
        "beta_sigma: {n_prompt: 3}": "beta_sigma.n_prompt: unknown key",
        "resources: {num_cpus: 0}": "resources.num_cpus",
        "aligned_model: m": "aligned_model",
        # align trains models: a bf16 sweep that would run it is refused when read, whether
        # named or in `all`, though its section is not `enabled` (a sweep ignores that flag)
        "precision: bfloat16\npretrained_model: p\nexperiments: [classify, align]": (
            "precision: align runs in float32 only (precision: float32), not bfloat16"
        ),
        "precision: bfloat16\npretrained_model: p\nexperiments: [all]": "align runs in float32 only",
    }
    for i, (text, needle) in enumerate(cases.items()):
        p = tmp_path / f"bad{i}.yaml"
        p.write_text("name: x\n" + text + "\n")
        with pytest.raises(InputError) as err:
            load_sweep_config(p)
        assert needle in str(err.value) and "\n" not in str(err.value)
    # without align (or without a pretrained model, so no align unit) bf16 is accepted
    ok = build_sweep_config({"precision": "bfloat16", "experiments": ["all"]}, "cfg")
    assert ok.run.precision == "bfloat16" and "align" not in {e.name for e in ok.experiments()}
    cfg = build_sweep_config({"behaviors": ["zzz-*"]}, "cfg")
    with pytest.raises(InputError, match="matches no behavior"):
        cfg.resolve_behaviors()
    # and through the CLI: one stderr line, exit code 2
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nexperiments: [classify, nope]\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = _cli([str(p), "--out", str(tmp_path / "o")], env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
