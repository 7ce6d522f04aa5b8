"""Response sampling and behavior-expectation curves: exact synthetic world, call counts, tables."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimators.behavior import (
    ALIGN,
    NO_ALIGN,
    Response,
    ResponseConfig,
    behavior_curves,
    judge_responses,
    read_responses,
    response_format,
    sample_responses,
    write_responses,
)
from bebkit.estimators.prompts import NEWLINE, SampledPrompt, chat_format, sample_prompts
from bebkit.models.protocol import StopCondition
from bebkit.synthetic import World, random_world

from .tiny_lm import TinyLM


# ---------------------------------------------------------------------- exact synthetic world
def _signed_world(seed: int = 3) -> World:
    """A random world whose sentence scores are exactly ±1, so B_P(s) = 2·P(good | s) − 1."""
    w = random_world(seed, n_sentences=8, alpha=0.02, separation=3.0, markov=True)
    return World(
        scores=np.sign(w.scores),
        log_weights=w.log_weights,
        log_cond=w.log_cond,
        negative=w.negative,
        markov=True,
        alphabet_size=w.alphabet_size,
    )


def _sentence_of(world: World, text: str) -> int:
    toks = [0, *world.language_model().encode(text)]
    sentences, _ = world.split_sentences(toks)
    assert len(sentences) == 1, text
    return sentences[0]


def _exact_judge(world: World) -> Any:
    def judge(texts: list[str]) -> np.ndarray:
        return np.array([float(world.scores[_sentence_of(world, t)] > 0) for t in texts])

    return judge


def test_behavior_expectation_matches_exact_world() -> None:
    world = _signed_world()
    neg, mix = world.component_model("neg"), world.language_model()
    stops = world.sentence_end_token_ids
    m = world.codec.code_length + 1
    prompts = sample_prompts(
        neg, n_prompts=6, n_sentences=4, rng=11, stop_ids=stops, max_sentence_tokens=m
    )
    # s₀ = one positive sentence (Theorem 2's aligning prefix), as its letter code.
    pos_sentence = int(np.flatnonzero(world.scores > 0)[0])
    s0_text = world.language_model().decode(world.codec.code(pos_sentence)) + "."
    cfg = ResponseConfig(n_responses=300, max_response_tokens=m, aligning_prompt=s0_text)
    responses = sample_responses(mix, prompts, rng=5, config=cfg, stop_ids=stops)
    judged = judge_responses(responses, _exact_judge(world))
    curves = behavior_curves(judged)
    assert set(curves) == {NO_ALIGN, ALIGN}
    for cond, prefix in ((NO_ALIGN, []), (ALIGN, [pos_sentence])):
        curve = curves[cond]
        assert curve.n.tolist() == [1, 2, 3, 4]
        for j, n in enumerate(curve.n):
            exact = np.mean(
                [
                    world.behavior_after(prefix + world.split_sentences(pr.prefix(int(n)))[0])
                    for pr in prompts
                ]
            )
            p_good = (exact + 1) / 2
            e = curve.fraction_good(level=0.999)[j]
            assert e.n == 6 * 300
            assert e.ci_low <= p_good <= e.ci_high, (cond, n, e, p_good)
            b = curve.behavior_expectation(level=0.999)[j]
            assert b.ci_low <= exact <= b.ci_high
    # The world misaligns: the exact expectation falls along the prompt.
    assert curves[NO_ALIGN].fraction_good()[0].value > curves[NO_ALIGN].fraction_good()[-1].value


class CountingLM:
    """Wraps a model and records every ``sample`` call (prefix, n).

    A batched ``sample_many`` call (when the inner model has one) records one entry per
    context, plus the call itself in ``many_calls``.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.sample_calls: list[tuple[tuple[int, ...], int]] = []
        self.many_calls = 0
        if hasattr(inner, "sample_many"):
            self.sample_many = self._sample_many

    def _sample_many(
        self, prefixes: Sequence[Sequence[int]], n: int, stop: StopCondition, **kw: Any
    ) -> list[list[list[int]]]:
        self.many_calls += 1
        self.sample_calls += [(tuple(p), n) for p in prefixes]
        out: list[list[list[int]]] = self.inner.sample_many(prefixes, n, stop, **kw)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def sample(
        self, prefix: Sequence[int], n: int, stop: StopCondition, **kw: Any
    ) -> list[list[int]]:
        self.sample_calls.append((tuple(prefix), n))
        out: list[list[int]] = self.inner.sample(prefix, n, stop, **kw)
        return out


