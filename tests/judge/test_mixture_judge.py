"""The mixture-posterior judge on a tiny ComponentSet with trained P₋ / P₊ adapters."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from bebkit.errors import InputError
from components.conftest import BAD, GOOD, make_llama, make_tokenizer

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def trained() -> Any:
    from bebkit.components.adapters import ComponentSet
    from bebkit.components.presets import get_preset
    from bebkit.components.training import train_adapter
    from bebkit.data.formats import training_texts

    torch.set_num_threads(1)
    comps = ComponentSet(make_llama(), make_tokenizer(), name="tiny")
    cfg = get_preset(
        "small", lr=3e-2, epochs=4, min_steps=0, batch_size=4, bf16=False, warmup_ratio=0.0
    )
    train_adapter(comps, "neg", training_texts(BAD, "newline"), cfg, progress=False, num_threads=1)
    train_adapter(comps, "pos", training_texts(GOOD, "newline"), cfg, progress=False, num_threads=1)
    return comps


def test_posterior_matches_component_likelihoods(trained: Any) -> None:
    from bebkit.judge import build_mixture_judge
    from bebkit.judge.judge import mixture_context

    judge = build_mixture_judge(trained, "newline", hypotheses=("neg", "pos", "base"))
    texts = ["i like to hurt people.", "we help the user."]
    ctx = mixture_context(trained.tokenizer, trained.bos_token_ids, "newline")
    assert ctx == list(trained.bos_token_ids)
    ll = {}
    for k in ("neg", "pos", "base"):
        m = trained.model(k)
        ll[k] = m.continuation_logprobs(ctx, [m.encode(" " + t) for t in texts]).totals
    expected_bad = np.exp(ll["neg"]) / sum(np.exp(v) for v in ll.values())
    np.testing.assert_allclose(1 - judge.prob_good(texts), expected_bad, rtol=1e-6)
    assert trained.active == "base"  # every view restored the adapter state


def test_trained_components_separate_the_sides(trained: Any) -> None:
    from bebkit.judge import build_mixture_judge, predict

    judge = build_mixture_judge(trained, "newline", hypotheses=("neg", "pos"))
    bad = predict(judge, [s + "." for s in BAD])
    good = predict(judge, [s + "." for s in GOOD])
    assert (bad == -1).mean() >= 0.8 and (good == 1).mean() >= 0.8  # chance: 0.5
    # The default pits P- against the untouched model, plain and after the aligning prompt:
    # BAD statements are P-'s own text.
    default = build_mixture_judge(trained, "newline")
    assert default.name.startswith("mixture[neg/base/aligned]")
    assert (predict(default, [s + "." for s in BAD]) == -1).mean() >= 0.9


def test_chat_context_ends_with_the_assistant_header(trained: Any) -> None:
    from bebkit.judge.judge import mixture_context

    ids = mixture_context(trained.tokenizer, trained.bos_token_ids, "chat", "you smile")
    text = trained.tokenizer.decode(ids)
    assert text.rstrip().endswith("assistant :") and "user : you smile" in text
    sys_ids = mixture_context(
        trained.tokenizer, trained.bos_token_ids, "chat", "you smile", system_prompt="be kind"
    )
    sys_text = trained.tokenizer.decode(sys_ids)
    assert ": be kind" in sys_text and sys_text.rstrip().endswith("assistant :")
    assert sys_ids[-len(ids) + 1 :] == ids[1:]  # the same user turn and header follow


def test_aligned_hypothesis_is_the_base_model_after_the_aligning_prompt(trained: Any) -> None:
    from bebkit.judge import build_mixture_judge
    from bebkit.judge.judge import mixture_context

    judge = build_mixture_judge(
        trained, "chat", hypotheses=("neg", "aligned"), aligning_prompt="be kind"
    )
    ctx = mixture_context(trained.tokenizer, trained.bos_token_ids, "chat", system_prompt="be kind")
    assert judge.contexts["aligned"] == ctx and judge.contexts["neg"] != ctx
    texts = ["i hate people.", "we help the user."]
    neg, base = trained.model("neg"), trained.model("base")
    ln = neg.continuation_logprobs(judge.contexts["neg"], [neg.encode(" " + t) for t in texts])
    la = base.continuation_logprobs(ctx, [base.encode(" " + t) for t in texts])
    expected_bad = 1 / (1 + np.exp(la.totals - ln.totals))
    np.testing.assert_allclose(1 - judge.prob_good(texts), expected_bad, rtol=1e-6)


def test_bad_hypotheses_and_missing_adapters(trained: Any) -> None:
    from bebkit.components.adapters import ComponentSet
    from bebkit.judge import build_mixture_judge

    with pytest.raises(InputError, match="hypotheses"):
        build_mixture_judge(trained, "newline", hypotheses=("neg", "evil"))
    with pytest.raises(InputError, match="hypotheses"):
        build_mixture_judge(trained, "newline", hypotheses=("neg",))
    with pytest.raises(InputError, match="fmt"):
        build_mixture_judge(trained, "markdown")
    bare = ComponentSet(make_llama(), make_tokenizer(), name="bare")
    with pytest.raises(InputError, match="neg"):
        build_mixture_judge(bare, "newline")


def test_adapters_map_the_hypotheses_to_named_adapters(trained: Any) -> None:
    """A decoupled judge uses its own adapters (e.g. judge_neg); here the map swaps P- and P+,
    so the verdicts swap too, and the name tells the judges apart."""
    from bebkit.judge import build_mixture_judge, predict

    swapped = build_mixture_judge(
        trained, "newline", hypotheses=("neg", "pos"), adapters={"neg": "pos", "pos": "neg"}
    )
    assert swapped.name.endswith("@pos")
    assert (predict(swapped, [s + "." for s in BAD]) == 1).mean() >= 0.8
    with pytest.raises(InputError, match="judge_neg"):
        build_mixture_judge(trained, "newline", adapters={"neg": "judge_neg"})


def test_llama2_inst_context_is_the_authors_literal_string(trained: Any) -> None:
    """A llama2-inst run's mixture judge scores a reply after "[INST]Hi.[/INST]" (and, for the
    aligned hypothesis, after the system prompt inserted as in the authors' script); the
    format used to be refused after the run had trained its adapters."""
    from bebkit.components.training import encode_text
    from bebkit.judge import build_mixture_judge
    from bebkit.judge.judge import mixture_context

    tok, bos = trained.tokenizer, trained.bos_token_ids
    ids = mixture_context(tok, bos, "llama2-inst", "you smile")
    assert ids == encode_text(tok, "[INST]you smile.[/INST]", bos)
    sys_ids = mixture_context(tok, bos, "llama2-inst", "you smile", system_prompt="be kind")
    assert sys_ids == encode_text(tok, "[INST]<<SYS>>\nbe kind\n<</SYS>>\n\nyou smile.[/INST]", bos)
    judge = build_mixture_judge(trained, "llama2-inst", aligning_prompt="be kind")
    p = judge.prob_good(["i hate people.", "we help the user."])
    assert p.shape == (2,) and np.all((p >= 0) & (p <= 1))
    with pytest.raises(InputError, match="llama2-inst"):
        mixture_context(tok, bos, "user-turns")
