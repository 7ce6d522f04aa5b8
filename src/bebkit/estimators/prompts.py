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

import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

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

    Attributes:
        name: ``"newline"``, ``"chat"``, …
        header: text after BOS and before everything else (a chat template's head, which may
            hold the template's default system turn).
        sentence_prefix: text inserted before each sampled sentence (chat: the user-turn
            header); forced, not sampled.
        sentence_suffix: text appended after each sampled sentence (chat: end of turn).
        response_prefix: text appended to a context when a continuation (the model's answer)
            is scored or sampled after it (chat: the assistant-turn header).
        system_template: how an aligning system prompt is rendered; replaces ``header`` for
            the target model. Must contain ``{system}``.
        stop_strings: a sampled sentence ends at the first token whose text contains one of
            these.
        keep_stop_token: keep that token in the sentence (newline format) or drop it because
            ``sentence_suffix`` closes the unit (chat).
        truncation_suffix: appended when a sentence hits the token cap without a stop token
            (keeps the next sentence from continuing mid-sentence).
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

    def __post_init__(self) -> None:
        if "{system}" not in self.system_template:
            raise InputError("system_template must contain '{system}'")
        if not self.stop_strings or any(not s for s in self.stop_strings):
            raise InputError("stop_strings must be non-empty strings")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PromptFormat:
        data = dict(d)
        data["stop_strings"] = tuple(data.get("stop_strings", ("\n",)))
        return cls(**data)


#: Sentences separated by newlines; the model simply continues the text (pretrained models,
#: appendix M; the β/σ² experiments of fig. 2/8).
NEWLINE = PromptFormat(name="newline")

_SENTINEL_A = "\x00bebkit-sentinel-A\x00"
_SENTINEL_B = "\x00bebkit-sentinel-B\x00"
_SENTINEL_S = "\x00bebkit-sentinel-S\x00"


def chat_format(render: ChatRenderer, *, name: str = "chat") -> PromptFormat:
    """A chat format where each sampled sentence is one user turn (fig. 3a / 11).

    The text pieces are read off the chat template by rendering sentinel messages:
    ``render([u(A), u(B)]) − render([u(A)])`` is one user-turn unit, the generation prompt
    after it is the assistant header, and a system message gives ``system_template``. The
    sentence stops at the end-of-turn marker (the first non-blank text of the turn suffix)
    or a newline; the marker is re-added by ``sentence_suffix``.
    """
    one = render([{"role": "user", "content": _SENTINEL_A}], False)
    two = render(
        [{"role": "user", "content": _SENTINEL_A}, {"role": "user", "content": _SENTINEL_B}],
        False,
    )
    gen = render([{"role": "user", "content": _SENTINEL_A}], True)
    with_sys = render(
        [{"role": "system", "content": _SENTINEL_S}, {"role": "user", "content": _SENTINEL_A}],
        False,
    )
    if not two.startswith(one) or _SENTINEL_B not in two[len(one) :] or not gen.startswith(one):
        raise InputError("chat template is not prefix-consistent across user turns")
    unit = two[len(one) :]
    sentence_prefix, sentence_suffix = unit.split(_SENTINEL_B, 1)
    a_at = one.index(_SENTINEL_A)
    if not one[:a_at].endswith(sentence_prefix):
        raise InputError("chat template renders the first user turn differently from later ones")
    header = one[: a_at - len(sentence_prefix)]
    response_prefix = gen[len(one) :]
    s_at = with_sys.index(_SENTINEL_A) - len(sentence_prefix)
    system_block = with_sys[:s_at]
    if _SENTINEL_S not in system_block:
        raise InputError("chat template does not render a system message before the user turn")
    system_template = system_block.replace("{", "{{").replace("}", "}}")
    system_template = system_template.replace(_SENTINEL_S, "{system}")
    marker = sentence_suffix.strip() or "\n"
    return PromptFormat(
        name=name,
        header=header,
        sentence_prefix=sentence_prefix,
        sentence_suffix=sentence_suffix,
        response_prefix=response_prefix,
        system_template=system_template,
        stop_strings=tuple(dict.fromkeys((marker, "\n"))),
        keep_stop_token=False,
        truncation_suffix="",
    )


_STOP_CACHE: dict[tuple[str, int, tuple[str, ...]], frozenset[int]] = {}


def stop_token_ids(model: LanguageModel, fmt: PromptFormat) -> frozenset[int]:
    """Ids of every token whose text contains one of ``fmt.stop_strings`` (scans the vocab once)."""
    key = (model.name.split(":", 1)[0], int(model.vocab_size), fmt.stop_strings)
    cached = _STOP_CACHE.get(key)
    if cached is not None:
        return cached
    ids: set[int] = set()
    for i in range(int(model.vocab_size)):
        try:
            text = model.decode([i])
        except (IndexError, KeyError, ValueError, TypeError, OverflowError):
            continue  # padded embedding rows beyond the tokenizer
        if any(s in text for s in fmt.stop_strings):
            ids.add(i)
    if not ids:
        raise InputError(f"no token of {model.name} contains any of {list(fmt.stop_strings)!r}")
    out = frozenset(ids)
    _STOP_CACHE[key] = out
    return out


@dataclass(frozen=True)
class SampledPrompt:
    """A prompt ``s₀ ⊕ s₁ ⊕ … ⊕ sₙ`` with the token offset of every sentence boundary.

    ``tokens[:boundaries[k]]`` is the context after k sentences (k = 0 … n).
    """

    tokens: tuple[int, ...]
    boundaries: tuple[int, ...]
    header_len: int
    fmt: PromptFormat = NEWLINE
    prefix_text: str = ""
    sentences: tuple[str, ...] = ()
    truncated: tuple[bool, ...] = ()
    source: str = ""

    def __post_init__(self) -> None:
        b = self.boundaries
        if not b or any(x > y for x, y in itertools.pairwise(b)) or b[-1] > len(self.tokens):
            raise InputError("boundaries must be non-decreasing offsets into tokens")
        if not 0 <= self.header_len <= b[0]:
            raise InputError("header_len must lie in [0, boundaries[0]]")

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
        """P₋'s scoring context after ``n`` sentences: prefix + the format's response header."""
        return self.prefix(n) + _encode(model, self.fmt.response_prefix)

    def target_head(self, model: LanguageModel, system_prompt: str | None) -> list[int]:
        """What replaces ``tokens[:header_len]`` for the target model (BOS + system turn)."""
        if system_prompt is None:
            return list(self.tokens[: self.header_len])
        return _with_bos(
            model, _encode(model, self.fmt.system_template.format(system=system_prompt))
        )

    def target_context(self, model: LanguageModel, n: int, system_prompt: str | None) -> list[int]:
        """The target model's context after ``n`` sentences, with an optional aligning prompt.

        ``[BOS][system turn](s₀)(s₁…sₙ)[response header]``; without a system prompt it equals
        :meth:`context` (the format's own header is kept).
        """
        self._check_n(n)
        head = self.target_head(model, system_prompt)
        body = list(self.tokens[self.header_len : self.boundaries[n]])
        return head + body + _encode(model, self.fmt.response_prefix)

    def truncate(self, n: int) -> SampledPrompt:
        """The same prompt cut to its first ``n`` sentences."""
        self._check_n(n)
        return replace(
            self,
            tokens=self.tokens[: self.boundaries[n]],
            boundaries=self.boundaries[: n + 1],
            sentences=self.sentences[:n],
            truncated=self.truncated[:n],
        )

    def _check_n(self, n: int) -> None:
        if not 0 <= n <= self.n_sentences:
            raise InputError(f"n must be in [0, {self.n_sentences}], got {n}")

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
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SampledPrompt:
        try:
            return cls(
                tokens=tuple(int(t) for t in d["tokens"]),
                boundaries=tuple(int(b) for b in d["boundaries"]),
                header_len=int(d["header_len"]),
                fmt=PromptFormat.from_dict(d.get("fmt", NEWLINE.to_dict())),
                prefix_text=str(d.get("prefix_text", "")),
                sentences=tuple(str(s) for s in d.get("sentences", ())),
                truncated=tuple(bool(t) for t in d.get("truncated", ())),
                source=str(d.get("source", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"malformed prompt record: {exc}") from None


def _encode(model: LanguageModel, text: str) -> list[int]:
    return list(model.encode(text)) if text else []


def _with_bos(model: LanguageModel, ids: list[int]) -> list[int]:
    """BOS + ids, unless ids already start with the BOS tokens (e.g. a chat header that opens
    with the same special token), so the context never holds BOS twice."""
    bos = list(model.bos_token_ids)
    return ids if bos and ids[: len(bos)] == bos else bos + ids


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
    """
    cfg = PromptSamplerConfig(n_prompts, n_sentences, max_sentence_tokens, prefix_text)
    gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
    stops = frozenset(int(t) for t in stop_ids) if stop_ids is not None else None
    if stops is None:
        stops = stop_token_ids(model, fmt)
    if not stops:
        raise InputError("stop_ids must contain at least one sentence-end token")
    stop = StopCondition(cfg.max_sentence_tokens, stops)

    head = _with_bos(model, _encode(model, fmt.header))
    s0 = _encode(model, prefix_text)
    open_ids = _encode(model, fmt.sentence_prefix)
    close_ids = _encode(model, fmt.sentence_suffix)
    trunc_ids = _encode(model, fmt.truncation_suffix)
    start = head + s0
    if not start:
        raise InputError(
            f"{model.name} has no BOS token: give a prefix_text or a format header as context"
        )

    toks: list[list[int]] = [list(start) for _ in range(cfg.n_prompts)]
    bounds: list[list[int]] = [[len(start)] for _ in range(cfg.n_prompts)]
    texts: list[list[str]] = [[] for _ in range(cfg.n_prompts)]
    trunc: list[list[bool]] = [[] for _ in range(cfg.n_prompts)]
    for k in range(cfg.n_sentences):
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
            unit = open_ids + y + ([] if ended else trunc_ids) + close_ids
            toks[i].extend(unit)
            bounds[i].append(len(toks[i]))
            texts[i].append(model.decode(y))
            trunc[i].append(not ended)
    return [
        SampledPrompt(
            tokens=tuple(toks[i]),
            boundaries=tuple(bounds[i]),
            header_len=len(head),
            fmt=fmt,
            prefix_text=prefix_text,
            sentences=tuple(texts[i]),
            truncated=tuple(trunc[i]),
            source=model.name,
        )
        for i in range(cfg.n_prompts)
    ]


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
