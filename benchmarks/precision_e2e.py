"""Benchmark 12: a whole ``bebkit reproduce`` run in bf16 against the same run in float32.

Benchmark 11 checks the two quantities the KL and log-ratio estimators return. This one checks
what a user reads: every estimate of every stage of ``bebkit reproduce <config> --quick`` (the
demo config by default: components, Table 1, probes, β/σ², prompt-distinguishability,
convergence, misalignment with the judge), run once with ``precision: float32`` and once with
``precision: bfloat16`` in fresh run folders (the float32 adapters are reused by both), and
the per-stage times of both.

Estimates are paired by stage and JSON path (any object with ``value``, ``stderr``,
``ci_low``, ``ci_high``); a pair *disagrees* when ``|Δ| > 1.96·√(se_a² + se_b²)``. Also
reported: how many bf16 values lie inside the float32 run's own CI, the issue's "unchanged
within their CIs".

The control: a third run, float32 with the run seed + 1 (the adapters have their own seed and
are reused), compared with the first the same way. It says how often two float32 runs that
differ only in their draws disagree — with well-calibrated CIs about 5 %, more where quick
sizes make fits and intervals fragile. The bf16 run shares the float32 run's seed, so its draws
diverge only where bf16 rounding flips a sampled token; it passes when it disagrees no more
often than the reseeded float32 run (and at most 10 %).
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import BenchContext, BenchResult, Goal
from benchmarks.end_to_end import _run_reproduce, collect_timings

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Pair:
    """One estimate in both runs: ``(value, stderr, ci_low, ci_high)`` each."""

    path: str
    a: tuple[float, float, float, float]
    b: tuple[float, float, float, float]

    @property
    def z(self) -> float:
        """``(b − a) / √(se_a² + se_b²)``; nan when neither has a stderr."""
        se = math.hypot(self.a[1], self.b[1])
        return (self.b[0] - self.a[0]) / se if se > 0 else float("nan")

    @property
    def inside(self) -> bool:
        """Whether ``b``'s value lies inside ``a``'s CI."""
        return self.a[2] <= self.b[0] <= self.a[3]


def _estimates(node: Any, path: str = "") -> Iterator[tuple[str, tuple[float, ...]]]:
    """Every estimate-shaped object under ``node`` (finite value, stderr and CI) by JSON path."""
    if isinstance(node, Mapping):
        keys = ("value", "stderr", "ci_low", "ci_high")
        vals = [node.get(k) for k in keys]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            nums = tuple(float(v) for v in vals)  # type: ignore[arg-type]
            if all(math.isfinite(v) for v in nums):
                yield path, nums
            return
        for k, v in node.items():
            yield from _estimates(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _estimates(v, f"{path}[{i}]")


def paired_estimates(rec_a: Mapping[str, Any], rec_b: Mapping[str, Any]) -> list[Pair]:
    """Estimates present in both runs' records (``results.stages[name].result``), by stage
    and path; stages or paths found in one run only are left out."""
    sa = (rec_a.get("results") or {}).get("stages") or {}
    sb = (rec_b.get("results") or {}).get("stages") or {}
    out: list[Pair] = []
    for stage in sorted(set(sa) & set(sb)):
        ea = dict(_estimates((sa[stage] or {}).get("result"), stage))
        eb = dict(_estimates((sb[stage] or {}).get("result"), stage))
        for p in sorted(set(ea) & set(eb)):
            out.append(Pair(p, ea[p], eb[p]))  # type: ignore[arg-type]
    return out


def stage_seconds(rec: Mapping[str, Any]) -> dict[str, float]:
    """Each stage's recorded seconds (cached stages included with the time they took then)."""
    stages = (rec.get("results") or {}).get("stages") or {}
    return {k: float(v.get("seconds") or 0.0) for k, v in stages.items() if isinstance(v, dict)}


def _parts(entries: list[tuple[str, str, float]]) -> dict[str, float]:
    """``"stage › part" -> seconds`` from the stages' own records (``stages/NAME/KEY/…``), so
    that runs whose stage keys differ (another precision) line up by stage name."""
    out: dict[str, float] = {}
    for rel, part, secs in entries:
        bits = rel.split("/")
        if len(bits) >= 4 and bits[0] == "stages" and not part.startswith("wall"):
            name = f"{bits[1]} › {part}"
            out[name] = out.get(name, 0.0) + secs
    return out


def compare(rec_a: Mapping[str, Any], rec_b: Mapping[str, Any]) -> dict[str, Any]:
    """The agreement summary of two runs (``a`` the reference)."""
    pairs = paired_estimates(rec_a, rec_b)
    zs = [p.z for p in pairs if math.isfinite(p.z)]
    dis = [p for p in pairs if math.isfinite(p.z) and abs(p.z) > Z95]
    return {
        "n_pairs": len(pairs),
        "n_tested": len(zs),
        "n_disagree": len(dis),
        "n_inside": sum(p.inside for p in pairs),
        "max_abs_z": max((abs(z) for z in zs), default=float("nan")),
        "worst": sorted(
            ({"path": p.path, "a": p.a[0], "b": p.b[0], "z": p.z} for p in dis),
            key=lambda d: -abs(d["z"]),
        )[:8],
    }