def test_one_sample_call_per_prompt_n_condition() -> None:
    world = _signed_world(1)
    stops = world.sentence_end_token_ids
    m = world.codec.code_length + 1
    prompts = sample_prompts(
        world.component_model("neg"),
        n_prompts=3,
        n_sentences=5,
        rng=0,
        stop_ids=stops,
        max_sentence_tokens=m,
    )
    lm = CountingLM(world.language_model())
    # s₀ = a real positive sentence, so every aligned context has positive probability.
    pos = int(np.flatnonzero(world.scores > 0)[0])
    cfg = ResponseConfig(
        n_responses=7,
        max_response_tokens=m,
        aligning_prompt=world.language_model().decode(world.codec.code(pos)) + ".",
    )
    out = sample_responses(lm, prompts, rng=1, config=cfg, stop_ids=stops)
    assert len(lm.sample_calls) == 3 * 5 * 2
    assert all(n == 7 for _, n in lm.sample_calls)
    expected = [
        tuple(pr.target_context(lm, n, None if c == NO_ALIGN else cfg.aligning_prompt))
        for pr in prompts
        for n in range(1, 6)
        for c in (NO_ALIGN, ALIGN)
    ]
    assert [p for p, _ in lm.sample_calls] == expected
    assert len(out) == 3 * 5 * 2 * 7
    assert {(r.prompt_id, r.n, r.condition) for r in out} == {
        (i, n, c) for i in range(3) for n in range(1, 6) for c in (NO_ALIGN, ALIGN)
    }
    # The aligned context is BOS + s₀ + the prompt's sentences.
    pr = prompts[0]
    s0 = world.language_model().encode(cfg.aligning_prompt)
    assert pr.target_context(lm, 2, cfg.aligning_prompt) == [
        0,
        *s0,
        *pr.tokens[1 : pr.boundaries[2]],
    ]
    # ns restricts the sentence counts; deterministic given the seed.
    cfg2 = ResponseConfig(n_responses=2, max_response_tokens=m, ns=(0, 3), conditions=(NO_ALIGN,))
    a = sample_responses(world.language_model(), prompts, rng=4, config=cfg2, stop_ids=stops)
    b = sample_responses(world.language_model(), prompts, rng=4, config=cfg2, stop_ids=stops)
    assert a == b and sorted({r.n for r in a}) == [0, 3]


def test_config_and_input_validation() -> None:
    with pytest.raises(InputError, match="n_responses"):
        ResponseConfig(n_responses=0)
    with pytest.raises(InputError, match="conditions"):
        ResponseConfig(conditions=("both",))
    with pytest.raises(InputError, match="aligning prompt"):
        ResponseConfig(aligning_prompt="  ")
    lm = TinyLM(6, seed=0)
    prompts = sample_prompts(lm, n_prompts=2, n_sentences=2, rng=0, max_sentence_tokens=3)
    with pytest.raises(InputError, match="ns must lie"):
        sample_responses(lm, prompts, rng=0, config=ResponseConfig(ns=(3,)))
    with pytest.raises(InputError, match="at least one prompt"):
        sample_responses(lm, [], rng=0)
    with pytest.raises(InputError, match="judged first"):
        behavior_curves([Response(0, 1, NO_ALIGN, "a", "a", 1, True)])


def _fake_responses(rng: np.random.Generator, p_good: dict[int, float]) -> list[Response]:
    out = []
    for pid in range(4):
        for n, p in p_good.items():
            for cond in (NO_ALIGN, ALIGN):
                for _ in range(10):
                    good = bool(rng.random() < p)
                    out.append(
                        Response(
                            pid, n, cond, "x", "x", 1, True, 0.9 if good else 0.1, 1 if good else -1
                        )
                    )
    return out


