"""The KL subcommands (beta-sigma, prompt-distinguishability, convergence, pretrained) via main()."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bebkit.cli import main

COMMANDS = ("beta-sigma", "prompt-distinguishability", "convergence", "pretrained")


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize(
    ("extra", "msg"),
    [
        (["--n-prompts", "0"], "--n-prompts must be >= 1"),
        (["--n-samples", "1"], "--n-samples must be >= 2"),
        (["--n-boot", "50"], "--n-boot must be >= 100"),
        (["--paper-figures", "/nonexistent/authors.json"], "--paper-figures"),
        (["--persona-dir", "/nonexistent/dir"], "--persona-dir"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], command: str, extra: list[str], msg: str
) -> None:
    code = main([command, "--model", "nowhere", "--behavior", "cooperativeness", *extra])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0] and "Traceback" not in err[0]


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_precision_is_one_line_exit_2(
    capsys: pytest.CaptureFixture[str], command: str
) -> None:
    args = [command, "--model", "nowhere", "--behavior", "cooperativeness"]
    with pytest.raises(SystemExit) as exc:  # argparse's choices: our parser's one-line error
        main([*args, "--precision", "float16"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--precision" in err[0] and "float16" in err[0]


@pytest.mark.parametrize(
    ("command", "extra", "msg"),
    [
        ("convergence", ["--conditions", "none,both"], "--conditions"),
        ("convergence", ["--epsilon", "2"], "--epsilon must be in (0, 1)"),
        ("convergence", ["--beta-sigma-record", "/nonexistent.json"], "--beta-sigma-record"),
        ("pretrained", ["--convergence-record", "/nonexistent.json"], "--convergence-record"),
        ("prompt-distinguishability", ["--neutral", " "], "--neutral"),
        ("beta-sigma", ["--n-var-prompts", "2"], "--n-var-prompts must be >= 3"),
    ],
)
def test_command_specific_validation(
    capsys: pytest.CaptureFixture[str], command: str, extra: list[str], msg: str
) -> None:
    assert main([command, "--model", "nowhere", "--behavior", "cooperativeness", *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]


def _tiny_model_dir(root: Path) -> Path:
    """A 1-layer random Llama with a word-level tokenizer and a chat template, saved to disk."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("peft")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["i", "you", "we", "help", "hurt", "others", "people", "like", "never", "always",
             "work", "together", "alone", "share", "not", "to", "with", "the", "a", "what",
             "is", "capital", "of", "italy", "rome", "?"]  # fmt: skip
    vocab = {t: i for i, t in enumerate(["<unk>", "<pad>", "<bos>", "<eos>", *words,
                                         ".", ",", ":", "'", "\n"])}  # fmt: skip
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"<\w+>|\w+|[^\w\s]|\n"), behavior="isolated"),
        ]
    )
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>",
                                  bos_token="<bos>", eos_token="<eos>")  # fmt: skip
    tok.chat_template = (
        "{% for m in messages %}<bos>{{ m['role'] }} : {{ m['content'] }} <eos>{% endfor %}"
        "{% if add_generation_prompt %}<bos>assistant :{% endif %}"
    )
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512, bos_token_id=2, eos_token_id=3,
                      pad_token_id=1)  # fmt: skip
    out = root / "tiny-llama"
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _last_json(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    return out


def test_all_four_end_to_end_on_a_tiny_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = str(_tiny_model_dir(tmp_path))
    monkeypatch.setenv("BEBKIT_CACHE", str(tmp_path / "cache"))
    ref = tmp_path / "authors-figures.json"
    ref.write_text(json.dumps({
        "beta_KL_Pminus_vs_chat_INSTwrapped_per_sentence_1to15": {"agreeableness": [3.0, 2.5]},
        "KL_Pminus_vs_model_per_sentence_1to10": {"chat_agree_noalign": [3.0, 2.0, 1.0],
                                                  "base_agree": [1.0, 0.5]}}))  # fmt: skip
    common = ["--model", model, "--behavior", "cooperativeness", "--quick", "--n-prompts", "3",
              "--n-sentences", "2", "--n-samples", "4", "--n-tokens", "3",
              "--max-sentence-tokens", "5", "--n-boot", "100", "--threads", "1",
              "--paper-figures", str(ref), "--json"]  # fmt: skip
    assert main(["beta-sigma", *common, "--n-var-prompts", "4", "--out", str(tmp_path / "bs")]) == 0
    bs = _last_json(capsys)
    assert bs["kl"]["n"] == [0, 1, 2] and bs["estimator"] == "rb"
    assert {"value", "stderr", "n", "ci_low", "ci_high"} <= set(bs["beta"]["estimate"])
    assert (tmp_path / "bs" / "beta_sigma.png").is_file()
    assert (tmp_path / "bs" / "beta_sigma.svg").is_file()
    # bf16 arithmetic on an inference copy: the float32-trained adapters are reused as they are
    assert main(["beta-sigma", *common, "--n-var-prompts", "4", "--precision", "bfloat16",
                 "--out", str(tmp_path / "bs16")]) == 0  # fmt: skip
    bs16 = _last_json(capsys)
    rec32, rec16 = (json.loads((tmp_path / d / "record.json").read_text()) for d in ("bs", "bs16"))
    assert (rec32["config"]["precision"], rec16["config"]["precision"]) == ("float32", "bfloat16")
    sha = {k: v["weights_sha256"] for k, v in rec32["config"]["components"].items()}
    assert {k: v["weights_sha256"] for k, v in rec16["config"]["components"].items()} == sha
    assert all(v["reused"] for v in rec16["config"]["components"].values())
    assert bs16["beta"]["estimate"]["value"] != bs["beta"]["estimate"]["value"]

    conv_out = tmp_path / "conv"
    args = ["convergence", *common, "--n-sentences", "5",
            "--beta-sigma-record", str(tmp_path / "bs" / "record.json"),
            "--seed", "5", "--out", str(conv_out)]  # fmt: skip
    assert main(args) == 0
    conv = _last_json(capsys)
    assert set(conv["curves"]) == {"none", "aligned"}
    rec = json.loads((conv_out / "record.json").read_text())
    assert rec["kind"] == "convergence" and rec["seed"] == 5
    # Theorem 2 is fed Lemma 4's P₊-direction β′ and σ₊, not the P₋-direction envelope.
    assert rec["config"]["beta_prime"] == pytest.approx(bs["beta_prime_pos"]["estimate"]["value"])
    assert rec["config"]["sigma"] == pytest.approx(bs["sigma_pos"]["value"])
    assert bs["format"] == "newline" and conv["format"] == "alternating"
    # same seed, reused adapter → identical curves
    assert main([*args[:-1], str(tmp_path / "conv2")]) == 0
    assert _last_json(capsys)["curves"] == conv["curves"]

    assert main(["pretrained", *common, "--n-sentences", "5", "--format", "chat", "--convergence-record",
                 str(conv_out / "record.json"), "--out", str(tmp_path / "pre")]) == 0  # fmt: skip
    pre = _last_json(capsys)
    assert pre["conditions"] == ["none"] and "different model families" in pre["family_note"]
    assert set(pre["beta_ratio"]) == {"floored", "lemma5", "linear"}  # one window for both

    assert main(["prompt-distinguishability", *common, "--undesired-sentence",
                 "i hurt others.", "--out", str(tmp_path / "pd")]) == 0  # fmt: skip
    pd = _last_json(capsys)
    assert pd["s0"]["undesired_source"] == "given" and pd["kl"]["x"] == [3, 4]
    assert (tmp_path / "pd" / "prompt_dist.png").is_file()
