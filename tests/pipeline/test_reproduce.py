"""`bebkit reproduce` end to end on a tiny in-process model saved to a folder.

Covers: config → every stage → record + report; a rerun skips every stage; a run SIGKILLed
mid-pipeline and rerun ends with the same numbers as an uninterrupted run; `bebkit report`
rebuilds the report from disk alone.
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


def test_reproduce_resume_after_sigkill_matches(tmp_path: Path) -> None:
    cfg, env = _setup(tmp_path)
    clean = _run(cfg, tmp_path / "clean", env)
    assert clean["status"] == "complete"
    stages = set(clean["stages"])
    assert {"components-tinyb", "probes", "beta-sigma-tinyb", "convergence-tinyb",
            "prompt-dist-tinyb", "misalign-tinyb"} <= stages  # fmt: skip
    for name in ("record.json", "report.md", "report.html"):
        assert (tmp_path / "clean" / name).is_file()
    html = (tmp_path / "clean" / "report.html").read_text()
    assert "Content warning" in html and "<script" not in html

    # Rerun: everything cached.
    again = _run(cfg, tmp_path / "clean", env)
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
    assert _numbers(killed) == _numbers(tmp_path / "clean")

    # The report is rebuilt from disk alone.
    (killed / "report.md").unlink()
    rebuilt = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "report", str(killed), "--json"],
        capture_output=True, text=True, env=env, check=True,
    )  # fmt: skip
    assert json.loads(rebuilt.stdout.strip().splitlines()[-1])["report_md"].endswith("report.md")
    assert (killed / "report.md").is_file()


def test_bad_config_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbeta_sigma: {n_prompt: 3}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "reproduce", str(bad)],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "beta_sigma.n_prompt" in proc.stderr