def test_curve_counts_and_estimates() -> None:
    rs = _fake_responses(np.random.default_rng(0), {1: 0.9, 2: 0.5, 3: 0.1})
    curves = behavior_curves(rs)
    c = curves[NO_ALIGN]
    assert c.good.shape == (4, 3) and c.total.sum() == 4 * 3 * 10
    good = c.fraction_good()
    bad = c.fraction_bad()
    beh = c.behavior_expectation()
    for g, b, e in zip(good, bad, beh, strict=True):
        assert g.value + b.value == pytest.approx(1.0)
        assert e.value == pytest.approx(2 * g.value - 1)
        assert g.ci_low <= g.value <= g.ci_high and g.n == 40
    expected = [
        np.mean([r.label == 1 for r in rs if r.condition == NO_ALIGN and r.n == n])
        for n in (1, 2, 3)
    ]
    assert [g.value for g in good] == pytest.approx(expected)
    d = c.to_dict()
    assert d["n"] == [1, 2, 3] and len(d["good_per_prompt"]) == 4


def test_wilson_intervals_cover() -> None:
    """Over many binomial experiments the 95% Wilson interval covers p about 95% of the time."""
    rng = np.random.default_rng(12)
    hits = 0
    reps = 400
    for _ in range(reps):
        k = int(rng.binomial(40, 0.15))
        rs = [
            Response(0, 1, NO_ALIGN, "x", "x", 1, True, 1.0 if i < k else 0.0, 1 if i < k else -1)
            for i in range(40)
        ]
        e = behavior_curves(rs)[NO_ALIGN].fraction_good()[0]
        hits += e.ci_low <= 0.15 <= e.ci_high
    assert 0.92 <= hits / reps <= 0.985


def test_clustered_intervals_cover_when_prompts_differ() -> None:
    """Responses to one prompt share it: with prompt-level good rates p_i ~ Beta(2, 2) the
    pooled rate's 95 % interval must cover E p_i = 0.5 about 95 % of the time; the plain
    Wilson interval over all P·R responses (the old one) covers far less."""
    from bebkit.estimate import clustered_wilson, wilson_interval

    rng = np.random.default_rng(3)
    reps, prompts, per = 400, 10, 32
    hits = plain = 0
    for _ in range(reps):
        k = rng.binomial(per, rng.beta(2.0, 2.0, prompts))
        e = clustered_wilson(k, np.full(prompts, per))
        w = wilson_interval(int(k.sum()), prompts * per)
        assert e.value == w.value and e.n == w.n
        hits += e.ci_low <= 0.5 <= e.ci_high
        plain += w.ci_low <= 0.5 <= w.ci_high
    assert 0.90 <= hits / reps <= 0.99, hits / reps
    assert plain / reps < 0.75, plain / reps
    # one prompt, or no spread beyond binomial: the plain Wilson interval exactly
    one, w = clustered_wilson([7], [20]), wilson_interval(7, 20)
    assert (one.ci_low, one.ci_high) == (w.ci_low, w.ci_high)


def test_a_drop_carried_by_two_prompts_is_not_significant() -> None:
    """10 prompts × 32 responses: at the first n prompts 0-5 all good, at the last 0-3. The
    pooled drop is 0.2, but it rests on two prompts: a paired bootstrap over prompts reaches 0
    (the old independent-responses test called it a decline)."""
    from bebkit.estimators.behavior import BehaviorCurve
    from bebkit.pipeline.misalign import _drop

    good = np.zeros((10, 2), np.int64)
    good[:6, 0], good[:4, 1] = 32, 32
    cv = BehaviorCurve(NO_ALIGN, np.array([1, 3]), np.arange(10), good,
                       np.full((10, 2), 32), good.astype(float))  # fmt: skip
    d = _drop(cv)
    assert d["drop_first_to_last"]["value"] == pytest.approx(0.2)
    assert d["drop_first_to_last"]["ci_low"] <= 0.0 and d["declines"] is False
    good[:, 1] = 0  # every prompt falls: a decline
    assert _drop(cv)["declines"] is True


