"""Checkpoints inside long computations: reuse exactly what was finished, nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bebkit.checkpoint import Checkpoint


def _draws(rng: np.random.Generator, calls: list[str], name: str) -> list[float]:
    calls.append(name)
    return [float(x) for x in rng.standard_normal(3)]


def _chain(
    folder: Path | None, calls: list[str], names: list[str]
) -> tuple[list[list[float]], float]:
    """Units drawn from one generator in order, then one draw after them all."""
    rng = np.random.default_rng(7)
    ck = Checkpoint(folder)
    vals = [
        ck.unit(n, rng, lambda n=n: _draws(rng, calls, n), dump=list, load=list, reads={"n": n})
        for n in names
    ]
    return vals, float(rng.standard_normal())


def test_a_stored_unit_is_reused_with_the_generator_state_after_it(tmp_path: Path) -> None:
    plain_calls: list[str] = []
    want = _chain(None, plain_calls, ["a", "b", "c"])
    assert plain_calls == ["a", "b", "c"]

    first: list[str] = []
    _chain(tmp_path, first, ["a", "b"])  # an attempt killed after two units
    resumed: list[str] = []
    got = _chain(tmp_path, resumed, ["a", "b", "c"])
    assert resumed == ["c"]  # a and b were not recomputed
    # c and the draw after it see exactly the generator state of an uninterrupted run
    assert got == want


def test_a_unit_is_not_reused_from_another_generator_state(tmp_path: Path) -> None:
    """Same name, same reads, other seed: the generator state is part of what a unit read."""
    calls: list[str] = []
    rng = np.random.default_rng(1)
    Checkpoint(tmp_path).unit("a", rng, lambda: _draws(rng, calls, "a"), dump=list, load=list)
    other = np.random.default_rng(2)
    ck = Checkpoint(tmp_path)
    got = ck.unit("a", other, lambda: _draws(other, calls, "a"), dump=list, load=list)
    assert calls == ["a", "a"] and ck.reused == 0
    assert got == [float(x) for x in np.random.default_rng(2).standard_normal(3)]


def test_a_unit_that_read_something_else_is_recomputed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ck = Checkpoint(tmp_path)
    ck.unit("u", rng, lambda: [1.0], dump=list, load=list, reads={"prompt": [1, 2]})
    again = Checkpoint(tmp_path)
    assert again.unit("u", rng, lambda: [2.0], dump=list, load=list, reads={"prompt": [1, 3]}) == [
        2.0
    ]
    assert again.summary() == {"reused": 0, "computed": 1}
    # and the recomputed value replaced the stored one
    third = Checkpoint(tmp_path)
    assert third.unit("u", rng, lambda: [3.0], dump=list, load=list, reads={"prompt": [1, 3]}) == [
        2.0
    ]
    assert third.summary() == {"reused": 1, "computed": 0}


@pytest.mark.parametrize("damage", ["torn", "not-json-object", "other-format", "no-state"])
def test_a_damaged_unit_is_recomputed(tmp_path: Path, damage: str) -> None:
    rng = np.random.default_rng(0)
    Checkpoint(tmp_path).unit("u", rng, lambda: [1.0], dump=list, load=list, reads=1)
    f = tmp_path / "u.json"
    stored = json.loads(f.read_text())
    if damage == "torn":
        f.write_text(f.read_text()[:20])
    elif damage == "not-json-object":
        f.write_text("[1, 2]")
    elif damage == "other-format":
        f.write_text(json.dumps({**stored, "format": 0}))
    else:
        del stored["rng_state"]
        f.write_text(json.dumps(stored))
    ck = Checkpoint(tmp_path)
    assert ck.unit("u", rng, lambda: [5.0], dump=list, load=list, reads=1) == [5.0]
    assert ck.computed == 1


def test_without_a_folder_nothing_is_stored_or_reused(tmp_path: Path) -> None:
    calls: list[str] = []
    _chain(None, calls, ["a"])
    _chain(None, calls, ["a"])
    assert calls == ["a", "a"] and not any(tmp_path.iterdir())


def test_nan_values_survive_a_resume(tmp_path: Path) -> None:
    """KL stderrs can be NaN (one continuation); JSON has no NaN, the store maps it to null."""
    rng = np.random.default_rng(0)
    Checkpoint(tmp_path).unit("u", rng, lambda: [float("nan"), 1.5], dump=list, load=list)
    got = Checkpoint(tmp_path).unit("u", rng, lambda: [0.0, 0.0], dump=list, load=list)
    assert got[0] is None and got[1] == 1.5
