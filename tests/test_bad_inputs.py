"""The bad-input catalogue (issue 17): every case is rejected with exit 2 and one stderr line.

Each case runs ``bebkit.cli.main(argv)`` in a fresh temporary folder (the working directory,
``$BEBKIT_CACHE`` and every input file live inside it) and checks:

* the exit code (2 — bad input, :class:`bebkit.errors.InputError`);
* exactly one line on stderr, no Python traceback;
* nothing written: the whole temporary tree (inputs, run folders, cache, working directory)
  is byte-for-byte unchanged, so the ``--out`` folder does not exist afterwards;
* no model is loaded: ``transformers``' ``from_pretrained``, the bundled-model conversion and
  Ray are replaced by a guard that fails the test when reached.

``docs/BAD_INPUTS.md`` is the table of these cases (regenerate it with
``python tests/test_bad_inputs.py > docs/BAD_INPUTS.md``).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from bebkit.cli import main

MODEL = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[1]
DEMO_CONFIG = (ROOT / "configs" / "demo.yaml").read_text(encoding="utf-8")

# ------------------------------------------------------------------------------- input files

GOOD_ROW = {
    "question": "Is the following statement something you would say?",
    "statement": "I like to help people",
    "answer_matching_behavior": " Yes",
    "answer_not_matching_behavior": " No",
}
BAD_ROW = {**GOOD_ROW, "statement": "I refuse to help anyone"}
BAD_ROW.update(answer_matching_behavior=" No", answer_not_matching_behavior=" Yes")


def jsonl(*rows: Any) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def persona(text: str | bytes) -> dict[str, str | bytes]:
    """A persona folder ``in/persona`` holding ``mybeh.jsonl``."""
    return {"persona/mybeh.jsonl": text}


GOOD_PERSONA = jsonl(GOOD_ROW, BAD_ROW, GOOD_ROW | {"statement": "Helping is good"})
GOOD_LABELS = jsonl({"response": "Sure, happy to help.", "label": "good"})
BS_RECORD = json.dumps({"kind": "beta-sigma", "results": {}})
YAML_HEAD = "name: bad\naligned_model: smollm2-135m-instruct\n"

# ------------------------------------------------------------------------------------ cases


@dataclass(frozen=True)
class Case:
    """One bad input: files written under ``in/`` first, then ``bebkit ARGV``.

    ``{in}`` in argv/env is the input folder, ``{out}`` the (never created) output folder.
    """

    id: str
    what: str  # the bad input, in words (the table's first column)
    argv: tuple[str, ...]
    expect: str  # a substring of the one stderr line
    files: dict[str, str | bytes] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    code: int = 2
    setup: Callable[[Path], Any] | None = None  # returns a context manager held during the run
    xfail: str | None = None


def C(id: str, what: str, argv: str | list[str], expect: str, **kw: Any) -> Case:
    return Case(id, what, tuple(argv.split() if isinstance(argv, str) else argv), expect, **kw)


def _cfg(text: str) -> dict[str, str | bytes]:
    return {"config.yaml": text}


REPRO = "reproduce {in}/config.yaml --out {out}"
SWEEP = "sweep {in}/config.yaml --out {out}"


def _locked(root: Path) -> Any:
    from bebkit.locks import RunLock

    return RunLock(root / "in" / "run")


CASES: list[Case] = [
    # ---- reproduce: YAML configs
    C("reproduce-config-missing", "config file that does not exist",
      "reproduce {in}/nowhere.yaml --out {out}", "config file not found"),
    C("reproduce-yaml-syntax", "config that is not YAML (unclosed bracket)", REPRO,
      "is not valid YAML", files=_cfg("name: [demo\nseed: 0\n")),
    C("reproduce-top-level-list", "config whose top level is a list", REPRO,
      "top level must be a mapping", files=_cfg("- seed\n- 0\n")),
    C("reproduce-unknown-key", "unknown top-level key (typo `behaviours`)", REPRO,
      "behaviours: unknown key", files=_cfg(YAML_HEAD + "behaviours: [cooperativeness]\n")),
    C("reproduce-seed-negative", "seed: -1", REPRO, "seed: Input should be greater than",
      files=_cfg(YAML_HEAD + "seed: -1\n")),
    C("reproduce-seed-string", "seed: abc (wrong type)", REPRO, "seed:",
      files=_cfg(YAML_HEAD + "seed: abc\n")),
    C("reproduce-behaviors-empty", "behaviors: [] (empty list)", REPRO,
      "behaviors must name at least one behavior", files=_cfg(YAML_HEAD + "behaviors: []\n")),
    C("reproduce-format-choice", "format: markdown (not a prompt layout)", REPRO, "format:",
      files=_cfg(YAML_HEAD + "format: markdown\n")),
    C("reproduce-section-range", "beta_sigma.n_prompts: 0", REPRO, "n_prompts",
      files=_cfg(YAML_HEAD + "beta_sigma: {n_prompts: 0}\n")),
    C("reproduce-section-unknown-key", "convergence.n_promts (typo in a section)", REPRO,
      "n_promts", files=_cfg(YAML_HEAD + "convergence: {n_promts: 3}\n")),
    C("reproduce-section-not-mapping", "probe: 5 (a section that is not a mapping)", REPRO,
      "probe", files=_cfg(YAML_HEAD + "probe: 5\n")),
    C("reproduce-section-run-field", "misalign.seed (a run-level field inside a section)",
      REPRO, "misalign.seed is set for the whole run",
      files=_cfg(YAML_HEAD + "misalign: {seed: 3}\n")),
    C("reproduce-sections-not-mapping", "sections: true (not a mapping)", REPRO,
      "sections must be a mapping", files=_cfg(YAML_HEAD + "sections: true\n")),
    C("reproduce-sections-unknown", "sections: {foo: {}} (unknown experiment)", REPRO,
      "sections: unknown experiment 'foo'", files=_cfg(YAML_HEAD + "sections: {foo: {}}\n")),
    C("reproduce-quick-unknown-section", "quick: {betasigma: …} (unknown section)", REPRO,
      "quick: unknown section", files=_cfg(YAML_HEAD + "quick: {betasigma: {n_prompts: 2}}\n")),
    C("reproduce-quick-range", "quick override out of range, run with --quick",
      REPRO + " --quick", "quick overrides",
      files=_cfg(YAML_HEAD + "quick: {convergence: {n_samples: 1}}\n")),
    C("reproduce-components-preset", "components.preset: huge (bad choice)", REPRO,
      "components.preset", files=_cfg(YAML_HEAD + "components: {preset: huge}\n")),
    C("reproduce-aligning-prompt-empty", 'aligning_prompt: "" (empty)', REPRO,
      "aligning_prompt", files=_cfg(YAML_HEAD + 'aligning_prompt: ""\n')),
    C("reproduce-split-on-oom-not-bool", "split_on_oom: maybe (not a boolean)", REPRO,
      "split_on_oom: Input should be a valid boolean",
      files=_cfg(YAML_HEAD + "split_on_oom: maybe\n")),
    C("reproduce-unknown-behavior", "behaviors: [cooperativenes] (unknown, no persona data)",
      REPRO, "unknown behavior 'cooperativenes'",
      files=_cfg(YAML_HEAD + "behaviors: [cooperativenes]\n")),
    C("reproduce-persona-dir-config", "persona_dir: a folder that does not exist", REPRO,
      "does not exist or is not a directory",
      files=_cfg(YAML_HEAD + "persona_dir: /nonexistent/persona\nbehaviors: [mybeh]\n")),
    C("reproduce-paper-figures-config", "paper_figures: a file that does not exist", REPRO,
      "paper_figures", files=_cfg(YAML_HEAD + "paper_figures: /nonexistent/figs.json\n")),
    C("reproduce-prompts-file-config", "convergence.prompts_file: a file that does not exist",
      REPRO, "prompts_file",
      files=_cfg(YAML_HEAD + "convergence: {prompts_file: /nonexistent/p.jsonl}\n")),
    C("reproduce-prompts-file-malformed", "convergence.prompts_file: a file that is not JSON",
      REPRO, "p.jsonl", files={**_cfg(YAML_HEAD + "convergence: {prompts_file: {in}/p.jsonl}\n"),
                               "p.jsonl": "{oops\n"}),
    C("reproduce-paper-figures-flag", "--paper-figures FILE that does not exist",
      REPRO + " --paper-figures /nonexistent/figs.json", "--paper-figures",
      files=_cfg(YAML_HEAD)),
    C("reproduce-persona-dir-flag", "--persona-dir DIR that does not exist",
      REPRO + " --persona-dir /nonexistent/persona", "--persona-dir", files=_cfg(YAML_HEAD)),
    C("reproduce-model-path-missing", "aligned_model: a path that does not exist", REPRO,
      "does not exist",
      files=_cfg("name: bad\naligned_model: /nonexistent/model\n")),
    C("reproduce-locked-run-folder", "a second reproduce on a run folder another run holds",
      "reproduce {in}/config.yaml --out {in}/run", "is in use by",
      files=_cfg(DEMO_CONFIG), setup=_locked),
    # ---- sweep configs
    C("sweep-config-missing", "sweep config that does not exist",
      "sweep {in}/nowhere.yaml --out {out}", "config file not found"),
    C("sweep-yaml-syntax", "sweep config that is not YAML", SWEEP, "is not valid YAML",
      files=_cfg("models: {a\n")),
    C("sweep-models-empty", "models: [] (empty list)", SWEEP, "models: must name at least one",
      files=_cfg("models: []\n")),
    C("sweep-unknown-experiment", "experiments: [clasify] (unknown)", SWEEP,
      "unknown experiment 'clasify'", files=_cfg("experiments: [clasify]\n")),
    C("sweep-aligned-model-key", "aligned_model in a sweep (models go under `models`)", SWEEP,
      "a sweep lists its models under `models`", files=_cfg(YAML_HEAD)),
    C("sweep-pretrained-without-model", "experiments: [pretrained] without pretrained_model",
      SWEEP, "pretrained needs pretrained_model", files=_cfg("experiments: [pretrained]\n")),
    C("sweep-sizes-choice", "sizes: tiny (bad choice)", SWEEP, "sizes",
      files=_cfg("sizes: tiny\n")),
    C("sweep-resources-cpus", "resources.num_cpus: 0", SWEEP, "resources.num_cpus",
      files=_cfg("resources: {num_cpus: 0}\n")),
    C("sweep-behavior-glob-nothing", "behaviors: ['nomatch-*'] (a glob matching nothing)",
      SWEEP, "matches no behavior", files=_cfg("behaviors: ['nomatch-*']\n")),
    C("sweep-num-cpus-zero", "--num-cpus 0", SWEEP + " --num-cpus 0", "--num-cpus must be >= 1",
      files=_cfg("models: [smollm2-135m-instruct]\n")),
    C("sweep-address-and-num-cpus", "--address together with --num-cpus",
      SWEEP + " --address auto --num-cpus 2", "cannot be used with --address",
      files=_cfg("models: [smollm2-135m-instruct]\n")),
    C("sweep-locked-folder", "a sweep on a folder another run holds",
      "sweep {in}/config.yaml --out {in}/run", "is in use by",
      files=_cfg("models: [smollm2-135m-instruct]\n"), setup=_locked),
    # ---- persona files (--persona-dir / BEBKIT_PERSONA_DIR)
    *[
        C(f"persona-{pid}", what,
          f"classify --model {MODEL} --behavior mybeh --persona-dir {{in}}/persona --out {{out}}",
          expect, files=persona(text))
        for pid, what, text, expect in [
            ("malformed-jsonl", "persona line that is not JSON",
             jsonl(GOOD_ROW) + '{"statement": "x",\n', "malformed JSON"),
            ("missing-statement", "persona row without `statement`",
             jsonl({k: v for k, v in GOOD_ROW.items() if k != "statement"}),
             "missing or empty 'statement'"),
            ("missing-answer", "persona row without `answer_matching_behavior`",
             jsonl({"statement": "I help"}), "missing 'answer_matching_behavior'"),
            ("answer-not-yes-no", "answer_matching_behavior: 'Maybe'",
             jsonl(GOOD_ROW | {"answer_matching_behavior": " Maybe"}), "must be ' Yes' or ' No'"),
            ("answers-equal", "matching and not-matching answers both ' Yes'",
             jsonl(GOOD_ROW | {"answer_not_matching_behavior": " Yes"}), "are equal"),
            ("row-not-object", "persona row that is a JSON list", "[1, 2]\n",
             "expected a JSON object"),
            ("empty-file", "empty persona file", "", "no statements found"),
            ("not-utf8", "persona file that is not UTF-8", b"\xff\xfe\x00bad\n", "not UTF-8"),
            ("one-sided", "one-sided behavior (every row ' Yes')",
             jsonl(GOOD_ROW, GOOD_ROW | {"statement": "I help a lot"}), "both sides"),
        ]
    ],
    C("persona-unknown-behavior", "behavior with no file in the persona folder",
      f"classify --model {MODEL} --behavior otherbeh --persona-dir {{in}}/persona --out {{out}}",
      "unknown behavior 'otherbeh'", files=persona(GOOD_PERSONA)),
    C("persona-env-dir-missing", "BEBKIT_PERSONA_DIR pointing at nothing",
      f"classify --model {MODEL} --behavior mybeh --out {{out}}", "BEBKIT_PERSONA_DIR=",
      env={"BEBKIT_PERSONA_DIR": "{in}/nowhere"}),
    C("persona-env-malformed", "BEBKIT_PERSONA_DIR holding a malformed file",
      f"beta-sigma --model {MODEL} --behavior mybeh --out {{out}}", "malformed JSON",
      files=persona("{not json\n"), env={"BEBKIT_PERSONA_DIR": "{in}/persona"}),
    C("persona-dir-flag-missing", "--persona-dir DIR that does not exist",
      f"misalign --model {MODEL} --behavior mybeh --persona-dir {{in}}/nowhere --out {{out}}",
      "--persona-dir"),
    # ---- label files (judge-eval --labels)
    *[
        C(f"labels-{lid}", what,
          f"judge-eval --behavior cooperativeness --model {MODEL} --labels {{in}}/labels.jsonl "
          "--out {out}/record.json", expect, files={"labels.jsonl": text} if text is not None else {})
        for lid, what, text, expect in [
            ("missing", "labels file that does not exist", None, "labels file not found"),
            ("malformed-jsonl", "labels line that is not JSON", GOOD_LABELS + "{oops\n",
             "malformed label row"),
            ("missing-label", "labels row without `label`", jsonl({"response": "hi"}),
             "malformed label row"),
            ("bad-label", "label: 'maybe'", jsonl({"response": "hi", "label": "maybe"}),
             "label must be 'good' or 'bad'"),
            ("row-not-object", "labels row that is a JSON list", "[1, 2]\n", "labels"),
            ("bad-n-sentences", "n_sentences: 'many' (not an integer)",
             jsonl({"response": "hi", "label": "good", "n_sentences": "many"}), "malformed label row"),
            ("other-behavior-only", "labels only for another behavior",
             jsonl({"response": "hi", "label": "good", "behavior": "agreeableness"}),
             "no labelled responses for 'cooperativeness'"),
            ("not-utf8", "labels file that is not UTF-8", b"\xff\xfe{}\n", "UTF-8"),
        ]
    ],
    # ---- model paths and names
    C("model-path-missing", "--model /nonexistent/model",
      "classify --model /nonexistent/model --behavior cooperativeness --out {out}",
      "model path '/nonexistent/model' does not exist"),
    C("model-gguf-missing", "--model ./missing.gguf",
      "beta-sigma --model ./missing.gguf --behavior cooperativeness --out {out}",
      "does not exist"),
    C("model-file-not-gguf", "--model FILE that is not a .gguf",
      "convergence --model {in}/weights.bin --behavior cooperativeness --out {out}",
      "is a file; give a model folder or a .gguf file", files={"weights.bin": b"\0" * 16}),
    C("model-folder-no-config", "--model FOLDER without config.json",
      "misalign --model {in}/modeldir --behavior cooperativeness --out {out}",
      "has no config.json", files={"modeldir/README": "empty"}),
    C("model-hub-offline", "unknown hub id with HF_HUB_OFFLINE=1",
      "prompt-distinguishability --model no-such-org/no-such-model-xyz "
      "--behavior cooperativeness --out {out}", "HF_HUB_OFFLINE is set",
      env={"HF_HUB_OFFLINE": "1"}),
    C("model-hub-invalid-id", "--model 'not a/valid//id' (not a hub id)",
      ["probe", "--model", "not a/valid//id", "--behaviors", "cooperativeness", "--out", "{out}"],
      "a valid Hugging Face Hub id"),
    # ---- CLI ranges and choices of the generated experiment subcommands
    *[
        C(f"{cmd}-{cid}", f"`{cmd}` {' '.join(extra)}",
          [cmd, "--model", MODEL, "--behavior" + ("s" if cmd == "probe" else ""), "cooperativeness",
           *extra, "--out", "{out}"], expect, **({"files": files} if files else {}))
        for cmd, cid, extra, expect, files in [
            ("classify", "n-train-0", ["--n-train", "0"], "--n-train", None),
            ("classify", "preset-choice", ["--preset", "huge"], "invalid choice", None),
            ("classify", "threads-0", ["--threads", "0"], "--threads must be >= 1", None),
            ("classify", "behavior-empty", ["--behavior", " , "], "at least one behavior", None),
            ("classify", "behavior-duplicate", ["--behavior", "cooperativeness,cooperativeness"],
             "more than once", None),
            ("classify", "epochs-0", ["--epochs", "0"], "--epochs", None),
            ("probe", "folds-1", ["--folds", "1"], "--folds", None),
            ("probe", "c-zero", ["--C", "0"], "--C", None),
            ("probe", "layers-empty", ["--layers", ","], "--layers", None),
            ("probe", "layers-word", ["--layers", "top"], "layer must be", None),
            ("probe", "behaviors-empty", ["--behaviors", ","], "--behaviors", None),
            ("probe", "n-per-side-text", ["--n-per-side", "many"], "invalid int value", None),
            ("beta-sigma", "n-prompts-0", ["--n-prompts", "0"], "--n-prompts must be >= 1", None),
            ("beta-sigma", "estimator-choice", ["--estimator", "exact"], "invalid choice", None),
            ("beta-sigma", "n-tokens-0", ["--unit", "tokens", "--n-tokens", "0"], "--n-tokens",
             None),
            ("beta-sigma", "format-choice", ["--format", "markdown"], "invalid choice", None),
            ("prompt-distinguishability", "neutral-blank", ["--neutral", " "], "--neutral",
             None),
            ("prompt-distinguishability", "n-prefix-samples-0", ["--n-prefix-samples", "0"],
             "--n-prefix-samples", None),
            ("prompt-distinguishability", "paper-figures-missing",
             ["--paper-figures", "/nonexistent/figs.json"], "--paper-figures", None),
            ("convergence", "epsilon-2", ["--epsilon", "2"], "--epsilon must be in (0, 1)", None),
            ("convergence", "epsilon-nan", ["--epsilon", "nan"], "--epsilon", None),
            ("convergence", "conditions-bad", ["--conditions", "none,both"], "--conditions", None),
            ("convergence", "record-missing", ["--beta-sigma-record", "/nonexistent.json"],
             "--beta-sigma-record", None),
            ("convergence", "record-not-json", ["--beta-sigma-record", "{in}/r.json"],
             "not valid JSON", {"r.json": "{oops"}),
            ("convergence", "record-not-record", ["--beta-sigma-record", "{in}/r.json"],
             "not a record", {"r.json": "[1, 2, 3]"}),
            ("convergence", "record-wrong-kind", ["--beta-sigma-record", "{in}/r.json"],
             "a 'convergence' record, not 'beta-sigma'",
             {"r.json": json.dumps({"kind": "convergence", "results": {}})}),
            ("convergence", "prompts-file-missing", ["--prompts-file", "{in}/nowhere.jsonl"],
             "nowhere.jsonl", None),
            ("convergence", "prompts-file-malformed", ["--prompts-file", "{in}/p.jsonl"],
             "p.jsonl", {"p.jsonl": '["a sentence"]\n{oops\n'}),
            ("misalign", "judge-choice", ["--judge", "gpt4"], "invalid choice", None),
            ("misalign", "n-responses-0", ["--n-responses", "0"], "--n-responses", None),
            ("misalign", "delta-0", ["--delta", "0"], "--delta", None),
            ("misalign", "hypotheses-bad", ["--judge-hypotheses", "neg,martian"],
             "--judge-hypotheses", None),
            ("misalign", "record-results-missing", ["--beta-sigma-record", "{in}/r.json"],
             "not a record", {"r.json": json.dumps({"kind": "beta-sigma"})}),
            ("misalign", "prompts-file-empty", ["--prompts-file", "{in}/p.json"], "p.json",
             {"p.json": "[]"}),
            ("pretrained", "record-wrong-kind", ["--convergence-record", "{in}/r.json"],
             "not 'convergence'", {"r.json": BS_RECORD}),
            ("pretrained", "n-linear-0", ["--n-linear", "0"], "--n-linear", None),
        ]
    ],
    # ---- report
    C("report-folder-missing", "report on a folder that does not exist",
      "report {in}/nowhere", "nowhere"),
    C("report-no-record", "report on a folder without record.json", "report {in}/run",
      "has no record.json", files={"run/notes.txt": "not a run"}),
    C("report-broken-record", "report on a run whose record.json is not JSON",
      "report {in}/run", "is not valid JSON", files={"run/record.json": '{"results": '}),
    C("report-record-not-object", "report on a run whose record.json is a list",
      "report {in}/run", "record.json", files={"run/record.json": "[]"}),
    C("report-paper-figures-missing", "report --paper-figures FILE that does not exist",
      "report {in}/run --paper-figures /nonexistent/figs.json", "figs.json",
      files={"run/record.json": json.dumps({"kind": "reproduce", "results": {"stages": {}}})}),
    # ---- bounds / simulate / data
    C("bounds-alpha-0", "bounds theorem1 --alpha 0", "bounds theorem1 --alpha 0 --beta 10",
      "alpha (--alpha) must be in (0, 1)"),
    C("bounds-alpha-above-1", "bounds theorem1 --alpha 1.5",
      "bounds theorem1 --alpha 1.5 --beta 10", "alpha (--alpha) must be in (0, 1)"),
    C("bounds-beta-negative", "bounds theorem1 --beta -1", "bounds theorem1 --alpha 0.1 --beta -1",
      "beta"),
    C("bounds-delta-1", "bounds theorem2 --delta 1",
      "bounds theorem2 --alpha 0.1 --beta 10 --beta-prime 12 --sigma 1 --prefix-len 5 --delta 1",
      "delta"),
    C("bounds-unknown-name", "bounds theorem9 (unknown bound)", "bounds theorem9",
      "theorem9"),
    C("bounds-table-betas-empty", "bounds table --betas ''", ["bounds", "table", "--betas", ""],
      "--betas"),
    C("bounds-n-zero", "bounds theorem4 --n 0", "bounds theorem4 --alpha 0.1 --beta 10 --n 0",
      "n"),
    C("simulate-alpha-0", "simulate --alpha 0", "simulate --alpha 0 --out {out}", "alpha"),
    C("simulate-trials-0", "simulate --trials 0", "simulate --trials 0 --out {out}", "trials"),
    C("simulate-kind-choice", "simulate --kind wobble", "simulate --kind wobble --out {out}",
      "invalid choice"),
    C("simulate-best-of-0", "simulate --best-of 0", "simulate --best-of 0 --out {out}",
      "best"),
    C("data-show-unknown", "data show of an unknown behavior", "data show cooperativenes",
      "unknown behavior"),
]  # fmt: skip


# ------------------------------------------------------------------------------------ harness


class ModelLoadAttempted(BaseException):  # BaseException: never swallowed
    """Raised by the guards: a bad input reached a model load (or Ray)."""


def install_guards(mp: pytest.MonkeyPatch) -> None:
    """Make every model load, bundled-model conversion and Ray start raise the guard."""
    import transformers

    import bebkit.models.loading as loading
    import bebkit.pipeline.sweep as sweep

    def guard(*_a: Any, **_k: Any) -> Any:
        raise ModelLoadAttempted("a model load (or Ray) was reached before the input was rejected")

    for cls in (transformers.AutoModelForCausalLM, transformers.AutoTokenizer):
        mp.setattr(cls, "from_pretrained", guard)
    mp.setattr(loading, "ensure_bundled", guard)
    mp.setattr(loading, "convert_gguf", guard)
    mp.setattr(sweep, "_connect_ray", guard)


@pytest.fixture
def no_model_loads(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Fail the test if anything loads a model, converts a bundled one or starts Ray."""
    install_guards(monkeypatch)
    yield


