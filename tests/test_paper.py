"""bebkit.paper: the paper's stated values, legend labels and the authors' figure loader."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from bebkit.errors import InputError
from bebkit.paper import (
    PAPER_VALUES,
    REFERENCE_LABELS,
    authors_figures_path,
    load_authors_figures,
    paper_value,
)

REF = os.environ.get("BEBKIT_REFERENCE_DIR")


def test_values_are_cited() -> None:
    for name, v in PAPER_VALUES.items():
        assert v.where, name
    assert paper_value("sigma2_agreeableness").value == 50.0
    assert paper_value("table2_svm_accuracy_7b_pct").value == pytest.approx(95.18)
    assert REFERENCE_LABELS["convergence"] == "paper (Llama-2-13B-chat)"
    with pytest.raises(InputError, match="unknown paper value"):
        paper_value("gamma")


def test_path_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BEBKIT_REFERENCE_DIR", raising=False)
    assert authors_figures_path() is None
    with pytest.raises(InputError, match="BEBKIT_REFERENCE_DIR"):
        load_authors_figures()
    monkeypatch.setenv("BEBKIT_REFERENCE_DIR", str(tmp_path))
    assert authors_figures_path() == tmp_path / "authors-figures.json"


def test_bad_files(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        load_authors_figures(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(InputError, match="not valid JSON"):
        load_authors_figures(bad)
    bad.write_text(json.dumps({"beta_KL_Pminus_vs_chat_INSTwrapped_per_sentence_1to15": {}}))
    with pytest.raises(InputError, match="missing section") as e:
        load_authors_figures(bad)
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not REF, reason="BEBKIT_REFERENCE_DIR not set")
def test_loads_authors_figures() -> None:
    f = load_authors_figures()
    c = f.kl("agreeableness", "none")
    assert c.n_start == 1 and c.n.size == 10 and c.values[0] == pytest.approx(30.82)
    assert f.variance["anti-immigration"].n_start == 0
    assert f.kl("anti-immigration", "pretrained").values[0] == pytest.approx(5.01)
    assert f.pct_good[("agreeableness", "aligned")].values[0] == 100
    assert f.pct_negative_base["agreeableness"].n.tolist() == [1, 2, 3, 4, 5]
    assert set(f.curves_for("agreeableness")) == {
        "beta_kl", "variance", "conv_none", "conv_aligned", "pretrained"
    }  # fmt: skip
    with pytest.raises(InputError, match="no authors' KL curve"):
        f.kl("agreeableness", "sleepy")
