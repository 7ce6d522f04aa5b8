"""Checkpoints inside long computations: reuse exactly what was finished, nothing else."""

from __future__ import annotations

import json
import math
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
    assert again.summary() == {"reused": 0, "computed": 1, "discarded": 1}
    # and the recomputed value replaced the stored one
    third = Checkpoint(tmp_path)
    assert third.unit("u", rng, lambda: [3.0], dump=list, load=list, reads={"prompt": [1, 3]}) == [
        2.0
    ]
    assert third.summary() == {"reused": 1, "computed": 0, "discarded": 0}


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


def test_non_finite_values_survive_a_resume_exactly(tmp_path: Path) -> None:
    """A KL stderr can be NaN (one continuation) and a KL estimate +inf (Q = 0 where P > 0):
    both must come back as themselves, not as null / NaN."""
    rng = np.random.default_rng(0)
    vals = [float("nan"), float("inf"), float("-inf"), 1.5, 0.1 + 0.2]
    Checkpoint(tmp_path).unit("u", rng, lambda: list(vals), dump=list, load=list)
    ck = Checkpoint(tmp_path)
    got = ck.unit("u", rng, lambda: [0.0] * 5, dump=list, load=list)
    assert ck.reused == 1 and math.isnan(got[0]) and got[1:] == vals[1:]


def test_a_unit_of_other_code_or_thread_count_is_recomputed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit computed before a code change (or with another torch thread count, which
    changes float rounding) is never mixed with units of the current code."""
    import bebkit.checkpoint as mod

    rng = np.random.default_rng(0)
    ident = mod.code_identity()
    Checkpoint(tmp_path).unit("u", rng, lambda: [1.0], dump=list, load=list)
    for changed in ({**ident, "bebkit_source": "0" * 64}, {**ident, "torch_threads": 97}):
        monkeypatch.setattr(mod, "code_identity", lambda changed=changed: changed)
        ck = Checkpoint(tmp_path)
        assert ck.unit("u", rng, lambda: [2.0], dump=list, load=list) == [2.0]
        assert ck.summary() == {"reused": 0, "computed": 1, "discarded": 1}
        monkeypatch.setattr(mod, "code_identity", lambda: ident)
        Checkpoint(tmp_path).unit("u", rng, lambda: [1.0], dump=list, load=list)


def test_the_code_identity_follows_the_source_and_torch_threads() -> None:
    import torch

    import bebkit.checkpoint as mod

    ident = mod.code_identity()
    assert len(ident["bebkit_source"]) == 64 and ident["numpy"] == np.__version__
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(before + 1)
        assert mod.code_identity()["torch_threads"] == before + 1
    finally:
        torch.set_num_threads(before)


def test_a_stored_value_this_code_cannot_read_is_recomputed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Checkpoint(tmp_path).unit("u", rng, lambda: {"a": 1}, dump=dict, load=dict)
    ck = Checkpoint(tmp_path)
    got = ck.unit("u", rng, lambda: {"b": 2}, dump=dict, load=lambda d: {"b": d["b"]})
    assert got == {"b": 2} and ck.summary() == {"reused": 0, "computed": 1, "discarded": 1}


def test_a_forgotten_unit_is_recomputed_and_others_are_kept(tmp_path: Path) -> None:
    calls: list[str] = []

    def compute(name: str) -> int:
        calls.append(name)
        return len(calls)

    def run(cp: Checkpoint, name: str) -> int:
        return cp.unit(name, None, lambda: compute(name), dump=int, load=int, reads=name)

    first = Checkpoint(tmp_path)
    assert (run(first, "a"), run(first, "b")) == (1, 2)
    first.forget("a")
    first.forget("never-stored")  # nothing to remove is not an error
    again = Checkpoint(tmp_path)
    assert (run(again, "a"), run(again, "b")) == (3, 2)
    assert calls == ["a", "b", "a"] and again.summary() == {
        "reused": 1, "computed": 1, "discarded": 0}  # fmt: skip
    Checkpoint(None).forget("a")  # no folder: nothing stored, nothing to forget


def test_a_unit_computed_with_other_weights_is_recomputed(tmp_path: Path) -> None:
    """``identity`` (the adapters' weight hashes) enters the fingerprint: same weights →
    reused; an adapter retrained to other weights under the same recipe → recomputed."""
    weights = {"agreeableness/newline/neg/shared": "aa11"}

    def run() -> tuple[Checkpoint, list[str]]:
        calls: list[str] = []
        rng = np.random.default_rng(3)
        ck = Checkpoint(tmp_path, identity=lambda: dict(weights))
        ck.unit("u", rng, lambda: _draws(rng, calls, "u"), dump=list, load=list, reads={})
        return ck, calls

    run()
    ck, calls = run()
    assert ck.summary() == {"reused": 1, "computed": 0, "discarded": 0} and calls == []
    weights["agreeableness/newline/neg/shared"] = "bb22"
    ck, calls = run()
    assert ck.summary() == {"reused": 0, "computed": 1, "discarded": 1} and calls == ["u"]


def test_units_record_their_cpu_outside_the_fingerprint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A unit stored on one CPU is reused on another (same code, versions, threads and
    weights); each stored file names the CPU that computed it, and units written before
    the CPU was recorded count as ``not recorded``."""
    from bebkit import checkpoint
    from bebkit.checkpoint import UNRECORDED_MACHINE, units_provenance

    monkeypatch.setattr(checkpoint, "machine_identity", lambda: "CPU A")
    calls: list[str] = []
    _chain(tmp_path, calls, ["a", "b"])
    assert json.loads((tmp_path / "a.json").read_text())["machine"] == "CPU A"
    monkeypatch.setattr(checkpoint, "machine_identity", lambda: "CPU B")
    calls.clear()
    _chain(tmp_path, calls, ["a", "b", "c"])
    assert calls == ["c"]  # a and b reused across the change of CPU
    old = json.loads((tmp_path / "b.json").read_text())
    del old["machine"]
    (tmp_path / "b.json").write_text(json.dumps(old))
    (tmp_path / "junk.json").write_text("{ not json")
    assert units_provenance(tmp_path) == {
        "units": 3,
        "machines": {"CPU A": 1, UNRECORDED_MACHINE: 1, "CPU B": 1},
    }
    assert units_provenance(tmp_path / "absent") is None


def test_machine_identity_names_a_cpu() -> None:
    from bebkit.checkpoint import cpu_model_from, machine_identity

    text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9654\n"
    assert cpu_model_from(text) == "AMD EPYC 9654"
    assert cpu_model_from(text + "model name\t: other\n") == "AMD EPYC 9654"  # first one
    assert cpu_model_from("processor\t: 0\nmodel name\t:   \n") is None  # empty: fall back
    assert cpu_model_from("processor\t: 0\n") is None
    name = machine_identity()
    assert isinstance(name, str) and name.strip() == name and name
