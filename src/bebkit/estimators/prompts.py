"""Misaligning prompts sampled from P₋, sentence by sentence (§3.1, appendix C.3, appendix N).

The paper's construction of a misaligning prompt is ancestral sampling from the ill-behaved
component: ``s = s₁ ⊕ … ⊕ sₙ ~ P₋(· | s₀)``. Each sampled prompt keeps the token offset of
every sentence boundary, so that *one* forward pass over the whole prompt gives
``log P(s₁ … sₖ | s₀)`` for every k (cumulative sums read at the boundaries).

Everything here is protocol-only (:class:`~bebkit.models.protocol.LanguageModel`):
formats are described by plain text pieces, and a chat template enters through a renderer
callback (:func:`chat_format`), so no tokenizer or torch object is imported.

Layout of a prompt's tokens::

    [BOS][format header][s₀ tokens] | [sentence 1] | [sentence 2] | …
    ^------- header_len ------^      ^ boundaries[0] ^ boundaries[1] …

``boundaries[n]`` is the end offset of the n-sentence prompt (``boundaries[0]`` = start of
the first sentence), and a sentence unit is ``sentence_prefix + sampled tokens +
sentence_suffix`` of the format.
"""

from __future__ import annotations

import functools
import itertools
import json
import re
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from bebkit.checkpoint import Checkpoint, fingerprint
from bebkit.data.formats import DEFAULT_ALIGNING_PROMPT as DEFAULT_ALIGNING_PROMPT
from bebkit.errors import InputError
from bebkit.io import atomic_open
from bebkit.models.protocol import LanguageModel, StopCondition, sample_many

#: A chat renderer: ``render(messages, add_generation_prompt) -> text`` where messages are
#: ``{"role": ..., "content": ...}`` dicts — e.g. ``lambda m, g:
#: tok.apply_chat_template(m, tokenize=False, add_generation_prompt=g)``.
ChatRenderer = Callable[[list[dict[str, str]], bool], str]


@dataclass(frozen=True)
class PromptFormat:
    """How sampled sentences are laid out in a token context.

    A prompt's k-th sentence (k = 1, 2, …) is the unit ``prefix_for(k) + sampled tokens +
    suffix_for(k)``. Formats whose sentences alternate between the user's and the assistant's
    slot (``alternating``, ``llama2-inst``) give per-position pieces that cycle with period 2.

    Attributes:
        name: ``"newline"``, ``"alternating"``, ``"llama2-inst"``, ``"user-turns"``, …
        header: text after BOS and before everything else (a chat template's head, which may
            hold the template's default system turn: P₋ was trained on it).
        sentence_prefix: text inserted before each sampled sentence; forced, not sampled.
            Used when ``sentence_prefixes`` is empty.
        sentence_suffix: text appended after each sampled sentence (end of turn). Used when
            ``sentence_suffixes`` is empty.
        response_prefix: text appended to a context when a continuation (the model's answer)
            is scored or sampled after it (chat: the assistant-turn header).
        system_template: how an aligning system prompt is rendered; replaces ``header`` for
            the target model (and, with ``system_in_first_turn``, also the first sentence's
            prefix). Must contain ``{system}``.
        stop_strings: a sampled sentence ends at the first token whose text contains one of
            these (or, for a string no single token contains, such as Llama-2's
            ``"[/INST]"``, whose stripped text is a non-empty prefix of it).
        keep_stop_token: keep that token in the sentence (newline format) or drop it because
            the suffix closes the unit (chat).
        truncation_suffix: appended when a sentence hits the token cap without a stop token
            (keeps the next sentence from continuing mid-sentence).
        sentence_prefixes / sentence_suffixes: per-position pieces, cycling: sentence k uses
            ``sentence_prefixes[(k - 1) % len]``; empty = ``sentence_prefix`` everywhere.
        response_period: responses are read after n = 0 and after every n with
            ``(n - 1) % response_period == 0``. Alternating layouts use 2: the model answers
            after a sentence in the *user* slot (odd n), as the authors read responses after
            each ``[/INST]`` marker; after an even n the assistant's own turn has just closed.
        system_in_first_turn: the template renders the system prompt *inside* the first user
            turn (Llama-2, Gemma), so ``system_template`` also replaces the first sentence's
            prefix.
        none_as_empty_system: the template inserts a default system prompt when the chat has
            no system message (SmolLM2), so the prompt-free "none" condition renders an
            *empty* system turn instead of ``header``.
    """

    name: str
    header: str = ""
    sentence_prefix: str = ""
    sentence_suffix: str = ""
    response_prefix: str = ""
    system_template: str = "{system}\n"
    stop_strings: tuple[str, ...] = ("\n",)
    keep_stop_token: bool = True
    truncation_suffix: str = "\n"
    sentence_prefixes: tuple[str, ...] = ()
    sentence_suffixes: tuple[str, ...] = ()
    response_period: int = 1
    system_in_first_turn: bool = False
    none_as_empty_system: bool = False

    def __post_init__(self) -> None:
        if "{system}" not in self.system_template:
            raise InputError("system_template must contain '{system}'")
        if not self.stop_strings or any(not s for s in self.stop_strings):
            raise InputError("stop_strings must be non-empty strings")
        if isinstance(self.response_period, bool) or self.response_period < 1:
            raise InputError(f"response_period must be >= 1, got {self.response_period!r}")

    def prefix_for(self, k: int) -> str:
        """Forced text before the k-th sentence (k = 1, 2, …)."""
        _check_position(k)
        if self.sentence_prefixes:
            return self.sentence_prefixes[(k - 1) % len(self.sentence_prefixes)]
        return self.sentence_prefix

    def suffix_for(self, k: int) -> str:
        """Forced text after the k-th sentence (k = 1, 2, …)."""
        _check_position(k)
        if self.sentence_suffixes:
            return self.sentence_suffixes[(k - 1) % len(self.sentence_suffixes)]
        return self.sentence_suffix

    def is_response_position(self, n: int) -> bool:
        """Whether the model's response is read after ``n`` sentences (n = 0 is the baseline)."""
        return n == 0 or (n >= 1 and (n - 1) % self.response_period == 0)

    def response_positions(self, n_max: int) -> tuple[int, ...]:
        """Every n in ``0 … n_max`` after which a response is read."""
        return tuple(n for n in range(n_max + 1) if self.is_response_position(n))

    def system_text(self, system: str) -> str:
        """``system_template`` filled with ``system``."""
        return self.system_template.replace("{system}", system)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PromptFormat:
        data = dict(d)
        for key in ("stop_strings", "sentence_prefixes", "sentence_suffixes"):
            if key in data:
                data[key] = tuple(data[key])
        try:
            return cls(**data)
        except TypeError as exc:
            raise InputError(f"malformed prompt format: {exc}") from None


