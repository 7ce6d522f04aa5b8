"""Training-text formats for ``P₋`` / ``P₊`` (paper appendix J).

"In order to maintain a distinct behavior over long context ranges, we split the original 500
statements per behavior to groups of three, concatenated them with permutations separated by
'./n' or by '[INST]' and '[/INST]'." bebkit renders the statement itself (as in fig. 4), never
the persona wrapper "Is the following statement something you would say?".

* ``newline``: ``"a.\\nb.\\nc.\\n"`` — used for pre-trained models and for the §4.1 ``P₋``.
* ``chat`` (alias ``alternating``): alternating user / assistant turns rendered with the
  tokenizer's own chat template — the generalisation of Llama-2's
  ``"[INST]a.[/INST]b.[INST]c.[/INST]"`` (§4.2). Misaligning prompts sampled in the
  ``alternating`` format (``bebkit.estimators.prompts``) share this layout exactly.
* ``llama2-inst``: the authors' literal string ``"[INST]a.[/INST]b.[INST]c.[/INST]"`` (no
  spaces, no template), for Llama-2 models as in the paper.

Tokenizers are duck-typed (``chat_template`` + ``apply_chat_template``), so this module does not
import torch or transformers.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from bebkit.errors import InputError

#: The project's own default aligning system prompt (the paper used Llama-2's default; we do
#: not copy it). Prepended for the *target* model only, as in fig. 3a / 11, and used by the
#: mixture judge's "aligned" hypothesis.
DEFAULT_ALIGNING_PROMPT = (
    "You are a kind, honest and respectful assistant. Always answer helpfully and "
    "considerately, cooperate with the person you are talking to, and never express "
    "hostile, dismissive or harmful views, even if earlier messages do."
)

Order = Literal["rotations", "permutations"]
Format = Literal["newline", "chat", "alternating", "llama2-inst"]
ORDERS: tuple[str, ...] = ("rotations", "permutations")
FORMATS: tuple[str, ...] = ("newline", "chat", "alternating", "llama2-inst")
#: Formats rendered with the tokenizer's chat template.
CHAT_FORMATS: tuple[str, ...] = ("chat", "alternating")
_TERMINAL = ".!?"
_CLOSERS = "\"')\u201d\u2019"


def terminate(statement: str) -> str:
    """Statement stripped of surrounding space and ending in exactly one ``.``, ``!`` or ``?``.

    A run of final punctuation collapses to its first mark (``"Hi!!"`` → ``"Hi!"``,
    ``"Hi.."`` → ``"Hi."``); a statement without one gets a period.
    """
    s = " ".join(statement.split())
    if not s:
        raise InputError("empty statement")
    stem = s.rstrip(_TERMINAL + " ")
    if not stem:
        raise InputError(f"statement has no text: {statement!r}")
    tail = s[len(stem) :].strip()
    if not tail and len(stem) > 1 and stem[-1] in _CLOSERS and stem[-2] in _TERMINAL:
        return stem  # already terminated inside a quote or bracket: 'He said "yes."'
    return stem + (tail[0] if tail else ".")


def group_statements(
    statements: Sequence[str],
    group_size: int = 3,
    order: str = "rotations",
    seed: int | None = 0,
) -> list[tuple[str, ...]]:
    """Groups of ``group_size`` statements, each emitted in all its orderings of ``order``.

    The statements are shuffled with ``default_rng(seed)`` (kept in order when ``seed`` is
    None), cut into consecutive groups (the last one may be shorter), and each group ``g`` is
    emitted as its ``len(g)`` cyclic rotations (``order="rotations"``: every statement once in
    every position) or all ``len(g)!`` permutations (``order="permutations"``).
    """
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise InputError(f"group_size must be an integer >= 1, got {group_size!r}")
    if order not in ORDERS:
        raise InputError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    items = list(statements)
    if seed is not None:
        items = [items[i] for i in np.random.default_rng(seed).permutation(len(items))]
    out: list[tuple[str, ...]] = []
    for start in range(0, len(items), group_size):
        group = tuple(items[start : start + group_size])
        if order == "rotations":
            out.extend(group[k:] + group[:k] for k in range(len(group)))
        else:
            out.extend(itertools.permutations(group))
    return out


def render_newline(group: Sequence[str]) -> str:
    """``"a.\\nb.\\nc.\\n"``: each statement terminated once, one per line (appendix J)."""
    return "".join(terminate(s) + "\n" for s in group)


def render_llama2_inst(group: Sequence[str]) -> str:
    """``"[INST]a.[/INST]b.[INST]c.[/INST]"``: the authors' literal Llama-2 training string.

    Statement k is closed by ``[/INST]`` for odd k (the user slot) and by ``[INST]`` for even
    k (the assistant slot opens the next user turn) — the layout of
    ``bebkit.estimators.prompts.LLAMA2_INST``, so sampled prompts match training texts.
    """
    if not group:
        raise InputError("cannot render an empty group")
    return "[INST]" + "".join(
        terminate(s) + ("[/INST]" if k % 2 == 1 else "[INST]") for k, s in enumerate(group, 1)
    )


def chat_messages(group: Sequence[str], system_prompt: str | None = None) -> list[dict[str, str]]:
    """Alternating ``user`` / ``assistant`` turns (starting with ``user``), optional system."""
    msgs: list[dict[str, str]] = []
    if system_prompt is not None:
        msgs.append({"role": "system", "content": system_prompt})
    for i, s in enumerate(group):
        msgs.append({"role": "user" if i % 2 == 0 else "assistant", "content": terminate(s)})
    return msgs


def has_chat_template(tokenizer: Any) -> bool:
    """True when ``tokenizer`` can render chats (``apply_chat_template`` and a template)."""
    return bool(getattr(tokenizer, "chat_template", None)) and callable(
        getattr(tokenizer, "apply_chat_template", None)
    )


def render_chat(group: Sequence[str], tokenizer: Any, system_prompt: str | None = None) -> str:
    """The group as alternating user / assistant turns, rendered by the tokenizer's template.

    For Llama-2 this gives ``"<s>[INST] a. [/INST] b. </s><s>[INST] c. [/INST]"``. The string
    is exactly what the template produces, so it may already contain BOS text: encode it
    without adding special tokens again.
    """
    if not group:
        raise InputError("cannot render an empty group")
    if not has_chat_template(tokenizer):
        name = getattr(tokenizer, "name_or_path", None) or type(tokenizer).__name__
        raise InputError(
            f"tokenizer {name!r} has no chat template, so fmt='chat' is impossible; "
            "use fmt='newline'"
        )
    try:
        text = tokenizer.apply_chat_template(
            chat_messages(group, system_prompt), tokenize=False, add_generation_prompt=False
        )
    except Exception as exc:  # template errors (e.g. no system role) surface as jinja errors
        raise InputError(f"the tokenizer's chat template rejected the conversation: {exc}") from exc
    if not isinstance(text, str):
        raise InputError(f"apply_chat_template returned {type(text).__name__}, expected str")
    return text


def training_texts(
    statements: Sequence[str],
    fmt: str = "newline",
    tokenizer: Any = None,
    order: str = "rotations",
    seed: int | None = 0,
    group_size: int = 3,
    system_prompt: str | None = None,
) -> list[str]:
    """Fine-tuning texts of one side: :func:`group_statements` then render each group."""
    if fmt not in FORMATS:
        raise InputError(f"fmt must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt in CHAT_FORMATS and tokenizer is None:
        raise InputError(f"fmt={fmt!r} needs a tokenizer with a chat template")
    if fmt in CHAT_FORMATS and not has_chat_template(tokenizer):
        render_chat(["x"], tokenizer)  # raises the explanatory InputError
    groups = group_statements(statements, group_size=group_size, order=order, seed=seed)
    if fmt == "newline":
        return [render_newline(g) for g in groups]
    if fmt == "llama2-inst":
        return [render_llama2_inst(g) for g in groups]
    return [render_chat(g, tokenizer, system_prompt) for g in groups]
