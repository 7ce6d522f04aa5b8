"""A long computation killed between its units and resumed gives exactly the uninterrupted
result: prompt sampling (per sentence round), KL curves (per prompt) and the whole β/σ²
experiment, on the exact synthetic world."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bebkit.checkpoint import Checkpoint
from bebkit.estimators.kl import kl_curves
from bebkit.estimators.prompts import sample_prompts
from bebkit.pipeline.beta_sigma import BetaSigmaSettings, run_beta_sigma
from bebkit.synthetic.world import world_from_params


class Killed(Exception):
    """Stands for a SIGKILL between two units."""


class Dying(Checkpoint):
    """A checkpoint whose process dies right after it stored its ``after``-th fresh unit."""

    def __init__(self, folder: Path, after: int) -> None:
        super().__init__(folder)
        self.after = after

    def unit(self, *args: Any, **kwargs: Any) -> Any:
        value = super().unit(*args, **kwargs)
        if self.computed >= self.after:
            raise Killed
        return value


def _world() -> Any:
    return world_from_params(0.05, 1.2, n_sentences=8, seed=3)


def _prompts(w: Any, ck: Checkpoint | None, seed: int = 5) -> Any:
    return sample_prompts(
        w.component_model("neg"), n_prompts=4, n_sentences=5, rng=np.random.default_rng(seed),
        stop_ids=w.sentence_end_token_ids, checkpoint=ck,
    )  # fmt: skip


@pytest.mark.parametrize("after", [1, 3])
def test_prompt_sampling_resumes_at_the_first_unfinished_round(tmp_path: Path, after: int) -> None:
    w = _world()
    want = _prompts(w, None)
    with pytest.raises(Killed):
        _prompts(w, Dying(tmp_path, after))
    assert len(list(tmp_path.glob("prompts-*.json"))) == after
    ck = Checkpoint(tmp_path)
    got = _prompts(w, ck)
    assert got == want  # tokens, boundaries, spans, texts, truncation flags: all equal
    assert ck.summary() == {"reused": after, "computed": 5 - after, "discarded": 0}


def test_a_stored_round_of_another_sampler_is_not_reused(tmp_path: Path) -> None:
    w = _world()
    _prompts(w, Checkpoint(tmp_path), seed=5)
    ck = Checkpoint(tmp_path)
    # other draws in round 0 → the rounds after it read other prompts and are recomputed too
    got = _prompts(w, ck, seed=6)
    assert got == _prompts(w, None, seed=6)
    assert ck.reused == 0


def _kl(w: Any, prompts: Any, ck: Checkpoint | None) -> Any:
    neg, pos = w.component_model("neg"), w.component_model("pos")
    return kl_curves(
        neg, {"P+": (pos, None)}, prompts, estimator="rb", unit="sentence", n_samples=6,
        stop_ids=w.sentence_end_token_ids, rng=np.random.default_rng(9), checkpoint=ck,
    )["P+"]  # fmt: skip


def test_kl_curves_resume_at_the_first_unfinished_prompt(tmp_path: Path) -> None:
    w = _world()
    prompts = _prompts(w, None)
    want = _kl(w, prompts, None)
    with pytest.raises(Killed):
        _kl(w, prompts, Dying(tmp_path, 2))
    ck = Checkpoint(tmp_path)
    got = _kl(w, prompts, ck)
    assert ck.summary() == {"reused": 2, "computed": 2, "discarded": 0}
    np.testing.assert_array_equal(got.per_prompt, want.per_prompt)
    np.testing.assert_array_equal(got.per_prompt_stderr, want.per_prompt_stderr)
    np.testing.assert_array_equal(got.n_truncated, want.n_truncated)
    # and a row really came from the store: other prompts under the same unit names
    other = _prompts(w, None, seed=11)
    ck2 = Checkpoint(tmp_path)
    _kl(w, other, ck2)
    assert ck2.reused == 0


def test_beta_sigma_killed_anywhere_resumes_to_the_uninterrupted_numbers(tmp_path: Path) -> None:
    w = _world()
    neg, pos = w.component_model("neg"), w.component_model("pos")
    s = BetaSigmaSettings(
        behavior="synthetic", fmt="newline", n_prompts=3, n_sentences=3, n_samples=6,
        n_tokens=w.codec.code_length + 1, n_var_prompts=5, n_boot=100, seed=2,
    )  # fmt: skip

    def run(out: Path, ck: Checkpoint | None) -> dict[str, Any]:
        r = run_beta_sigma(neg, pos, s, out, stop_ids=w.sentence_end_token_ids, checkpoint=ck)
        return {k: r[k] for k in ("kl", "log_ratio", "pos_direction", "beta", "sigma2",
                                  "beta_prime_pos", "sigma2_pos", "positivity")}  # fmt: skip

    want = run(tmp_path / "clean", None)
    # units: 3 + 3 sentence rounds (P- and P+ prompt sets), 3 + 3 KL rows: kill inside each part
    for after in (2, 5, 8):
        folder = tmp_path / f"units-{after}"
        with pytest.raises(Killed):
            run(tmp_path / f"killed-{after}", Dying(folder, after))
        ck = Checkpoint(folder)
        assert run(tmp_path / f"killed-{after}", ck) == want
        assert ck.reused == after and ck.reused + ck.computed == 12


def test_responses_resume_at_the_first_unfinished_prompt(tmp_path: Path) -> None:
    from bebkit.estimators.behavior import ResponseConfig, sample_responses

    w = _world()
    prompts = _prompts(w, None)
    cfg = ResponseConfig(
        n_responses=5, max_response_tokens=w.codec.code_length + 1, aligning_prompt="ab."
    )

    def run(ck: Checkpoint | None) -> Any:
        seen: list[tuple[int, int]] = []
        rs = sample_responses(
            w.language_model(), prompts, rng=np.random.default_rng(4), config=cfg,
            stop_ids=w.sentence_end_token_ids, checkpoint=ck,
            progress=lambda d, t: seen.append((d, t)),
        )  # fmt: skip
        return rs, seen

    want, want_progress = run(None)
    with pytest.raises(Killed):
        run(Dying(tmp_path, 3))
    ck = Checkpoint(tmp_path)
    got, progress = run(ck)
    assert got == want and ck.summary() == {"reused": 3, "computed": 1, "discarded": 0}
    # the progress still ends at the total (stored prompts count as done)
    assert progress[-1] == want_progress[-1]


def test_a_kl_row_sampled_in_other_chunks_is_not_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rows sampled together (set by the distributions memory budget) decide how the
    generator's draws fall: a row stored under another chunk size is recomputed, never
    mixed into a curve drawn under this one."""
    monkeypatch.delenv("BEBKIT_DIST_BUDGET_MB", raising=False)  # the module budget rules
    w = _world()
    prompts = _prompts(w, None)
    _kl(w, prompts, Checkpoint(tmp_path))
    same = Checkpoint(tmp_path)
    _kl(w, prompts, same)
    assert same.reused == 4
    import bebkit.estimators.kl as kl

    # a smaller budget that still holds a full group of rows: same layout, rows reused
    v = w.language_model().vocab_size
    monkeypatch.setattr(kl, "_DIST_BUDGET_BYTES", (kl._GROUP_ROWS + 5) * 48 * v * 8)
    again = Checkpoint(tmp_path)
    _kl(w, prompts, again)
    assert again.reused == 4
    # 4 rows: each prefix's 6 samples in two chunks → other draws, recomputed
    monkeypatch.setattr(kl, "_DIST_BUDGET_BYTES", 4 * 48 * v * 8)
    other = Checkpoint(tmp_path)
    _kl(w, prompts, other)
    assert other.reused == 0 and other.computed == 4