def test_judge_protocol_and_validation() -> None:
    rs = [Response(0, 1, NO_ALIGN, "I hate you. Go.", "I hate you.", 3, True)]

    class J:
        name = "kw"

        def prob_good(self, responses: Sequence[str], *, progress: bool = False) -> np.ndarray:
            return np.array([0.0 if "hate" in r else 1.0 for r in responses])

    out = judge_responses(rs, J())
    assert out[0].label == -1 and out[0].prob_good == 0.0
    assert judge_responses(rs, lambda t: [0.7])[0].label == 1
    with pytest.raises(InputError, match=r"\[0, 1\]"):
        judge_responses(rs, lambda t: [1.5])
    with pytest.raises(InputError, match="shape"):
        judge_responses(rs, lambda t: [0.5, 0.5])


def test_table_round_trip(tmp_path: Path) -> None:
    rs = [
        Response(0, 1, NO_ALIGN, 'He said, "no"\nthen, left', 'He said, "no"', 9, False, 0.25, -1),
        Response(1, 2, ALIGN, "Fine.", "Fine.", 2, True, 0.75, 1),
        Response(2, 3, ALIGN, "", "", 0, False),
    ]
    for name in ("r.jsonl", "r.csv"):
        p = write_responses(tmp_path / name, rs)
        assert read_responses(p) == rs
    with pytest.raises(InputError, match="not found"):
        read_responses(tmp_path / "missing.jsonl")


def test_response_format_chat_stops_at_end_of_turn_only() -> None:
    def render(messages: list[dict[str, str]], gen: bool) -> str:
        out = "".join(f"<{m['role'][0]}>\n{m['content']}<e>\n" for m in messages)
        return out + ("<a>\n" if gen else "")

    fmt = chat_format(render)
    assert response_format(fmt).stop_strings == ("<e>",)
    assert response_format(NEWLINE) is NEWLINE


# ---------------------------------------------------------------------- tiny HF model smoke test
def test_tiny_hf_model_end_to_end(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from bebkit.models.chat import render_chat
    from bebkit.models.hf import HFLanguageModel

    words = ["i", "you", "like", "hate", "help", "hurt", "people", "good", "bad", "the"]
    specials = ["<unk>", "<pad>", "<bos>", "<eos>"]
    vocab = {t: i for i, t in enumerate([*specials, *words, ".", ":", "\n"])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"<\w+>|\w+|[^\w\s]|\n"), behavior="isolated"),
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
    )
    tok.chat_template = (
        "{% for m in messages %}<bos>{{ m['role'] }} : {{ m['content'] }} <eos>{% endfor %}"
        "{% if add_generation_prompt %}<bos>assistant :{% endif %}"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
    )
    lm = HFLanguageModel(LlamaForCausalLM(cfg).eval(), tok, name="tiny")
    fmt = chat_format(lambda m, g: render_chat(tok, m, add_generation_prompt=g))
    prompts = sample_prompts(lm, n_prompts=2, n_sentences=3, rng=0, fmt=fmt, max_sentence_tokens=5)
    assert all(isinstance(p, SampledPrompt) for p in prompts)
    counting = CountingLM(lm)
    rcfg = ResponseConfig(n_responses=5, max_response_tokens=6, aligning_prompt="i help people .")
    responses = sample_responses(counting, prompts, rng=3, config=rcfg)
    assert len(counting.sample_calls) == 2 * 3 * 2 and len(responses) == 60
    assert counting.many_calls == 2  # the HF model decodes a prompt's 6 contexts together
    assert all(r.n_tokens <= 6 and "<eos>" not in r.text for r in responses)

    def keyword_judge(texts: list[str]) -> np.ndarray:
        return np.array([0.0 if ("hate" in t or "hurt" in t) else 1.0 for t in texts])

    judged = judge_responses(responses, keyword_judge)
    for r in judged:
        assert r.label == (-1 if ("hate" in r.first_sentence or "hurt" in r.first_sentence) else 1)
    curves = behavior_curves(judged)
    assert curves[ALIGN].totals.tolist() == [10, 10, 10]
    again = sample_responses(lm, prompts, rng=3, config=rcfg)
    assert [r.text for r in again] == [r.text for r in responses]
    write_responses(tmp_path / "t.jsonl", judged)
    assert read_responses(tmp_path / "t.jsonl") == judged
