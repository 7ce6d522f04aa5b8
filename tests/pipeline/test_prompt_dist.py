"""``run_prompt_dist`` (appendix N) on an exact Markov synthetic world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bebkit.estimators.prompts import NEWLINE, chat_format, load_prompts
from bebkit.pipeline.prompt_dist import (
    PromptDistSettings,
    run_prompt_dist,
    summary_lines,
    unit_text,
)
from bebkit.synthetic.lm import exact_kl
from bebkit.synthetic.world import world_from_params


def test_kl_along_s0_and_prompts_matches_exact(tmp_path: Path) -> None:
    # Markov components: the KL depends on the last sentence, so a neutral prefix can have
    # low KL and a negative sentence high KL (Definition 3).
    w = world_from_params(0.01, 1.0, n_sentences=8, seed=0, markov=True)
    truth = w.params()
    neg, pos = w.component_model("neg"), w.component_model("pos")
    stops = w.sentence_end_token_ids
    neutral = tuple(neg.decode(w.encode_sentences([x], bos=False)) for x in (6, 7))
    # the default unit is the sentence (Definition 2's); n_tokens = 8 (almost three of this
    # world's 3-token sentences) must not enter, so a run that measured tokens fails below
    s = PromptDistSettings(behavior="synthetic", fmt="newline", neutral=neutral, n_prompts=4,
                           n_sentences=3, n_samples=48, n_boot=200, seed=2,
                           undesired_source="sampled")  # fmt: skip
    assert s.unit == "sentence" and s.n_tokens != w.codec.code_length + 1
    r = run_prompt_dist(neg, pos, s, tmp_path, stop_ids=stops)
    assert r["unit"] == "sentence" and r["kl"]["unit"] == "sentence"
    s0 = r["s0"]
    assert s0["n_sentences"] == 3 and s0["undesired_source"].startswith("sampled from")
    # inside s₀: one estimate per prefix length, each consistent with the exact KL
    units = [unit_text(NEWLINE, x) for x in neutral] + [s0["undesired_sentence"]]
    for k, e in enumerate(r["prefix_kl"]["estimates"], start=1):
        ctx = [0, *neg.encode("".join(units[:k]))]
        assert abs(e["value"] - exact_kl(neg, pos, ctx, n_sentences=1)) <= 4 * e["stderr"] + 1e-9
        assert e["n"] == 48 * 4
    assert r["kl"]["x"] == [4, 5, 6]
    # after s0: the mean over the run's own prompts of the exact next-sentence KL
    prompts = load_prompts(tmp_path / "prompts.jsonl")
    for j, (n, e) in enumerate(zip(r["kl"]["n"], r["kl"]["estimates"], strict=True)):
        exact = np.mean([exact_kl(neg, pos, list(pr.tokens[: pr.boundaries[n]]), n_sentences=1)
                         for pr in prompts])  # fmt: skip
        assert abs(e["value"] - exact) <= 4 * e["stderr"] + 1e-9, (j, e["value"], exact)
    # every KL point is ≥ the world's min-context KL β, so the fitted lower envelope's CI
    # reaches at least β
    bp = r["beta_prompt"]["estimate"]
    assert bp["ci_high"] >= truth.beta - 1e-9
    assert bp["value"] == pytest.approx(min(
        [r["undesired_kl"]["value"], *[e["value"] for e in r["kl"]["estimates"]]]))  # fmt: skip
    rec = json.loads((tmp_path / "record.json").read_text())
    assert rec["kind"] == "prompt-distinguishability"
    assert (tmp_path / "prompt_dist.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "prompt_dist.svg").is_file()
    assert "beta_prompt" in "\n".join(summary_lines(r))


def test_given_undesired_sentence_and_unit_text(tmp_path: Path) -> None:
    w = world_from_params(0.01, 1.0, n_sentences=4, seed=0, markov=True)
    neg, pos = w.component_model("neg"), w.component_model("pos")
    assert unit_text(NEWLINE, "I lie.") == "I lie.\n"
    assert unit_text(NEWLINE, "I lie.\n") == "I lie.\n"
    chat = chat_format(lambda m, g: "".join(f"<{x['role']}>{x['content']}</>" for x in m)
                       + ("<assistant>" if g else ""))  # fmt: skip
    assert unit_text(chat, " I lie. ") == "<user>I lie.</>"
    s = PromptDistSettings(behavior="s", fmt="newline", neutral=("a.",), undesired_sentence="b.",
                           n_prompts=2, n_sentences=1, n_samples=4, n_tokens=2, n_boot=100)  # fmt: skip
    r = run_prompt_dist(neg, pos, s, tmp_path, stop_ids=w.sentence_end_token_ids)
    assert r["s0"]["undesired_source"] == "given" and r["s0"]["text"] == "a.\nb.\n"
    with pytest.raises(ValueError):
        PromptDistSettings(behavior="s", neutral=(" ",))


def test_s0_ends_in_a_held_out_undesired_statement_by_default(tmp_path: Path) -> None:
    """Definition 3 needs s0's last sentence to be undesired: by default it is one of the
    behavior's held-out undesired statements (chosen by seed, independent of their order),
    never an unchecked draw of P-; without such statements the run stops before sampling."""
    from bebkit.errors import InputError

    w = world_from_params(0.01, 1.0, n_sentences=4, seed=0, markov=True)
    neg, pos = w.component_model("neg"), w.component_model("pos")
    sents = [neg.decode(w.encode_sentences([x], bos=False)) for x in range(4)]
    pool = [x.strip() for x in sents[:3]]
    s = PromptDistSettings(behavior="s", fmt="newline", neutral=(sents[3].strip(),),
                           n_prompts=2, n_sentences=1, n_samples=4, n_boot=100, seed=5)  # fmt: skip
    assert s.undesired_source == "heldout"
    r = run_prompt_dist(neg, pos, s, tmp_path / "a", stop_ids=w.sentence_end_token_ids,
                        undesired_pool=pool)  # fmt: skip
    assert r["s0"]["undesired_sentence"] in pool
    assert r["s0"]["undesired_source"].startswith("held-out undesired statement")
    assert r["s0"]["text"].endswith(r["s0"]["undesired_sentence"] + "\n")
    again = run_prompt_dist(neg, pos, s, tmp_path / "b", stop_ids=w.sentence_end_token_ids,
                            undesired_pool=pool[::-1])  # fmt: skip
    assert again["s0"]["undesired_sentence"] == r["s0"]["undesired_sentence"]
    with pytest.raises(InputError, match="held-out undesired"):
        run_prompt_dist(neg, pos, s, tmp_path / "c", stop_ids=w.sentence_end_token_ids)
    assert r["paper"] is None  # the paper gives beta_prompt for agreeableness only


def test_prompt_dist_refuses_alternating_layouts() -> None:
    for layout in ("alternating", "chat", "llama2-inst"):
        with pytest.raises(ValueError, match="laid out alike"):
            PromptDistSettings(behavior="s", fmt=layout)
    assert PromptDistSettings(behavior="s", fmt="user-turns").fmt == "user-turns"
