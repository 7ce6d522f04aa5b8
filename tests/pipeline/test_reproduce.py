"""`bebkit reproduce` end to end on a tiny in-process model saved to a folder.

Covers: config → every stage → record + report; a rerun skips every stage; a run SIGKILLed
mid-pipeline, or while it writes its record and report, and rerun ends with the same numbers
as an uninterrupted run; `bebkit report` rebuilds the report from disk alone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")


def _tiny_world() -> Any:
    """The components tests' tiny model/tokenizer builders (loaded by path: tests is no package)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "components" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_tiny_components", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


CONFIG = """
name: tiny
seed: 3
aligned_model: {model}
behaviors: [tinyb]
persona_dir: {persona}
format: chat
components: {{preset: small, n_train: 9, n_heldout: 3}}
probe: {{n_per_side: 12, layers: [last]}}
beta_sigma: {{n_prompts: 2, n_sentences: 2, n_samples: 4, n_tokens: 2, n_var_prompts: 3}}
prompt_distinguishability: {{n_prompts: 2, n_sentences: 2, n_samples: 4, n_tokens: 2}}
convergence: {{n_prompts: 2, n_sentences: 3, n_samples: 4, n_tokens: 2}}
misalign: {{n_prompts: 1, n_sentences: 2, n_responses: 3, max_response_tokens: 6}}
"""


def _setup(tmp: Path) -> tuple[Path, dict[str, str]]:
    w = _tiny_world()
    GOOD, BAD, make_llama, make_tokenizer = w.GOOD, w.BAD, w.make_llama, w.make_tokenizer
    model_dir = tmp / "tiny-model"
    make_llama(seed=1).save_pretrained(model_dir)
    make_tokenizer().save_pretrained(model_dir)
    persona = tmp / "persona"
    persona.mkdir()
    with (persona / "tinyb.jsonl").open("w") as fh:
        for s in GOOD:
            fh.write(json.dumps({"statement": s, "answer_matching_behavior": " No"}) + "\n")
        for s in BAD:
            fh.write(json.dumps({"statement": s, "answer_matching_behavior": " Yes"}) + "\n")
    cfg = tmp / "tiny.yaml"
    cfg.write_text(CONFIG.format(model=model_dir, persona=persona))
    env = {
        **os.environ,
        "BEBKIT_CACHE": str(tmp / "cache"),
        "BEBKIT_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join(sys.path),
    }
    env.pop("BEBKIT_REFERENCE_DIR", None)
    return cfg, env


def _run(cfg: Path, out: Path, env: dict[str, str]) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "reproduce", str(cfg), "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _numbers(out: Path) -> dict[str, Any]:
    rec = json.loads((out / "record.json").read_text())
    return {k: v["result"] for k, v in rec["results"]["stages"].items()}


@pytest.fixture(scope="module")
def clean_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Path, Any]:
    """(config, env, run folder, --json summary) of one uninterrupted run of the tiny config:
    the reference every fault test here compares to (adapters cached for them too)."""
    tmp = tmp_path_factory.mktemp("tiny")
    cfg, env = _setup(tmp)
    return cfg, env, tmp / "clean", _run(cfg, tmp / "clean", env)


