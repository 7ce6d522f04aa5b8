"""Validate a judge against human labels: accuracy, balanced accuracy, Cohen's κ, confusion.

Labels y, ŷ ∈ {+1 good, −1 bad}. With the confusion counts n_ab (true a, judged b):

* accuracy p_o = (n_gg + n_bb) / n
* balanced accuracy = ½ (n_gg / n_g· + n_bb / n_b·)
* Cohen's κ = (p_o − p_e) / (1 − p_e),  p_e = (n_g· n_·g + n_b· n_·b) / n²

Confidence intervals: nonparametric bootstrap over responses. Resampling n (label, judgment)
pairs with replacement is the same as drawing the four confusion counts from
Multinomial(n, n_ab / n), so B bootstrap replicates cost O(B), not O(B·n).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.judge.data import (
    LabelledResponse,
    generic_good_texts,
    load_behavior_statements,
    load_labelled_responses,
    rejection_templates,
    split_statements,
)
from bebkit.judge.judge import (
    EnsembleJudge,
    Judge,
    JudgeConfig,
    build_judge,
    build_training_set,
    fill_template,
    predict,
)

CONFUSION_ORDER = ("good->good", "good->bad", "bad->good", "bad->bad")


def confusion_counts(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> np.ndarray:
    """``[n_gg, n_gb, n_bg, n_bb]`` (true → judged) for labels in {+1 good, −1 bad}."""
    t = np.asarray(y_true)
    p = np.asarray(y_pred)
    if t.shape != p.shape:
        raise InputError(f"label arrays differ in shape: {t.shape} vs {p.shape}")
    for arr in (t, p):
        if not np.isin(arr, (-1, 1)).all():
            raise InputError("labels must be +1 (good) or -1 (bad)")
    g, b = t == 1, t == -1
    return np.array(
        [np.sum(g & (p == 1)), np.sum(g & (p == -1)), np.sum(b & (p == 1)), np.sum(b & (p == -1))],
        dtype=np.int64,
    )


def metrics_from_counts(counts: np.ndarray) -> dict[str, np.ndarray]:
    """Accuracy, balanced accuracy, κ and good rates from counts ``[..., 4]`` (vectorised).

    Undefined values (a class absent, p_e = 1) are NaN.
    """
    c = np.asarray(counts, dtype=np.float64)
    gg, gb, bg, bb = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    n = gg + gb + bg + bb
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = (gg + bb) / n
        true_g, true_b = gg + gb, bg + bb
        pred_g, pred_b = gg + bg, gb + bb
        bal = 0.5 * (gg / true_g + bb / true_b)
        pe = (true_g * pred_g + true_b * pred_b) / n**2
        kappa = np.where(pe < 1.0, (acc - pe) / (1.0 - pe), np.nan)
        return {
            "accuracy": acc,
            "balanced_accuracy": bal,
            "kappa": kappa,
            "human_good_rate": true_g / n,
            "judge_good_rate": pred_g / n,
        }


def cohen_kappa(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Cohen's κ of two ±1 labelings."""
    return float(metrics_from_counts(confusion_counts(y_true, y_pred))["kappa"])


def balanced_accuracy(
    y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray
) -> float:
    """½ (recall on good + recall on bad)."""
    return float(metrics_from_counts(confusion_counts(y_true, y_pred))["balanced_accuracy"])


