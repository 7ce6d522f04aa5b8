"""Misaligning-prompt sampling: layout, determinism, formats, storage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bebkit.errors import InputError
from bebkit.estimators.prompts import (
    DEFAULT_ALIGNING_PROMPT,
    NEWLINE,
    PromptFormat,
    SampledPrompt,
    chat_format,
    load_prompts,
    sample_prompts,
    save_prompts,
    stop_token_ids,
)

from .tiny_lm import TinyLM


def chatml(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
    """A ChatML-like renderer with a default system turn (like SmolLM2's template)."""
    out = ""
    if messages[0]["role"] != "system":
        out += "<s>\ndefault<e>\n"
    for m in messages:
        out += f"<{m['role'][0]}>\n{m['content']}<e>\n"
    if add_generation_prompt:
        out += "<a>\n"
    return out


def test_newline_prompts_layout_and_determinism() -> None:
    lm = TinyLM(6, seed=2)
    kw = dict(n_prompts=4, n_sentences=3, max_sentence_tokens=4, skip_blank=False)
    a = sample_prompts(lm, rng=7, **kw)  # type: ignore[arg-type]
    b = sample_prompts(lm, rng=7, **kw)  # type: ignore[arg-type]
    assert a == b
    c = sample_prompts(lm, rng=8, **kw)  # type: ignore[arg-type]
    assert a != c
    for pr in a:
        assert pr.tokens[0] == lm.bos_token_ids[0] and pr.header_len == 1
        assert pr.boundaries[0] == 1 and pr.n_sentences == 3
        for k in range(3):
            sent = pr.tokens[pr.boundaries[k] : pr.boundaries[k + 1]]
            # every sentence ends with the newline token (sampled, or appended when capped)
            assert sent[-1] == 0
            assert (0 in sent[:-1]) is False
            assert pr.truncated[k] == (len(sent) == 5)
            assert lm.decode(sent) == pr.sentences[k] or pr.truncated[k]
        assert pr.prefix(2) == list(pr.tokens[: pr.boundaries[2]])
        assert pr.truncate(1).n_sentences == 1


def test_stop_tokens_found_by_text() -> None:
    lm = TinyLM(6, seed=2)
    assert stop_token_ids(lm, NEWLINE) == frozenset({0})


def test_first_sentence_is_sampled_in_one_call_then_per_prompt() -> None:
    lm = TinyLM(6, seed=2)
    sample_prompts(lm, n_prompts=5, n_sentences=3, rng=1, skip_blank=False)
    assert lm.calls["sample"] == 1 + 5 * 2


def test_prefix_s0_and_target_context_with_system_prompt() -> None:
    lm = TinyLM(6, seed=2)
    pr = sample_prompts(lm, n_prompts=1, n_sentences=2, rng=3, prefix_text="ab\n")[0]
    assert pr.tokens[:4] == (5, 1, 2, 0) and pr.boundaries[0] == 4 and pr.header_len == 1
    assert pr.target_context(lm, 2, None) == pr.context(lm, 2)
    tgt = pr.target_context(lm, 1, "cc")
    assert tgt == [5, 3, 3, 0, 1, 2, 0, *list(pr.tokens[4 : pr.boundaries[1]])]


def test_chat_format_is_read_off_the_template() -> None:
    fmt = chat_format(chatml)
    assert fmt.header == "<s>\ndefault<e>\n"
    assert fmt.sentence_prefix == "<u>\n" and fmt.sentence_suffix == "<e>\n"
    assert fmt.response_prefix == "<a>\n"
    assert fmt.system_template == "<s>\n{system}<e>\n"
    assert fmt.stop_strings == ("<e>", "\n") and not fmt.keep_stop_token


class CharLM(TinyLM):
    """TinyLM whose text covers the chat markup (one token per character)."""

    CHARS = "\n<>useadfltm"

    def __init__(self) -> None:
        super().__init__(len(self.CHARS) + 1, seed=4, scale=0.5)

    def encode(self, text: str) -> list[int]:
        return [self.CHARS.index(c) for c in text]

    def decode(self, ids):  # type: ignore[no-untyped-def]
        return "".join("^" if int(i) == self.vocab_size - 1 else self.CHARS[int(i)] for i in ids)


def test_chat_prompts_are_user_turns() -> None:
    lm = CharLM()
    fmt = chat_format(chatml)
    prompts = sample_prompts(lm, n_prompts=2, n_sentences=2, rng=0, fmt=fmt, stop_ids=[0])
    head = lm.encode(fmt.header)
    for pr in prompts:
        assert pr.header_len == 1 + len(head)
        text = lm.decode(pr.tokens[1:])
        assert text.startswith(fmt.header)
        for k in range(2):
            unit = lm.decode(pr.tokens[pr.boundaries[k] : pr.boundaries[k + 1]])
            assert unit.startswith("<u>\n") and unit.endswith("<e>\n")
        ctx = lm.decode(pr.context(lm, 2))
        assert ctx.endswith("<e>\n<a>\n")
        tgt = lm.decode(pr.target_context(lm, 1, "sa"))
        assert tgt.startswith("^<s>\nsa<e>\n<u>\n") and tgt.endswith("<a>\n")


def test_round_trip_json(tmp_path: Path) -> None:
    lm = TinyLM(6, seed=2)
    prompts = sample_prompts(lm, n_prompts=3, n_sentences=2, rng=5, prefix_text="a\n")
    path = save_prompts(tmp_path / "p.jsonl", prompts)
    assert load_prompts(path) == prompts
    assert SampledPrompt.from_dict(prompts[0].to_dict()) == prompts[0]
    chat = PromptFormat.from_dict(chat_format(chatml).to_dict())
    assert chat == chat_format(chatml)


def test_errors(tmp_path: Path) -> None:
    lm = TinyLM(6, seed=2)
    with pytest.raises(InputError, match="n_prompts"):
        sample_prompts(lm, n_prompts=0, n_sentences=1, rng=0)
    with pytest.raises(InputError, match="system_template"):
        PromptFormat(name="x", system_template="no placeholder")
    with pytest.raises(InputError, match="not found"):
        load_prompts(tmp_path / "missing.jsonl")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(InputError, match="not valid JSON"):
        load_prompts(tmp_path / "bad.jsonl")
    pr = sample_prompts(lm, n_prompts=1, n_sentences=1, rng=0)[0]
    with pytest.raises(InputError, match="n must be"):
        pr.prefix(2)
    assert isinstance(DEFAULT_ALIGNING_PROMPT, str) and len(DEFAULT_ALIGNING_PROMPT) > 20


def test_sentence_sampling_matches_the_model_distribution() -> None:
    """Empirical first-sentence frequencies agree with P(sentence) (χ²-style bound)."""
    lm = TinyLM(4, seed=6)
    prompts = sample_prompts(lm, n_prompts=3000, n_sentences=1, rng=2, max_sentence_tokens=2)
    counts: dict[tuple[int, ...], int] = {}
    for pr in prompts:
        s = pr.tokens[1:]
        counts[s] = counts.get(s, 0) + 1
    for s, c in counts.items():
        y = list(s)
        # capped sentences get a forced newline: score only the sampled tokens
        if len(y) == 3:
            y = y[:2]
        lp = lm.continuation_logprobs([3], [y]).totals[0]
        p = float(np.exp(lp))
        sd = np.sqrt(3000 * p * (1 - p))
        assert abs(c - 3000 * p) <= 4.5 * sd + 1


def test_blank_sentences_are_continued_not_emitted() -> None:
    lm = TinyLM(4, seed=6)
    prompts = sample_prompts(lm, n_prompts=200, n_sentences=2, rng=4, max_sentence_tokens=6)
    raw = sample_prompts(
        lm, n_prompts=200, n_sentences=2, rng=4, max_sentence_tokens=6, skip_blank=False
    )
    blank = 0
    for pr, rw in zip(prompts, raw, strict=True):
        for k in range(2):
            sent = pr.tokens[pr.boundaries[k] : pr.boundaries[k + 1]]
            assert sent[-1] == 0
            assert any(t != 0 for t in sent) or pr.truncated[k]
            blank += rw.sentences[k] == "\n"
    assert blank > 10  # without skip_blank, lone newlines do occur with this model


def test_bos_is_not_duplicated_by_a_header_that_starts_with_it() -> None:
    lm = CharLM()
    bos_char = "^"
    fmt = PromptFormat(name="x", header=bos_char)
    # CharLM cannot encode "^" itself, so emulate a header that is exactly the BOS token
    lm.encode = lambda text: [lm.vocab_size - 1] if text == bos_char else CharLM.encode(lm, text)  # type: ignore[method-assign]
    pr = sample_prompts(lm, n_prompts=1, n_sentences=1, rng=0, fmt=fmt, stop_ids=[0])[0]
    assert pr.tokens[0] == lm.vocab_size - 1 and pr.tokens[1] != lm.vocab_size - 1
    assert pr.header_len == 1


def test_spans_exclude_forced_text_and_old_records_get_defaults() -> None:
    from bebkit.estimators.prompts import alternating_format

    lm = CharLM()
    # a ChatML-like alternating template: <u>/<a> turns closed by <e>
    fmt = alternating_format(chatml)
    assert fmt.sentence_prefixes == ("<u>\n", "<a>\n") and fmt.response_period == 2
    assert fmt.none_as_empty_system  # chatml() inserts "default" without a system message
    prompts = sample_prompts(lm, n_prompts=3, n_sentences=3, rng=1, fmt=fmt, stop_ids=[0])
    for pr in prompts:
        for k, (a, b) in enumerate(pr.spans):
            unit = lm.decode(pr.tokens[pr.boundaries[k] : pr.boundaries[k + 1]])
            assert unit == fmt.prefix_for(k + 1) + lm.decode(pr.tokens[a:b]) + "<e>\n"
        assert SampledPrompt.from_dict(pr.to_dict()) == pr
        old = pr.to_dict()
        del old["spans"]
        assert SampledPrompt.from_dict(old).spans == tuple(
            zip(pr.boundaries[:-1], pr.boundaries[1:], strict=True)
        )
        assert SampledPrompt.from_dict(old, lm).spans == pr.spans  # type: ignore[arg-type]
        with pytest.raises(InputError, match="reads responses after"):
            pr.context(lm, 2)
        assert lm.decode(pr.context(lm, 3)).endswith("<e>\n<a>\n")
        # prompt-free condition: an empty system turn instead of the template's default
        assert lm.decode(pr.target_context(lm, 1, None)).startswith("^<s>\n<e>\n<u>\n")
    with pytest.raises(InputError, match="spans"):
        SampledPrompt(tokens=(1, 2), boundaries=(0, 2), header_len=0, spans=((0, 3),))


def test_prompt_free_kl_context_is_the_empty_system_turn_like_every_other_reader() -> None:
    """The per-sentence KL's "none" target context must be the same text the token unit and
    the behavior-expectation responses read: an empty system turn where the template would
    insert its default system prompt (it once kept P-'s default header, so convergence's
    "none" curve scored a differently prompted model than misalign's "none" responses)."""
    from bebkit.estimators.kl import sentence_contexts
    from bebkit.estimators.prompts import alternating_format

    lm = CharLM()
    fmt = alternating_format(chatml)
    for pr in sample_prompts(lm, n_prompts=2, n_sentences=3, rng=4, fmt=fmt, stop_ids=[0]):
        for n in (1, 3):
            p_ctx, q_ctx = sentence_contexts(pr, lm, lm, n, None)
            assert q_ctx == pr.target_context(lm, n, None)
            assert lm.decode(q_ctx).startswith("^<s>\n<e>\n")
            assert "default" in lm.decode(p_ctx)  # P- keeps the header it sampled under
        # with an aligning prompt, the same agreement
        assert sentence_contexts(pr, lm, lm, 1, "tame")[1] == pr.target_context(lm, 1, "tame")
    newline = sample_prompts(lm, n_prompts=1, n_sentences=2, rng=4, stop_ids=[0])[0]
    p_ctx, q_ctx = sentence_contexts(newline, lm, lm, 1, None)
    assert p_ctx == q_ctx  # no default system prompt: both models see the same text


def test_stop_tokens_fall_back_to_marker_prefixes() -> None:
    lm = CharLM()
    # no single CharLM token contains "<u>"; "<" is its first character, so it stops
    fmt = PromptFormat(name="x", stop_strings=("<u>",))
    assert stop_token_ids(lm, fmt) == frozenset({CharLM.CHARS.index("<")})


def test_load_fixed_prompts(tmp_path: Path) -> None:
    from bebkit.estimators.prompts import load_fixed_prompts, render_prompt

    (tmp_path / "a.json").write_text('[["a.", "b."], {"sentences": ["c."]}]')
    assert load_fixed_prompts(tmp_path / "a.json") == [("a.", "b."), ("c.",)]
    (tmp_path / "b.jsonl").write_text('["a.", "b."]\n\n{"sentences": ["c."]}\n')
    assert load_fixed_prompts(tmp_path / "b.jsonl") == [("a.", "b."), ("c.",)]
    lm = TinyLM(6, seed=2)
    pr = render_prompt(lm, ["ab\n", "c\n"])
    assert pr.tokens == (5, 1, 2, 0, 3, 0) and pr.boundaries == (1, 4, 6)
    assert pr.spans == ((1, 4), (4, 6))
    for body, msg in (
        ('{"x": 1}', "expected a list"),
        ("[[1, 2]]", "non-empty list of non-empty strings"),
        ("[[]]", "non-empty list"),
        ('["a."]\n{bad\n', "not valid JSON"),
        ("[]", "no prompts"),
    ):
        (tmp_path / "bad.json").write_text(body)
        with pytest.raises(InputError, match=msg):
            load_fixed_prompts(tmp_path / "bad.json")
    with pytest.raises(InputError, match="not found"):
        load_fixed_prompts(tmp_path / "missing.json")


def test_vocabulary_scans_are_not_shared_between_models_of_one_name() -> None:
    """Two different models with the same display name and vocabulary size (two tiny test
    models, a tokenizer edited and reloaded under its old name) must each get their own stop
    and blank tokens; a cache keyed by name once handed one model's stop tokens to the other
    and failed a llama2-inst run with "no token contains '[/INST]'"."""
    from bebkit.estimators.prompts import blank_token_ids

    class Shifted(TinyLM):
        """Same name and size as a TinyLM, but its newline is token 3 and token 1 is blank."""

        def decode(self, ids):  # type: ignore[no-untyped-def]
            chars = {0: "a", 1: " ", 2: "b", 3: "\n", 4: "c", 5: "^"}
            return "".join(chars[int(i)] for i in ids)

    plain, shifted = TinyLM(6, seed=2, name="same"), Shifted(6, seed=2, name="same")
    assert stop_token_ids(plain, NEWLINE) == frozenset({0})
    assert stop_token_ids(shifted, NEWLINE) == frozenset({3})
    assert blank_token_ids(plain) == frozenset({0})
    assert blank_token_ids(shifted) == frozenset({1, 3})
    # and each is still scanned once: repeated calls decode nothing
    calls: list[int] = []
    decode = shifted.decode
    shifted.decode = lambda ids: calls.append(1) or decode(ids)  # type: ignore[method-assign]
    for _ in range(3):
        assert stop_token_ids(shifted, NEWLINE) == frozenset({3})
        assert blank_token_ids(shifted) == frozenset({1, 3})
    assert calls == []


def test_views_of_one_tokenizer_share_one_vocabulary_scan() -> None:
    """Adapter views expose their base model's tokenizer; the scan is done once for all."""
    from bebkit.estimators.prompts import blank_token_ids

    class Tok:
        decodes = 0

    tok = Tok()

    class View(TinyLM):
        tokenizer = tok

        def decode(self, ids):  # type: ignore[no-untyped-def]
            Tok.decodes += 1
            return super().decode(ids)

    a, b = View(6, seed=2, name="m:neg"), View(6, seed=2, name="m:pos")
    assert stop_token_ids(a, NEWLINE) == stop_token_ids(b, NEWLINE) == frozenset({0})
    assert blank_token_ids(a) == blank_token_ids(b)
    assert Tok.decodes == 6  # one scan of the 6-token vocabulary, not one per view
