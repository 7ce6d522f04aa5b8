"""Split sizes, manifests (reuse vs retrain, atomic publish) and the train-and-classify flow."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bebkit.components.adapters import ComponentSet
from bebkit.components.manifest import (
    MANIFEST,
    component_dir,
    find_reusable,
    kept_dir,
    manifest_key,
    publish,
    read_manifest,
)
from bebkit.components.workflow import (
    ensure_components,
    prepare_data,
    resolve_split_sizes,
    train_and_classify,
)
from bebkit.data.behaviors import Behavior
from bebkit.errors import InputError

from .conftest import BAD, GOOD, make_llama

TOY = Behavior("toy", tuple(GOOD), tuple(BAD), "matching", "test", "tiny test behavior")


def test_split_sizes_adapt_to_the_behavior() -> None:
    assert resolve_split_sizes("b", 500, 500) == (450, 50)
    assert resolve_split_sizes("b", 700, 520) == (450, 50)
    assert resolve_split_sizes("cooperativeness", 150, 160) == (130, 20)
    assert resolve_split_sizes("b", 300, 300) == (260, 40)
    assert resolve_split_sizes("b", 40, 40) == (30, 10)
    assert resolve_split_sizes("b", 150, 150, n_train=100, n_heldout=5) == (100, 5)
    with pytest.raises(InputError, match="only 150 distinct statements"):
        resolve_split_sizes("b", 150, 200, n_train=450, n_heldout=50)
    with pytest.raises(InputError, match="need >= 3"):
        resolve_split_sizes("b", 12, 12)


def test_manifest_key_is_canonical() -> None:
    a = manifest_key({"x": 1, "y": [1, 2], "z": {"b": 1, "a": 2}})
    b = manifest_key({"z": {"a": 2, "b": 1}, "y": [1, 2], "x": 1})
    assert a == b and a != manifest_key({"x": 2, "y": [1, 2], "z": {"b": 1, "a": 2}})


def _writer(folder: Path) -> None:
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"x")


def test_publish_is_atomic(tmp_path: Path) -> None:
    target = component_dir(tmp_path, "b", "newline", "neg")
    publish(target, _writer, {"key": "k1"})
    assert find_reusable(target, "k1") is not None and find_reusable(target, "k2") is None

    def crash(folder: Path) -> None:
        _writer(folder)
        raise KeyboardInterrupt  # killed mid-write

    with pytest.raises(KeyboardInterrupt):
        publish(target, crash, {"key": "k2"})
    # The old complete adapter is untouched and no temp folder is left behind.
    assert read_manifest(target) == {"key": "k1"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["neg"]
    publish(target, _writer, {"key": "k2"})  # replacing an existing folder works
    assert read_manifest(target) == {"key": "k2"}
    assert sorted(p.name for p in target.parent.iterdir()) == ["neg"]
    (target / "adapter_model.safetensors").unlink()  # incomplete -> never reused
    assert read_manifest(target) is None


def test_prepare_data_renders_both_sides(tokenizer: Any, fast_config: Any) -> None:
    cfg = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3})
    data = prepare_data(TOY, "chat", tokenizer, cfg, split_seed=1)
    assert len(data.split.train_desired) == 9 and len(data.heldout["neg"]) == 3
    assert len(data.texts["neg"]) == 9  # 3 groups x 3 rotations
    assert all(t.startswith("<bos>user") for t in data.texts["pos"])
    assert set(data.split.train_undesired) <= set(BAD)
    with pytest.raises(InputError, match="format"):
        prepare_data(TOY, "xml", tokenizer, cfg)


def test_reuse_when_inputs_match_and_retrain_when_not(
    tokenizer: Any, fast_config: Any, tmp_path: Path
) -> None:
    cfg = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3, "epochs": 2})
    logs: list[str] = []
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    first = train_and_classify(
        comps, TOY, config=cfg, out=tmp_path, progress=False, log=logs.append
    )
    assert not first.sides["neg"].reused and not first.sides["pos"].reused
    assert first.classification is not None and first.classification.overall.n == 6
    m = json.loads((tmp_path / "toy" / "newline" / "neg" / MANIFEST).read_text())
    assert m["inputs"]["base_fingerprint"] == comps.fingerprint
    assert m["inputs"]["hyperparameters"]["lr"] == cfg.lr
    assert m["metrics"]["final_loss"] > 0 and m["metrics"]["wall_time_s"] > 0
    assert m["versions"]["peft"]

    # A fresh process (new ComponentSet on an identical base) reuses both adapters.
    logs.clear()
    again = ComponentSet(make_llama(), tokenizer, name="tiny")
    second = train_and_classify(
        again, TOY, config=cfg, out=tmp_path, progress=False, log=logs.append
    )
    assert second.sides["neg"].reused and second.sides["pos"].reused
    assert any(line.startswith("reusing neg") for line in logs)
    assert second.classification is not None
    assert second.classification.to_dict()["accuracy"] == first.classification.to_dict()["accuracy"]

    # Different hyper-parameters -> retrain; a different base model -> retrain.
    changed = cfg.model_copy(update={"lr": cfg.lr / 2})
    data = prepare_data(TOY, "newline", tokenizer, changed)
    st = ensure_components(again, data, changed, out=tmp_path, progress=False)
    assert not st["neg"].reused and not st["pos"].reused
    other_base = ComponentSet(make_llama(seed=1), tokenizer, name="tiny")
    with pytest.raises(InputError, match="no trained neg adapter"):
        ensure_components(other_base, data, changed, out=tmp_path, train_missing=False)
    st = ensure_components(again, data, changed, out=tmp_path, train_missing=False)
    assert st["neg"].reused and again.adapters == ("neg", "pos")


def test_other_recipes_are_kept_and_swapped_back(
    tokenizer: Any, fast_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Training another recipe keeps the one in place; asking for it again swaps it back
    (same files, no training), also when the kept ones are full; the recipe set aside
    longest ago goes first beyond MAX_KEPT; a damaged kept copy is not used."""
    import bebkit.components.manifest as manifest
    from bebkit.integrity import IntegrityError

    monkeypatch.setattr(manifest, "MAX_KEPT", 2)
    base = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3, "epochs": 1})
    recipes = [base.model_copy(update={"lr": base.lr * f}) for f in (1.0, 0.5, 0.25, 0.125)]
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    folder = component_dir(tmp_path, "toy", "newline", "neg")

    def ensure(i: int, **kw: Any) -> Any:
        data = prepare_data(TOY, "newline", tokenizer, recipes[i])
        return ensure_components(
            comps, data, recipes[i], out=tmp_path, progress=False, sides=("neg",), **kw
        )["neg"]

    def in_place() -> str:
        m = read_manifest(folder)
        assert m is not None
        return str(m["key"])

    def kept() -> list[str]:
        return sorted(p.name for p in kept_dir(folder).iterdir())

    keys, weights = [], []
    for i in range(3):  # r0, r1, r2: the kept ones are then full (r0, r1)
        assert not ensure(i).reused
        keys.append(in_place())
        weights.append(_weights(folder))
    assert kept() == sorted(keys[:2])
    again = ensure(0, train_missing=False)  # the oldest, swapped back while full
    assert again.reused and again.path == folder and in_place() == keys[0]
    _assert_same_weights(_weights(folder), weights[0])
    assert kept() == sorted(keys[1:3])
    assert "neg" in comps.adapters

    assert not ensure(3).reused  # r0 set aside: r1, set aside longest ago, goes
    keys.append(in_place())
    assert kept() == sorted([keys[0], keys[2]])
    # where a run that used a recipe finds it now (align's variants load by path and key)
    assert manifest.locate_recipe(folder, keys[3]) == folder
    assert manifest.locate_recipe(folder, keys[0]) == kept_dir(folder) / keys[0]
    assert manifest.locate_recipe(folder, keys[1]) is None  # evicted
    with pytest.raises(InputError, match="no trained neg adapter"):
        ensure(1, train_missing=False)
    assert ensure(2, train_missing=False).reused  # r3 set aside in r2's place
    _assert_same_weights(_weights(folder), weights[2])
    assert kept() == sorted([keys[0], keys[3]])

    wfile = kept_dir(folder) / keys[0] / "adapter_model.safetensors"
    wfile.write_bytes(wfile.read_bytes()[:-64])  # a damaged kept copy
    with pytest.raises(IntegrityError, match="adapter_model"):
        ensure(0, recompute=False)
    logs: list[str] = []
    assert not ensure(0, log=logs.append).reused  # trained again, not loaded
    assert any("training it again" in line for line in logs)
    _assert_same_weights(_weights(folder), weights[0])  # the same recipe, retrained
    assert kept() == sorted([keys[2], keys[3]])  # (the damaged copy was the oldest)


