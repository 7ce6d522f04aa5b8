"""``run_pretrained`` (appendix M): convergence on a 'pretrained' world and the β ratio."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.pipeline.pretrained import (
    FAMILY_NOTE,
    PretrainedSettings,
    aligned_betas_from_record,
    run_pretrained,
)
from bebkit.synthetic.world import world_from_params


def _run(tmp_path: Path, beta: float, aligned: dict[str, Estimate] | None) -> dict:
    w = world_from_params(math.exp(-4), beta, n_sentences=8, seed=1)
    s = PretrainedSettings(behavior="synthetic", n_prompts=4, n_sentences=6, n_samples=24,
                           n_tokens=w.codec.code_length + 1, n_boot=200, seed=0)  # fmt: skip
    return run_pretrained(w.component_model("neg"), w.language_model(), s, tmp_path,
                          aligned_beta=aligned, aligned_model="aligned-world",
                          stop_ids=w.sentence_end_token_ids)  # fmt: skip


def test_ratio_and_family_note(tmp_path: Path) -> None:
    aligned = {"lemma5": Estimate(2.0, 0.2, 10), "linear": Estimate(2.0, 0.2, 10)}
    r = _run(tmp_path, 0.5, aligned)
    assert r["conditions"] == ["none"] and r["format"] == "newline"
    assert r["kl_falls"]["none"]["falls"]
    for m in ("lemma5", "linear"):
        b_pre = r["fits"]["none"][m]["beta"]
        ratio = r["beta_ratio"][m]
        assert ratio["value"] == pytest.approx(2.0 / b_pre["value"])
        assert ratio["ci_low"] < ratio["value"] < ratio["ci_high"]
        se_log = math.sqrt(0.1**2 + (b_pre["stderr"] / b_pre["value"]) ** 2)
        assert ratio["stderr"] == pytest.approx(ratio["value"] * se_log)
    assert r["family_note"] == FAMILY_NOTE and r["same_family"] is False
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["kind"] == "pretrained" and rec["results"]["aligned_model"] == "aligned-world"
    assert (tmp_path / "pretrained.png").read_bytes()[:4] == b"\x89PNG"
    assert "different model families" in (tmp_path / "pretrained.svg").read_text()


def test_a_more_distinguishable_world_has_larger_beta(tmp_path: Path) -> None:
    """The fitted β orders worlds by their true β (what the ratio is meant to show)."""
    lo = _run(tmp_path / "lo", 0.4, None)
    hi = _run(tmp_path / "hi", 1.6, None)
    assert lo["beta_ratio"] is None
    b_lo = lo["fits"]["none"]["lemma5"]["beta"]
    b_hi = hi["fits"]["none"]["lemma5"]["beta"]
    assert b_hi["value"] > b_lo["value"]


def test_aligned_betas_from_record() -> None:
    est = Estimate(3.0, 0.3, 10, 2.4, 3.6, 0.95, "x").to_dict()
    rec = {"kind": "convergence", "results": {"fits": {"none": {"lemma5": {"beta": est},
                                                                 "linear": {"beta": est}}}}}  # fmt: skip
    got = aligned_betas_from_record(rec)
    assert got["lemma5"].value == 3.0 and got["linear"].stderr == 0.3
    with pytest.raises(InputError):
        aligned_betas_from_record({"kind": "beta-sigma", "results": {}})
    with pytest.raises(InputError):
        aligned_betas_from_record({"kind": "convergence", "results": {"fits": {"none": None}}})


def _curve(ns: list[int], seed: int) -> Any:
    """10 prompts of one per-sentence law (floored Lemma 5: a = 2.5, β = 0.8, floor 1: it
    bends within the first five sentences, as the paper's curves) with a small per-prompt
    offset and Monte-Carlo noise."""
    import numpy as np

    from bebkit.estimators.kl import KLCurve
    from bebkit.fits.convergence import floored_curve

    rng = np.random.default_rng(seed)
    n = np.asarray(ns)
    law = floored_curve(n, 2.5, 0.8, 1.0)
    pp = law[None, :] + rng.normal(0, 0.15, size=(10, 1)) + rng.normal(0, 0.05, (10, n.size))
    return KLCurve(n=n, per_prompt=pp, per_prompt_stderr=np.full_like(pp, 0.05), n_samples=64,
                   method="rb", unit="sentence")  # fmt: skip


def test_equal_per_sentence_beta_gives_ratio_one_over_one_window() -> None:
    """An alternating-layout curve (read at n = 1, 3, …, 19) and a newline curve (n = 1 … 10)
    of the SAME per-sentence law must give β ratios ≈ 1; fitting each over its own points (the
    old way: the line on sentences 1–5 vs 1–3, the whole curves on 1–19 vs 1–10) does not."""
    from bebkit.fits.convergence import fit_convergence, matched_windows
    from bebkit.pipeline.convergence import ConvergenceSettings
    from bebkit.pipeline.pretrained import matched_ratio

    alt = [0, *range(1, 20, 2)]
    new = list(range(0, 11))
    assert matched_windows([alt, new], n_min=1, n_linear=3) == (10.0, 5.0)
    s = ConvergenceSettings(behavior="x", n_boot=100)
    ratios = []
    for seed in range(3):
        a, p = _curve(alt, seed), _curve(new, 100 + seed)
        r = matched_ratio(a, p, s, rng=seed)
        assert r["window"] == {"whole_curve": [1, 10.0], "straight_line": [1, 5.0]}
        for m in ("linear", "floored"):
            assert r["beta_ratio"][m]["value"] == pytest.approx(1.0, abs=0.12), (seed, m)
        own = (fit_convergence(a, n_min=1).linear.beta.value
               / fit_convergence(p, n_min=1).linear.beta.value)  # fmt: skip
        ratios.append(own)
    assert max(ratios) < 0.9  # what the unmatched windows gave


def test_family_is_decided_from_the_model_names() -> None:
    from bebkit.pipeline.pretrained import same_family_names

    assert same_family_names("meta-llama/Llama-2-13b-chat-hf", "meta-llama/Llama-2-13b-hf")
    assert same_family_names("google/gemma-3-270m-it", "google/gemma-3-270m")
    assert not same_family_names("smollm2-135m-instruct", "gemma-3-270m")
    assert not same_family_names("Qwen2.5-0.5B-Instruct", "Qwen2.5-1.5B")
    assert not same_family_names(None, "gemma-3-270m")
