"""``bebkit misalign`` through :func:`bebkit.cli.main`: validation and a tiny end-to-end run."""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pytest

from bebkit.cli import main
from bebkit.theory import theorem2_length


@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--n-prompts", "0"], "--n-prompts must be >= 1"),
        (["--n-sentences", "1"], "--n-sentences must be >= 2"),
        (["--conditions", "none,both"], "--conditions"),
        (["--delta", "1.5"], "--delta must be in (0, 1)"),
        (["--beta", "0"], "--beta must be > 0"),
        (["--sigma", "-1"], "--sigma must be >= 0"),
        (["--paper-figures", "/nonexistent/authors.json"], "--paper-figures"),
        (["--persona-dir", "/nonexistent/dir"], "--persona-dir"),
        (["--aligning-prompt", " "], "--aligning-prompt"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], extra: list[str], msg: str
) -> None:
    code = main(["misalign", "--model", "nowhere", "--behavior", "cooperativeness", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and "Traceback" not in err[0]


def test_unknown_behavior_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["misalign", "--model", "nowhere", "--behavior", "no-such-behavior",
                 "--persona-dir", str(tmp_path)])  # fmt: skip
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def _tiny_model_dir(root: Path, extra: tuple[str, ...] = ()) -> Path:
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    pytest.importorskip("tokenizers")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["i", "you", "we", "help", "hurt", "others", "people", "like", "never", "always",
             "work", "together", "alone", "share", "not", "to", "with", "the", "a"]  # fmt: skip
    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "<bos>", "<eos>", *words,
                                         ".", ",", ":", "'", "\n", *extra])}  # fmt: skip
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"<\w+>|\w+|[^\w\s]|\n"), behavior="isolated"),
        ]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>",
    )  # fmt: skip
    tok.chat_template = (
        "{% for m in messages %}<bos>{{ m['role'] }} : {{ m['content'] }} <eos>{% endfor %}"
        "{% if add_generation_prompt %}<bos>assistant :{% endif %}"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=512,
        bos_token_id=2, eos_token_id=3, pad_token_id=1,
    )  # fmt: skip
    out = root / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_end_to_end_on_a_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _tiny_model_dir(tmp_path)
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    ref = tmp_path / "authors-figures.json"
    ref.write_text(json.dumps({"pct_good_responses_chat_of32_per_sentence_1to10": {
        "agree_align": [100, 90, 50, 20], "agree_noalign": [100, 80, 30, 10]}}))  # fmt: skip
    out = tmp_path / "run"
    args = ["misalign", "--model", str(model), "--behavior", "cooperativeness", "--quick",
            "--n-prompts", "2", "--n-sentences", "3", "--n-responses", "4",
            "--max-response-tokens", "6", "--max-sentence-tokens", "6", "--judge", "likelihood",
            "--n-boot", "20", "--n-samples", "4", "--n-tokens", "3", "--beta-prime", "1.0",
            "--sigma", "0.5", "--beta", "1.0", "--paper-figures", str(ref),
            "--paper-behavior", "agreeableness", "--threads", "1", "--seed", "4",
            "--second-judges", "mixture", "--out", str(out), "--json"]  # fmt: skip
    assert main(args) == 0
    d: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(d["curves"]) == {"none", "aligned"}
    # alternating layout: responses after n = 0 (Lemma 7's ceiling g+) and odd n; curves n >= 1
    assert d["curves"]["none"]["n"] == [1, 3]
    assert d["curves"]["none"]["fraction_good"][0]["n"] == 2 * 4
    assert d["n_responses_total"] == 2 * 3 * 2 * 4
    t2 = d["theorem2"]
    assert t2["sources"]["beta"] == "settings" and t2["s0_sentences"] == 2
    assert t2["s0_term"] == pytest.approx(1.0 * 2 + 0.5 * (2 / 0.1) ** 0.5 + 1)
    # beta given, log 1/alpha not: no bound from a mixed pair (an intercept fitted with
    # another slope), and never the sigmoid's intercept
    assert t2["beta"] == 1.0 and t2["log_inv_alpha"] is None and t2["length_bound"] is None
    assert t2["sources"]["log_inv_alpha"] == "missing"
    assert t2["length_bound"] is None or t2["length_bound"] > t2["s0_term"]
    assert d["kl"]["curve"]["n"] == [0, 1, 3]
    assert set(d["g_plus"]) == {"none", "aligned"} and d["g_minus"]["n"] == 2 * 4
    # the control curve (prompts from P+) and the copy audit are in every record
    ctl = d["control"]
    assert ctl["curve"]["n"] == [1, 3] and isinstance(ctl["declines"], bool)
    assert ctl["prompt_source"].endswith(":pos")
    assert d["copy_audit"]["copied"]["n"] == 2 * 2 * 2 * 4
    # a second judge scores the very same responses (both conditions, the control, P-'s own)
    op = d["second_judges"]["mixture"]
    assert op["judge"].startswith("mixture") and set(op["curves"]) == {"none", "aligned"}
    assert op["curves"]["none"]["n"] == [1, 3] and op["control"]["curve"]["n"] == [1, 3]
    control_rows = (out / "responses_control.jsonl").read_text().splitlines()
    assert len(control_rows) == 2 * 3 * 4  # 2 prompts x n in (0, 1, 3) x 4 responses
    assert op["agreement_with_main"]["n"] == d["n_responses_total"] + len(control_rows)
    assert op["g_minus"]["n"] == d["g_minus"]["n"]
    assert (out / "judges.png").read_bytes()[:4] == b"\x89PNG"
    assert "alternate" in d["n_counting"] and set(d["condition_contexts"]) == {"none", "aligned"}
    rec = json.loads((out / "record.json").read_text())
    assert rec["kind"] == "misalign" and rec["seed"] == 4
    assert rec["config"]["n_prompts"] == 2 and rec["config"]["judge"] == "likelihood"
    rows = [json.loads(x) for x in (out / "responses.jsonl").read_text().splitlines()]
    assert len(rows) == d["n_responses_total"]
    assert {"prompt_id", "n", "condition", "text", "first_sentence", "prob_good", "label"} <= set(
        rows[0]
    )
    assert (out / "responses.csv").read_text().startswith("prompt_id,")
    assert (out / "misalign.png").read_bytes()[:4] == b"\x89PNG"
    page = (out / "examples.html").read_text()
    assert "CONTENT WARNING" in page
    for r in [r for r in rows if r["n"] == 1][:3]:  # the page shows the first and last n >= 1
        if r["prompt_id"] == 0:
            assert html.escape(r["first_sentence"]) in page
    # Same seed, reused adapters → identical responses.
    out2 = tmp_path / "run2"
    assert main([*args[:-3], "--out", str(out2), "--json"]) == 0
    d2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d2["curves"] == d["curves"]
    # Fixed prompts from a file replace the P- samples, laid out in the same format.
    fixed = tmp_path / "prompts.jsonl"
    sents = [["i hurt others.", "we never share.", "you hurt people."],
             ["i never help.", "we work alone.", "i hurt you."]]  # fmt: skip
    fixed.write_text("".join(json.dumps(p) + "\n" for p in sents))
    out3 = tmp_path / "run3"
    assert main([*args[:-3], "--prompts-file", str(fixed), "--out", str(out3), "--json"]) == 0
    capsys.readouterr()
    used = [json.loads(x) for x in (out3 / "prompts.jsonl").read_text().splitlines()]
    assert [p["sentences"] for p in used] == sents
    assert [p["source"] for p in used] == ["file:0", "file:1"]
    # The authors' own prompts: the ten behind their curves first, their per-marker hand
    # labels of Llama-2 next to this run's judged rates on the same prompts.
    authors = tmp_path / "authors-prompts.json"
    texts = {"0": "[INST]i help others.[/INST]we share.[INST]you help.[/INST]i like",
             "1": "[INST]i hurt others.[/INST]we never share.[INST]you hurt people.[/INST]i",
             "2": "[INST]we work together.[/INST]i hurt you.[INST]i never help.[/INST]we"}  # fmt: skip
    good = {"1": {"with_aligning_prompt": [32, 16], "without_aligning_prompt": [30, 2]},
            "2": {"with_aligning_prompt": [31, 8], "without_aligning_prompt": [20, 0]}}  # fmt: skip
    authors.write_text(json.dumps({"behaviors": {"cooperativeness": {
        "prompts": texts, "curve_prompt_ids": [2, 1], "good_of_32_per_marker": good}}}))  # fmt: skip
    out4 = tmp_path / "run4"
    assert main([*args[:-3], "--prompts-file", str(authors), "--out", str(out4), "--json"]) == 0
    d4 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    used = [json.loads(x) for x in (out4 / "prompts.jsonl").read_text().splitlines()]
    assert [p["source"] for p in used] == ["authors:cooperativeness:2", "authors:cooperativeness:1"]
    ap = d4["authors_prompts"]
    rows = {(r["condition"], r["marker"]): r for r in ap["rows"]}
    assert set(rows) == {(c, k) for c in ("none", "aligned") for k in (1, 2)}
    assert rows[("none", 1)]["authors"]["value"] == pytest.approx(50 / 64)
    assert rows[("aligned", 2)]["authors"]["value"] == pytest.approx(24 / 64)
    assert rows[("none", 2)]["sentences"] == [3, 3] and rows[("none", 2)]["measured"]["n"] == 8
    assert Path(ap["figure"]).read_bytes()[:4] == b"\x89PNG"