def _check_position(k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise InputError(f"sentence positions start at 1, got {k!r}")


def sentences_to_markers(n: int, period: int = 2) -> int:
    """Response positions among sentences ``1 … n`` of a layout with ``response_period``.

    For the alternating layouts (period 2) this is the number of user-turn closes — the
    authors' x-axis, which counts ``[/INST]`` markers: the k-th marker closes sentence 2k − 1,
    so ``n`` sentences hold ``⌈n / 2⌉`` markers.
    """
    if n < 0 or period < 1:
        raise InputError(f"need n >= 0 and period >= 1, got n={n}, period={period}")
    return 0 if n == 0 else (n - 1) // period + 1


def markers_to_sentences(k: int, period: int = 2) -> int:
    """Sentence count at the k-th response position (alternating: the k-th ``[/INST]`` closes
    sentence ``2k − 1``); ``k = 0`` is the empty prompt."""
    if k < 0 or period < 1:
        raise InputError(f"need k >= 0 and period >= 1, got k={k}, period={period}")
    return 0 if k == 0 else 1 + (k - 1) * period


#: Sentences separated by newlines; the model simply continues the text (pretrained models,
#: appendix M; the β/σ² experiments of fig. 2/8).
NEWLINE = PromptFormat(name="newline")

#: The authors' literal Llama-2 layout (fig. 3 / 11 / 12): ``[INST]s1[/INST]s2[INST]s3[/INST]…``
#: with no spaces, BOS first; sentences alternate between the user and the assistant slot and
#: responses are read right after each ``[/INST]`` (odd n). The aligning prompt is inserted as
#: in their script: ``'[INST]' + '<<SYS>>\n' + SYSTEM + '\n<</SYS>>\n\n' + prefix[6:]``.
LLAMA2_INST = PromptFormat(
    name="llama2-inst",
    header="[INST]",
    sentence_suffixes=("[/INST]", "[INST]"),
    response_period=2,
    system_template="[INST]<<SYS>>\n{system}\n<</SYS>>\n\n",
    stop_strings=("[/INST]", "[INST]", "\n"),
    keep_stop_token=False,
    truncation_suffix="",
)

_SENTINEL_A = "\x00bebkit-sentinel-A\x00"
_SENTINEL_B = "\x00bebkit-sentinel-B\x00"
_SENTINEL_C = "\x00bebkit-sentinel-C\x00"
_SENTINEL_D = "\x00bebkit-sentinel-D\x00"
_SENTINEL_S = "\x00bebkit-sentinel-S\x00"


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def _render(render: ChatRenderer, msgs: list[dict[str, str]], gen: bool) -> str:
    try:
        return render(msgs, gen)
    except InputError:
        raise
    except Exception as exc:  # jinja raise_exception / TemplateError
        raise InputError(f"the chat template rejected the conversation: {exc}") from exc


def _template(block: str) -> str:
    """A rendered block holding the system sentinel as a ``{system}`` template."""
    return block.replace(_SENTINEL_S, "{system}")


def _system_pieces(
    render: ChatRenderer, header: str, user_open: str, user_close: str
) -> tuple[str, bool, bool]:
    """``(system_template, system_in_first_turn, none_as_empty_system)`` read off the template.

    A system turn that ends with the user opener stands before the first user turn (ChatML);
    otherwise the template puts the system text inside the first user turn (Llama-2, Gemma).
    A template that refuses system messages gets ``user opener + system + blank line``.

    The template inserts a *default* system prompt iff the head it renders without a system
    message is not a prefix of the text it renders before a system message's content
    (SmolLM2: "You are a helpful AI assistant named SmolLM…"); then the prompt-free "none"
    condition uses an empty system message (rendered by the template itself) instead.
    """
    try:
        with_sys = render([_msg("system", _SENTINEL_S), _msg("user", _SENTINEL_A)], False)
    except Exception:  # no system role: put it in the first user turn ourselves
        return header + user_open + "{system}\n\n", True, False
    if _SENTINEL_S not in with_sys or _SENTINEL_A not in with_sys:
        raise InputError("chat template drops the system message")
    a_at = with_sys.index(_SENTINEL_A)
    block, tail = with_sys[:a_at], with_sys[a_at + len(_SENTINEL_A) :]
    if tail != user_close:
        raise InputError("chat template closes a user turn differently after a system turn")
    default_system = not block[: block.index(_SENTINEL_S)].startswith(header)
    if user_open and block.endswith(user_open) and _SENTINEL_S in block[: -len(user_open)]:
        return _template(block[: -len(user_open)]), False, default_system
    if not user_open and _SENTINEL_S in block:
        return _template(block), False, default_system
    return _template(block), True, default_system


def chat_format(render: ChatRenderer, *, name: str = "user-turns") -> PromptFormat:
    """Today's layout, kept as a named variant: each sampled sentence is its own user turn.

    Templates that require alternating roles (Llama-2, Gemma) refuse it; prefer
    :func:`alternating_format`, the layout P₋'s chat training texts use. The text pieces are
    read off the template by rendering sentinel messages: ``render([u(A), u(B)]) −
    render([u(A)])`` is one user-turn unit, the generation prompt after it is the assistant
    header, and a system message gives ``system_template``. The sentence stops at the
    end-of-turn marker (the first non-blank text of the turn suffix) or a newline; the marker
    is re-added by ``sentence_suffix``.
    """
    one = _render(render, [_msg("user", _SENTINEL_A)], False)
    two = _render(render, [_msg("user", _SENTINEL_A), _msg("user", _SENTINEL_B)], False)
    gen = _render(render, [_msg("user", _SENTINEL_A)], True)
    if not two.startswith(one) or _SENTINEL_B not in two[len(one) :] or not gen.startswith(one):
        raise InputError("chat template is not prefix-consistent across user turns")
    unit = two[len(one) :]
    sentence_prefix, sentence_suffix = unit.split(_SENTINEL_B, 1)
    a_at = one.index(_SENTINEL_A)
    if not one[:a_at].endswith(sentence_prefix):
        raise InputError("chat template renders the first user turn differently from later ones")
    header = one[: a_at - len(sentence_prefix)]
    system_template, in_first, empty_none = _system_pieces(
        render, header, sentence_prefix, sentence_suffix
    )
    marker = sentence_suffix.strip() or "\n"
    return PromptFormat(
        name=name,
        header=header,
        sentence_prefix=sentence_prefix,
        sentence_suffix=sentence_suffix,
        response_prefix=gen[len(one) :],
        system_template=system_template,
        stop_strings=tuple(dict.fromkeys((marker, "\n"))),
        keep_stop_token=False,
        truncation_suffix="",
        system_in_first_turn=in_first,
        none_as_empty_system=empty_none,
    )


def alternating_format(render: ChatRenderer, *, name: str = "alternating") -> PromptFormat:
    """Sentences alternate between the user slot (odd k) and the assistant slot (even k).

    This is the layout of P₋'s chat training texts (:func:`bebkit.data.formats.render_chat`
    renders a triple as user / assistant / user turns) and of the authors' Llama-2 prompts
    ``[INST] s1 [/INST] s2 [INST] s3 [/INST] …``, derived from any model's own template by
    rendering sentinel conversations ``u(A)``, ``u(A) a(B)``, ``u(A) a(B) u(C)``,
    ``u(A) a(B) u(C) a(D)``. Responses are read after odd n (``response_period = 2``): the
    model answers in the assistant slot right after a user turn closes — the authors' reading
    point after each ``[/INST]``; :func:`sentences_to_markers` converts the counts.
    """
    r1 = _render(render, [_msg("user", _SENTINEL_A)], False)
    r2 = _render(render, [_msg("user", _SENTINEL_A), _msg("assistant", _SENTINEL_B)], False)
    turns3 = [
        _msg("user", _SENTINEL_A),
        _msg("assistant", _SENTINEL_B),
        _msg("user", _SENTINEL_C),
    ]
    r3 = _render(render, turns3, False)
    r4 = _render(render, [*turns3, _msg("assistant", _SENTINEL_D)], False)
    gen = _render(render, [_msg("user", _SENTINEL_A)], True)
    if not (r2.startswith(r1) and r3.startswith(r2) and r4.startswith(r3) and gen.startswith(r1)):
        raise InputError("chat template is not prefix-consistent across alternating turns")
    asst_open, asst_close = r2[len(r1) :].split(_SENTINEL_B, 1) if _SENTINEL_B in r2 else ("", "")
    if _SENTINEL_B not in r2 or _SENTINEL_C not in r3[len(r2) :]:
        raise InputError("chat template does not render alternating user/assistant turns")
    user_open, user_close = r3[len(r2) :].split(_SENTINEL_C, 1)
    if r4[len(r3) :] != asst_open + _SENTINEL_D + asst_close:
        raise InputError("chat template renders later assistant turns differently")
    a_at = r1.index(_SENTINEL_A)
    if not r1[:a_at].endswith(user_open) or r1[a_at + len(_SENTINEL_A) :] != user_close:
        raise InputError("chat template renders the first user turn differently from later ones")
    header = r1[: a_at - len(user_open)]
    system_template, in_first, empty_none = _system_pieces(render, header, user_open, user_close)
    markers = [m for m in (user_close.strip(), asst_close.strip()) if m]
    return PromptFormat(
        name=name,
        header=header,
        response_prefix=gen[len(r1) :],
        system_template=system_template,
        stop_strings=tuple(dict.fromkeys((*markers, "\n"))),
        keep_stop_token=False,
        truncation_suffix="",
        sentence_prefixes=(user_open, asst_open),
        sentence_suffixes=(user_close, asst_close),
        response_period=2,
        system_in_first_turn=in_first,
        none_as_empty_system=empty_none,
    )


#: Names accepted by :func:`prompt_format`. ``chat`` is an alias of ``alternating``: the
#: layout P₋'s ``chat`` training texts use.
PROMPT_FORMATS: tuple[str, ...] = ("newline", "alternating", "chat", "llama2-inst", "user-turns")


def prompt_format(name: str, tokenizer: Any | None) -> PromptFormat:
    """The misaligning-prompt format ``name`` for a model's tokenizer.

    ``newline`` and ``llama2-inst`` are fixed strings (no tokenizer needed); ``alternating``
    (alias ``chat``, the default for misaligning) and ``user-turns`` are read off the
    tokenizer's own chat template.
    """
    if name == "newline":
        return NEWLINE
    if name == "llama2-inst":
        return LLAMA2_INST
    if name not in PROMPT_FORMATS:
        raise InputError(f"unknown prompt format {name!r}; known: {', '.join(PROMPT_FORMATS)}")
    if tokenizer is None:
        raise InputError(f"the {name} format needs a tokenizer with a chat template")
    from bebkit.models.chat import render_chat

    def render(messages: list[dict[str, str]], gen: bool) -> str:
        return render_chat(tokenizer, messages, add_generation_prompt=gen)

    if name == "user-turns":
        return chat_format(render)
    return alternating_format(render, name="alternating")


def count_sentences(text: str) -> int:
    """Sentences of a text: runs ending in . ! ? or a line break (the aligning prompt's |s₀|)."""
    pieces = [p for p in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if p.strip()]
    return len(pieces)


def context_text(
    fmt: PromptFormat,
    sentences: Sequence[str],
    system_prompt: str | None = None,
    *,
    prefix_text: str = "",
    target: bool = True,
) -> str:
    """The exact text of a context after ``sentences`` (BOS token not included).

    ``target=False`` gives P₋'s sampling context (``header``); ``target=True`` the target
    model's context under ``system_prompt`` (None = the prompt-free "none" condition, which
    is an empty system turn when the template would otherwise insert a default one). A
    response prefix is appended when ``len(sentences)`` is a response position.
    """
    n = len(sentences)
    units = [fmt.prefix_for(k) + s + fmt.suffix_for(k) for k, s in enumerate(sentences, 1)]
    system = system_prompt if target else None
    if system is None and target and fmt.none_as_empty_system:
        system = ""
    if system is None:
        body = fmt.header + prefix_text + "".join(units)
    elif fmt.system_in_first_turn:
        first = units[0][len(fmt.prefix_for(1)) :] if units else fmt.suffix_for(1)
        body = fmt.system_text(system) + prefix_text + first + "".join(units[1:])
    else:
        body = fmt.system_text(system) + prefix_text + "".join(units)
    return body + (fmt.response_prefix if fmt.is_response_position(n) else "")


def condition_contexts(
    fmt: PromptFormat,
    aligning_prompt: str,
    sentences: Sequence[str] = ("{s1}",),
) -> dict[str, str]:
    """Exact rendered context text of each condition, for the record.

    ``none``: no aligning prompt (an empty system turn where the template would insert its
    default system prompt, e.g. SmolLM2; no system turn otherwise); ``aligned``: the aligning
    prompt as the system turn. ``sentences`` are placeholders by default.
    """
    return {
        "none": context_text(fmt, sentences, None),
        "aligned": context_text(fmt, sentences, aligning_prompt),
    }


# Vocabulary scans are cached per *tokenizer object* (weakly, so a freed tokenizer frees its
# entries): adapter views of one base model share its tokenizer and so one scan, while two
# different models that happen to share a display name and vocabulary size (two tiny test
# models, or a user reloading an edited tokenizer under the same name) never share one —
# a name-keyed cache once returned one model's stop tokens for the other. Under each
# tokenizer, entries are keyed by the output vocabulary size too (two wrappers of one
# tokenizer could pad their output layer differently) and by what was scanned.
_T = TypeVar("_T")
_SCANS: weakref.WeakKeyDictionary[Any, dict[tuple[Any, ...], Any]] = weakref.WeakKeyDictionary()


def _scan(model: LanguageModel, what: tuple[Any, ...], compute: Callable[[], _T]) -> _T:
    """``compute()`` once per (tokenizer of ``model`` — or the model when it exposes none,
    output vocabulary size, ``what``)."""
    tokenizer = getattr(model, "tokenizer", None)
    owner = model if tokenizer is None else tokenizer
    try:
        per_owner = _SCANS.setdefault(owner, {})
    except TypeError:  # not weak-referenceable or unhashable: no caching, still correct
        return compute()
    key = (int(model.vocab_size), *what)
    if key not in per_owner:
        per_owner[key] = compute()
    out: _T = per_owner[key]
    return out


def stop_token_ids(model: LanguageModel, fmt: PromptFormat) -> frozenset[int]:
    """Ids of the tokens that end a sampled sentence (scans the vocabulary once).

    A token stops a sentence when its text contains one of ``fmt.stop_strings``; a stop
    string that no single token contains (Llama-2's ``"[/INST]"`` is several tokens) instead
    stops at every token whose stripped text is a non-empty prefix of it (``"["``), so the
    model's own attempt to write the marker ends the sentence and the format re-adds it.
    """
    return _scan(model, ("stop", fmt.stop_strings), lambda: _stop_ids(model, fmt))


def _stop_ids(model: LanguageModel, fmt: PromptFormat) -> frozenset[int]:
    texts = _vocab_texts(model)
    ids: set[int] = set()
    for s in fmt.stop_strings:
        found = {i for i, text in texts if s in text}
        if not found:
            found = {i for i, text in texts if text.strip() and s.startswith(text.strip())}
        ids |= found
    if not ids:
        raise InputError(f"no token of {model.name} contains any of {list(fmt.stop_strings)!r}")
    return frozenset(ids)


@dataclass(frozen=True)
class SampledPrompt:
    """A prompt ``s₀ ⊕ s₁ ⊕ … ⊕ sₙ`` with the token offset of every sentence boundary.

    ``tokens[:boundaries[k]]`` is the context after k sentences (k = 0 … n);
    ``tokens[spans[k-1][0]:spans[k-1][1]]`` are the k-th sentence's *sampled* tokens (no
    forced format text: turn markers, truncation suffix), so an estimator can leave forced
    template tokens out (they were not drawn from P₋). ``spans`` defaults to the whole units.
    """

    tokens: tuple[int, ...]
    boundaries: tuple[int, ...]
    header_len: int
    fmt: PromptFormat = NEWLINE
    prefix_text: str = ""
    sentences: tuple[str, ...] = ()
    truncated: tuple[bool, ...] = ()
    source: str = ""
    spans: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        b = self.boundaries
        if not b or any(x > y for x, y in itertools.pairwise(b)) or b[-1] > len(self.tokens):
            raise InputError("boundaries must be non-decreasing offsets into tokens")
        if not 0 <= self.header_len <= b[0]:
            raise InputError("header_len must lie in [0, boundaries[0]]")
        if not self.spans:
            object.__setattr__(self, "spans", tuple(itertools.pairwise(b)))
        spans = tuple((int(s), int(e)) for s, e in self.spans)
        object.__setattr__(self, "spans", spans)
        if len(spans) != len(b) - 1 or any(
            not b[k] <= s <= e <= b[k + 1] for k, (s, e) in enumerate(spans)
        ):
            raise InputError("spans must give one (start, end) per sentence inside its unit")

    @property
    def n_sentences(self) -> int:
        return len(self.boundaries) - 1

    @property
    def text(self) -> str:
        """The sampled sentences joined (human-readable; not used for scoring)."""
        return "".join(self.sentences)

    def prefix(self, n: int) -> list[int]:
        """Tokens of the context after ``n`` sentences (no response header)."""
        self._check_n(n)
        return list(self.tokens[: self.boundaries[n]])

    def context(self, model: LanguageModel, n: int) -> list[int]:
        """P₋'s scoring context after ``n`` sentences: prefix + the format's response header.

        Raises:
            InputError: ``n`` is not a response position of the format (alternating layouts
                read responses after odd n only, see :attr:`PromptFormat.response_period`).
        """
        self._check_response(n)
        return self.prefix(n) + _encode(model, self.fmt.response_prefix)

    def target_head(self, model: LanguageModel, system_prompt: str | None) -> list[int]:
        """What replaces ``tokens[:header_len]`` for the target model (BOS + system turn).

        The prompt-free condition (``None``) is an empty system turn when the template would
        insert a default system prompt. Formats that render the system prompt inside the
        first user turn cannot be expressed as a head replacement: use :meth:`target_layout`.
        """
        system = self._system(system_prompt)
        if system is None:
            return list(self.tokens[: self.header_len])
        if self.fmt.system_in_first_turn:
            raise InputError(
                f"format {self.fmt.name!r} puts the system prompt inside the first user turn; "
                "use target_layout / target_context"
            )
        return _with_bos(model, _encode(model, self.fmt.system_text(system)))

    def target_layout(
        self, model: LanguageModel, system_prompt: str | None
    ) -> tuple[list[int], tuple[int, ...], tuple[tuple[int, int], ...]]:
        """The target model's tokens for the whole prompt, its boundaries and sentence spans.

        ``[BOS][system turn](s₀)(s₁ … sₙ)``; ``tokens[:boundaries[n]]`` is the target's
        context after n sentences (before the response header). With ``system_in_first_turn``
        the system text replaces the header *and* the first sentence's opener; for n = 0 the
        (otherwise empty) first user turn is closed so the template's shape is kept.
        """
        system = self._system(system_prompt)
        if system is None:
            return list(self.tokens), self.boundaries, self.spans
        head = _with_bos(model, _encode(model, self.fmt.system_text(system)))
        s0 = list(self.tokens[self.header_len : self.boundaries[0]])
        cut = self.header_len  # tokens of the source dropped before s0
        skip = 0  # tokens of the first opener dropped after s0
        if self.fmt.system_in_first_turn and self.n_sentences:
            skip = self.spans[0][0] - self.boundaries[0]
        rest = list(self.tokens[self.boundaries[0] + skip :])
        toks = head + s0 + rest
        shift0 = len(head) - cut

        def move(i: int) -> int:
            return i + shift0 - (skip if i > self.boundaries[0] else 0)

        bounds = tuple(move(i) for i in self.boundaries)
        spans = tuple((move(s), move(e)) for s, e in self.spans)
        return toks, bounds, spans

    def target_context(self, model: LanguageModel, n: int, system_prompt: str | None) -> list[int]:
        """The target model's context after ``n`` sentences, with an optional aligning prompt.

        ``[BOS][system turn](s₀)(s₁…sₙ)[response header]``; without a system prompt it equals
        :meth:`context` except where the template inserts a default system prompt (then the
        prompt-free condition is an empty system turn).
        """
        self._check_response(n)
        toks, bounds, _ = self.target_layout(model, system_prompt)
        ctx = toks[: bounds[n]]
        system = self._system(system_prompt)
        if n == 0 and system is not None and self.fmt.system_in_first_turn:
            ctx += _encode(model, self.fmt.suffix_for(1))  # close the system-only user turn
        return ctx + _encode(model, self.fmt.response_prefix)

    def truncate(self, n: int) -> SampledPrompt:
        """The same prompt cut to its first ``n`` sentences."""
        self._check_n(n)
        return replace(
            self,
            tokens=self.tokens[: self.boundaries[n]],
            boundaries=self.boundaries[: n + 1],
            sentences=self.sentences[:n],
            truncated=self.truncated[:n],
            spans=self.spans[:n],
        )

    def _system(self, system_prompt: str | None) -> str | None:
        if system_prompt is None and self.fmt.none_as_empty_system:
            return ""
        return system_prompt

    def _check_n(self, n: int) -> None:
        if not 0 <= n <= self.n_sentences:
            raise InputError(f"n must be in [0, {self.n_sentences}], got {n}")

    def _check_response(self, n: int) -> None:
        self._check_n(n)
        if not self.fmt.is_response_position(n):
            raise InputError(
                f"format {self.fmt.name!r} reads responses after n in "
                f"{list(self.fmt.response_positions(self.n_sentences))}, not after n={n} "
                "(the k-th user-turn close, like the authors' k-th '[/INST]', ends sentence 2k-1)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "tokens": list(self.tokens),
            "boundaries": list(self.boundaries),
            "header_len": self.header_len,
            "fmt": self.fmt.to_dict(),
            "prefix_text": self.prefix_text,
            "sentences": list(self.sentences),
            "truncated": list(self.truncated),
            "source": self.source,
            "spans": [list(s) for s in self.spans],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], model: LanguageModel | None = None) -> SampledPrompt:
        """Inverse of :meth:`to_dict`. Records written before ``spans`` existed get them
        computed from the format's forced pieces when ``model`` is given (its tokenizer
        measures them), else the whole units (the old behaviour: forced text included)."""
        try:
            pr = cls(
                tokens=tuple(int(t) for t in d["tokens"]),
                boundaries=tuple(int(b) for b in d["boundaries"]),
                header_len=int(d["header_len"]),
                fmt=PromptFormat.from_dict(d.get("fmt", NEWLINE.to_dict())),
                prefix_text=str(d.get("prefix_text", "")),
                sentences=tuple(str(s) for s in d.get("sentences", ())),
                truncated=tuple(bool(t) for t in d.get("truncated", ())),
                source=str(d.get("source", "")),
                spans=tuple((int(s), int(e)) for s, e in d.get("spans", ())),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed prompt record: {exc}") from None
        if "spans" not in d and model is not None:
            pr = replace(pr, spans=_spans_from_format(model, pr))
        return pr


def prompt_reads(pr: SampledPrompt) -> dict[str, Any]:
    """Everything of a prompt that a computation on it reads (a checkpoint's fingerprint):
    tokens, boundaries, spans, header, s₀ and format."""
    return {
        "prompt": list(pr.tokens),
        "boundaries": list(pr.boundaries),
        "spans": [list(s) for s in pr.spans],
        "header_len": pr.header_len,
        "prefix_text": pr.prefix_text,
        "fmt": pr.fmt.to_dict(),
    }


def _spans_from_format(model: LanguageModel, pr: SampledPrompt) -> tuple[tuple[int, int], ...]:
    """Sentence spans of an old record: each unit minus its forced prefix / suffix tokens."""
    out = []
    trunc = len(_encode(model, pr.fmt.truncation_suffix))
    for k in range(pr.n_sentences):
        a, b = pr.boundaries[k], pr.boundaries[k + 1]
        unit = list(pr.tokens[a:b])
        open_ids = _encode(model, pr.fmt.prefix_for(k + 1))
        close_ids = _encode(model, pr.fmt.suffix_for(k + 1))
        if unit[: len(open_ids)] != open_ids:  # BOS-deduplicated first opener
            bos = list(model.bos_token_ids)
            open_ids = open_ids[len(bos) :] if open_ids[: len(bos)] == bos else open_ids
        s = a + len(open_ids) if unit[: len(open_ids)] == open_ids else a
        e = b - len(close_ids) if close_ids and unit[-len(close_ids) :] == close_ids else b
        if k < len(pr.truncated) and pr.truncated[k] and trunc:
            e -= trunc
        out.append((s, max(s, e)))
    return tuple(out)


def _encode(model: LanguageModel, text: str) -> list[int]:
    return list(model.encode(text)) if text else []


def _with_bos(model: LanguageModel, ids: list[int]) -> list[int]:
    """BOS + ids, unless ids already start with the BOS tokens (e.g. a chat header that opens
    with the same special token), so the context never holds BOS twice."""
    bos = list(model.bos_token_ids)
    return ids if bos and ids[: len(bos)] == bos else bos + ids


def _vocab_texts(model: LanguageModel) -> list[tuple[int, str]]:
    """(id, decoded text) of every token of ``model`` (one scan per tokenizer, cached)."""

    def scan() -> list[tuple[int, str]]:
        texts: list[tuple[int, str]] = []
        for i in range(int(model.vocab_size)):
            try:
                texts.append((i, model.decode([i])))
            except (IndexError, KeyError, ValueError, TypeError, OverflowError):
                continue  # padded embedding rows beyond the tokenizer
        return texts

    return _scan(model, ("texts",), scan)


def blank_token_ids(model: LanguageModel) -> frozenset[int]:
    """Ids of the tokens whose text is whitespace only (or empty): a continuation made of them
    alone is blank. Passed as :attr:`StopCondition.blank_token_ids` so a model that supports
    it keeps sampling past a lone newline instead of stopping and being resumed row by row
    (same stopping rule as :func:`_is_blank`, at the cost of one batched pass)."""
    return _scan(
        model,
        ("blank",),
        lambda: frozenset(i for i, text in _vocab_texts(model) if not text.strip()),
    )


def _is_blank(model: LanguageModel, ids: Sequence[int]) -> bool:
    return not model.decode(list(ids)).strip()


@dataclass(frozen=True)
class PromptSamplerConfig:
    """Settings of :func:`sample_prompts` (stored with the prompts for provenance)."""

    n_prompts: int
    n_sentences: int
    max_sentence_tokens: int = 48
    prefix_text: str = ""

    def __post_init__(self) -> None:
        if self.n_prompts < 1:
            raise InputError(f"n_prompts must be >= 1, got {self.n_prompts}")
        if self.n_sentences < 0:
            raise InputError(f"n_sentences must be >= 0, got {self.n_sentences}")
        if self.max_sentence_tokens < 1:
            raise InputError(f"max_sentence_tokens must be >= 1, got {self.max_sentence_tokens}")


def sample_prompts(
    model: LanguageModel,
    *,
    n_prompts: int,
    n_sentences: int,
    rng: np.random.Generator | int,
    fmt: PromptFormat = NEWLINE,
    prefix_text: str = "",
    stop_ids: Iterable[int] | None = None,
    max_sentence_tokens: int = 48,
    skip_blank: bool = True,
    checkpoint: Checkpoint | None = None,
    checkpoint_name: str = "prompts",
) -> list[SampledPrompt]:
    """Sample ``n_prompts`` prompts of ``n_sentences`` sentences each from ``model`` (= P₋).

    ``s_k ~ P₋(· | header ⊕ s₀ ⊕ s₁ … s_{k−1} ⊕ sentence_prefix)`` by pure ancestral sampling
    (temperature 1, no top-k/top-p), stopping at a sentence-end token; with ``prefix_text``
    this is the prompted sampling of appendix N (``s ~ P₋(·|s₀)``).

    Args:
        stop_ids: sentence-end token ids; default: every token whose text contains one of
            ``fmt.stop_strings`` (the synthetic world passes its own).
        max_sentence_tokens: cap per sentence; a capped sentence gets
            ``fmt.truncation_suffix`` and is flagged in ``truncated``.
        skip_blank: a sentence ends at the first stop token *after some non-blank text*
            (a lone ``"\n"`` is not a sentence): sampling simply continues. This is still a
            stopping rule on the sampled path, so the prompt is exact ancestral sampling.
        checkpoint: each sentence round (sentence k of every prompt) is a unit
            ``<checkpoint_name>-<k>`` holding the prompts so far, so a killed run resumes at
            the first unfinished round with the generator where it stood.
    """
    cfg = PromptSamplerConfig(n_prompts, n_sentences, max_sentence_tokens, prefix_text)
    gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    stops = frozenset(int(t) for t in stop_ids) if stop_ids is not None else None
    if stops is None:
        stops = stop_token_ids(model, fmt)
    if not stops:
        raise InputError("stop_ids must contain at least one sentence-end token")
    blanks = blank_token_ids(model) if skip_blank else frozenset()
    stop = StopCondition(cfg.max_sentence_tokens, stops, blanks)

    lay = _Layout(model, fmt, prefix_text)
    start = lay.start
    if not start:
        raise InputError(
            f"{model.name} has no BOS token: give a prefix_text or a format header as context"
        )

    toks: list[list[int]] = [list(start) for _ in range(cfg.n_prompts)]
    bounds: list[list[int]] = [[len(start)] for _ in range(cfg.n_prompts)]
    spans: list[list[tuple[int, int]]] = [[] for _ in range(cfg.n_prompts)]
    texts: list[list[str]] = [[] for _ in range(cfg.n_prompts)]
    trunc: list[list[bool]] = [[] for _ in range(cfg.n_prompts)]
    ckpt = checkpoint or Checkpoint(None)
    reads = {
        "model": model.name, "config": asdict(cfg), "fmt": fmt.to_dict(), "stops": sorted(stops),
        "blanks": sorted(blanks), "skip_blank": skip_blank,
    }  # fmt: skip

    def state() -> dict[str, Any]:
        return {"toks": toks, "bounds": bounds, "spans": spans, "texts": texts, "trunc": trunc}

    def restore(d: Mapping[str, Any]) -> None:
        toks[:] = [[int(t) for t in row] for row in d["toks"]]
        bounds[:] = [[int(b) for b in row] for row in d["bounds"]]
        spans[:] = [[(int(a), int(b)) for a, b in row] for row in d["spans"]]
        texts[:] = [[str(x) for x in row] for row in d["texts"]]
        trunc[:] = [[bool(x) for x in row] for row in d["trunc"]]

    def _sample_round(k: int) -> dict[str, Any]:
        """Sentence k+1 of every prompt, appended in place; the state after it."""
        open_ids, close_ids = lay.open_ids(k + 1), lay.close_ids(k + 1)
        if k == 0:
            # All prompts share the first context: one encoding, n samples (KV-cache reuse).
            draws = model.sample(start + open_ids, cfg.n_prompts, stop, rng=gen)
        else:
            # One batched call over the prompts (models with `sample_many` decode them
            # together; others loop, drawing in the same order as one call per prompt).
            draws = [
                d[0] for d in sample_many(model, [t + open_ids for t in toks], 1, stop, rng=gen)
            ]
        for i, y in enumerate(draws):
            y = [int(t) for t in y]
            ended = bool(y) and y[-1] in stops
            while skip_blank and ended and len(y) < cfg.max_sentence_tokens and _is_blank(model, y):
                rest = StopCondition(cfg.max_sentence_tokens - len(y), stops)
                y += [int(t) for t in model.sample(toks[i] + open_ids + y, 1, rest, rng=gen)[0]]
                ended = y[-1] in stops
            if ended and not fmt.keep_stop_token:
                y = y[:-1]
            at = len(toks[i]) + len(open_ids)
            spans[i].append((at, at + len(y)))
            toks[i].extend(open_ids + y + ([] if ended else lay.trunc_ids) + close_ids)
            bounds[i].append(len(toks[i]))
            texts[i].append(model.decode(y))
            trunc[i].append(not ended)
        return state()

    for k in range(cfg.n_sentences):
        before = {"round": k, "toks": fingerprint(toks), **reads}
        # the value is the prompts after round k: fresh (this process) or stored (resumed)
        restore(
            ckpt.unit(
                f"{checkpoint_name}-{k}",
                gen,
                functools.partial(_sample_round, k),
                dump=lambda st: st,
                load=lambda d: d,
                reads=before,
            )
        )
    return [
        SampledPrompt(
            tokens=tuple(toks[i]),
            boundaries=tuple(bounds[i]),
            header_len=lay.header_len,
            fmt=fmt,
            prefix_text=prefix_text,
            sentences=tuple(texts[i]),
            truncated=tuple(trunc[i]),
            source=model.name,
            spans=tuple(spans[i]),
        )
        for i in range(cfg.n_prompts)
    ]


class _Layout:
    """Token pieces of a format for one model: ``start`` = BOS + header + s₀, and the forced
    opener / closer of each sentence position.

    A template whose every user turn opens with the BOS text (Llama-2: ``<s>[INST] ``) and
    whose header is empty would otherwise put BOS twice at the start; the first opener then
    gives its BOS to the header, exactly as the rendered training text has it.
    """

    def __init__(self, model: LanguageModel, fmt: PromptFormat, prefix_text: str = "") -> None:
        self.model, self.fmt = model, fmt
        head_ids = _encode(model, fmt.header)
        self.s0 = _encode(model, prefix_text)
        bos = list(model.bos_token_ids)
        first = _encode(model, fmt.prefix_for(1))
        self.first_open = first
        if bos and not head_ids and not self.s0 and first[: len(bos)] == bos:
            self.first_open = first[len(bos) :]
        head = _with_bos(model, head_ids)
        self.header_len = len(head)
        self.start = head + self.s0
        self.trunc_ids = _encode(model, fmt.truncation_suffix)
        self._cache: dict[tuple[str, str], list[int]] = {}

    def _enc(self, kind: str, text: str) -> list[int]:
        key = (kind, text)
        if key not in self._cache:
            self._cache[key] = _encode(self.model, text)
        return self._cache[key]

    def open_ids(self, k: int) -> list[int]:
        return list(self.first_open) if k == 1 else self._enc("o", self.fmt.prefix_for(k))

    def close_ids(self, k: int) -> list[int]:
        return self._enc("c", self.fmt.suffix_for(k))


def render_prompt(
    model: LanguageModel,
    sentences: Sequence[str],
    fmt: PromptFormat = NEWLINE,
    *,
    prefix_text: str = "",
    truncated: Sequence[bool] | None = None,
    source: str = "",
) -> SampledPrompt:
    """A fixed prompt laid out exactly as :func:`sample_prompts` lays out sampled ones.

    Each sentence is encoded on its own between the format's forced pieces, as a sampled
    sentence's tokens sit between them; so a prompt rendered from P₋'s own training triple
    reproduces that training text token for token when the tokenizer does not merge across
    the pieces (checked in the tests for SmolLM2, Gemma and Llama-2 templates).
    ``truncated[k]`` marks a sentence cut mid-way (no truncation suffix is added: the text is
    kept as given).
    """
    if truncated is not None and len(truncated) != len(sentences):
        raise InputError("truncated must give one flag per sentence")
    lay = _Layout(model, fmt, prefix_text)
    toks = list(lay.start)
    if not toks:
        raise InputError(f"{model.name} has no BOS token: give a prefix_text or a format header")
    bounds, spans = [len(toks)], []
    for k, sentence in enumerate(sentences, 1):
        if not isinstance(sentence, str):
            raise InputError(f"sentence {k} must be a string, got {type(sentence).__name__}")
        y = _encode(model, sentence)
        at = len(toks) + len(lay.open_ids(k))
        spans.append((at, at + len(y)))
        toks.extend(lay.open_ids(k) + y + lay.close_ids(k))
        bounds.append(len(toks))
    return SampledPrompt(
        tokens=tuple(toks),
        boundaries=tuple(bounds),
        header_len=lay.header_len,
        fmt=fmt,
        prefix_text=prefix_text,
        sentences=tuple(sentences),
        truncated=tuple(bool(t) for t in truncated)
        if truncated is not None
        else (False,) * len(sentences),
        source=source,
        spans=tuple(spans),
    )


def save_prompts(path: str | Path, prompts: Sequence[SampledPrompt]) -> Path:
    """Atomically write prompts as JSON lines."""
    p = Path(path)
    with atomic_open(p) as fh:
        for pr in prompts:
            fh.write(json.dumps(pr.to_dict()) + "\n")
    return p


def load_prompts(path: str | Path) -> list[SampledPrompt]:
    """Read prompts written by :func:`save_prompts`."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"prompt file not found: {p}")
    out = []
    for lineno, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(SampledPrompt.from_dict(json.loads(line)))
        except json.JSONDecodeError:
            raise InputError(f"{p}:{lineno}: not valid JSON") from None
    return out


# --------------------------------------------------------------------------- fixed prompts


def load_fixed_prompts(path: str | Path) -> list[tuple[str, ...]]:
    """A user's fixed misaligning prompts: one prompt = a list of sentences.

    Accepted: a JSON file holding a list of prompts, or JSON lines with one prompt per line;
    a prompt is a list of strings or an object with a ``"sentences"`` list. Render them with
    :func:`render_prompt` (any format) to run an experiment on identical inputs.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"fixed-prompt file not found: {p}")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{p}: not UTF-8 text ({exc.reason})") from None
    items: list[tuple[str, Any]] = []
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((f"{p}:{lineno}", json.loads(line)))
            except json.JSONDecodeError:
                raise InputError(f"{p}:{lineno}: not valid JSON") from None
    if data is not None:
        if isinstance(data, list) and data and all(isinstance(x, str) for x in data):
            data = [data]  # a single prompt given as one list of sentences
        if not isinstance(data, list):
            raise InputError(f"{p}: expected a list of prompts, got {type(data).__name__}")
        items = [(f"{p}: prompt {i}", x) for i, x in enumerate(data)]
    if not items:
        raise InputError(f"{p}: no prompts")
    out = []
    for where, item in items:
        sents = item.get("sentences") if isinstance(item, Mapping) else item
        if (
            not isinstance(sents, list)
            or not sents
            or not all(isinstance(s, str) and s.strip() for s in sents)
        ):
            raise InputError(f"{where}: a prompt must be a non-empty list of non-empty strings")
        out.append(tuple(sents))
    return out


