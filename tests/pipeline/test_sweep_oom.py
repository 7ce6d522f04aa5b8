"""Out-of-memory in a sweep unit is reported: the replica returns (and logs) the batch
halvings it took, a unit that still does not fit fails with one line, and sweep.json carries
the counts per unit and per model."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("torch")

from bebkit.errors import BatchOutOfMemoryError
from bebkit.models import hf
from bebkit.pipeline import sweep
from bebkit.pipeline.sweep import ModelReplica, Unit, UnitState, build_sweep_config

UNIT = Unit(id="tiny/b/probe", model="tiny", runs_on="tiny", behavior="b", experiment="probe",
            stage="probes", folder="row", key="k")  # fmt: skip


def test_units_report_their_out_of_memory_halvings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hf, "_OOM_RETRIES", Counter({"tiny:pos": 5}))  # earlier units' halvings
    outcome = {"key": "k", "folder": "f", "seconds": 1.0, "cached": False, "result": {}}

    def fits_after_halving(*_a: Any, **_k: Any) -> dict[str, Any]:
        hf._OOM_RETRIES["tiny:neg"] += 2  # what HFLanguageModel counts on each halving
        return outcome

    def never_fits(*_a: Any, **_k: Any) -> dict[str, Any]:
        hf._OOM_RETRIES["tiny:neg"] += 1
        raise BatchOutOfMemoryError("tiny:neg: out of memory on a batch of one row (x)")

    cfg = build_sweep_config({"models": ["tiny"]}, "sweep.yaml")
    replica = ModelReplica(cfg, str(tmp_path), "tiny", None)
    monkeypatch.setattr(sweep, "execute_unit", fits_after_halving)
    done = replica.run(UNIT, {})
    assert done["status"] == "done" and done["oom_retries"] == {"tiny:neg": 2}
    log = (tmp_path / "logs" / "tiny__b__probe.log").read_text()
    assert "tiny:neg: out of memory: 2 batch halving(s), same numbers" in log

    monkeypatch.setattr(sweep, "execute_unit", never_fits)
    failed = replica.run(UNIT, {})
    assert failed["status"] == "failed" and failed["oom_retries"] == {"tiny:neg": 1}
    assert failed["error"] == (
        "BatchOutOfMemoryError: tiny:neg: out of memory on a batch of one row (x)"
    )

    other = Unit(**{**UNIT.__dict__, "id": "tiny/c/probe", "behavior": "c"})
    states = {
        UNIT.id: UnitState(UNIT, "failed", failed["error"], oom_retries=failed["oom_retries"]),
        other.id: UnitState(other, "done", oom_retries=done["oom_retries"]),
    }
    state = sweep.sweep_state(cfg, states, "failed", 1.0)
    assert [u["oom_retries"] for u in state["units"]] == [{"tiny:neg": 1}, {"tiny:neg": 2}]
    assert state["oom_retries"] == {"tiny:neg": 3}