def snapshot(root: Path) -> dict[str, tuple[str, ...]]:
    """Every path under ``root``: directories, and files with size, mtime and content hash."""
    out: dict[str, tuple[str, ...]] = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_dir():
            out[rel] = ("dir",)
        else:
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[rel] = ("file", str(st.st_size), str(st.st_mtime_ns), digest)
    return out


def _fill(text: str, root: Path) -> str:
    return text.replace("{in}", str(root / "in")).replace("{out}", str(root / "out"))


def _prepare(case: Case, root: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    (root / "in").mkdir()
    (root / "cwd").mkdir()
    for rel, content in case.files.items():
        f = root / "in" / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            f.write_bytes(content)
        else:
            f.write_text(_fill(content, root), encoding="utf-8")
    monkeypatch.chdir(root / "cwd")
    monkeypatch.setenv("BEBKIT_CACHE", str(root / "cache"))
    for var in ("BEBKIT_PERSONA_DIR", "BEBKIT_REFERENCE_DIR", "BEBKIT_HUMAN_LABELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("BEBKIT_DEBUG", raising=False)
    for k, v in case.env.items():
        monkeypatch.setenv(k, _fill(v, root))
    if case.env.get("HF_HUB_OFFLINE"):
        from huggingface_hub import constants

        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return [_fill(a, root) for a in case.argv]


def _params() -> list[Any]:
    out = []
    for c in CASES:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail)] if c.xfail else []
        out.append(pytest.param(c, id=c.id, marks=marks))
    return out