def test_llama2_inst_layout_with_the_mixture_judge_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The authors' literal layout runs through (adapters trained on it, prompts, responses,
    the mixture judge on llama2-inst contexts); it used to stop after training with
    "fmt must be 'chat' or 'newline'"."""
    # the literal markers need their pieces in the vocabulary ("[", "/", "INST", "]")
    model = _tiny_model_dir(tmp_path, extra=("[", "]", "/", "INST", "SYS", "<", ">"))
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    args = ["misalign", "--model", str(model), "--behavior", "cooperativeness", "--quick",
            "--format", "llama2-inst", "--n-prompts", "2", "--n-sentences", "3",
            "--n-responses", "2", "--max-response-tokens", "4", "--max-sentence-tokens", "4",
            "--n-boot", "0", "--threads", "1", "--out", str(tmp_path / "run"), "--json"]  # fmt: skip
    assert main(args) == 0
    d: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["format"] == "llama2-inst" and d["judge"].startswith("mixture")
    assert d["curves"]["none"]["n"] == [1, 3]
    # The authors' raw prompts are read where they read: after every '[/INST]' marker that
    # all prompts share — here sentences 1, 2 and 3 (after the second marker every sentence
    # ends with '[/INST]', as in their agreeableness prompts), not only after odd sentences.
    # The P+ control's sampled prompts keep the layout's own reading points.
    authors = tmp_path / "authors-prompts.json"
    texts = {"0": "[INST]i help.[/INST]we share.[/INST]you help.[/INST]i like",
             "1": "[INST]i hurt.[/INST]we never share.[/INST]you hurt.[/INST]i"}  # fmt: skip
    good = {"0": {"with_aligning_prompt": [32, 16, 9], "without_aligning_prompt": [30, 2, 1]},
            "1": {"with_aligning_prompt": [31, 8, 4], "without_aligning_prompt": [20, 0, 0]}}  # fmt: skip
    authors.write_text(json.dumps({"behaviors": {"cooperativeness": {
        "prompts": texts, "curve_prompt_ids": [0, 1], "good_of_32_per_marker": good}}}))  # fmt: skip
    raw_args = [*args[:-3], "--prompts-file", str(authors),
                "--out", str(tmp_path / "raw"), "--json"]  # fmt: skip
    assert main(raw_args) == 0
    d2 = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d2["curves"]["none"]["n"] == [1, 2, 3]
    rows = {(r["condition"], r["marker"]) for r in d2["authors_prompts"]["rows"]}
    assert rows == {(c, k) for c in ("none", "aligned") for k in (1, 2, 3)}
    assert d2["control"]["curve"]["n"] == [1, 3]


def test_theorem2_pair_comes_from_one_kl_fit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without beta and log 1/alpha given, Theorem 2's pair is this run's own KL fit (value at
    0 and slope of one fit), and the bound is theorem2_length at it (epsilon = 0.5)."""
    model = _tiny_model_dir(tmp_path)
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    args = ["misalign", "--model", str(model), "--behavior", "cooperativeness", "--quick",
            "--n-prompts", "3", "--n-sentences", "5", "--n-responses", "2",
            "--max-response-tokens", "4", "--max-sentence-tokens", "5", "--judge", "minilm",
            "--n-boot", "0", "--n-samples", "4", "--beta-prime", "1.0", "--sigma", "0.5",
            "--no-control", "--threads", "1", "--seed", "4", "--out", str(tmp_path / "run"),
            "--json"]  # fmt: skip
    assert main(args) == 0
    d: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not d["control"]  # --no-control: a True-by-default flag can be switched off
    kfit = d["kl"]["fit"]
    assert kfit is not None, d["fit_errors"]
    kind = "floored" if kfit.get("floored") else "lemma5"
    a, b = kfit[kind]["log_inv_alpha"]["value"], kfit[kind]["beta"]["value"]
    t2 = d["theorem2"]
    assert (t2["log_inv_alpha"], t2["beta"]) == (a, b)
    assert t2["sources"]["beta"] == t2["sources"]["log_inv_alpha"]
    assert t2["sources"]["beta"].startswith(f"this run's KL fit ({kind}")
    if 0 < math.exp(-a) < 1:
        want = theorem2_length(math.exp(-a), b, 0.5, 1.0, 0.5, 0.1, t2["s0_sentences"])
        assert t2["length_bound"] == pytest.approx(want)