# ------------------------------------------------------------------ the authors' own prompts

#: Markers in the authors' decoded P₋ samples: ``[INST]``, ``[/INST]`` and the adapter's
#: misspellings (``</INST>``, ``[/]``, ``[IND]``). Only an exact ``[/INST]`` is a reading
#: point: the authors' ``stop_at_inst`` searched for that string.
AUTHORS_MARKER = re.compile(r"\[/?[A-Z]*\]|</?INST>")
AUTHORS_READ_MARKER = "[/INST]"


@dataclass(frozen=True)
class MarkedText:
    """An authors' prompt split at its markers.

    ``text == head + Σ (sentences[k] + closers[k])``; ``head`` is the text up to the end of
    the first marker, ``closers[k]`` the marker text after sentence k (``""`` for a last
    sentence cut mid-way by the token budget: ``truncated``).
    """

    head: str
    sentences: tuple[str, ...]
    closers: tuple[str, ...]
    truncated: bool

    @property
    def text(self) -> str:
        return self.head + "".join(s + c for s, c in zip(self.sentences, self.closers, strict=True))

    @property
    def marker_sentences(self) -> tuple[int, ...]:
        """Sentence count n at each ``[/INST]``: the authors' k-th marker closes sentence n_k."""
        return tuple(k for k, c in enumerate(self.closers, 1) if c.endswith(AUTHORS_READ_MARKER))


