"""``run_convergence`` on an exact synthetic world: the KL curve, Lemma 5 and the fits."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bebkit.estimators.logratio import log_ratio_trajectories
from bebkit.estimators.prompts import load_prompts
from bebkit.fits.convergence import lemma5_curve
from bebkit.pipeline.convergence import ConvergenceSettings, run_convergence, summary_lines
from bebkit.synthetic.lm import exact_kl
from bebkit.synthetic.world import world_from_params
from bebkit.theory import theorem1_length, theorem2_length

LOG_INV_ALPHA, BETA = 5.0, 1.0


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict, Path]:
    w = world_from_params(math.exp(-LOG_INV_ALPHA), BETA, n_sentences=8, seed=0)
    t = w.params()
    neg = w.component_model("neg")
    positive = [i for i in range(w.n_sentences) if w.scores[i] > 0]
    # The aligning prefix: two copies of the most positive sentence, as text of the world.
    aligning = neg.decode(w.encode_sentences(positive[-1:] * 2, bos=False))
    s = ConvergenceSettings(
        behavior="synthetic", fmt="newline", n_prompts=4, n_sentences=7, n_samples=32,
        n_tokens=w.codec.code_length + 1, n_boot=200, aligning_prompt=aligning,
        s0_sentences=2, beta_prime=t.beta_prime, sigma=t.sigma_pos, seed=3,
    )  # fmt: skip
    out = tmp_path_factory.mktemp("conv")
    r = run_convergence(neg, w.language_model(), s, out, stop_ids=w.sentence_end_token_ids)
    return w, r, out


def _exact(w: object, out: Path) -> np.ndarray:
    """Exact one-sentence KL(P₋‖P | sₙ) for every saved prompt and n (no aligning prefix)."""
    neg, mix = w.component_model("neg"), w.language_model()  # type: ignore[attr-defined]
    prompts = load_prompts(out / "prompts.jsonl")
    return np.array(
        [
            [exact_kl(neg, mix, pr.context(neg, n), n_sentences=1)
             for n in range(pr.n_sentences + 1)]
            for pr in prompts
        ]
    )  # fmt: skip


def test_curve_matches_exact_kl_and_obeys_lemma5(run: tuple[object, dict, Path]) -> None:
    w, r, out = run
    exact = _exact(w, out)
    est = np.array(r["curves"]["none"]["per_prompt"])
    se = np.array(r["curves"]["none"]["per_prompt_stderr"])
    assert np.all(np.abs(est - exact) <= 4 * se + 1e-9)
    # Lemma 5 (eq. 7) per prompt, exactly: P ≥ w₋(s)·P₋ gives
    # KL(P₋‖P|s) ≤ log(1 + e^{log 1/α − r(s)}) (α ≪ 1), r(s) = log P₋(s)/P₊(s) ≈ β|s|.
    neg, pos = w.component_model("neg"), w.component_model("pos")  # type: ignore[attr-defined]
    r_s = log_ratio_trajectories(neg, pos, load_prompts(out / "prompts.jsonl")).values
    log_odds = math.log((1 - math.exp(-LOG_INV_ALPHA)) / math.exp(-LOG_INV_ALPHA))
    bound = np.logaddexp(0.0, log_odds - r_s)
    assert np.all(exact <= bound + 1e-9)
    assert np.all(est - 4 * se <= bound + 1e-9)
    # E[r(n)] = nβ here, and the mean curve is close to the β-line version of the bound late on
    n = np.arange(exact.shape[1])
    assert exact.mean(axis=0)[-1] <= lemma5_curve(n, LOG_INV_ALPHA, BETA)[-1] + 0.5
    assert r["kl_falls"]["none"]["falls"]


def test_aligning_prompt_keeps_kl_high(run: tuple[object, dict, Path]) -> None:
    """Theorem 2: with a positive prefix s₀ the LLM stays farther from P₋ for longer."""
    _, r, _ = run
    none = np.array(r["curves"]["none"]["per_prompt"]).mean(axis=0)
    aligned = np.array(r["curves"]["aligned"]["per_prompt"]).mean(axis=0)
    assert np.all(aligned[2:] > none[2:])


def test_fits_lengths_and_outputs(run: tuple[object, dict, Path]) -> None:
    w, r, out = run
    t = w.params()  # type: ignore[attr-defined]
    for c in ("none", "aligned"):
        fit = r["fits"][c]["lemma5"]
        a, b = fit["log_inv_alpha"]["value"], fit["beta"]["value"]
        assert fit["n_star"]["value"] == pytest.approx(a / b)
        assert fit["n_star"]["ci_low"] <= a / b <= fit["n_star"]["ci_high"]
        ln = r["lengths"][c]["lemma5"]
        assert ln["theorem1"]["value"] == pytest.approx(theorem1_length(math.exp(-a), b, 0.1))
        # Theorem 2 bounds P(·|s₀) with the UNPROMPTED α, β: the curve without s₀'s fit for
        # both conditions (the aligned intercept already holds s₀; taking it counts s₀ twice)
        f0 = r["fits"]["none"]["lemma5"]
        a0, b0 = f0["log_inv_alpha"]["value"], f0["beta"]["value"]
        if c == "none":  # no s0: Theorem 2 would be Theorem 1 + 1, so none is given
            assert "theorem2" not in ln
            continue
        s0 = 2.0
        t2 = theorem2_length(math.exp(-a0), b0, 0.1, t.beta_prime, t.sigma_pos, 0.1, s0)
        assert ln["theorem2"]["value"] == pytest.approx(t2)
        assert ln["theorem2"]["ci_low"] <= t2 <= ln["theorem2"]["ci_high"]
        own = theorem2_length(math.exp(-a), b, 0.1, t.beta_prime, t.sigma_pos, 0.1, s0)
        if c == "aligned":
            assert ln["theorem2"]["value"] != pytest.approx(own, rel=1e-3)
    # the aligned curve decays later: its midpoint is later than without s₀
    assert (
        r["fits"]["aligned"]["lemma5"]["n_star"]["value"]
        > r["fits"]["none"]["lemma5"]["n_star"]["value"]
    )
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "convergence" and rec["config"]["n_samples"] == 32
    assert rec["results"]["estimator"] == "rb"
    assert (out / "convergence.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "convergence.svg").is_file()
    assert "lemma5" in "\n".join(summary_lines(r))


def test_conditions_validated() -> None:
    with pytest.raises(ValueError):
        ConvergenceSettings(behavior="x", conditions=("both",))
    with pytest.raises(ValueError):
        ConvergenceSettings(behavior="x", conditions=("none", "none"))


def test_misalign_takes_theorem2_inputs_from_the_stages_it_reads(
    run: tuple[object, dict, Path], tmp_path: Path
) -> None:
    """Misalign's Theorem 2 bound reads log 1/α on Lemma 5's KL scale from convergence's fit
    without s₀, β from beta-sigma (Definition 2) and β′, σ from its P₊ direction (Lemma 4) —
    the theorems experiment's sources; the settings win where given."""
    from types import SimpleNamespace

    from bebkit.pipeline.beta_sigma import BetaSigmaResult, BetaSigmaSettings, run_beta_sigma
    from bebkit.pipeline.convergence import ConvergenceOutcome
    from bebkit.pipeline.misalign import MisalignSettings, theorem2_settings

    w, r, _ = run
    bs_s = BetaSigmaSettings(behavior="synthetic", fmt="newline", n_prompts=2, n_sentences=2,
                             n_samples=8, n_var_prompts=4, n_boot=100, seed=1)  # fmt: skip
    bs_r = run_beta_sigma(w.component_model("neg"), w.component_model("pos"), bs_s, tmp_path,  # type: ignore[attr-defined]
                          stop_ids=w.sentence_end_token_ids)  # type: ignore[attr-defined]  # fmt: skip
    inputs = {"convergence": ConvergenceOutcome.from_json(r),
              "beta-sigma": BetaSigmaResult.from_json(bs_r)}  # fmt: skip
    ctx = SimpleNamespace(input=inputs.get)
    update, sources = theorem2_settings(ctx, MisalignSettings(behavior="synthetic"))  # type: ignore[arg-type]
    none = r["fits"]["none"]
    a = (none.get("floored") or none["lemma5"])["log_inv_alpha"]["value"]
    b = (none.get("floored") or none["lemma5"])["beta"]["value"]
    # one fit supplies the pair (value at 0, slope); beta-sigma's envelope β only beside it
    assert (update["log_inv_alpha"], update["beta"]) == (a, b)
    assert sources["log_inv_alpha"] == sources["beta"] and sources["beta"].startswith("convergence")
    assert update["beta"] != bs_r["beta"]["estimate"]["value"]
    assert "not used" in sources["beta_definition2"]
    assert update["beta_prime"] == bs_r["beta_prime_pos"]["estimate"]["value"]
    assert update["sigma"] == bs_r["sigma_pos"]["value"]
    given = MisalignSettings(behavior="synthetic", log_inv_alpha=7.0, beta=2.0)
    update, sources = theorem2_settings(ctx, given)  # type: ignore[arg-type]
    assert "log_inv_alpha" not in update and "beta" not in update
    assert set(sources) == {"beta_definition2"}
    update, sources = theorem2_settings(SimpleNamespace(input=lambda _n: None),  # type: ignore[arg-type]
                                        MisalignSettings(behavior="synthetic"))  # fmt: skip
    assert update == {} and sources == {}