def test_ensure_only_the_requested_side(tokenizer: Any, fast_config: Any, tmp_path: Path) -> None:
    cfg = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3, "epochs": 1})
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    data = prepare_data(TOY, "newline", tokenizer, cfg)
    st = ensure_components(comps, data, cfg, out=tmp_path, progress=False, sides=("neg",))
    assert set(st) == {"neg"} and comps.adapters == ("neg",)
    assert not (tmp_path / "toy" / "newline" / "pos").exists()
    with pytest.raises(InputError, match="subset"):
        ensure_components(comps, data, cfg, out=tmp_path, sides=("mid",))


def _weights(folder: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    # clone(): safetensors may hand out views of a memory map, which a later truncation of
    # the same file would change under us.
    return {k: v.clone() for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}


def _assert_same_weights(a: dict[str, Any], b: dict[str, Any]) -> None:
    import torch

    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_damaged_adapter_is_retrained_or_refused(
    tokenizer: Any, fast_config: Any, tmp_path: Path
) -> None:
    from bebkit.integrity import IntegrityError

    cfg = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3, "epochs": 1})
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    data = prepare_data(TOY, "newline", tokenizer, cfg)
    ensure_components(comps, data, cfg, out=tmp_path, progress=False, sides=("neg",))
    folder = component_dir(tmp_path, "toy", "newline", "neg")
    good = _weights(folder)
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-64])  # truncated

    with pytest.raises(IntegrityError, match=r"adapter_model\.safetensors has \d+ bytes"):
        ensure_components(
            comps, data, cfg, out=tmp_path, progress=False, sides=("neg",), recompute=False
        )
    assert comps.adapters == ()  # nothing half-loaded stays registered
    logs: list[str] = []
    st = ensure_components(
        comps, data, cfg, out=tmp_path, progress=False, sides=("neg",), log=logs.append
    )
    assert not st["neg"].reused
    assert any("(truncated or replaced); training it again" in line for line in logs)
    _assert_same_weights(_weights(folder), good)  # retrained to the identical adapter
    assert not kept_dir(folder).exists()  # the damaged copy was replaced, not kept

    # A hand-edited manifest (same key, other metrics) is caught too.
    m = json.loads((folder / MANIFEST).read_text())
    m["metrics"]["final_loss"] = 0.0
    (folder / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(IntegrityError, match=r"manifest\.json"):
        ensure_components(
            comps, data, cfg, out=tmp_path, progress=False, sides=("neg",), recompute=False
        )


def test_disk_full_while_saving_an_adapter(
    tokenizer: Any, fast_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    from bebkit.errors import RunError

    cfg = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3, "epochs": 1})
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    data = prepare_data(TOY, "newline", tokenizer, cfg)
    real_save = ComponentSet.save_adapter

    def full(self: ComponentSet, name: str, path: Any) -> None:
        real_save(self, name, path)  # the files are written ...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk fills up

    monkeypatch.setattr(ComponentSet, "save_adapter", full)
    with pytest.raises(RunError) as info:
        ensure_components(comps, data, cfg, out=tmp_path, progress=False, sides=("neg",))
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("cannot write neg adapter for toy/newline in ")
    assert msg.endswith("no space left on device; nothing was published")
    parent = tmp_path / "toy" / "newline"
    assert sorted(p.name for p in parent.iterdir() if ".lock" not in p.name) == []
    assert comps.adapters == ()


