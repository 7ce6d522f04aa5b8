"""Fuzz the input loaders (issue 17): each returns a valid object or raises ``InputError``.

Random YAML configs (mappings with the real keys and random values, scalars, lists, wrong
types, raw text) go through :func:`bebkit.pipeline.config.load_config`; random JSON lines and
raw bytes through the labelled-responses, fixed-prompts and persona loaders. Any exception
other than :class:`bebkit.errors.InputError` is a bug (the CLI would print a traceback).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bebkit.data.behaviors import Behavior, load_behavior
from bebkit.errors import InputError
from bebkit.estimators.prompts import load_fixed_prompts
from bebkit.judge.data import LabelledResponse, load_labelled_responses
from bebkit.pipeline.config import ReproduceConfig, load_config
from bebkit.pipeline.registry import experiments

FUZZ = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)

# --------------------------------------------------------------------------- value strategies

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**6), max_value=10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12),
)


def values(leaves: st.SearchStrategy[Any], keys: st.SearchStrategy[str]) -> Any:
    return st.recursive(
        leaves,
        lambda inner: st.one_of(
            st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=4)
        ),
        max_leaves=12,
    )


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


# ------------------------------------------------------------------------------ YAML config

_SECTIONS = sorted({e.section for e in experiments().values()})
_TOP_KEYS = [*ReproduceConfig.model_fields, *_SECTIONS]
_FIELD_KEYS = sorted(
    {k for e in experiments().values() for k in e.settings.model_fields} | {"enabled", "preset"}
)
config_keys = st.one_of(st.sampled_from(_TOP_KEYS), st.text(max_size=8))
section_values = st.one_of(
    values(scalars, st.sampled_from(_FIELD_KEYS)),
    st.dictionaries(st.sampled_from(_FIELD_KEYS), scalars, max_size=4),
)
config_docs = st.one_of(
    values(scalars, config_keys),  # scalars, lists, wrong types at the top level
    st.dictionaries(config_keys, st.one_of(scalars, section_values), max_size=6),
    st.dictionaries(st.sampled_from(_SECTIONS), section_values, min_size=1, max_size=3),
    st.dictionaries(
        st.sampled_from(["quick", "sections", "components"]),
        st.dictionaries(st.sampled_from([*_SECTIONS, "components", "x"]), section_values),
        min_size=1,
    ),
)


def _load_config(text: str) -> None:
    with scratch() as d:
        try:
            cfg = load_config(_write(d / "config.yaml", text))
        except InputError:
            return
    assert isinstance(cfg, ReproduceConfig)
    with suppress(InputError):  # the quick overrides are validated when applied (--quick)
        assert isinstance(cfg.with_quick(), ReproduceConfig)


@FUZZ
@given(config_docs)
def test_config_loader_on_random_documents(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc, allow_unicode=True)
    except yaml.YAMLError:  # pragma: no cover - safe_dump of plain data
        return
    _load_config(text)


@FUZZ
@given(st.text(max_size=80))
def test_config_loader_on_random_text(text: str) -> None:
    _load_config(text)


_DEMO = yaml.safe_load(
    (Path(__file__).resolve().parents[1] / "configs" / "demo.yaml").read_text(encoding="utf-8")
)


@FUZZ
@given(st.sampled_from(sorted(_DEMO)), st.one_of(scalars, section_values))
def test_config_loader_on_a_mutated_valid_config(key: str, value: Any) -> None:
    doc = {**_DEMO, key: value}
    _load_config(yaml.safe_dump(doc, allow_unicode=True))


# ------------------------------------------------------------------------------ JSONL files

label_rows = st.one_of(
    values(json_scalars, st.text(max_size=6)),
    st.fixed_dictionaries(
        {"response": json_scalars, "label": st.sampled_from(["good", "bad", " Good", "x", 1])},
        optional={
            "n_sentences": json_scalars,
            "aligning_prompt": json_scalars,
            "prompt_id": json_scalars,
            "behavior": st.one_of(json_scalars, st.just("b")),
        },
    ),
)


def _jsonl(rows: list[Any]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


files = st.one_of(st.binary(max_size=40), st.text(max_size=60))


@FUZZ
@given(st.one_of(st.lists(label_rows, max_size=5).map(_jsonl), files))
def test_labels_loader(content: str | bytes) -> None:
    with scratch() as d:
        path = _write(d / "labels.jsonl", content)
        for behavior in (None, "b"):
            try:
                rows = load_labelled_responses(path, behavior=behavior)
            except InputError:
                continue
            assert rows and all(isinstance(r, LabelledResponse) for r in rows)
            assert all(r.label in (-1, 1) for r in rows)


prompt_items = st.one_of(
    values(json_scalars, st.sampled_from(["sentences", "x"])),
    st.lists(st.text(max_size=8), max_size=3),
    st.fixed_dictionaries({"sentences": st.lists(st.text(max_size=8), max_size=3)}),
)


@FUZZ
@given(
    st.one_of(
        st.lists(prompt_items, max_size=4).map(_jsonl),
        st.lists(prompt_items, max_size=4).map(json.dumps),
        prompt_items.map(json.dumps),
        files,
    ),
    st.sampled_from(["p.json", "p.jsonl"]),
)
def test_fixed_prompts_loader(content: str | bytes, name: str) -> None:
    with scratch() as d:
        try:
            prompts = load_fixed_prompts(_write(d / name, content))
        except InputError:
            return
    assert prompts
    assert all(isinstance(p, tuple) and p and all(s.strip() for s in p) for p in prompts)


answers = st.sampled_from([" Yes", " No", "Yes", "no", "maybe", "", 1, None])
persona_rows = st.one_of(
    values(json_scalars, st.text(max_size=6)),
    st.fixed_dictionaries(
        {"statement": st.one_of(st.text(max_size=10), json_scalars)},
        optional={
            "answer_matching_behavior": answers,
            "answer_not_matching_behavior": answers,
            "label_confidence": json_scalars,
        },
    ),
)


@FUZZ
@given(
    st.one_of(
        st.lists(persona_rows, max_size=5).map(_jsonl),
        st.lists(persona_rows, max_size=5).map(json.dumps),  # the JSON-array form
        files,
    )
)
def test_persona_loader(content: str | bytes) -> None:
    with scratch() as d:
        _write(d / "fuzzbeh.jsonl", content)
        try:
            b = load_behavior("fuzzbeh", d)
        except InputError:
            return
    assert isinstance(b, Behavior)
    assert b.desired and b.undesired
    assert all(isinstance(s, str) and s.strip() for s in (*b.desired, *b.undesired))
