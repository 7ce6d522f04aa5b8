"""Converted-model cache: integrity on reuse, SIGKILL mid-conversion, full disk, unknown names.

The GGUF conversion itself is replaced by a fake that saves a tiny seeded Llama (the
dequantisation is transformers' code, tested in test_bundled.py); what is tested here is
bebkit's publish / verify / lock logic around it.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_llama, make_tokenizer

torch = pytest.importorskip("torch")

from bebkit.errors import InputError, RunError  # noqa: E402
from bebkit.integrity import IntegrityError, verify  # noqa: E402
from bebkit.models import loading  # noqa: E402
from bebkit.models.hf import HFLanguageModel  # noqa: E402
from bebkit.models.loading import load_model  # noqa: E402

SEQS = [[2, 4, 6, 8], [2, 5, 7]]


def _fake_convert(calls: list[Path]) -> Any:
    def convert(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        make_llama(1).save_pretrained(out, safe_serialization=True)
        make_tokenizer().save_pretrained(out)

    return convert


@pytest.fixture
def bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(loading.BUNDLED_MODELS, "tiny-bundle", lambda work: work / "x.gguf")
    calls: list[Path] = []
    monkeypatch.setattr(loading, "convert_gguf", _fake_convert(calls))
    return calls


def _reference() -> list[np.ndarray]:
    return list(HFLanguageModel(make_llama(1), make_tokenizer()).sequence_logprobs(SEQS))


def _assert_reference(loaded: Any) -> None:
    got = HFLanguageModel(loaded.model, loaded.tokenizer).sequence_logprobs(SEQS)
    for a, b in zip(_reference(), got, strict=True):
        np.testing.assert_array_equal(a, b)


def _visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".lock" not in p.name)


def test_damaged_conversion_is_detected_and_redone(bundle: list[Path], tmp_path: Path) -> None:
    folder = loading.ensure_bundled("tiny-bundle")
    assert verify(folder, deep=True).files >= 3  # weights, config, tokenizer files
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a truncated weights file
    with pytest.raises(IntegrityError) as info:
        load_model("tiny-bundle", recompute=False)
    assert str(info.value).startswith(
        "converted model tiny-bundle: model.safetensors has 1000 bytes, recorded"
    )
    assert len(bundle) == 1
    messages: list[str] = []
    assert loading.ensure_bundled("tiny-bundle", log_fn=messages.append) == folder
    assert len(bundle) == 2 and "converting it again" in messages[0]
    _assert_reference(load_model("tiny-bundle"))
    assert _visible(tmp_path / "cache" / "models") == ["tiny-bundle"]
    load_model("tiny-bundle")
    assert len(bundle) == 2  # intact now: reused


def test_a_folder_without_integrity_record_is_not_trusted(bundle: list[Path]) -> None:
    folder = loading.ensure_bundled("tiny-bundle")
    (folder / "bebkit-integrity.json").unlink()  # e.g. converted by an older bebkit
    with pytest.raises(IntegrityError, match="no integrity record"):
        loading.ensure_bundled("tiny-bundle", recompute=False)
    loading.ensure_bundled("tiny-bundle", log_fn=lambda _m: None)
    assert len(bundle) == 2


def test_full_disk_during_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle: list[Path]
) -> None:
    def full(gguf: Path, out: Path) -> None:
        make_llama(1).save_pretrained(out, safe_serialization=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(loading, "convert_gguf", full)
    with pytest.raises(RunError) as info:
        load_model("tiny-bundle")
    models = tmp_path / "cache" / "models"
    assert str(info.value) == (
        f"cannot write converted model tiny-bundle in {models}: no space left on device; "
        "nothing was published"
    )
    assert _visible(models) == []


KILLED = textwrap.dedent(
    """
    import os, sys, time
    sys.path.insert(0, sys.argv[1])
    from conftest import make_llama, make_tokenizer
    from bebkit.models import loading
    def convert(gguf, out):
        make_llama(1).save_pretrained(out, safe_serialization=True)
        print("HALF", flush=True)  # weights written, tokenizer not yet: kill here
        time.sleep(300)
        make_tokenizer().save_pretrained(out)
    loading.BUNDLED_MODELS["tiny-bundle"] = lambda work: work / "x.gguf"
    loading.convert_gguf = convert
    loading.ensure_bundled("tiny-bundle")
    """
)


@pytest.mark.slow
def test_sigkill_mid_conversion_then_rerun(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bundle: list[Path]
) -> None:
    env = {**os.environ, "BEBKIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    here = str(Path(__file__).parent)
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED, here], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert proc.stdout is not None
        assert "HALF" in proc.stdout.readline()
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    models = tmp_path / "cache" / "models"
    left = _visible(models)
    assert "tiny-bundle" not in left and any(n.startswith(".tiny-bundle.tmp-") for n in left)
    loaded = load_model("tiny-bundle")  # converts again (lock released by the kill)
    assert len(bundle) == 1
    assert _visible(models) == ["tiny-bundle"]  # partial staging folder removed
    _assert_reference(loaded)


def test_unknown_model_offline_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(InputError) as info:
        load_model("someorg/no-such-model-xyz")
    assert str(info.value) == (
        "cannot load model 'someorg/no-such-model-xyz': not a bundled model or an existing "
        "path, and not in the local Hugging Face cache (HF_HUB_OFFLINE is set) "
        "(bundled models: smollm2-135m-instruct, gemma-3-270m)"
    )


def test_unreachable_hub_is_one_line_without_retries(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from huggingface_hub import HfApi, constants

    calls: list[str] = []

    def unreachable(self: Any, repo_id: str, **kwargs: Any) -> Any:
        calls.append(repo_id)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(HfApi, "model_info", unreachable)
    with pytest.raises(InputError) as info:
        load_model("someorg/no-such-model-xyz")
    msg = str(info.value)
    assert "\n" not in msg and "Hugging Face Hub is unreachable" in msg
    assert calls == ["someorg/no-such-model-xyz"]  # one request, no retries
    assert not [r for r in caplog.records if "Retrying" in r.getMessage()]
