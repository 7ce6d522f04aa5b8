"""A judge's validation status for one behavior, read from ``judge-eval`` / ``judge-checks``
records, so that no curve is presented as validated when it is not (issue 14).

Only a ``judge-eval`` record of the LOCKED part (:mod:`bebkit.judge.validation`) counts as a
validation on human labels, and only for the same judge (by name), the same behavior and, when
both state it, the same format. Label-free checks (:mod:`bebkit.judge.checks`, record kind
``judge-checks``) are reported beside it, never in its place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bebkit.errors import InputError

NOT_VALIDATED = "not validated on human labels for this behavior"
#: The label-free checks summarised in a status (issue 14's targets).
CHECK_KEYS = ("statements", "quote_and_reject_flip", "negation_flip", "generic_good")


def load_judge_records(path: str | Path | None) -> list[dict[str, Any]]:
    """The ``judge-eval`` / ``judge-checks`` records in a file or folder (``*.json``, not
    recursive); each gets ``_source`` = its path. Other JSON files are skipped."""
    if path is None:
        return []
    p = Path(path)
    if not p.exists():
        raise InputError(f"judge record {p} does not exist")
    files = sorted(p.glob("*.json")) if p.is_dir() else [p]
    out: list[dict[str, Any]] = []
    for f in files:
        try:
            rec = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            if p.is_dir():
                continue
            raise InputError(f"judge record {f}: not JSON ({exc})") from None
        if isinstance(rec, dict) and rec.get("kind") in ("judge-eval", "judge-checks"):
            out.append({**rec, "_source": str(f)})
        elif not p.is_dir():
            raise InputError(f"{f} is not a judge-eval or judge-checks record")
    return out


def _est(d: Any) -> dict[str, Any] | None:
    if hasattr(d, "to_dict"):
        d = d.to_dict()
    return dict(d) if isinstance(d, Mapping) and "value" in d else None


def _same_format(a: Any, b: str | None) -> bool:
    return a is None or b is None or a == b


def _human_labels(rec: Mapping[str, Any], behavior: str) -> dict[str, Any] | None:
    """κ, accuracy and n of a locked-part judge-eval record for ``behavior``, or None."""
    res = rec.get("results") or {}
    if res.get("part") != "locked":
        return None
    group = (res.get("by_behavior") or {}).get(behavior)
    if group is None and res.get("behavior") == behavior:
        group = res.get("overall")
    if not isinstance(group, Mapping) or _est(group.get("kappa")) is None:
        return None
    return {
        "kappa": _est(group.get("kappa")),
        "accuracy": _est(group.get("accuracy")),
        "balanced_accuracy": _est(group.get("balanced_accuracy")),
        "n": group.get("n"),
        "part": "locked",
        "labels_file": res.get("labels_file"),
        "split_seed": (res.get("split") or {}).get("seed"),
        "source": rec.get("_source"),
    }


def _label_free(rec: Mapping[str, Any], judge: str, behavior: str) -> dict[str, Any] | None:
    res = rec.get("results") or {}
    r = (res.get("per_behavior") or {}).get(behavior)
    if not isinstance(r, Mapping) or r.get("judge") != judge:
        return None
    return {
        "fmt": r.get("fmt"),
        **{k: _est(r.get(k)) for k in CHECK_KEYS},
        "passed": dict(r.get("passed") or {}),
        "source": rec.get("_source"),
    }


def validation_status(
    judge: str, behavior: str, records: Sequence[Mapping[str, Any]], *, fmt: str | None = None
) -> dict[str, Any]:
    """The status of ``judge`` (its name as in the records) for ``behavior`` in format ``fmt``:
    ``human_labels`` (locked-part κ with CI and n) or None, ``label_free`` or None, and a
    one-line ``summary``."""
    human = None
    free = None
    for rec in records:
        res = rec.get("results") or {}
        kind = rec.get("kind")
        if kind == "judge-eval" and res.get("judge") == judge and human is None:
            human = _human_labels(rec, behavior) if _same_format(res.get("format"), fmt) else None
        elif kind == "judge-checks" and free is None and _same_format(res.get("fmt"), fmt):
            free = _label_free(rec, judge, behavior)
    return {
        "judge": judge,
        "behavior": behavior,
        "format": fmt,
        "human_labels": human,
        "label_free": free,
        "summary": status_line(human, free, judge, behavior),
    }


def _ci(e: Mapping[str, Any] | None) -> str:
    if e is None:
        return "n/a"
    lo, hi = e.get("ci_low"), e.get("ci_high")
    ci = "" if lo is None or hi is None else f" [{lo:.3f}, {hi:.3f}]"
    return f"{e['value']:.3f}{ci} (n={e.get('n')})"


#: (judge name prefix, behavior) whose design was chosen with the locked half in view, so
#: its locked-part κ is not a clean hold-out. The mixture judge's hypothesis set and scoring
#: context were picked among ~10 variants by κ on ALL the authors' agreeableness labels
#: (README, "Judge vs the authors' hand labels"); nothing was fitted, but the choice saw them.
DESIGN_SAW_LOCKED: Mapping[tuple[str, str], str] = {
    ("mixture", "agreeableness"): "its hypothesis set and scoring context were chosen among "
    "~10 variants by kappa on all agreeableness labels, the locked half included",
}


def status_line(
    human: Mapping[str, Any] | None,
    free: Mapping[str, Any] | None,
    judge: str = "",
    behavior: str = "",
) -> str:
    """One line: the locked-part κ (flagged when the judge's design saw the locked half,
    :data:`DESIGN_SAW_LOCKED`), or :data:`NOT_VALIDATED`; then the label-free checks."""
    if human is not None:
        k = human["kappa"]
        seen = next(
            (why for (j, b), why in DESIGN_SAW_LOCKED.items()
             if judge.startswith(j) and b == behavior),
            None,
        )  # fmt: skip
        text = (
            (
                "kappa on the locked half of human labels (NOT a clean hold-out: " + seen + ")"
                if seen
                else "validated on the locked half of human labels"
            )
            + f": kappa {k['value']:.3f} "
            f"[{k.get('ci_low', float('nan')):.3f}, {k.get('ci_high', float('nan')):.3f}], "
            f"n={human.get('n')}"
        )
    else:
        text = NOT_VALIDATED
    if free is None:
        return text + "; label-free checks not run"
    passed = free.get("passed") or {}
    parts = [f"{k} {_ci(free.get(k))}{'' if passed.get(k) else ' FAIL'}" for k in CHECK_KEYS]
    return text + f"; label-free checks ({free.get('fmt')}): " + ", ".join(parts)
