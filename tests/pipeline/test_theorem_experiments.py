"""The Theorem 3–5 experiments (bebkit.pipeline.theorems) end to end through ``bebkit.cli.main``
on a tiny in-process model, the bounds computed from the records given with
``--beta-sigma-record`` / ``--convergence-record``, and the reproduce configs."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bebkit.cli import main
from bebkit.theory import bounds

# beta-sigma's envelope β (BETA) differs from the convergence fit's β (FIT_BETA) on purpose:
# the theorem lengths must take the fit's pair (FIT_BETA, LOG_INV_ALPHA), never BETA with it
BETA, BETA_POS, SIGMA_POS, SIGMA_NEG, LOG_INV_ALPHA, FIT_BETA = 1.5, 0.8, 0.6, 0.9, 2.0, 0.5
ALPHA = math.exp(-LOG_INV_ALPHA)


def _est(v: float) -> dict[str, Any]:
    return {"value": v, "stderr": 0.1, "n": 5, "ci_low": v - 0.2, "ci_high": v + 0.2,
            "ci_level": 0.95, "method": "test"}  # fmt: skip


def _records(root: Path) -> tuple[Path, Path]:
    bs = root / "beta-sigma.json"
    bs.write_text(json.dumps({"kind": "beta-sigma", "results": {
        "behavior": "cooperativeness", "format": "newline",
        "beta": {"estimate": _est(BETA)}, "beta_prime": {"estimate": _est(3.0)},
        "sigma2": {"estimate": _est(SIGMA_NEG**2)}, "sigma": _est(SIGMA_NEG),
        "beta_prime_pos": {"estimate": _est(BETA_POS)}, "sigma_pos": _est(SIGMA_POS),
    }}))  # fmt: skip
    fit = {"log_inv_alpha": _est(LOG_INV_ALPHA), "beta": _est(FIT_BETA), "n_star": _est(4.0)}
    conv = root / "convergence.json"
    conv.write_text(json.dumps({"kind": "convergence", "results": {
        "behavior": "cooperativeness", "format": "alternating", "target_model": "m",
        "conditions": ["none"], "fits": {"none": {"lemma5": fit, "linear": fit}},
    }}))  # fmt: skip
    return bs, conv


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A tiny Llama and a shared adapter cache (the P- adapter is trained once)."""
    from tests.cli.test_misalign_cli import _tiny_model_dir

    root = tmp_path_factory.mktemp("theorems")
    model = _tiny_model_dir(root)
    old = os.environ.get("BEBKIT_CACHE")
    os.environ["BEBKIT_CACHE"] = str(root / "cache")
    bs, conv = _records(root)
    yield {"model": model, "root": root, "beta_sigma": bs, "convergence": conv}
    if old is None:
        os.environ.pop("BEBKIT_CACHE", None)
    else:
        os.environ["BEBKIT_CACHE"] = old


def _run(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str], name: str, extra: list[str]
) -> tuple[dict[str, Any], Path]:
    out = tiny["root"] / f"out-{name}"
    args = [name, "--model", str(tiny["model"]), "--behavior", "cooperativeness", "--quick",
            "--max-sentence-tokens", "5", "--max-response-tokens", "5", "--threads", "1",
            "--beta-sigma-record", str(tiny["beta_sigma"]),
            "--convergence-record", str(tiny["convergence"]),
            "--seed", "3", "--out", str(out), "--json", *extra]  # fmt: skip
    assert main(args) == 0
    d: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == name and rec["seed"] == 3
    assert rec["results"]["behavior"] == "cooperativeness"
    assert Path(d["files"]["figure"]).read_bytes()[:4] == b"\x89PNG"
    return d, out