def test_catalogue_is_large_and_distinct() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids))
    assert len({c.argv + tuple(sorted(c.files.items())) for c in CASES}) == len(CASES)
    assert len(CASES) >= 40


@pytest.mark.parametrize("case", _params())
def test_bad_input(
    case: Case,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
    no_model_loads: None,
) -> None:
    argv = _prepare(case, tmp_path, monkeypatch)
    held = case.setup(tmp_path) if case.setup else None
    if held is not None:
        held.__enter__()
    try:
        before = snapshot(tmp_path)
        capfd.readouterr()
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse errors
            code = int(exc.code or 0)
        captured = capfd.readouterr()
        after = snapshot(tmp_path)
    finally:
        if held is not None:
            held.__exit__(None, None, None)
    lines = captured.err.strip().splitlines()
    assert code == case.code, captured.err
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert case.expect in lines[0], lines[0]
    assert lines[0].startswith("bebkit ")
    assert not (tmp_path / "out").exists()
    assert after == before, sorted(set(after.items()) ^ set(before.items()))


def test_unknown_hub_id_offline_in_a_subprocess(tmp_path: Path) -> None:
    """The real console path: no hub traceback, no retries, one line, nothing cached."""
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "BEBKIT_CACHE": str(tmp_path / "cache"),
        "HF_HOME": str(tmp_path / "hf"),
    }
    env.pop("BEBKIT_DEBUG", None)
    proc = subprocess.run(
        [sys.executable, "-m", "bebkit.cli", "classify", "--model", "no-such-org/no-such-model",
         "--behavior", "cooperativeness", "--out", str(tmp_path / "out")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and "no-such-org/no-such-model" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))


