"""load_model: local folders, the bundled-model cache (atomic conversion), and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import make_llama, make_tokenizer

torch = pytest.importorskip("torch")

from bebkit.errors import InputError  # noqa: E402
from bebkit.models import loading  # noqa: E402
from bebkit.models.hf import HFLanguageModel  # noqa: E402
from bebkit.models.loading import LoadedModel, load_model  # noqa: E402


def _save_tiny(folder: Path, seed: int = 0) -> Any:
    model = make_llama(seed)
    model.save_pretrained(folder, safe_serialization=True)
    make_tokenizer().save_pretrained(folder)
    return model


def _entries(folder: Path) -> list[str]:
    """Folder contents except lock files (never deleted, see bebkit.locks)."""
    return sorted(p.name for p in folder.iterdir() if ".lock" not in p.name)


def test_load_local_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tiny-llama"
    ref = _save_tiny(folder)
    loaded = load_model(folder)
    assert isinstance(loaded, LoadedModel)
    assert loaded.name == "tiny-llama"
    assert loaded.path == folder.resolve()
    assert not loaded.model.training
    assert next(loaded.model.parameters()).dtype == torch.float32
    ids = torch.tensor([[2, 4, 6, 8]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(ids).logits, ref(ids).logits)
    lm = HFLanguageModel(loaded.model, loaded.tokenizer, name=loaded.name)
    assert lm.encode("the cat") == [4, 6]
    with pytest.raises(AttributeError):
        loaded.name = "x"  # type: ignore[misc]


def test_load_local_folder_bf16(tmp_path: Path) -> None:
    folder = tmp_path / "m"
    _save_tiny(folder)
    loaded = load_model(str(folder), dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "name, match",
    [
        ("/definitely/not/here", "does not exist"),
        ("./nope-model", "does not exist"),
        ("missing.gguf", "does not exist"),
        ("not a valid model id!!", "cannot load model"),
    ],
)
def test_missing_model_is_input_error(name: str, match: str) -> None:
    with pytest.raises(InputError, match=match) as info:
        load_model(name)
    msg = str(info.value)
    assert "\n" not in msg
    assert "smollm2-135m-instruct" in msg and "gemma-3-270m" in msg


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="dtype"):
        load_model(tmp_path, dtype="float8")
    with pytest.raises(InputError, match=r"no config\.json"):
        load_model(tmp_path)
    f = tmp_path / "weights.bin"
    f.write_bytes(b"")
    with pytest.raises(InputError, match="is a file"):
        load_model(f)
    with pytest.raises(InputError, match="bundled"):
        loading.ensure_bundled("no-such-bundle")


def test_bundled_conversion_is_atomic_and_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(loading.BUNDLED_MODELS, "tiny-bundle", lambda work: work / "x.gguf")
    calls: list[Path] = []

    def broken(gguf: Path, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text("{}")  # half-written folder, then the process "dies"
        raise RuntimeError("killed")

    monkeypatch.setattr(loading, "convert_gguf", broken)
    with pytest.raises(RuntimeError, match="killed"):
        loading.ensure_bundled("tiny-bundle")
    models_dir = tmp_path / "cache" / "models"
    assert _entries(models_dir) == []  # no half folder, no temp leftovers (lock files aside)

    def good(gguf: Path, out: Path) -> None:
        calls.append(gguf)
        _save_tiny(out, seed=1)

    monkeypatch.setattr(loading, "convert_gguf", good)
    loaded = load_model("tiny-bundle")
    assert loaded.name == "tiny-bundle"
    assert loaded.path == models_dir / "tiny-bundle"
    assert (loaded.path / "bebkit_conversion.json").is_file()
    assert _entries(models_dir) == ["tiny-bundle"]
    load_model("tiny-bundle")
    assert len(calls) == 1  # converted once, then read from the cache
    lm = HFLanguageModel(loaded.model, loaded.tokenizer)
    lp = lm.sequence_logprobs([[2, 4, 6]])[0]
    assert lp.shape == (2,) and np.all(lp < 0)
