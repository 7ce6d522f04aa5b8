"""Train / held-out splits: sizes, disjointness, determinism, dedupe, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bebkit.data import Behavior, load_behavior
from bebkit.data.splits import BehaviorSplit, dedupe, split_behavior, statement_key
from bebkit.errors import InputError


def _behavior(n_desired: int, n_undesired: int, name: str = "toy") -> Behavior:
    return Behavior(
        name=name,
        desired=tuple(f"good {i}" for i in range(n_desired)),
        undesired=tuple(f"bad {i}" for i in range(n_undesired)),
        polarity="matching",
        source="test",
        description="toy",
    )


def _keys(*parts: tuple[str, ...]) -> list[set[str]]:
    return [{statement_key(s) for s in p} for p in parts]


def test_sizes_and_disjointness() -> None:
    sp = split_behavior(_behavior(60, 70), n_train=40, n_heldout=10, seed=3)
    assert (len(sp.train_desired), len(sp.heldout_desired)) == (40, 10)
    assert (len(sp.train_undesired), len(sp.heldout_undesired)) == (40, 10)
    td, hd, tu, hu = _keys(
        sp.train_desired, sp.heldout_desired, sp.train_undesired, sp.heldout_undesired
    )
    assert not (td & hd) and not (tu & hu)
    assert not ((td | hd) & (tu | hu))
    assert all(s.startswith("good") for s in sp.train_desired + sp.heldout_desired)
    assert all(s.startswith("bad") for s in sp.train_undesired + sp.heldout_undesired)
    assert sp.seed == 3 and sp.behavior == "toy"


def test_deterministic_by_seed_and_seed_changes_split() -> None:
    b = _behavior(100, 100)
    a1 = split_behavior(b, 50, 10, seed=0)
    a2 = split_behavior(b, 50, 10, seed=0)
    c = split_behavior(b, 50, 10, seed=1)
    assert a1 == a2 and a1.content_hash() == a2.content_hash()
    assert a1.train_desired != c.train_desired
    assert a1.content_hash() != c.content_hash()
    assert len(a1.content_hash()) == 64


def test_desired_split_independent_of_undesired_count() -> None:
    s1 = split_behavior(_behavior(80, 60), 40, 10, seed=5)
    s2 = split_behavior(_behavior(80, 75), 40, 10, seed=5)
    assert s1.train_desired == s2.train_desired and s1.heldout_desired == s2.heldout_desired


def test_dedupe_before_split() -> None:
    desired = ("Be kind.", "be kind", "  Be   kind!  ", "help out", "share", "listen", "smile")
    undesired = ("hurt", "ignore", "mock", "Hurt.", "shout")
    b = Behavior("d", desired, undesired, "matching", "test", "")
    assert dedupe(desired) == ["Be kind.", "help out", "share", "listen", "smile"]
    sp = split_behavior(b, n_train=3, n_heldout=1, seed=0)
    keys = [statement_key(s) for s in sp.train_desired + sp.heldout_desired]
    assert len(keys) == len(set(keys)) == 4
    with pytest.raises(InputError, match="found 4 distinct undesired statements, need 5"):
        split_behavior(b, n_train=4, n_heldout=1)


def test_statement_on_both_sides_is_dropped() -> None:
    b = Behavior("c", ("same", "a", "b"), ("Same.", "x", "y"), "matching", "test", "")
    sp = split_behavior(b, n_train=1, n_heldout=1, seed=0)
    everything = sp.train_desired + sp.heldout_desired + sp.train_undesired + sp.heldout_undesired
    assert "same" not in {statement_key(s) for s in everything}
    with pytest.raises(InputError, match="found 2 distinct desired statements, need 3"):
        split_behavior(b, n_train=2, n_heldout=1)


def test_too_few_statements_message() -> None:
    with pytest.raises(
        InputError, match=r"behavior 'toy': found 267 distinct desired statements, need 500"
    ):
        split_behavior(_behavior(267, 600))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"n_train": 0}, "n_train must be"), ({"n_heldout": -1}, "n_heldout must be"),
     ({"seed": -2}, "seed must be"), ({"n_train": 2.5}, "n_train must be")],
)  # fmt: skip
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InputError, match=message):
        split_behavior(_behavior(10, 10), **{"n_train": 5, "n_heldout": 2, **kwargs})  # type: ignore[arg-type]


def test_to_dict() -> None:
    d = split_behavior(_behavior(10, 10), 5, 2).to_dict()
    assert d["n_train_desired"] == 5 and d["n_heldout_undesired"] == 2
    assert d["content_hash"] == split_behavior(_behavior(10, 10), 5, 2).content_hash()


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(2, 40),
    frac=st.floats(0.1, 0.9),
    seed=st.integers(0, 2**16),
)
def test_split_properties(n: int, frac: float, seed: int) -> None:
    n_train = max(1, int(n * frac))
    n_heldout = n - n_train
    sp = split_behavior(_behavior(n, n + 3), n_train, n_heldout, seed)
    assert isinstance(sp, BehaviorSplit)
    assert sorted(sp.train_desired + sp.heldout_desired) == sorted(f"good {i}" for i in range(n))
    assert not set(sp.train_undesired) & set(sp.heldout_undesired)


def test_embedded_behavior_paper_like_split() -> None:
    sp = split_behavior(load_behavior("cooperativeness"), n_train=140, n_heldout=10, seed=0)
    assert len(sp.train_desired) == len(sp.train_undesired) == 140


def test_real_persona_default_split(real_persona_dir: Path) -> None:
    sp = split_behavior(load_behavior("agreeableness", real_persona_dir))
    assert (len(sp.train_desired), len(sp.heldout_desired)) == (450, 50)
    assert (len(sp.train_undesired), len(sp.heldout_undesired)) == (450, 50)
    assert not set(sp.train_undesired) & set(sp.heldout_undesired)


def test_decoupled_halves_are_exactly_disjoint_and_cover_the_training_part() -> None:
    from bebkit.data.splits import decoupled_split

    split = split_behavior(_behavior(120, 130), n_train=101, n_heldout=10, seed=3)
    gen, judge = decoupled_split(split, "generator"), decoupled_split(split, "judge")
    for side in ("train_desired", "train_undesired"):
        g, j, whole = getattr(gen, side), getattr(judge, side), getattr(split, side)
        assert set(g).isdisjoint(j)  # exact: no statement trains both the generator and judge
        assert sorted(g + j) == sorted(whole) and len(g) == 51 and len(j) == 50
    for side in ("heldout_desired", "heldout_undesired"):
        assert getattr(gen, side) == getattr(judge, side) == getattr(split, side)
    # deterministic, and a different content hash from the shared split (adapters never clash)
    assert decoupled_split(split, "judge") == judge
    assert len({split.content_hash(), gen.content_hash(), judge.content_hash()}) == 3


def test_decoupled_split_errors() -> None:
    from bebkit.data.splits import decoupled_split

    split = split_behavior(_behavior(20, 20), n_train=5, n_heldout=2)
    with pytest.raises(InputError, match=">= 6 training statements"):
        decoupled_split(split, "judge")
    with pytest.raises(InputError, match="role must be"):
        decoupled_split(split_behavior(_behavior(20, 20), n_train=10, n_heldout=2), "shared")
