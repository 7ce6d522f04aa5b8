"""A tiny hand-written `bebkit reproduce` run directory (every stage) for the report tests."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path
from typing import Any

PAYLOADS = (
    "<script>alert(1);document.title='pwned'</script>",
    '<img src=x onerror="document.body.dataset.pwned=1">',
    "[click me](javascript:alert(3))",
    "![x](http://evil.example/x.png) `code` | pipe",
)


def est(v: float, se: float = 0.1, n: int = 10, lo: float | None = None,
        hi: float | None = None) -> dict[str, Any]:  # fmt: skip
    return {"value": v, "stderr": se, "n": n, "ci_low": v - 2 * se if lo is None else lo,
            "ci_high": v + 2 * se if hi is None else hi, "ci_level": 0.95, "method": "t"}  # fmt: skip


def png_bytes(w: int = 4, h: int = 3, rgb: tuple[int, int, int] = (40, 90, 200)) -> bytes:
    """A valid solid-colour PNG (no matplotlib needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + bytes(rgb) * w for _ in range(h))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))  # fmt: skip


def authors_figures(path: Path) -> Path:
    """A synthetic authors-figures.json with every section load_authors_figures needs."""
    kl = [30.0 * 0.5**i + 1.0 for i in range(10)]
    good = [100.0, 90.0, 70.0, 50.0, 30.0, 20.0, 10.0, 5.0, 4.0, 2.5]
    good_al = [100.0, 97.0, 90.0, 75.0, 55.0, 35.0, 20.0, 12.0, 6.0, 3.0]
    data = {
        "source": "synthetic test numbers",
        "beta_KL_Pminus_vs_chat_INSTwrapped_per_sentence_1to15": {
            "agreeableness": [20.0 + 0.1 * i for i in range(15)],
            "anti_immigration": [12.0 + 0.1 * i for i in range(15)],
        },
        "variance_logratio_vs_sentences_0to15": {
            "agreeableness": [50.0 * i for i in range(16)],
            "anti_immigration": [100.0 * i for i in range(16)],
        },
        "KL_Pminus_vs_model_per_sentence_1to10": {
            **{f"chat_{s}_{c}": kl for s in ("agree", "anti") for c in ("noalign", "align")},
            "base_agree": [6.0 - 0.4 * i for i in range(10)],
            "base_anti": [5.0 - 0.3 * i for i in range(10)],
        },
        "pct_good_responses_chat_of32_per_sentence_1to10": {
            "agree_noalign": good,
            "agree_align": good_al,
            "anti_noalign": good,
            "anti_align": good_al,
        },
        "pct_negative_responses_base_of16_per_sentence_1to5": {
            "agree": [10.0, 30.0, 50.0, 60.0, 70.0],
            "anti": [10.0, 30.0, 50.0, 60.0, 70.0],
        },
    }
    path.write_text(json.dumps(data))
    return path


def _fits(n_star: float, beta: float) -> dict[str, Any]:
    one = {"log_inv_alpha": est(n_star * beta), "beta": est(beta, 0.3), "alpha": est(0.01),
           "n_star": est(n_star, 0.4), "n_used": [1, 2, 3], "chi2_red": 1.1}  # fmt: skip
    return {"lemma5": {**one, "model": "lemma5"}, "linear": {**one, "model": "linear"},
            "floored": {**one, "model": "floored", "floor": est(1.0)}}  # fmt: skip


def _curve(values: list[float], *, key: str = "estimates", frac: bool = False) -> dict[str, Any]:
    ns = list(range(len(values)))
    return {"n": ns, key: [est(v, 0.02 if frac else 0.3, 320 if frac else 10) for v in values]}


