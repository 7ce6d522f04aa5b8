"""A sweep unit is reused only while its folder holds exactly what was published."""

from __future__ import annotations

import json
from pathlib import Path

from bebkit.pipeline.stages import Stage, StageRunner
from bebkit.pipeline.sweep import Unit, _read_cached


def _published(root: Path) -> Unit:
    runner = StageRunner(root / "row", seed=0)
    out = runner.run(Stage("probes", lambda ctx: {"accuracy": 0.75}, config={"n": 3}))
    return Unit(id="u1", model="m", runs_on="m", behavior="b", experiment="probe",
                stage="probes", folder="row", key=out.key)  # fmt: skip


def test_an_intact_unit_is_read_back(tmp_path: Path) -> None:
    unit = _published(tmp_path)
    cached = _read_cached(unit, tmp_path)
    assert cached is not None and cached["result"] == {"accuracy": 0.75}


def test_a_damaged_unit_is_not_trusted_by_its_key(tmp_path: Path) -> None:
    unit = _published(tmp_path)
    path = unit.result_path(tmp_path)
    payload = json.loads(path.read_text())
    payload["result"]["accuracy"] = 0.99  # same key, different number
    path.write_text(json.dumps(payload))
    said: list[str] = []
    assert _read_cached(unit, tmp_path, said.append) is None
    assert len(said) == 1 and said[0].startswith("u1: invalid:") and "recomputing" in said[0]
    # and the StageRunner a worker uses recomputes it to the published number
    runner = StageRunner(tmp_path / "row", seed=0)
    out = runner.run(Stage("probes", lambda ctx: {"accuracy": 0.75}, config={"n": 3}))
    assert out.key == unit.key and out.result == {"accuracy": 0.75} and not out.cached
