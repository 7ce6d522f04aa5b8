"""Subprocess worker for the kill / concurrency tests: ensure the toy ``neg`` adapter.

``python _worker.py OUT MODE`` — MODE ``plain`` runs to the end; ``pause-train`` prints
``TRAINING`` after two optimiser steps and sleeps (to be SIGKILLed mid-training);
``pause-publish`` writes the adapter config into the staging folder, prints ``PUBLISHING``
and sleeps (killed between two file writes); ``hold-train GO`` pauses mid-training until the
file GO exists. Prints ``RESULT <json>`` at the end.
"""

from __future__ import annotations

import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

warnings.simplefilter("ignore")

import torch  # noqa: E402

try:  # imported by test_faults.py as part of the tests package
    from .conftest import BAD, GOOD, make_llama, make_tokenizer
except ImportError:  # run as a script in the worker subprocess
    sys.path.insert(0, str(Path(__file__).parent))
    from conftest import BAD, GOOD, make_llama, make_tokenizer  # type: ignore[no-redef]

from bebkit.components.adapters import ComponentSet  # noqa: E402
from bebkit.components.presets import get_preset  # noqa: E402
from bebkit.components.workflow import ensure_components, prepare_data  # noqa: E402
from bebkit.data.behaviors import Behavior  # noqa: E402

TOY = Behavior("toy", tuple(GOOD), tuple(BAD), "matching", "test", "tiny test behavior")
CONFIG = get_preset(
    "small", lr=3e-2, epochs=1, min_steps=0, batch_size=4, bf16=False, warmup_ratio=0.0,
    n_train=9, n_heldout=3,
)  # fmt: skip


def _pause(label: str, go: Path | None) -> None:
    print(label, flush=True)
    while go is None or not go.exists():
        time.sleep(0.02)


def main() -> None:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    go = Path(sys.argv[3]) if len(sys.argv) > 3 else None
    torch.set_num_threads(1)
    if mode in ("pause-train", "hold-train"):
        real_step = torch.optim.AdamW.step
        calls = {"n": 0}

        def step(self: Any, *a: Any, **k: Any) -> Any:
            res = real_step(self, *a, **k)
            calls["n"] += 1
            if calls["n"] == 2:
                _pause("TRAINING", go)
            return res

        torch.optim.AdamW.step = step  # type: ignore[method-assign]
    if mode == "pause-publish":
        real_save = ComponentSet.save_adapter

        def save(self: ComponentSet, name: str, path: Any) -> None:
            self._peft.peft_config[name].save_pretrained(str(path))  # first file only
            _pause("PUBLISHING", None)
            real_save(self, name, path)

        ComponentSet.save_adapter = save  # type: ignore[method-assign]
    tok = make_tokenizer()
    comps = ComponentSet(make_llama(), tok, name="tiny")
    data = prepare_data(TOY, "newline", tok, CONFIG)
    st = ensure_components(
        comps, data, CONFIG, out=out, progress=False, sides=("neg",), num_threads=1,
        log=lambda m: print("LOG", m, flush=True),
    )  # fmt: skip
    print("RESULT", json.dumps({"reused": st["neg"].reused}), flush=True)


if __name__ == "__main__":
    main()
