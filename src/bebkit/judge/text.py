"""Text units the judge scores: the first sentence of a response (as in the paper) or all of it.

Wolf et al. (arXiv 2304.11082, App. L.3) label a response "solely based on its first sentence".
Sampled responses carry chat-template debris (``[/INST]``, ``</s>``, ``<unk>``, stray ``]``,
spreadsheet escapes such as ``_x000D_``); these act as sentence boundaries, never as content.
"""

from __future__ import annotations

import re
from typing import Literal

Unit = Literal["first_sentence", "full"]
UNITS: tuple[Unit, ...] = ("first_sentence", "full")

# Template tokens, special tokens, HTML-ish tags and bracket runs: all mark a boundary.
_ARTIFACTS = re.compile(
    r"\[/?INST\]?|</?s>|<unk>|<\|[^|>]{1,30}\|>|_x000[0-9A-Fa-f]_|</?[A-Za-z][^<>]{0,40}>|[\[\]]+"
)
# A sentence ends at . ! ? (possibly repeated, possibly followed by a closing quote) when the
# next character is whitespace, the end, or an upper-case letter glued to it ("others.It's").
_SENT_END = re.compile(r"(?<=[.!?])[\"'”’)]*(?:\s+|$|(?=[A-Z]))")
_WS = re.compile(r"[ \t]+")


def clean_response(text: str) -> str:
    """Replace template/special-token debris by line breaks and collapse spaces."""
    t = _ARTIFACTS.sub("\n", text)
    return _WS.sub(" ", t).strip()


def first_sentence(text: str) -> str:
    """The first non-empty sentence of ``text`` after :func:`clean_response`.

    Lines are split first (a line break always ends a sentence in chat output), then
    sentence punctuation. An unfinished sentence (responses are length-truncated) is
    returned as is; an empty response gives ``""``.
    """
    for line in clean_response(text).split("\n"):
        line = line.strip()
        if not line:
            continue
        for piece in _SENT_END.split(line):
            piece = piece.strip()
            if any(ch.isalnum() for ch in piece):
                return piece
    return ""


_QUOTES = str.maketrans({"’": "'", "‘": "'", "“": '"', "”": '"', "ʼ": "'"})
# UTF-8 punctuation (E2 80 xx) that went through a cp1255 decode on its way into a spreadsheet:
# "don’t" arrives as "donג€™t". The Llama-2 label file has ~700 of these; repair them before
# the quotes are made ASCII, or "ג€™" reads as two foreign words in the middle of a sentence.
_MOJIBAKE = re.compile("\u05d2\u20ac(.)")


def _unmojibake(m: re.Match[str]) -> str:
    try:
        return ("\u05d2\u20ac" + m.group(1)).encode("cp1255").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        # The third byte did not survive (a lost quote byte): a quote mark, keep what follows.
        return "'" + m.group(1)


def normalize(text: str) -> str:
    """Canonical surface form shared by training texts and judged texts.

    Persona statements come without final punctuation and with typographic quotes, chat
    replies with both; left alone, a linear judge learns "ends with a full stop ⇒ good".
    So quotes become ASCII, spaces collapse and every text ends in exactly one . ! or ?.
    """
    t = " ".join(_MOJIBAKE.sub(_unmojibake, text).translate(_QUOTES).split())
    t = t.rstrip(" .,;:")
    if not t:
        return ""
    return t if t[-1] in "!?" else t + "."


def text_unit(text: str, unit: Unit) -> str:
    """The part of a response a judge scores (first sentence or cleaned full text), normalised."""
    if unit == "first_sentence":
        return normalize(first_sentence(text))
    if unit == "full":
        return normalize(clean_response(text))
    raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")


# First → second person, for replies that reflect a statement back at the user
# ("I enjoy X" → "you enjoy X"). Word-level and behavior-agnostic; contractions first.
_PERSON = [
    (r"\bI'm\b", "you're"),
    (r"\bI am\b", "you are"),
    (r"\bI was\b", "you were"),
    (r"\bI've\b", "you've"),
    (r"\bI'd\b", "you'd"),
    (r"\bI'll\b", "you'll"),
    (r"\bI\b", "you"),
    (r"\bmyself\b", "yourself"),
    (r"\bmine\b", "yours"),
    (r"\bmy\b", "your"),
    (r"\bme\b", "you"),
    (r"\bMy\b", "Your"),
    (r"\bMe\b", "You"),
    (r"\bwe\b", "you"),
    (r"\bWe\b", "You"),
    (r"\bour\b", "your"),
    (r"\bOur\b", "Your"),
    (r"\bus\b", "you"),
]
_PERSON_RE = [(re.compile(p), r) for p, r in _PERSON]


def second_person(statement: str) -> str:
    """Rewrite a first-person statement as addressed to the user, without final punctuation.

    ``"I enjoy hurting people"`` → ``"you enjoy hurting people"``; statements that are not
    about the speaker stay as they are, with a lower-case first letter.
    """
    t = " ".join(statement.translate(_QUOTES).split()).rstrip(" .!?")
    for pat, rep in _PERSON_RE:
        t = pat.sub(rep, t)
    return t[:1].lower() + t[1:] if t[:2] != "I " else t
