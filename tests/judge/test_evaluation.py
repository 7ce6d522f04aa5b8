"""Agreement metrics against hand-computed values; bootstrap CIs; grouped reports."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.judge.data import LabelledResponse, load_labelled_responses
from bebkit.judge.evaluation import (
    agreement,
    balanced_accuracy,
    cohen_kappa,
    confusion_counts,
    evaluate_predictions,
    metrics_from_counts,
)

# 10 items: true 6 good / 4 bad; judged: gg=5, gb=1, bg=1, bb=3.
Y_TRUE = np.array([1, 1, 1, 1, 1, 1, -1, -1, -1, -1])
Y_PRED = np.array([1, 1, 1, 1, 1, -1, 1, -1, -1, -1])


def test_confusion_and_metrics_by_hand() -> None:
    assert confusion_counts(Y_TRUE, Y_PRED).tolist() == [5, 1, 1, 3]
    # p_o = 0.8; p_e = (6·6 + 4·4)/100 = 0.52; κ = 0.28/0.48
    assert cohen_kappa(Y_TRUE, Y_PRED) == pytest.approx(0.28 / 0.48)
    # ½ (5/6 + 3/4)
    assert balanced_accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.5 * (5 / 6 + 3 / 4))
    m = metrics_from_counts(np.array([5, 1, 1, 3]))
    assert float(m["accuracy"]) == pytest.approx(0.8)
    assert float(m["judge_good_rate"]) == pytest.approx(0.6)


def test_kappa_matches_sklearn_on_random_labels() -> None:
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score

    rng = np.random.default_rng(3)
    t = rng.choice([-1, 1], size=200, p=[0.3, 0.7])
    p = np.where(rng.random(200) < 0.8, t, -t)
    assert cohen_kappa(t, p) == pytest.approx(cohen_kappa_score(t, p))
    assert balanced_accuracy(t, p) == pytest.approx(balanced_accuracy_score(t, p))


def test_degenerate_cases() -> None:
    perfect = np.array([1, -1, 1, -1])
    assert cohen_kappa(perfect, perfect) == pytest.approx(1.0)
    assert cohen_kappa(perfect, -perfect) == pytest.approx(-1.0)
    # Everyone good, judged good: p_e = 1 → κ undefined (NaN), balanced accuracy undefined.
    ones = np.ones(5, dtype=int)
    assert math.isnan(cohen_kappa(ones, ones))
    with pytest.raises(InputError):
        confusion_counts([1, 0], [1, 1])
    with pytest.raises(InputError):
        confusion_counts([1, 1], [1])


def test_agreement_bootstrap_ci_brackets_value_and_is_seeded() -> None:
    rng = np.random.default_rng(0)
    t = rng.choice([-1, 1], size=400)
    p = np.where(rng.random(400) < 0.9, t, -t)
    a = agreement(t, p, n_boot=500, seed=1)
    b = agreement(t, p, n_boot=500, seed=1)
    k = a["kappa"]
    assert k.ci_low < k.value < k.ci_high
    assert 0.0 < k.stderr < 0.1
    assert k.n == 400
    assert a["kappa"] == b["kappa"]
    assert sum(a["confusion"].values()) == 400
    be = a["human_behavior_expectation"]
    assert be.value == pytest.approx(2 * np.mean(t == 1) - 1)


def test_evaluate_predictions_groups() -> None:
    rows = [
        LabelledResponse("x", lab, n_sentences=n, aligning_prompt=ap)
        for lab, n, ap in [(1, 1, True), (1, 1, False), (-1, 2, True), (-1, 2, False)]
    ]
    rep = evaluate_predictions(rows, np.array([1, -1, -1, -1]), n_boot=50)
    assert rep["overall"]["accuracy"].value == pytest.approx(0.75)
    assert set(rep["by_n_sentences"]) == {"1", "2"}
    assert rep["by_n_sentences"]["2"]["accuracy"].value == pytest.approx(1.0)
    assert set(rep["by_aligning_prompt"]) == {"true", "false"}


def test_load_labelled_responses(tmp_path: Path) -> None:
    f = tmp_path / "labels.jsonl"
    rows = [
        {"behavior": "b", "response": "hi", "label": "good", "n_sentences": 1},
        {"behavior": "b", "response": "bad", "label": "bad", "n_sentences": 2},
        {"behavior": "other", "response": "z", "label": "bad"},
    ]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    got = load_labelled_responses(f, behavior="b")
    assert [(r.response, r.label, r.n_sentences) for r in got] == [("hi", 1, 1), ("bad", -1, 2)]
    f.write_text(json.dumps({"response": "x", "label": "maybe"}) + "\n")
    with pytest.raises(InputError, match="label"):
        load_labelled_responses(f)
    with pytest.raises(InputError, match="not found"):
        load_labelled_responses(tmp_path / "missing.jsonl")


def test_agreement_bootstrap_resamples_clusters() -> None:
    """Disagreements concentrated in a few prompts: resampling prompts (clusters) gives a
    wider κ interval than resampling responses; the point values are the same."""
    import numpy as np

    from bebkit.judge.evaluation import agreement

    rng = np.random.default_rng(0)
    truth = rng.choice([-1, 1], size=200)
    pred = truth.copy()
    clusters = np.repeat(np.arange(10), 20)
    pred[clusters < 3] *= -1  # three prompts' responses all misjudged
    plain = agreement(truth, pred)
    clus = agreement(truth, pred, clusters=clusters.tolist())
    assert clus["kappa"].value == plain["kappa"].value
    assert "clusters=10" in clus["kappa"].method
    width = lambda e: e.ci_high - e.ci_low  # noqa: E731
    assert width(clus["kappa"]) > 2 * width(plain["kappa"])
    with pytest.raises(InputError, match="clusters"):
        agreement(truth, pred, clusters=[0, 1])