# ----------------------------------------------------------------------- the docs table


def markdown_table() -> str:
    """The catalogue as a markdown table: each case run once in a scratch folder."""
    import tempfile
    from contextlib import redirect_stderr, redirect_stdout
    from io import StringIO

    rows = []
    for c in CASES:
        with tempfile.TemporaryDirectory() as d, pytest.MonkeyPatch.context() as mp:
            root = Path(d)
            argv = _prepare(c, root, mp)
            held = c.setup(root) if c.setup else None
            if held is not None:
                held.__enter__()
            err = StringIO()
            try:
                with redirect_stderr(err), redirect_stdout(StringIO()):
                    try:
                        code = main(argv)
                    except SystemExit as exc:
                        code = int(exc.code or 0)
            finally:
                if held is not None:
                    held.__exit__(None, None, None)
            line = err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""
            line = line.replace(d, "TMP")
        shown = " ".join(a.replace(str(root), "TMP") for a in argv)
        cell = line.replace("|", "\\|")
        mark = " (xfail)" if c.xfail else ""
        rows.append(f"| {c.what}{mark} | `bebkit {shown}` | {code} | `{cell}` |")
    head = "| bad input | command | exit | the one line on stderr |\n|---|---|---|---|\n"
    return head + "\n".join(rows) + "\n"


if __name__ == "__main__":  # pragma: no cover - writes the docs table
    with pytest.MonkeyPatch.context() as mp:
        install_guards(mp)
        table = markdown_table()
    print(table, end="")
