"""Which prompt files count as the authors' file, and the early check of the others."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from bebkit.errors import InputError
from bebkit.pipeline.experiments_common import (
    authors_prompts_file,
    check_prompts_file,
    is_authors_prompts,
)


def test_a_prompt_list_that_mentions_behaviors_is_still_checked(tmp_path: Path) -> None:
    # the old check skipped any .json whose text contained "behaviors"
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps([["behaviors"], "not a list of sentences", 3]))
    assert not is_authors_prompts(bad)
    with pytest.raises(InputError):
        check_prompts_file(bad)
    good = tmp_path / "q.json"
    good.write_text(json.dumps([["These behaviors are fine.", "Another sentence."]]))
    check_prompts_file(good)
    assert authors_prompts_file(SimpleNamespace(prompts_file=str(good))) is None


def test_the_authors_file_is_recognised_by_its_structure(tmp_path: Path) -> None:
    f = tmp_path / "authors-prompts.json"
    f.write_text(json.dumps({"behaviors": {"agreeableness": {"prompts": {}}}}))
    assert is_authors_prompts(f)
    check_prompts_file(f)  # read per behavior later, not here
    assert authors_prompts_file(SimpleNamespace(prompts_file=str(f))) == f
    broken = tmp_path / "broken.json"
    broken.write_text('{"behaviors": ')
    assert not is_authors_prompts(broken)
    with pytest.raises(InputError):
        check_prompts_file(broken)
    assert authors_prompts_file(SimpleNamespace(prompts_file=None)) is None