def make_run(root: Path, *, behavior: str = "agreeableness", name: str = "tiny",
             model: str = "tiny-chat", payload: bool = True, figures: Path | None = None) -> Path:  # fmt: skip
    """Write RUN/record.json and RUN/stages/<stage>/<key>/{record.json, result.json, files}."""
    b = behavior
    kl = [12.0, 8.0, 5.0, 3.5, 3.0, 2.9]
    good_none = [0.95, 0.9, 0.7, 0.45, 0.3, 0.2]
    good_al = [0.97, 0.95, 0.85, 0.7, 0.5, 0.35]
    results: dict[str, dict[str, Any]] = {
        f"components-{b}": {"behavior": b, "format": "chat", "preset": "small",
                            "table1": {"accuracy": est(0.96, 0.01, 100, 0.9, 0.99),
                                       "accuracy_desired": est(0.98, 0.01, 50),
                                       "accuracy_undesired": est(0.94, 0.02, 50)}},
        "probes": {"model": model,
                   "scores": [{"behavior": b, "layer": "last", "accuracy": est(0.9, 0.02, 5)}],
                   "summary": {"last": {"mean_accuracy": est(0.9, 0.02, 1), "n_behaviors": 1,
                                        "std_over_behaviors": 0.0}}},
        f"beta-sigma-{b}": {"behavior": b, "format": "chat", "unit": "sentence",
                            "beta": {"estimate": est(6.0)},
                            "beta_prime": {"estimate": est(9.0)},
                            "sigma2": {"estimate": est(20.0, 2.0)}, "sigma": est(4.5),
                            "sigma_over_beta": est(0.75), "beta_prime_over_beta": est(1.5),
                            "kl": _curve([9.0, 7.0, 6.5, 6.2]),
                            "log_ratio": {"n": [0, 1, 2, 3], "variance":
                                          [est(0.0), est(20.0), est(41.0), est(60.0)]}},
        f"prompt-dist-{b}": {"behavior": b, "format": "chat",
                             "beta_prompt": {"estimate": est(5.0)},
                             "prefix_kl": {"x": [1, 2], "estimates": [est(0.5), est(6.0)]},
                             "kl": {"n": [1, 2], "x": [3, 4], "estimates": [est(5.5), est(5.2)]},
                             "neutral_kl_max": est(0.5), "undesired_kl": est(6.0)},
        f"convergence-{b}": {"behavior": b, "format": "chat", "target_model": model,
                             "conditions": ["none", "aligned"],
                             "curves": {"none": _curve(kl), "aligned": _curve(kl)},
                             "fits": {"none": _fits(2.5, 3.0), "aligned": _fits(3.0, 2.8)},
                             "lengths": {"none": {"epsilon": 0.1, "lemma5": {
                                 "theorem1": est(4.0), "n_star": est(2.5)}}},
                             "fit_errors": {}},
        f"misalign-{b}": {"behavior": b, "format": "chat", "target_model": model,
                          "judge": "mixture",
                          "curves": {"none": _curve(good_none, key="fraction_good", frac=True),
                                     "aligned": _curve(good_al, key="fraction_good", frac=True)},
                          "sigmoid": {"none": {"centre": est(2.8), "beta": est(1.1),
                                               "log_inv_alpha": est(3.0), "decays": True},
                                      "aligned": {"centre": est(4.1), "beta": est(0.9),
                                                  "log_inv_alpha": est(3.7), "decays": True}},
                          "aligning_delay": est(1.3, 0.4),
                          "theorem2": {"length_bound": 7.5, "bound_holds": True,
                                       "measured_centre_aligned": 4.1, "beta": 6.0,
                                       "log_inv_alpha": 30.0, "s0_sentences": 3,
                                       "s0_term": 2.5,
                                       "sources": {"beta": "settings",
                                                   "log_inv_alpha": "settings"}},
                          "centre_vs_kl_n_star": {"difference": est(0.3), "consistent": True},
                          "authors_prompts": {"format": "alternating", "rows": [
                              {"condition": "none", "marker": 2, "prompt_ids": [2, 3],
                               "sentences": [3, 3], "measured": est(0.625, 0.05, 64),
                               "authors": est(0.125, 0.04, 64)}]},
                          "fit_errors": ({"aligned": PAYLOADS[0]} if payload else {})},
        f"pretrained-{b}": {"behavior": b, "format": "newline", "target_model": "tiny-base",
                            "aligned_model": model, "same_family": False,
                            "conditions": ["none"], "curves": {"none": _curve(kl)},
                            "fits": {"none": _fits(4.0, 1.2)},
                            "beta_ratio": {"floored": est(2.5), "lemma5": est(2.4)}},
    }  # fmt: skip
    stages: dict[str, Any] = {}
    for i, (stage, res) in enumerate(results.items()):
        key = f"k{i:03d}"
        folder = root / "stages" / stage / key
        folder.mkdir(parents=True)
        cfg = {"behavior": b, "fmt": res.get("format", "chat"), "n_prompts": 4, "n_tokens": 8,
               "seed": 100 + i, "estimator": "rb", "model": model, "preset": "small",
               "components": {"neg": {"key": "abc123", "path": "/cache/neg", "reused": True}}}  # fmt: skip
        rec = {"kind": stage.split("-")[0], "config": cfg, "seed": 100 + i,
               "timings_s": {"fit": 0.5}, "results": res}  # fmt: skip
        (folder / "record.json").write_text(json.dumps(rec))
        (folder / "result.json").write_text(json.dumps({"stage": stage, "key": key,
                                                        "seconds": 1.0, "result": res}))  # fmt: skip
        prefix = stage[: -len(b) - 1] if stage.endswith("-" + b) else stage
        stem = {"beta-sigma": "beta_sigma", "prompt-dist": "prompt_dist"}.get(prefix, prefix)
        if stage.startswith(("beta-sigma", "prompt-dist", "convergence", "misalign", "pretrained")):
            src = figures / f"{stem}.png" if figures is not None else None
            (folder / f"{stem}.png").write_bytes(
                src.read_bytes() if src is not None and src.is_file() else png_bytes()
            )
        if stage.startswith("misalign"):
            texts = PAYLOADS if payload else ("I agree with you.", "No.")
            lines = []
            for n in (0, 5):
                for cond in ("none", "aligned"):
                    for t in texts:
                        lines.append(json.dumps({"prompt_id": 0, "n": n, "condition": cond,
                                                 "text": t + " more", "first_sentence": t,
                                                 "n_tokens": 5, "stopped": True,
                                                 "prob_good": 0.3, "label": -1}))  # fmt: skip
            (folder / "responses.jsonl").write_text("\n".join(lines) + "\n")
            (folder / "examples.html").write_text("<html>examples</html>")
        stages[stage] = {"key": key, "folder": f"stages/{stage}/{key}", "cached": i % 2 == 0,
                         "seconds": 1.0 + i, "result": res}  # fmt: skip
    record = {
        "schema_version": 1, "kind": "reproduce", "status": "complete",
        "created": "2025-01-01T00:00:00+00:00",
        "config": {"name": name, "seed": 7, "aligned_model": model,
                   "pretrained_model": "tiny-base", "behaviors": [b], "format": "chat",
                   "pretrained_format": "newline",
                   "aligning_prompt": "You are a helpful assistant. Be kind.",
                   "paper_figures": None, "components": {"train_seed": 0, "preset": None},
                   "quick": True, "config_path": "configs/demo.yaml"},
        "seed": 7, "versions": {"bebkit": "0.1.0", "torch": "2.x"}, "git": "abc-dirty",
        "machine": {"platform": "linux", "python": "3.11", "cpu_count": 2, "node": "box"},
        "timings_s": {"wall_this_invocation": 12.5},
        "results": {"stages": stages, "error": None},
    }  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    (root / "record.json").write_text(json.dumps(record))
    return root