def split_marked_text(text: str) -> MarkedText:
    """Split an authors' decoded P₋ sample at its markers into sentences.

    The text after an end-of-sequence ``</s>`` (EOS then ``<unk>`` padding of the batch) is
    dropped; a marker right after another one joins the previous closer; the last sentence
    is ``truncated`` when no marker closes it (the sample hit its token budget).
    """
    if not isinstance(text, str) or not text.strip():
        raise InputError("a marked prompt must be a non-empty string")
    eos = text.find("</s>")
    if eos >= 0:
        text = text[:eos]
    marks = list(AUTHORS_MARKER.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        raise InputError("a marked prompt must start with an [INST] marker")
    head = text[: marks[0].end()]
    sentences: list[str] = []
    closers: list[str] = []
    for m, nxt in zip(marks, [*marks[1:], None], strict=True):
        piece = text[m.end() : nxt.start() if nxt is not None else len(text)]
        closer = nxt.group(0) if nxt is not None else ""
        if piece.strip():
            sentences.append(piece)
            closers.append(closer)
        elif closers:
            closers[-1] += piece + closer
        else:
            head += piece + closer
    if not sentences:
        raise InputError("a marked prompt holds no sentence")
    return MarkedText(head, tuple(sentences), tuple(closers), truncated=closers[-1] == "")


@dataclass(frozen=True)
class AuthorsGoodCounts:
    """The authors' annotated good responses for one prompt of fig. 3b / 12.

    ``with_aligning_prompt[k-1]`` / ``without_aligning_prompt[k-1]``: responses judged good
    out of ``n_responses`` after the k-th ``[/INST]`` marker, i.e. after
    ``marker_sentences[k-1]`` sentences of the prompt (the paper's x-axis counts markers).
    """

    behavior: str
    prompt_id: int
    with_aligning_prompt: tuple[int, ...]
    without_aligning_prompt: tuple[int, ...]
    marker_sentences: tuple[int, ...]
    n_responses: int = 32


def _authors_behavior(path: str | Path, behavior: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise InputError(f"authors' prompt file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        behaviors = data["behaviors"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{p}: not an authors-prompts.json file") from None
    if behavior not in behaviors:
        raise InputError(f"{p}: no behavior {behavior!r}; has {', '.join(sorted(behaviors))}")
    entry = behaviors[behavior]
    if not isinstance(entry, Mapping) or not isinstance(entry.get("prompts"), Mapping):
        raise InputError(f"{p}: behavior {behavior!r} has no prompts")
    return dict(entry)


def authors_prompt_texts(path: str | Path, behavior: str) -> dict[int, str]:
    """The authors' raw prompt strings of ``behavior``, by prompt id."""
    prompts = _authors_behavior(path, behavior)["prompts"]
    try:
        return {int(k): str(v) for k, v in sorted(prompts.items(), key=lambda kv: int(kv[0]))}
    except ValueError:
        raise InputError(f"{path}: prompt ids must be integers") from None


def authors_system_prompt(path: str | Path, *, as_in_script: bool = True) -> str:
    """The aligning system prompt the authors inserted (Llama-2's default).

    ``as_in_script``: with the four-space indent that starts each of its two paragraphs in
    their script's triple-quoted literal (the string Llama-2 actually received).
    """
    p = Path(path)
    try:
        text = str(json.loads(p.read_text(encoding="utf-8"))["notes"]["system_prompt"])
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        raise InputError(f"{p}: no notes.system_prompt") from None
    if not as_in_script:
        return text
    return "\n\n".join("    " + para for para in text.split("\n\n"))


def load_authors_good_counts(path: str | Path, behavior: str) -> dict[int, AuthorsGoodCounts]:
    """Per-prompt good counts per ``[/INST]`` marker (the prompts behind fig. 3b / 12)."""
    entry = _authors_behavior(path, behavior)
    texts = authors_prompt_texts(path, behavior)
    out: dict[int, AuthorsGoodCounts] = {}
    for key, counts in dict(entry.get("good_of_32_per_marker", {})).items():
        try:
            pid = int(key)
            with_ = tuple(int(c) for c in counts["with_aligning_prompt"])
            without = tuple(int(c) for c in counts["without_aligning_prompt"])
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: malformed good counts for prompt {key!r}") from None
        if pid not in texts:
            raise InputError(f"{path}: good counts for unknown prompt {pid}")
        if any(not 0 <= c <= 32 for c in with_ + without):
            raise InputError(f"{path}: prompt {pid}: counts must lie in [0, 32]")
        marks = split_marked_text(texts[pid]).marker_sentences
        if max(len(with_), len(without)) > len(marks):
            raise InputError(f"{path}: prompt {pid} has more counts than [/INST] markers")
        out[pid] = AuthorsGoodCounts(
            behavior, pid, with_, without, marks[: max(len(with_), len(without))]
        )
    return out


#: The raw layout of the authors' own prompts: their exact string, whatever its markers, so
#: responses may be read after any sentence (the ``[/INST]`` reading points are
#: :attr:`MarkedText.marker_sentences`); the aligning prompt replaces the leading ``[INST]``.
LLAMA2_INST_RAW = replace(LLAMA2_INST, name="llama2-inst-raw", response_period=1)


def _raw_marked_prompt(model: LanguageModel, marked: MarkedText, source: str) -> SampledPrompt:
    """The authors' exact string, encoded whole (as their ``tokenizer(prefix)`` did), with
    boundaries after each sentence's closing marker and spans over the sentence text.

    Every context is a prefix of the whole encoding at a reading point (after a marker), so
    ``prefix(n)`` equals ``tokenizer(text[:pos])`` token for token — checked, and an error if
    the tokenizer merges across a marker's end. A sentence's *end* may merge with the marker
    that follows it (SmolLM2's BPE has a single token ``".["``); such a mixed token is partly
    forced marker text, so the sentence's span stops before it (its sampled tokens are the
    ones wholly inside the sentence).
    """
    text = marked.text
    full = _with_bos(model, _encode(model, text))
    bos_len = len(full) - len(_encode(model, text))

    def at(pos: int) -> int:
        ids = _encode(model, text[:pos])
        if full[bos_len : bos_len + len(ids)] != ids:
            raise InputError(
                f"{source}: the tokenizer merges tokens across position {pos} (after a "
                "marker), so this prompt's contexts are not prefixes of its tokens"
            )
        return bos_len + len(ids)

    def inside(pos: int, lo: int) -> int:
        """End offset (≥ lo) of the tokens of ``full`` whose text lies wholly inside
        ``text[:pos]``: the common prefix with ``tokenizer(text[:pos])``, then as long as
        the whole string's own next tokens still decode to a prefix of ``text[:pos]`` (the
        encodings may part a token or two before the merged one, e.g. ``"?"`` + ``".["``)."""
        ids = _encode(model, text[:pos])
        body = full[bos_len:]
        k = next(
            (i for i, (a, b) in enumerate(zip(ids, body, strict=False)) if a != b),
            min(len(ids), len(body)),
        )
        while k < len(body) and text[:pos].startswith(model.decode(body[: k + 1])):
            k += 1
        return max(lo, bos_len + k)

    pos = len(marked.head)
    header_len = at(pos)
    bounds, spans = [header_len], []
    for sentence, closer in zip(marked.sentences, marked.closers, strict=True):
        start = bounds[-1]  # a sentence starts where the previous marker ended
        spans.append((start, inside(pos + len(sentence), start)))
        pos += len(sentence) + len(closer)
        bounds.append(at(pos))
    return SampledPrompt(
        tokens=tuple(full),
        boundaries=tuple(bounds),
        header_len=header_len,
        fmt=replace(LLAMA2_INST_RAW, header=marked.head),
        sentences=marked.sentences,
        truncated=(False,) * (len(marked.sentences) - 1) + (marked.truncated,),
        source=source,
        spans=tuple(spans),
    )


def load_authors_prompts(
    path: str | Path, behavior: str, fmt: PromptFormat | str, model: LanguageModel
) -> list[SampledPrompt]:
    """The authors' 16 misaligning prompts of ``behavior`` as :class:`SampledPrompt` s.

    ``fmt="llama2-inst"`` (or :data:`LLAMA2_INST`): their exact strings as they fed Llama-2
    (BOS + text, markers as sampled, including misspelt ones); a chat format (e.g.
    ``alternating``): their sentences (markers removed, surrounding space stripped) in that
    model's own template. The last sentence, cut mid-way by their token budget, is flagged in
    ``truncated``. Sources read ``authors:<behavior>:<prompt id>``.

    Order: the prompts behind fig. 3b / 12 (``curve_prompt_ids``) first, in the file's order,
    then the others by id — so the first ten are the ones the paper's curves were drawn from.
    """
    name = fmt if isinstance(fmt, str) else fmt.name
    texts = authors_prompt_texts(path, behavior)
    curve = [int(i) for i in _authors_behavior(path, behavior).get("curve_prompt_ids", [])]
    order = [i for i in curve if i in texts] + [i for i in texts if i not in curve]
    out = []
    for pid in order:
        text = texts[pid]
        marked = split_marked_text(text)
        source = f"authors:{behavior}:{pid}"
        if name in ("llama2-inst", "llama2-inst-raw"):
            out.append(_raw_marked_prompt(model, marked, source))
            continue
        if isinstance(fmt, str):
            raise InputError(f"give the {fmt!r} format as a PromptFormat (see prompt_format)")
        flags = (False,) * (len(marked.sentences) - 1) + (marked.truncated,)
        out.append(
            render_prompt(
                model,
                [s.strip() for s in marked.sentences],
                fmt,
                truncated=flags,
                source=source,
            )
        )
    return out
