"""``run_beta_sigma`` on an exact synthetic world where β, β′ and σ² are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bebkit.pipeline.beta_sigma import BetaSigmaSettings, run_beta_sigma, summary_lines
from bebkit.synthetic.world import world_from_params


def test_recovers_exact_beta_and_sigma2(tmp_path: Path) -> None:
    # i.i.d. components: KL(P₋‖P₊|s) = β in EVERY context (so β′ envelope = β too) and
    # Var[log P₋/P₊](n) = n·σ² exactly.
    w = world_from_params(0.01, 1.5, n_sentences=8, seed=0)
    truth = w.params()
    neg, pos = w.component_model("neg"), w.component_model("pos")
    s = BetaSigmaSettings(
        behavior="synthetic", fmt="newline", n_prompts=4, n_sentences=4, n_samples=48,
        n_tokens=w.codec.code_length + 1,  # exactly one sentence
        n_var_prompts=60, n_boot=300, seed=1,
    )  # fmt: skip
    r = run_beta_sigma(neg, pos, s, tmp_path, stop_ids=w.sentence_end_token_ids)
    # every (prompt, n) estimate is consistent with the exact per-sentence KL
    for row, ses in zip(r["kl"]["per_prompt"], r["kl"]["per_prompt_stderr"], strict=True):
        for v, se in zip(row, ses, strict=True):
            assert abs(v - truth.beta) <= 4 * se, (v, se)
    for key, true in (
        ("beta", truth.beta),
        ("beta_prime", truth.beta),
        ("sigma2", truth.sigma_neg**2),
    ):
        est = r[key]["estimate"]
        assert est["ci_low"] <= true <= est["ci_high"], (key, est, true)
        assert est["n"] == (4 if key != "sigma2" else 60)
    assert r["sigma"]["value"] == pytest.approx(r["sigma2"]["estimate"]["value"] ** 0.5)
    assert r["sigma_over_beta"]["ci_low"] <= r["sigma_over_beta"]["value"]
    assert r["estimator"] == "rb" and r["kl"]["n"] == [0, 1, 2, 3, 4] and r["unit"] == "sentence"
    # The P₊ direction (Lemma 4): its envelope and variance are Theorem 2's β′ and σ₊.
    est = r["beta_prime_pos"]["estimate"]
    assert est["ci_low"] <= truth.beta_prime <= est["ci_high"], (est, truth.beta_prime)
    est = r["sigma2_pos"]["estimate"]
    assert est["ci_low"] <= truth.sigma_pos**2 <= est["ci_high"], (est, truth.sigma_pos)
    # Definition 6 holds in this world: every P₋ sentence is likelier under P₋.
    assert truth.positive and r["positivity"]["value"] > 0.5
    assert len(r["log_ratio"]["values"]) == 60
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["kind"] == "beta-sigma" and rec["config"]["n_var_prompts"] == 60
    assert (tmp_path / "beta_sigma.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "beta_sigma.svg").read_text().lstrip().startswith("<?xml")
    assert len((tmp_path / "prompts.jsonl").read_text().splitlines()) == 60
    text = "\n".join(summary_lines(r))
    assert "beta" in text and "sigma2" in text


def test_kl_below_true_beta_is_detected(tmp_path: Path) -> None:
    """The fitted β CI excludes a wrong value (the test can fail)."""
    w = world_from_params(0.01, 0.8, n_sentences=8, seed=2)
    s = BetaSigmaSettings(behavior="synthetic", fmt="newline", n_prompts=3, n_sentences=2,
                          n_samples=32, n_tokens=3, n_var_prompts=10, n_boot=200)  # fmt: skip
    r = run_beta_sigma(w.component_model("neg"), w.component_model("pos"), s, tmp_path,
                       stop_ids=w.sentence_end_token_ids)  # fmt: skip
    est = r["beta"]["estimate"]
    assert est["ci_low"] <= 0.8 <= est["ci_high"]
    assert not est["ci_low"] <= 1.6 <= est["ci_high"]


def test_beta_prime_pos_envelope_includes_the_empty_prefix(tmp_path: Path) -> None:
    """Lemma 4's β′ bounds Σ_{i<|s₀|} E KL_i from i = 0: where the first sentence's KL (empty
    prefix) is the largest, β′₊ is that point, not the n ≥ 1 envelope (fit_n_min = 1)."""
    w = world_from_params(0.01, 1.0, n_sentences=8, seed=7, markov=True)
    n = 3
    seqs = w.enumerate_sequences(n)
    weights = np.exp(w.sequence_logprob(seqs, "pos"))
    exact = weights @ w.next_sentence_kl(seqs, "pos", "neg")  # E_{s~P₊} KL(P₊‖P₋ | s_k)
    assert exact[0] > exact[1:].max() + 0.2  # the world is chosen so (2.35 vs ≤ 2.11)
    s = BetaSigmaSettings(behavior="synthetic", fmt="newline", n_prompts=8, n_sentences=n,
                          n_samples=48, n_var_prompts=8, n_boot=200, seed=1)  # fmt: skip
    assert s.fit_n_min == 1
    r = run_beta_sigma(w.component_model("neg"), w.component_model("pos"), s, tmp_path,
                       stop_ids=w.sentence_end_token_ids)  # fmt: skip
    means = [e["value"] for e in r["pos_direction"]["kl"]["estimates"]]
    assert r["pos_direction"]["kl"]["n"] == [0, 1, 2, 3]
    for k, e in enumerate(r["pos_direction"]["kl"]["estimates"]):
        assert abs(e["value"] - exact[k]) <= 4 * e["stderr"] + 1e-9, (k, e, exact[k])
    est = r["beta_prime_pos"]["estimate"]
    assert est["value"] == max(means) == means[0]
    assert est["ci_low"] <= exact[0] <= est["ci_high"], (est, exact[0])