def test_conversation_end_to_end(tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d, out = _run(tiny, capsys, "conversation",
                  ["--n-conversations", "2", "--n-turns", "3", "--n-responses", "2",
                   "--n-kl-samples", "2"])  # fmt: skip
    assert d["turn"] == [1, 2, 3] and d["user_sentences"] == [1, 2, 3]
    assert len(d["good_fraction"]) == 3 and len(d["kl"]) == 3
    assert all(0 <= e["value"] <= 1 for e in d["good_fraction"])
    assert len(d["single_good_fraction"]) == 3
    assert d["conversation_curve"]["reply_sentences"] == [0, 1, 2]
    assert d["single_curve"]["reply_sentences"] == [0, 0, 0]
    t3 = d["theorem3"]
    # β and log 1/α: one pair off the convergence fit; β′, σ: beta-sigma's P₊ direction
    assert t3["sources"]["beta"] == t3["sources"]["log_inv_alpha"]
    assert t3["sources"]["beta"].startswith("convergence (alternating layout)")
    assert t3["sources"]["pair"] == "one fit"
    assert t3["sources"]["beta_prime"].startswith("beta-sigma (newline layout): beta_prime_pos")
    assert t3["params"]["beta"] == FIT_BETA and t3["params"]["log_inv_alpha"] == LOG_INV_ALPHA
    assert t3["params"]["sigma"] == pytest.approx(SIGMA_POS)
    want = bounds.theorem3_total_length(ALPHA, FIT_BETA, 0.1, BETA_POS, SIGMA_POS, 0.1,
                                        [1.0, 1.0])  # fmt: skip
    assert t3["length"] == pytest.approx(want)
    assert t3["detail"]["theorem1"] == pytest.approx(bounds.theorem1_length(ALPHA, FIT_BETA, 0.1))
    # model text stays out of the record
    assert "conversations" not in d["conversation_curve"]
    assert (out / "conversations.jsonl").is_file()


def test_best_of_n_end_to_end(tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    d, _ = _run(tiny, capsys, "best-of-n",
                ["--n-prompts", "2", "--n-sentences", "3", "--n-max", "4", "--n-groups", "1",
                 "--n-boot", "5", "--beta", "2.0"])  # fmt: skip
    assert d["ns"] == [1, 2, 4] and d["lengths"] == [0, 1, 3]  # alternating: n = 0 and odd n
    assert set(d["good_fraction"]) == {"1", "2", "4"}
    assert d["beta_source"] == "settings"
    # a β given in the settings is paired with the fit's log 1/α, and the record says so
    assert d["theorem4"]["4"]["sources"]["pair"].startswith("mixed: beta from settings")
    assert d["predicted_shift"]["4"] == pytest.approx(math.log(4) / 2.0)
    assert d["theorem4"]["4"]["length"] == pytest.approx(bounds.theorem4_length(ALPHA, 2.0, 0.1, 4))
    assert d["curve"]["n_groups"] == {"1": 4, "2": 2, "4": 1}
    assert "P(good)" in d["reward"]


def test_fraction_misaligned_end_to_end(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    d, _ = _run(tiny, capsys, "fraction-misaligned",
                ["--n-prompts", "3", "--n-sentences", "3", "--n-responses", "2"])  # fmt: skip
    assert d["lengths"] == [0, 1, 3] and len(d["fraction"]) == 3
    assert all(e["n"] == 3 for e in d["fraction"])
    assert all(e["ci_low"] <= e["value"] <= e["ci_high"] for e in d["fraction"])
    t5 = d["theorem5"]
    assert t5["params"]["sigma"] == pytest.approx(SIGMA_NEG)  # P- direction for Theorem 5
    want = bounds.theorem5_length(ALPHA, FIT_BETA, 0.1, SIGMA_NEG, 0.1)
    assert t5["length"] == pytest.approx(want)
    assert t5["params"]["beta"] == FIT_BETA


def test_bounds_are_missing_without_inputs(
    tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    out = tiny["root"] / "no-inputs"
    args = ["fraction-misaligned", "--model", str(tiny["model"]), "--behavior",
            "cooperativeness", "--quick", "--n-prompts", "2", "--n-sentences", "1",
            "--n-responses", "1", "--max-sentence-tokens", "4", "--max-response-tokens", "4",
            "--threads", "1", "--out", str(out), "--json"]  # fmt: skip
    assert main(args) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["theorem5"]["length"] is None and d["theorem5"]["consistent"] is None
    assert d["theorem5"]["sources"]["beta"] == "missing"


@pytest.mark.parametrize(
    ("cmd", "extra", "msg"),
    [
        ("conversation", ["--n-turns", "0"], "--n-turns must be >= 1"),
        ("best-of-n", ["--n-max", "0"], "--n-max must be in [1, 1024]"),
        ("fraction-misaligned", ["--threshold", "2"], "--threshold must be in [-1, 1]"),
        ("conversation", ["--beta-sigma-record", "/nonexistent.json"], "--beta-sigma-record"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], cmd: str, extra: list[str], msg: str
) -> None:
    assert main([cmd, "--model", "nowhere", "--behavior", "cooperativeness", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


@pytest.mark.parametrize(
    "name", ["theorems-quick.yaml", "theorems-mid.yaml", "theorems-paper.yaml"]
)
def test_reproduce_configs_load(name: str) -> None:
    from bebkit.pipeline.config import load_config
    from bebkit.pipeline.registry import experiments

    path = Path(__file__).parents[2] / "configs" / name
    cfg = load_config(path)
    on = {e.name for e in experiments().values() if cfg.enabled(e)}
    assert on == {"beta-sigma", "convergence", "conversation", "best-of-n",
                  "fraction-misaligned"}  # fmt: skip
    assert cfg.behaviors == ("cooperativeness",)
    cfg.with_quick().validate_sections()


def test_powers_of_two_and_consistency() -> None:
    from bebkit.pipeline.theorems import consistency, powers_of_two

    assert powers_of_two(16) == (1, 2, 4, 8, 16) and powers_of_two(5) == (1, 2, 4)
    assert consistency(3.0, 5.0, 10.0) is True
    assert consistency(6.0, 5.0, 10.0) is False
    assert consistency(None, 5.0, 10.0) is False  # never crossed although the bound was reached
    assert consistency(None, 20.0, 10.0) is None  # bound beyond the measured range
    assert consistency(3.0, None, 10.0) is None


def _ns_est(v: float) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(value=v)


class _Ctx:
    """The one RunContext method measured_parameters uses: the typed inputs by name."""

    def __init__(self, **inputs: Any) -> None:
        self._inputs = inputs

    def input(self, name: str) -> Any:
        return self._inputs.get(name)


def _bs_result(beta: float = BETA) -> Any:
    from types import SimpleNamespace

    return SimpleNamespace(
        format="newline", beta=SimpleNamespace(estimate=_ns_est(beta)), sigma=_ns_est(SIGMA_NEG),
        beta_prime_pos=SimpleNamespace(estimate=_ns_est(BETA_POS)), sigma_pos=_ns_est(SIGMA_POS),
    )  # fmt: skip


def _conv_result(a: float = LOG_INV_ALPHA, b: float = FIT_BETA) -> Any:
    from types import SimpleNamespace

    best = SimpleNamespace(log_inv_alpha=_ns_est(a), beta=_ns_est(b))
    return SimpleNamespace(format="alternating", fits={"none": SimpleNamespace(default=best)})


@pytest.mark.parametrize(
    ("inputs", "given", "want_beta", "want_a", "pair"),
    [
        # both results: the fit's pair, never beta-sigma's envelope β next to the fit's α
        ({"bs": True, "conv": True}, {}, FIT_BETA, LOG_INV_ALPHA, "one fit"),
        # no fit: beta-sigma's β, log 1/α missing -> no bound
        ({"bs": True, "conv": False}, {}, BETA, None, "incomplete"),
        # no fit, log 1/α given: beta-sigma's β with the given α, said to be mixed
        ({"bs": True, "conv": False}, {"log_inv_alpha": 3.0}, BETA, 3.0, "mixed"),
        # the settings' β replaces the fit's, the fit's α stays: mixed
        ({"bs": True, "conv": True}, {"beta": 2.5}, 2.5, LOG_INV_ALPHA, "mixed"),
        ({"bs": False, "conv": True}, {"beta": 2.5, "log_inv_alpha": 1.0}, 2.5, 1.0, "settings"),
        # a fit with a non-positive β supplies neither (beta-sigma's β, α missing)
        ({"bs": True, "conv": "flat"}, {}, BETA, None, "incomplete"),
    ],
)
def test_measured_parameters_take_beta_and_alpha_as_one_pair(
    inputs: dict[str, Any], given: dict[str, float], want_beta: float, want_a: float | None,
    pair: str,
) -> None:  # fmt: skip
    from bebkit.pipeline.theorems import FractionSettings, measured_parameters

    conv = {True: _conv_result(), False: None, "flat": _conv_result(b=-0.1)}[inputs["conv"]]
    ctx = _Ctx(**{"beta-sigma": _bs_result() if inputs["bs"] else None, "convergence": conv})
    s = FractionSettings(behavior="cooperativeness", **given)
    mp = measured_parameters(ctx, s, sigma_direction="neg")  # type: ignore[arg-type]
    p, src = mp["params"], mp["sources"]
    assert p["beta"] == want_beta and p["log_inv_alpha"] == want_a
    assert src["pair"].startswith(pair)
    assert p["alpha"] == (None if want_a is None else math.exp(-want_a))
    if inputs["bs"]:
        assert p["sigma"] == SIGMA_NEG and src["sigma"] == "beta-sigma (newline layout): sigma"
    else:
        assert p["sigma"] is None and src["sigma"] == "missing"
    # β from the fit next to beta-sigma's σ is said to be a mixed (β, σ) pair
    assert ("beta_sigma_pair" in src) == (src["beta"].startswith("convergence") and inputs["bs"])
    if inputs["conv"] == "flat":
        assert src["log_inv_alpha"].startswith("missing (the convergence fit")
    elif want_a is None:
        assert src["log_inv_alpha"] == "missing (no convergence fit)"