def agreement(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    *,
    n_boot: int = 2000,
    ci_level: float = 0.95,
    seed: int = 0,
    clusters: Sequence[Any] | None = None,
) -> dict[str, Any]:
    """Agreement metrics with bootstrap stderr and percentile CIs, plus the confusion matrix.

    Also reports the human and judged behavior expectations B̄ = 2·(good rate) − 1 (the
    quantity plotted in fig. 3b of the paper) with their CIs.

    ``clusters`` (one key per response, e.g. its misaligning prompt): the bootstrap resamples
    whole clusters, as responses to one prompt are not independent; without it, responses.
    """
    counts = confusion_counts(y_true, y_pred)
    n = int(counts.sum())
    if n == 0:
        raise InputError("no labelled responses to evaluate")
    point = metrics_from_counts(counts)
    rng = np.random.default_rng(seed)
    method = f"bootstrap-percentile(B={n_boot})"
    if clusters is not None:
        keys = list(clusters)
        if len(keys) != n:
            raise InputError(f"clusters has {len(keys)} keys for {n} responses")
        t, p = np.asarray(y_true), np.asarray(y_pred)
        ids = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        rows = np.asarray([ids[k] for k in keys])
        per = np.stack([confusion_counts(t[rows == i], p[rows == i]) for i in range(len(ids))])
        draws = rng.integers(len(ids), size=(n_boot, len(ids)))
        boots = metrics_from_counts(per[draws].sum(axis=1))
        method = f"cluster-bootstrap-percentile(B={n_boot}, clusters={len(ids)})"
    else:
        boots = metrics_from_counts(rng.multinomial(n, counts / n, size=n_boot))
    lo_q, hi_q = 100 * (1 - ci_level) / 2, 100 * (1 + ci_level) / 2
    out: dict[str, Any] = {"n": n}
    for key in ("accuracy", "balanced_accuracy", "kappa", "human_good_rate", "judge_good_rate"):
        v = float(point[key])
        b = boots[key][np.isfinite(boots[key])]
        if not np.isfinite(v) or b.size < 2:
            out[key] = Estimate(v, float("nan"), n, None, None, ci_level, "bootstrap")
            continue
        out[key] = Estimate(
            v,
            float(b.std(ddof=1)),
            n,
            float(np.percentile(b, lo_q)),
            float(np.percentile(b, hi_q)),
            ci_level,
            method,
        )
    for who in ("human", "judge"):
        g: Estimate = out[f"{who}_good_rate"]
        out[f"{who}_behavior_expectation"] = Estimate(
            2 * g.value - 1,
            2 * g.stderr,
            n,
            None if g.ci_low is None else 2 * g.ci_low - 1,
            None if g.ci_high is None else 2 * g.ci_high - 1,
            ci_level,
            g.method,
        )
    out["confusion"] = dict(zip(CONFUSION_ORDER, counts.tolist(), strict=True))
    return out


def _group_key(attr: str) -> Callable[[LabelledResponse], Any]:
    return lambda r: getattr(r, attr)