def run(ctx: BenchContext) -> BenchResult:
    cfg = ctx.reproduce_config
    if cfg is None or not cfg.is_file():
        raise FileNotFoundError(f"reproduce config {cfg} not found")
    with tempfile.TemporaryDirectory(prefix="bebkit-bench-precision-e2e-") as tmp:
        root = Path(tmp)
        half_cfg = root / cfg.name
        data = yaml.safe_load(cfg.read_text()) or {}
        if data.get("precision", "float32") != "float32":
            raise ValueError(f"{cfg} already sets precision: {data['precision']}")
        data["precision"] = "bfloat16"  # the same config with bf16 model calls
        half_cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        reseed_cfg = root / "reseed" / cfg.name
        reseed_cfg.parent.mkdir()
        reseeded = {**data, "precision": "float32", "seed": int(data.get("seed", 0)) + 1}
        reseed_cfg.write_text(yaml.safe_dump(reseeded, sort_keys=False))
        recs: dict[str, dict[str, Any]] = {}
        wall: dict[str, float] = {}
        timings: dict[str, list[tuple[str, str, float]]] = {}
        # the control first: it trains (or loads) every adapter the config needs, so neither
        # timed run pays for training that the other then reuses
        runs = (("float32_reseeded", reseed_cfg), ("float32", cfg), ("bf16", half_cfg))
        for name, path in runs:
            out = root / name
            wall[name], _ = _run_reproduce(path, out)
            recs[name] = json.loads((out / "record.json").read_text())
            timings[name] = collect_timings(out)
    summary = compare(recs["float32"], recs["bf16"])
    control = compare(recs["float32"], recs["float32_reseeded"])
    s32, s16 = stage_seconds(recs["float32"]), stage_seconds(recs["bf16"])
    rows: list[list[Any]] = []
    for stage in s32:
        a, b = s32[stage], s16.get(stage, float("nan"))
        rows.append([stage, a, b, a / b if b > 0 else float("nan")])
    # the stages' own parts (sampling, KL, judging …; training is never one of them)
    parts = {name: _parts(t) for name, t in timings.items()}
    for part, a in parts["float32"].items():
        b = parts["bf16"].get(part, float("nan"))
        rows.append([f"  {part}", a, b, a / b if b > 0 else float("nan")])
    t32 = sum(s for k, s in s32.items() if not k.startswith("components"))
    t16 = sum(s for k, s in s16.items() if not k.startswith("components"))
    rows.append(["all stages but components", t32, t16, t32 / t16 if t16 > 0 else float("nan")])
    n = summary["n_tested"]
    frac_dis = summary["n_disagree"] / n if n else float("nan")
    n_c = control["n_tested"]
    frac_ctl = control["n_disagree"] / n_c if n_c else float("nan")
    notes = [
        f"`bebkit reproduce {cfg.name} --quick` in fresh run folders: float32 and the same "
        f"config with `precision: bfloat16`, wall {wall['float32']:.0f} s and "
        f"{wall['bf16']:.0f} s (start-up and model loading included; "
        "the control ran first and trained or loaded every adapter, so both timed runs reuse "
        "them); indented rows are a stage's own parts (sampling, KL, judging …).",
        f"{summary['n_pairs']} estimates in both runs; {n} with a stderr: "
        f"{summary['n_disagree']} disagree at 95 % (|Δ| > 1.96·√(se₃₂² + se₁₆²), "
        f"{100 * frac_dis:.1f} %; ≈ 5 % expected by chance if bf16 changed nothing), largest "
        f"|z| = {summary['max_abs_z']:.2f}; {summary['n_inside']} of {summary['n_pairs']} bf16 "
        "values lie inside the float32 run's CI.",
        f"control, float32 with seed + 1 against float32 (wall {wall['float32_reseeded']:.0f} s): "
        f"{control['n_disagree']} of {n_c} disagree ({100 * frac_ctl:.1f} %), largest |z| = "
        f"{control['max_abs_z']:.2f}; {control['n_inside']} of {control['n_pairs']} values inside "
        "the float32 run's CI.",
    ]
    for w in summary["worst"]:
        notes.append(
            f"bf16 disagrees: `{w['path']}` float32 {w['a']:.4g}, bf16 {w['b']:.4g} "
            f"(z {w['z']:+.2f})"
        )
    for w in control["worst"]:
        notes.append(
            f"reseeded float32 disagrees: `{w['path']}` {w['a']:.4g} vs {w['b']:.4g} "
            f"(z {w['z']:+.2f})"
        )
    return BenchResult(
        name="precision_e2e",
        title="12. A whole reproduce run in bf16 vs float32 (every estimate, every stage)",
        headers=["stage", "float32 s", "bf16 s", "speed-up"],
        rows=rows,
        goals=[
            # no more often than a reseeded float32 run, and at most twice the chance rate
            Goal(
                "bf16 estimates disagreeing with float32 at 95 % (≤ reseeded control, ≤ 10 %)",
                100 * frac_dis,
                min(10.0, 100 * frac_ctl) if math.isfinite(frac_ctl) else 10.0,
                higher_is_better=False,
                unit="%",
            ),
        ],
        notes=notes,
        data={
            "summary": summary,
            "control": control,
            "seconds": {"float32": s32, "bf16": s16},
            "wall_s": wall,
        },
    )