def test_reproduce_resume_after_sigkill_matches(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    cfg, env, clean_dir, clean = clean_run
    assert clean["status"] == "complete"
    stages = set(clean["stages"])
    assert {"components-tinyb", "probes", "beta-sigma-tinyb", "convergence-tinyb",
            "prompt-dist-tinyb", "misalign-tinyb"} <= stages  # fmt: skip
    for name in ("record.json", "report.md", "report.html"):
        assert (clean_dir / name).is_file()
    html = (clean_dir / "report.html").read_text()
    assert "Content warning" in html and "<script" not in html

    # Rerun: everything cached.
    again = _run(cfg, clean_dir, env)
    assert all(s["cached"] for s in again["stages"].values())

    # Kill a fresh run once the first stage is on disk, then resume.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bebkit.cli", "reproduce", str(cfg), "--out", str(killed)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300

    def published() -> bool:  # pathlib's glob also matches the hidden .tmp-* folders
        found = killed.glob("stages/components-tinyb/*/result.json")
        return any(not p.parent.name.startswith(".") for p in found)

    while time.time() < deadline and not published():
        assert proc.poll() is None, "run finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "record.json").exists()
    resumed = _run(cfg, killed, env)
    assert resumed["stages"]["probes"]["cached"] and resumed["stages"]["components-tinyb"]["cached"]
    assert _numbers(killed) == _numbers(clean_dir)

    # The report is rebuilt from disk alone.
    (killed / "report.md").unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "report", str(killed), "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert json.loads(rebuilt.stdout.strip().splitlines()[-1])["report_md"].endswith("report.md")
    assert (killed / "report.md").is_file()


# `bebkit ...` with the rename of the temp file onto $HANG_AT held back: the temp file is fully
# written and fsynced, the target not yet replaced — the latest moment a kill can hit an
# atomic write (an earlier kill leaves a shorter temp file and the same target).
_HANG_BEFORE_PUBLISH = textwrap.dedent(
    """
    import os, runpy, sys, time

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        if os.fspath(dst) == os.environ["HANG_AT"]:
            open(os.environ["HANG_FLAG"], "w").close()
            time.sleep(600)
        return real_replace(src, dst, *args, **kwargs)

    os.replace = replace
    sys.argv = ["bebkit", *sys.argv[1:]]
    runpy.run_module("bebkit.cli", run_name="__main__", alter_sys=True)
    """
)


def _kill_before_publishing(cfg: Path, out: Path, env: dict[str, str], target: str) -> None:
    """Run `reproduce` into ``out`` until it is about to publish ``out/target``; SIGKILL it."""
    work = out.parent
    script, flag, err = work / "hang.py", work / "hang.flag", work / "hang.err"
    script.write_text(_HANG_BEFORE_PUBLISH)
    flag.unlink(missing_ok=True)
    with err.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, str(script), "reproduce", str(cfg), "--out", str(out)],
            env={**env, "HANG_AT": str(out / target), "HANG_FLAG": str(flag)},
            stdout=subprocess.DEVNULL, stderr=fh,
        )  # fmt: skip
        while not flag.exists():
            if proc.poll() is not None:
                pytest.fail(f"run ended before writing {target}: {err.read_text()[-3000:]}")
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait()


# `bebkit ...` that hangs right AFTER it stored a file matching $HANG_AFTER_GLOB: a kill there
# lands between two checkpointed units inside a stage (deterministically, unlike a timed kill).
_HANG_AFTER_UNIT = textwrap.dedent(
    """
    import fnmatch, os, runpy, sys, time

    real_replace = os.replace

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        if fnmatch.fnmatch(os.fspath(dst), os.environ["HANG_AFTER_GLOB"]):
            open(os.environ["HANG_FLAG"], "w").close()
            time.sleep(600)

    os.replace = replace
    sys.argv = ["bebkit", *sys.argv[1:]]
    runpy.run_module("bebkit.cli", run_name="__main__", alter_sys=True)
    """
)