def evaluate_predictions(
    rows: Sequence[LabelledResponse],
    y_pred: np.ndarray,
    *,
    group_by: Sequence[str] = ("n_sentences", "aligning_prompt"),
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Overall agreement and the same per value of each ``group_by`` field."""
    y_true = np.asarray([r.label for r in rows], dtype=np.int64)
    report: dict[str, Any] = {"overall": agreement(y_true, y_pred, n_boot=n_boot, seed=seed)}
    for attr in group_by:
        key = _group_key(attr)
        values = sorted({key(r) for r in rows if key(r) is not None})
        groups: dict[str, Any] = {}
        for v in values:
            mask = np.asarray([key(r) == v for r in rows])
            groups[str(v).lower() if isinstance(v, bool) else str(v)] = agreement(
                y_true[mask], y_pred[mask], n_boot=n_boot, seed=seed
            )
        report[f"by_{attr}"] = groups
    return report


def default_labels_file(behavior: str) -> Path:
    """The single ``<behavior>-*.jsonl`` in ``$BEBKIT_HUMAN_LABELS_DIR``."""
    from bebkit.paths import human_labels_dir

    d = human_labels_dir()
    if d is None:
        raise InputError("no --labels given and BEBKIT_HUMAN_LABELS_DIR is not set")
    hits = sorted(Path(d).glob(f"{behavior}-*.jsonl"))
    if len(hits) != 1:
        raise InputError(
            f"expected one {behavior}-*.jsonl in {d}, found {len(hits)}: pass --labels FILE"
        )
    return hits[0]


def evaluate_judge_on_labels(
    behavior: str,
    labels_path: str | Path,
    config: JudgeConfig | None = None,
    *,
    persona_dir: str | Path | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    cache: bool = True,
    progress: bool = False,
    judge: Judge | None = None,
) -> dict[str, Any]:
    """Build the judge from persona statements only (or take a ready ``judge``, e.g. the
    mixture judge over trained P₋/P₊ adapters), then score it against human labels."""
    cfg = config or JudgeConfig()
    rows = load_labelled_responses(labels_path, behavior=behavior)
    t0 = time.perf_counter()
    if judge is None:
        judge = build_judge(behavior, cfg, persona_dir=persona_dir, cache=cache, progress=progress)
    t1 = time.perf_counter()
    y_pred = predict(judge, [r.response for r in rows], progress=progress)
    t2 = time.perf_counter()
    report = evaluate_predictions(rows, y_pred, n_boot=n_boot, seed=seed)
    return {
        "behavior": behavior,
        "judge": judge.name,
        "config": {**cfg.model_dump(), "kind": _kind(judge, cfg)},
        "labels_file": str(labels_path),
        "chosen_C": getattr(judge, "chosen_C", None),
        **report,
        "timings_s": {"fit": t1 - t0, "predict": t2 - t1},
    }


def _kind(judge: Judge, cfg: JudgeConfig) -> str:
    from bebkit.judge.judge import MixturePosteriorJudge

    return "mixture" if isinstance(judge, MixturePosteriorJudge) else cfg.kind


def heldout_persona_eval(
    behavior: str,
    config: JudgeConfig | None = None,
    *,
    test_fraction: float = 0.2,
    persona_dir: str | Path | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    cache: bool = True,
    progress: bool = False,
    judge: Judge | None = None,
    heldout: tuple[Sequence[str], Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Label-free check for any behavior: hold out statements, generic texts and templates.

    A ready ``judge`` (built elsewhere, e.g. on adapters) is scored as is on ``heldout`` =
    (desired, undesired) statements it never saw, all generic texts and all templates.

    The judge is fitted on the training split of every source, then scored on (i) held-out
    persona statements of both sides (agreement metrics), (ii) held-out generic replies and
    (iii) held-out rejection templates filled with held-out undesired statements (both +1;
    their accuracy is the fraction judged good).
    """
    from bebkit.judge.judge import LinearJudge, make_encoder

    cfg = config or JudgeConfig()
    if judge is not None:
        if heldout is None:
            raise InputError("a ready judge needs the held-out statements it never saw")
        generic_all = [t for texts in generic_good_texts().values() for t in texts]
        return _score_heldout(
            judge,
            behavior,
            cfg,
            list(heldout[0]),
            list(heldout[1]),
            generic_all,
            list(rejection_templates()),
            n_boot=n_boot,
            seed=seed,
            progress=progress,
            extra={},
        )
    stm = load_behavior_statements(behavior, persona_dir)
    d_tr, d_te = split_statements(stm.desired, test_fraction, seed)
    u_tr, u_te = split_statements(stm.undesired, test_fraction, seed + 1)
    generic = [t for texts in generic_good_texts().values() for t in texts]
    g_tr, g_te = split_statements(generic, test_fraction, seed + 2)
    t_tr, t_te = split_statements(rejection_templates(), 0.3, seed + 3)
    train = build_training_set(
        d_tr,
        u_tr,
        generic=g_tr if cfg.use_generic else [],
        templates=t_tr if cfg.use_generic else [],
        n_template_samples=cfg.n_template_samples,
        seed=cfg.seed,
    )
    kinds = ["minilm", "hidden"] if cfg.kind == "ensemble" else [cfg.kind]
    members: list[Judge] = [
        LinearJudge(
            make_encoder(k, cfg, cache=cache),  # type: ignore[arg-type]
            unit=cfg.unit,
            Cs=cfg.Cs,
            balance_sources=cfg.balance_sources,
            seed=cfg.seed,
            name=f"{k}:{behavior}",
        ).fit(train, progress=progress)
        for k in kinds
    ]
    fitted: Judge = members[0] if len(members) == 1 else EnsembleJudge(members)
    return _score_heldout(
        fitted,
        behavior,
        cfg,
        d_te,
        u_te,
        g_te,
        t_te,
        n_boot=n_boot,
        seed=seed,
        progress=progress,
        extra={"train_counts": train.counts()},
    )


def _score_heldout(
    judge: Judge,
    behavior: str,
    cfg: JudgeConfig,
    d_te: Sequence[str],
    u_te: Sequence[str],
    g_te: Sequence[str],
    t_te: Sequence[str],
    *,
    n_boot: int,
    seed: int,
    progress: bool,
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Agreement on held-out statements; share judged good of generic replies / rejections."""
    rng = np.random.default_rng(seed + 4)
    rejections = [fill_template(t_te[int(rng.integers(len(t_te)))], s) for s in u_te]
    y_st = np.asarray([1] * len(d_te) + [-1] * len(u_te))
    pred_st = predict(judge, [*d_te, *u_te], progress=progress)
    pred_g = predict(judge, g_te)
    pred_r = predict(judge, rejections)
    return {
        "behavior": behavior,
        "judge": judge.name,
        "config": {**cfg.model_dump(), "kind": _kind(judge, cfg)},
        "statements": agreement(y_st, pred_st, n_boot=n_boot, seed=seed),
        "generic_judged_good": Estimate.from_samples(pred_g == 1, "mean"),
        "rejections_judged_good": Estimate.from_samples(pred_r == 1, "mean"),
        **extra,
    }