def test_decoupled_roles_train_disjoint_adapters_beside_the_shared_ones(
    tokenizer: Any, fast_config: Any, tmp_path: Path
) -> None:
    from bebkit.components.workflow import (
        JUDGE_SEED_OFFSET,
        adapter_name,
        component_inputs,
    )

    cfg = fast_config.model_copy(update={"n_train": 9, "n_heldout": 3, "epochs": 1})
    comps = ComponentSet(make_llama(), tokenizer, name="tiny")
    shared = prepare_data(TOY, "newline", tokenizer, cfg)
    gen = prepare_data(TOY, "newline", tokenizer, cfg, role="generator")
    judge = prepare_data(TOY, "newline", tokenizer, cfg, role="judge")
    for side in ("train_desired", "train_undesired"):
        g, j = getattr(gen.split, side), getattr(judge.split, side)
        assert set(g).isdisjoint(j) and set(g) | set(j) == set(getattr(shared.split, side))
    assert gen.texts["neg"] != judge.texts["neg"]

    # The shared manifest inputs are what they were before roles existed (adapters reused).
    inp = component_inputs(comps, shared, "neg", cfg, seed=0)
    assert "role" not in inp and inp["seed"] == 0
    j_inp = component_inputs(comps, judge, "neg", cfg, seed=0)
    assert j_inp["role"] == "judge" and j_inp["seed"] == JUDGE_SEED_OFFSET
    keys = {manifest_key(component_inputs(comps, d, "neg", cfg, seed=0)) for d in
            (shared, gen, judge)}  # fmt: skip
    assert len(keys) == 3

    st_g = ensure_components(comps, gen, cfg, out=tmp_path, progress=False, sides=("neg",))
    st_j = ensure_components(comps, judge, cfg, out=tmp_path, progress=False, sides=("neg",))
    assert set(st_g) == {"generator_neg"} and set(st_j) == {"judge_neg"}
    assert set(comps.adapters) == {"generator_neg", "judge_neg"}
    assert (tmp_path / "toy" / "newline" / "judge_neg" / MANIFEST).is_file()
    assert not (tmp_path / "toy" / "newline" / "neg").exists()  # the shared one is untouched
    assert adapter_name("pos", "judge") == "judge_pos" and adapter_name("neg") == "neg"
    with pytest.raises(InputError, match="role must be"):
        adapter_name("neg", "critic")