def kill_reproduce_after_unit(
    cfg: Path, run: Path, unit_glob: str, env: Mapping[str, str], tmp_path: Path
) -> None:
    """Run ``bebkit reproduce cfg --out run`` in another process and SIGKILL it right after it
    stores a file matching ``unit_glob`` (a checkpoint unit inside a stage)."""
    script, flag = tmp_path / "hang.py", tmp_path / "hang.flag"
    script.write_text(_HANG_AFTER_UNIT)
    proc = subprocess.Popen(
        [sys.executable, str(script), "reproduce", str(cfg), "--out", str(run)],
        env={**env, "HANG_AFTER_GLOB": unit_glob, "HANG_FLAG": str(flag)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.time() + 300
    while not flag.exists():
        assert proc.poll() is None and time.time() < deadline, "never reached the unit"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize(
    ("stage_name", "hang_after", "not_yet"),
    [
        ("beta-sigma-tinyb", "kl-neg-0.json", "kl-neg-1.json"),
        ("misalign-tinyb", "own-0.json", "control-responses-0.json"),
    ],
)
def test_a_run_killed_inside_a_long_stage_resumes_inside_it(
    clean_run: tuple[Path, dict[str, str], Path, Any],
    tmp_path: Path,
    stage_name: str,
    hang_after: str,
    not_yet: str,
) -> None:
    """SIGKILL inside a stage (after β/σ²'s first KL row; after misalign's responses of the
    model and of P₋): the rerun reuses the finished units of that stage, ends with the
    uninterrupted run's numbers, and leaves no partial folder behind."""
    cfg, env, clean_dir, _ = clean_run
    run = tmp_path / "killed"
    pattern = str(run / "stages" / stage_name / ".partial-*" / "units" / hang_after)
    kill_reproduce_after_unit(cfg, run, pattern, env, tmp_path)
    stage = run / "stages" / stage_name
    assert not list(stage.glob("*/result.json"))  # killed inside the stage
    (partial,) = stage.glob(".partial-*")
    stored = sorted(p.name for p in (partial / "units").glob("*.json"))
    assert hang_after in stored and not_yet not in stored
    proc2 = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "reproduce", str(cfg), "--out", str(run), "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc2.returncode == 0, proc2.stderr[-3000:]
    assert f"resumed: reused {len(stored)} finished units" in proc2.stderr
    assert _numbers(run) == _numbers(clean_dir)
    assert not list(stage.glob(".partial-*"))


def test_a_run_restored_from_an_archive_on_an_empty_machine_resumes_inside_its_stage(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    """The next-session path (README, "Long runs across sessions"): a run killed inside β/σ²,
    its folder copied elsewhere with new file times (as a git checkout writes it) and resumed
    with an empty cache, so every adapter is retrained. Training is deterministic here, so the
    retrained adapters have the stored units' weight hashes: the units are reused and the run
    ends with the uninterrupted numbers. A unit whose weight hash differs is recomputed."""
    cfg, env, clean_dir, _ = clean_run
    run = tmp_path / "session-1"
    stage_name = "beta-sigma-tinyb"
    pattern = str(run / "stages" / stage_name / ".partial-*" / "units" / "kl-neg-0.json")
    kill_reproduce_after_unit(cfg, run, pattern, env, tmp_path)
    restored = tmp_path / "session-2"
    shutil.copytree(run, restored)
    for f in restored.rglob("*"):
        if f.is_file():
            os.utime(f, None)
    (partial,) = (restored / "stages" / stage_name).glob(".partial-*")
    stored = sorted(p.name for p in (partial / "units").glob("*.json"))
    # one unit stored under another fingerprint (other weights, code or draws): recomputed
    tampered = partial / "units" / "kl-neg-0.json"
    unit = json.loads(tampered.read_text())
    unit["fingerprint"] = "0" * 64
    tampered.write_text(json.dumps(unit))
    fresh = {**env, "BEBKIT_CACHE": str(tmp_path / "empty-cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "reproduce", str(cfg), "--out", str(restored),
         "--json"],
        capture_output=True, text=True, env=fresh, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "training neg adapter" in proc.stderr  # the adapters really were retrained
    assert f"resumed: reused {len(stored) - 1} finished units" in proc.stderr
    assert _numbers(restored) == _numbers(clean_dir)


def _report_md(run: Path) -> str:
    """report.md with what legitimately differs between two runs of one config masked: the
    run folder, timestamps, timings, whether adapters were trained or found cached, and the
    source tree's git state (a commit or an edit in the checkout between the two runs)."""
    text = (run / "report.md").read_text()
    text = re.sub(r"^- \*\*git\*\*: .*$", "- **git**: GIT", text, flags=re.M)
    for p in (str(run), str(run).replace("_", "\\_")):
        text = text.replace(p, "RUN")
    text = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\\?\+00:00", "TIME", text)
    text = re.sub(r"^\| [\w-]+ \| \d+\.\d \| (yes|no) \|.*$", "TIMING", text, flags=re.M)
    text = re.sub(r"\d+\.\d s( \(cached\))?", "T s", text)
    return re.sub(r"\b(trained|reused)\b", "ADAPTER", text)


def _stage_files(run: Path) -> dict[str, int]:
    return {
        str(p.relative_to(run)): p.stat().st_mtime_ns
        for p in (run / "stages").rglob("*")
        if p.is_file()
    }


def test_kill_during_record_and_report_writing(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    """SIGKILL while record.json, report.md or report.html is being written (every stage
    done): no file that looks complete is half-written or left over from an earlier run, and
    a rerun recomputes nothing and ends with the uninterrupted run's numbers and report."""
    cfg, env, clean, _ = clean_run
    run = tmp_path / "killed"
    run.mkdir()
    for name in ("report.md", "report.html"):  # a previous run's report
        (run / name).write_text("STALE")

    # A fresh run killed while publishing report.html: stages and record are done.
    _kill_before_publishing(cfg, run, env, "report.html")
    assert json.loads((run / "record.json").read_text())["status"] == "complete"
    assert _numbers(run) == _numbers(clean)
    assert _report_md(run) == _report_md(clean)
    assert not (run / "report.html").exists()  # the stale one removed, the new one unpublished
    assert len(list(run.glob(".report.html.*.tmp"))) == 1  # the kill did hit the write
    stages = _stage_files(run)

    # Rerun killed while publishing record.json: the previous record stays whole and no
    # report sits beside it; the first kill's temp file is gone.
    _kill_before_publishing(cfg, run, env, "record.json")
    assert [p.name.split(".")[1] for p in run.glob(".*.tmp")] == ["record"]
    assert _numbers(run) == _numbers(clean)
    assert not (run / "report.md").exists() and not (run / "report.html").exists()

    # Rerun killed while publishing report.md: a whole record, no report.
    _kill_before_publishing(cfg, run, env, "report.md")
    assert json.loads((run / "record.json").read_text())["status"] == "complete"
    assert not (run / "report.md").exists() and not (run / "report.html").exists()

    # An uninterrupted rerun: nothing recomputed, the same numbers and report, no temp files.
    final = _run(cfg, run, env)
    assert final["status"] == "complete"
    assert all(s["cached"] for s in final["stages"].values())
    assert _stage_files(run) == stages
    assert _numbers(run) == _numbers(clean)
    assert _report_md(run) == _report_md(clean)
    html = (run / "report.html").read_text()
    assert "STALE" not in html and html.rstrip().endswith("</html>")
    assert not list(run.glob(".*.tmp"))


# `bebkit ...` on a device with room for two rows: a pass of more rows and more than one column
# raises CUDA's out-of-memory error (decode steps, one column, fit; sampling is never split).
_OOM_ABOVE_TWO_ROWS = textwrap.dedent(
    """
    import runpy, sys, torch
    from bebkit.models import hf

    real_forward = hf.HFLanguageModel._forward

    def forward(self, **kwargs):
        ids = kwargs["input_ids"]
        if ids.shape[0] > 2 and ids.shape[1] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_forward(self, **kwargs)

    hf.HFLanguageModel._forward = forward
    sys.argv = ["bebkit", *sys.argv[1:]]
    runpy.run_module("bebkit.cli", run_name="__main__", alter_sys=True)
    """
)


def _assert_close(got: Any, want: Any, path: str = "") -> None:
    """Equal structure and non-floats; floats to 1e-3 relative (split passes are equal to
    float32 rounding, not promised bit-identical; a wrong row would be off by far more)."""
    if isinstance(want, float) and isinstance(got, float):
        assert got == pytest.approx(want, rel=1e-3, abs=1e-12), path
    elif isinstance(want, dict) and isinstance(got, dict):
        assert got.keys() == want.keys(), path
        for k in want:
            _assert_close(got[k], want[k], f"{path}/{k}")
    elif isinstance(want, list) and isinstance(got, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _assert_close(g, w, f"{path}[{i}]")
    else:
        assert got == want, path


@pytest.mark.slow
def test_out_of_memory_in_a_run_is_split_and_recorded(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    """Every scoring pass over two rows runs out of memory: the run completes with the
    uninterrupted run's numbers, logs each halving and records the count per model."""
    cfg, env, clean, _ = clean_run
    script, out = tmp_path / "oom.py", tmp_path / "oom"
    script.write_text(_OOM_ABOVE_TWO_ROWS)
    proc = subprocess.run(
        [sys.executable, str(script), "reproduce", str(cfg), "--out", str(out), "--json"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "complete"
    logged = re.findall(r"^(\S+): out of memory on \d+ rows; retrying at \d+$", proc.stderr, re.M)
    assert logged and rec["oom_retries"] == {m: logged.count(m) for m in set(logged)}
    _assert_close(_numbers(out), _numbers(clean))


@pytest.mark.slow
def test_out_of_memory_with_split_off_fails_the_run(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    """``--no-split-on-oom``: the same fault is not retried; the run stops (exit 1) with a
    failed record naming the allocator's error."""
    cfg, env, _, _ = clean_run
    script, out = tmp_path / "oom.py", tmp_path / "oom"
    script.write_text(_OOM_ABOVE_TWO_ROWS)
    proc = subprocess.run(
        [sys.executable, str(script), "reproduce", str(cfg), "--out", str(out),
         "--no-split-on-oom"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "retrying at" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("bebkit reproduce: error: stage failed (OutOfMemoryError: "), last
    rec = json.loads((out / "record.json").read_text())
    assert rec["status"] == "failed" and rec["oom_retries"] == {}
    assert rec["config"]["split_on_oom"] is False


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbeta_sigma: {n_prompt: 3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "reproduce", str(bad)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "beta_sigma.n_prompt" in proc.stderr


def test_report_only_reads_the_finished_stages_of_a_run_in_progress(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    """`reproduce --report-only` on a copy of the clean run with its last stage unpublished
    (and one unit of it checkpointed): the finished stages are read with their numbers, the
    missing one is listed as in progress, nothing is run or deleted, the run's own record and
    report are left as they are; with every stage present the status is complete."""
    import shutil

    cfg, env, clean_dir, _ = clean_run
    run = tmp_path / "run"
    shutil.copytree(clean_dir, run)
    rec = json.loads((run / "record.json").read_text())
    stages = rec["results"]["stages"]
    last = list(stages)[-1]
    key = stages[last]["key"]
    shutil.rmtree(run / "stages" / last / key)
    units = run / "stages" / last / f".partial-{key}" / "units"
    units.mkdir(parents=True)
    (units / "u-0.json").write_text("{}")
    # another stage finished under a key this config and code do not plan (other flags/code)
    other = list(stages)[-2]
    (run / "stages" / other / stages[other]["key"]).rename(run / "stages" / other / ("f" * 16))
    (run / "record.json").write_text("do not touch")
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def report_only() -> dict[str, Any]:
        proc = subprocess.run(
            [sys.executable, "-m", "bebkit.cli", "reproduce", str(cfg), "--out", str(run),
             "--report-only", "--json"],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
        return out

    d = report_only()
    assert d["status"] == "partial"
    assert d["pending"] == [
        f"{other} (not started for this config and code; finished under other key(s) "
        + "f" * 16
        + ")",
        f"{last} (in progress: 1 unit(s) checkpointed)",
    ]
    assert d["finished"] == sorted(set(stages) - {last, other})
    part = json.loads((run / "record-partial.json").read_text())
    for name in d["finished"]:  # the same numbers as the finished run's record
        assert part["results"]["stages"][name]["result"] == stages[name]["result"]
        assert part["results"]["stages"][name]["key"] == stages[name]["key"]
    html = (run / "report-partial.html").read_text()
    assert "Partial run" in html and last in html
    assert "Partial run" in (run / "report-partial.md").read_text()
    after = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    new = {p.name for p in set(after) - set(before)}
    assert new == {"record-partial.json", "report-partial.md", "report-partial.html"}
    assert all(after[p] == b for p, b in before.items())  # nothing else written or removed

    # every stage finished: complete, and the partial record holds them all
    for name in (last, other):
        shutil.rmtree(run / "stages" / name)
        shutil.copytree(clean_dir / "stages" / name, run / "stages" / name)
    d = report_only()
    assert d["status"] == "complete" and d["pending"] == [] and d["finished"] == sorted(stages)


def test_report_only_refuses_run_options_and_an_empty_folder(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    cfg, env, _, _ = clean_run
    for extra, msg in ((["--no-recompute"], "--report-only runs nothing"),
                       ([], "nothing to report")):  # fmt: skip
        proc = subprocess.run(
            [sys.executable, "-m", "bebkit.cli", "reproduce", str(cfg), "--out",
             str(tmp_path / "empty"), "--report-only", *extra],
            capture_output=True, text=True, env=env, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 2 and msg in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "empty").exists()


@pytest.mark.slow
def test_a_bfloat16_run_reuses_the_float32_adapters_and_records_its_precision(
    clean_run: tuple[Path, dict[str, str], Path, Any], tmp_path: Path
) -> None:
    """``precision: bfloat16`` computes on an inference copy: the adapters the float32 run
    trained are reused as they are (same weights: training never runs in bf16), every stage
    gets a new key (all of them call a model), and each stage's record says bfloat16."""
    cfg, env, clean, _ = clean_run
    half_cfg = tmp_path / "half.yaml"
    half_cfg.write_text(cfg.read_text() + "precision: bfloat16\n")
    _run(half_cfg, tmp_path / "half", env)
    rec16 = json.loads((tmp_path / "half" / "record.json").read_text())
    rec32 = json.loads((clean / "record.json").read_text())
    assert rec16["status"] == "complete"
    st16, st32 = rec16["results"]["stages"], rec32["results"]["stages"]
    assert st16.keys() == st32.keys()
    assert all(st16[k]["key"] != st32[k]["key"] for k in st16)

    def adapters(run: Path) -> dict[str, Any]:
        rec = json.loads(next((run / "stages").glob("components-*/*/record.json")).read_text())
        comps = rec["config"]["components"]
        return {side: (v["weights_sha256"], v["reused"]) for side, v in comps.items()}

    a16, a32 = adapters(tmp_path / "half"), adapters(clean)
    assert {k: v[0] for k, v in a16.items()} == {k: v[0] for k, v in a32.items()}
    assert all(reused for _, reused in a16.values())
    checked = 0
    for rec_path in (tmp_path / "half" / "stages").glob("*/*/record.json"):
        conf = json.loads(rec_path.read_text())["config"]
        if "components" in conf:  # the stages that used the components
            assert conf["precision"] == "bfloat16", rec_path
            checked += 1
    assert checked >= 4  # components, β/σ², prompt-dist, convergence, misalign
    probes = next((tmp_path / "half" / "stages").glob("probes/*/record.json"))
    assert json.loads(probes.read_text())["config"]["precision"] == "bfloat16"  # base model only
