"""Real SIGKILLs during adapter training and publishing, and two processes on one adapter.

Each test starts Python subprocesses that import torch (several seconds each on the shared
box), hence ``slow``. The reference is an uninterrupted run in this process: the rerun after
the kill must give bit-identical adapter weights and never read the partial folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from bebkit.components.adapters import ComponentSet
from bebkit.components.manifest import component_dir
from bebkit.components.workflow import ensure_components, prepare_data
from bebkit.integrity import verify

from ._worker import CONFIG, TOY
from .conftest import make_llama, make_tokenizer

WORKER = Path(__file__).with_name("_worker.py")
pytestmark = pytest.mark.slow


def _spawn(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "BEBKIT_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(WORKER), *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip


def _lines_until(proc: subprocess.Popen[str], needle: str) -> list[str]:
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line.rstrip("\n"))
        if needle in line:
            return seen
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"worker ended without {needle!r}: {seen} {err[-2000:]}")


def _finish(proc: subprocess.Popen[str]) -> dict[str, Any]:
    result = [line for line in _lines_until(proc, "RESULT") if line.startswith("RESULT")]
    assert proc.wait(timeout=300) == 0
    return dict(json.loads(result[0].split(" ", 1)[1]))


def _close(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=60)
    for s in (proc.stdout, proc.stderr):
        if s is not None:
            s.close()


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k: v.clone() for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, torch.Tensor]:
    """The uninterrupted run's adapter (trained in this process, same config and seed)."""
    out = tmp_path_factory.mktemp("ref")
    torch.set_num_threads(1)
    tok = make_tokenizer()
    comps = ComponentSet(make_llama(), tok, name="tiny")
    data = prepare_data(TOY, "newline", tok, CONFIG)
    ensure_components(comps, data, CONFIG, out=out, progress=False, sides=("neg",), num_threads=1)
    return _weights(component_dir(out, "toy", "newline", "neg"))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def _visible(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".lock" not in p.name)


@pytest.mark.parametrize(
    ("mode", "marker"), [("pause-train", "TRAINING"), ("pause-publish", "PUBLISHING")]
)
def test_sigkill_then_rerun_gives_the_uninterrupted_adapter(
    tmp_path: Path, reference: dict[str, torch.Tensor], mode: str, marker: str
) -> None:
    victim = _spawn(str(tmp_path), mode)
    try:
        _lines_until(victim, marker)
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=60) == -signal.SIGKILL
    finally:
        _close(victim)
    parent = tmp_path / "toy" / "newline"
    left = _visible(parent)
    assert "neg" not in left  # nothing published
    if mode == "pause-publish":
        assert len(left) == 1 and left[0].startswith(".neg.tmp-")  # the partial staging folder
    rerun = _spawn(str(tmp_path), "plain")
    try:
        assert _finish(rerun) == {"reused": False}  # the kill did not leave a usable lock/folder
    finally:
        _close(rerun)
    assert _visible(parent) == ["neg"]  # stale staging folder removed
    folder = component_dir(tmp_path, "toy", "newline", "neg")
    verify(folder, deep=True)
    _same(_weights(folder), reference)


def test_two_processes_train_one_adapter_once(
    tmp_path: Path, reference: dict[str, torch.Tensor]
) -> None:
    go = tmp_path / "go"
    first = _spawn(str(tmp_path / "out"), "hold-train", str(go))
    second: subprocess.Popen[str] | None = None
    try:
        _lines_until(first, "TRAINING")  # first holds the adapter lock, mid-training
        second = _spawn(str(tmp_path / "out"), "plain")
        waiting = [ln for ln in _lines_until(second, "waiting for neg adapter") if "waiting" in ln]
        assert f"pid {first.pid}" in waiting[0]
        go.touch()
        assert _finish(first) == {"reused": False}
        assert _finish(second) == {"reused": True}  # waited, then used the published one
    finally:
        _close(first)
        if second is not None:
            _close(second)
    _same(_weights(component_dir(tmp_path / "out", "toy", "newline", "neg")), reference)
