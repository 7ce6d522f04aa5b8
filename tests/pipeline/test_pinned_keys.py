"""The stage keys of the embedded demo, pinned as literals.

A stage key decides whether a finished stage is reused: a change of any key makes every
archived run and sweep unit of that experiment recompute, and a result that changed without
its key changing is silently stale. Keys are meant to move only deliberately (an
experiment's ``version``, an estimator revision, new settings or data), so they are pinned
here: when a change is intended, update the literals below in the same commit and say why.
Planning keys loads no model (bundled models enter by name, the embedded behavior by the
content hash of its statements), so this runs anywhere. The pins are the keys of a fresh
machine, where no shared data is configured: the ``BEBKIT_*`` data variables are cleared
here (CI sets them when ``../shared`` exists, and the authors' figures are a stage input).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bebkit.paths import DATA_VARIABLES
from bebkit.pipeline.config import ReproduceConfig
from bebkit.pipeline.reproduce import build_stages
from bebkit.pipeline.session import ComponentProvider
from bebkit.pipeline.stages import plan_keys

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"

#: ``configs/demo.yaml`` as ``make demo`` runs it (``--quick``): the keys of the README's demo
#: run, unchanged from commit 3c1eddc (checked by planning them with that commit's code).
QUICK = {
    "probes": "dfe37e4720123363",
    "components-cooperativeness": "ec05f3a63d522e2c",
    "beta-sigma-cooperativeness": "843b540bf6fc10cb",
    "prompt-dist-cooperativeness": "3f6ce11b0470ab52",
    "convergence-cooperativeness": "ee7194ee345cd7a1",
    "misalign-cooperativeness": "7b76974d59b777eb",
}
#: the same config at its full sizes (``bebkit reproduce configs/demo.yaml``)
FULL = {
    "probes": "12ecad6221ebff62",
    "components-cooperativeness": "a5c711ffb74d9cac",
    "beta-sigma-cooperativeness": "1dbcdc8520d64bfe",
    "prompt-dist-cooperativeness": "0b8e584f30282001",
    "convergence-cooperativeness": "53eae0647fce2191",
    "misalign-cooperativeness": "5558d32495bcfdf4",
}


@pytest.fixture(autouse=True)
def _fresh_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in DATA_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    yield


def _keys(quick: bool, **update: object) -> dict[str, str]:
    raw = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    raw.update(update)
    cfg = ReproduceConfig.model_validate(raw)
    cfg = cfg.with_quick() if quick else cfg
    provider = ComponentProvider(
        cfg.components,
        lambda _m: None,
        persona_dir=cfg.persona_dir,
        split_on_oom=cfg.split_on_oom,
        precision=cfg.precision,
    )
    return plan_keys(build_stages(cfg, provider, lambda _m: None), cfg.seed)


@pytest.mark.parametrize(("quick", "want"), [(True, QUICK), (False, FULL)], ids=["quick", "full"])
def test_demo_stage_keys_are_pinned(quick: bool, want: dict[str, str]) -> None:
    assert _keys(quick) == want


def test_the_pins_can_fail() -> None:
    """A settings change, a seed change and bf16 each move the keys they should."""
    base = _keys(True)
    seeded = _keys(True, seed=1)
    assert all(seeded[k] != base[k] for k in base)  # the run seed enters every stage
    half = _keys(True, precision="bfloat16")
    assert half["misalign-cooperativeness"] != base["misalign-cooperativeness"]
    assert half["probes"] != base["probes"]  # every model-reading stage records its precision
    wider = _keys(False, probe={"n_per_side": 50})  # one experiment's settings: its key
    assert wider["probes"] != FULL["probes"]
    assert {k: v for k, v in wider.items() if k != "probes"} == {
        k: v for k, v in FULL.items() if k != "probes"
    }


def test_the_authors_figures_move_exactly_the_stages_that_read_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a reference folder configured, the stages comparing with the paper's numbers
    change key (the figures file enters by content hash) and the others keep theirs; a
    different file content moves them again."""
    ref = tmp_path / "reference"
    ref.mkdir()
    figures = ref / "authors-figures.json"
    figures.write_text('{"figures": {}}', encoding="utf-8")
    monkeypatch.setenv("BEBKIT_REFERENCE_DIR", str(ref))
    with_ref = _keys(True)
    readers = {k for k in QUICK if with_ref[k] != QUICK[k]}
    assert readers == {
        "beta-sigma-cooperativeness",
        "prompt-dist-cooperativeness",
        "convergence-cooperativeness",
        "misalign-cooperativeness",
    }
    figures.write_text('{"figures": {"x": 1}}', encoding="utf-8")
    edited = _keys(True)
    assert all(edited[k] != with_ref[k] for k in readers)
    assert all(edited[k] == QUICK[k] for k in QUICK if k not in readers)
