"""Multi-target KL curves (one P-sample set), delta-method and ratio estimates, KL settings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.kl import kl_curves, kl_samples, kl_samples_multi
from bebkit.estimators.prompts import sample_prompts
from bebkit.fits.derived import delta_estimate, estimate_from_dict, ratio_estimate
from bebkit.pipeline.experiments_common import KLSettings
from bebkit.synthetic.world import world_from_params


def _world() -> object:
    return world_from_params(0.05, 1.2, n_sentences=6, markov=True, gamma=-0.1, seed=0)


@pytest.mark.parametrize("with_rb", [False, True])
def test_multi_target_equals_kl_samples_per_target(with_rb: bool) -> None:
    """Sharing P's continuations changes nothing per target: same seed → identical terms."""
    w = _world()
    neg, pos, mix = w.language_model("neg"), w.language_model("pos"), w.language_model()  # type: ignore[attr-defined]
    prefix = w.encode_sentences([1, 2])  # type: ignore[attr-defined]
    multi = kl_samples_multi(
        neg, {"pos": (pos, prefix), "mix": (mix, prefix)}, prefix,
        n_samples=20, n_tokens=5, with_rb=with_rb, rng=np.random.default_rng(3),
    )  # fmt: skip
    for label, q in (("pos", pos), ("mix", mix)):
        single = kl_samples(neg, q, prefix, n_samples=20, n_tokens=5, with_rb=with_rb, rng=3)
        np.testing.assert_allclose(multi[label].mc, single.mc)
        if with_rb:
            assert multi[label].rb is not None and single.rb is not None
            np.testing.assert_allclose(multi[label].rb, single.rb)


def test_multi_target_curves_shapes_and_labels() -> None:
    w = _world()
    neg, pos = w.language_model("neg"), w.language_model("pos")  # type: ignore[attr-defined]
    stops = w.sentence_end_token_ids  # type: ignore[attr-defined]
    prompts = sample_prompts(neg, n_prompts=3, n_sentences=2, rng=1, stop_ids=stops)
    calls: list[int] = []
    curves = kl_curves(
        neg, {"a": (pos, None), "b": (neg, None)}, prompts, ns=[0, 2], n_samples=8, n_tokens=3,
        rng=np.random.default_rng(0), progress=lambda d, t: calls.append(d),
    )  # fmt: skip
    # progress counts (prompt, n) cells, reported once per prompt (its n are one batch)
    assert set(curves) == {"a", "b"} and calls == [2, 4, 6]
    assert curves["a"].per_prompt.shape == (3, 2) and curves["a"].n.tolist() == [0, 2]
    np.testing.assert_allclose(curves["b"].per_prompt, 0.0, atol=1e-12)  # KL(P‖P) = 0
    assert np.all(curves["a"].per_prompt > 0)


def test_delta_estimate_matches_analytic_gradient() -> None:
    cov = np.array([[0.04, 0.01], [0.01, 0.09]])
    e = delta_estimate(lambda a, b: a / b, 6.0, 2.0, cov, n=10, method="x")
    g = np.array([1 / 2.0, -6.0 / 4.0])
    assert e.value == pytest.approx(3.0)
    assert e.stderr == pytest.approx(math.sqrt(g @ cov @ g), rel=1e-5)
    assert e.ci_low is not None and e.ci_low < 3.0 < (e.ci_high or 0)
    nan = delta_estimate(lambda a, b: a / b, 6.0, 2.0, np.full((2, 2), np.nan), n=1, method="x")
    assert math.isnan(nan.stderr) and nan.ci_low is None


def test_ratio_estimate_log_scale_ci() -> None:
    r = ratio_estimate(Estimate(10.0, 1.0, 10), Estimate(2.0, 0.2, 10))
    assert r.value == pytest.approx(5.0)
    se_log = math.sqrt(0.01 + 0.01)
    assert r.stderr == pytest.approx(5.0 * se_log)
    assert r.ci_low == pytest.approx(5.0 * math.exp(-1.959963984540054 * se_log))
    bad = ratio_estimate(Estimate(1.0, 0.1, 5), Estimate(-1.0, 0.1, 5))
    assert bad.ci_low is None
    assert estimate_from_dict(r.to_dict()) == r


def test_settings_are_frozen_and_validated() -> None:
    s = KLSettings(behavior="x")
    assert s.estimator == "rb" and s.n_samples == 64 and s.n_tokens == 8
    with pytest.raises(ValueError):
        KLSettings(behavior="x", n_samples=1)
    with pytest.raises(ValueError):
        KLSettings(behavior="x", unknown=1)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        s.n_prompts = 3  # type: ignore[misc]


def test_estimate_round_trips_nan_through_json() -> None:
    """to_dict writes NaN as None; from_dict reads it back as NaN (a failed fit's value)."""
    import json

    e = Estimate(float("nan"), float("nan"), 3, None, None, 0.95, "m")
    back = Estimate.from_dict(json.loads(json.dumps(e.to_dict())))
    assert math.isnan(back.value) and math.isnan(back.stderr) and back.n == 3
    with pytest.raises(InputError):
        estimate_from_dict({"stderr": 1.0})
