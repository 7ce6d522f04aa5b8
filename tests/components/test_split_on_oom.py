"""``split_on_oom`` from the YAML config / ``--no-split-on-oom`` down to the model.

The out-of-memory fault is injected as in tests/models/test_oom.py: a forward pre-hook on the
tiny Llama raises CUDA's allocator error for any pass of more than one row.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from bebkit.components.adapters import ComponentSet
from bebkit.errors import InputError, RunError
from bebkit.pipeline.config import load_config
from bebkit.pipeline.registry import ComponentOptions
from bebkit.pipeline.session import ComponentProvider

from .conftest import make_llama

SEQS = [[2, 4, 9, 12, 30], [2, 5, 6, 7], [2, 8, 9]]


@contextmanager
def oom_above_one_row(model: Any) -> Iterator[None]:
    def hook(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        if kwargs["input_ids"].shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = model.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def _config(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(f"name: oom\nbehaviors: [cooperativeness]\n{extra}", encoding="utf-8")
    return path


def test_yaml_key_is_validated(tmp_path: Path) -> None:
    assert load_config(_config(tmp_path, "")).split_on_oom is True
    assert load_config(_config(tmp_path, "split_on_oom: false\n")).split_on_oom is False
    with pytest.raises(InputError, match=r"run\.yaml: split_on_oom: Input should be a valid bool"):
        load_config(_config(tmp_path, "split_on_oom: maybe\n"))


@pytest.mark.parametrize("split", [True, False])
def test_provider_setting_reaches_every_view(
    tokenizer: Any, fast_config: Any, monkeypatch: pytest.MonkeyPatch, split: bool
) -> None:
    """The provider's models split (and count) an out-of-memory batch, or let the allocator's
    error through — the base view and an adapter's view alike."""
    import bebkit.components.workflow as workflow

    torch_model = make_llama()
    monkeypatch.setattr(
        workflow,
        "load_components",
        lambda *_a, **_k: ComponentSet(torch_model, tokenizer, name="t"),
    )
    expected = (
        ComponentSet(make_llama(), tokenizer, name="ref").model("base").sequence_logprobs(SEQS)
    )
    comps = ComponentProvider(ComponentOptions(), lambda _m: None, split_on_oom=split).base("tiny")
    assert comps.split_on_oom is split
    comps.add_adapter("neg", fast_config)
    for view in (comps.model("base"), comps.model("neg")):
        with oom_above_one_row(comps.torch_model):
            if split:
                got = view.sequence_logprobs(SEQS)
            else:
                with pytest.raises(torch.OutOfMemoryError):
                    view.sequence_logprobs(SEQS)
        if split and view.adapter == "base":
            for g, e in zip(got, expected, strict=True):
                np.testing.assert_allclose(g, e, rtol=0, atol=1e-5)
    assert [comps._lm(n).oom_retries for n in ("base", "neg")] == (
        [1, 1] if split else [0, 0]
    )  # 3 rows → 1
    # Set later: applies to the views already made.
    comps.split_on_oom = not split
    assert [comps._lm(n).split_on_oom for n in ("base", "neg")] == [not split] * 2


def test_reproduce_cli_flag_and_yaml_reach_the_provider(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import bebkit.pipeline.reproduce as reproduce_mod
    from bebkit.cli import main

    seen: list[bool] = []

    def provider(*_a: Any, split_on_oom: bool = True, **_k: Any) -> Any:
        seen.append(split_on_oom)
        raise RunError("stopped by the test")

    monkeypatch.setattr(reproduce_mod, "ComponentProvider", provider)
    plain, off = _config(tmp_path, ""), tmp_path / "off.yaml"
    off.write_text(plain.read_text() + "split_on_oom: false\n", encoding="utf-8")
    out = str(tmp_path / "out")
    assert main(["reproduce", str(plain), "--out", out]) == 1
    assert main(["reproduce", str(plain), "--out", out, "--no-split-on-oom"]) == 1
    assert main(["reproduce", str(off), "--out", out]) == 1
    assert seen == [True, False, False]


def test_sweep_replicas_take_the_setting() -> None:
    from bebkit.pipeline.sweep import ModelReplica, build_sweep_config

    for split in (True, False):
        cfg = build_sweep_config({"models": ["tiny"], "split_on_oom": split}, "sweep.yaml")
        assert ModelReplica(cfg, "unused", "tiny", None).provider.split_on_oom is split