def test_kl_falls_pairs_the_two_ends_on_the_same_prompts() -> None:
    """Every prompt's KL drops by exactly 0.5 while prompts differ by SD 4: a paired CI sees
    the fall; treating the two ends as independent samples (the old CI) cannot."""
    from bebkit.estimators.kl import KLCurve
    from bebkit.pipeline.convergence import _falls

    rng = np.random.default_rng(0)
    level = rng.normal(10.0, 4.0, size=10)
    per_prompt = np.stack([level + 0.3, level, level - 0.5], axis=1)  # n = 0, 1, 19
    cv = KLCurve(
        n=np.array([0, 1, 19]), per_prompt=per_prompt,
        per_prompt_stderr=np.full_like(per_prompt, 0.01), n_samples=64, method="mc",
    )  # fmt: skip
    f = _falls(cv)
    assert f["from_n"] == 1 and f["to_n"] == 19
    assert f["drop"]["value"] == pytest.approx(0.5, abs=1e-12)
    assert f["drop"]["stderr"] == pytest.approx(0.0, abs=1e-9)
    assert f["drop"]["method"] == "paired_prompt_difference"
    assert f["falls"] is True
    # one prompt: the Monte-Carlo stderrs are all there is
    one = KLCurve(n=cv.n, per_prompt=per_prompt[:1], per_prompt_stderr=cv.per_prompt_stderr[:1],
                  n_samples=64, method="mc")  # fmt: skip
    assert _falls(one)["drop"]["method"] == "first_minus_last_normal"


def test_the_log_names_the_kl_unit_it_measures() -> None:
    """The paper-sized run's log said "64 x 8 tokens" for a KL of the next sentence."""
    from bebkit.pipeline.experiments_common import kl_sample_text

    per_sentence = ConvergenceSettings(behavior="b", unit="sentence", n_samples=64, n_tokens=8)
    fixed = ConvergenceSettings(behavior="b", unit="tokens", n_samples=64, n_tokens=8)
    assert kl_sample_text(per_sentence) == (
        f"64 next sentences (<= {per_sentence.max_sentence_tokens} tokens)"
    )
    assert kl_sample_text(fixed) == "64 continuations x 8 tokens"
