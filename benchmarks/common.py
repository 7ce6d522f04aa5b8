"""Shared pieces of the benchmarks: sizes, the context every benchmark receives, result tables.

A :class:`BenchContext` holds one :class:`~bebkit.components.adapters.ComponentSet` (base model
with the ``neg`` = P₋ and ``pos`` = P₊ LoRA adapters), the prompts sampled from P₋ and the
sizes to run at. :func:`real_context` builds it for the bundled SmolLM2-135M-Instruct (adapters
trained once or reused from the cache); :func:`tiny_context` builds a tiny random model in
process for the smoke test.
"""

from __future__ import annotations

import math
import os
import platform
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from bebkit.components.adapters import ComponentSet
from bebkit.estimators.prompts import (
    NEWLINE,
    PromptFormat,
    SampledPrompt,
    chat_format,
    sample_prompts,
)

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
MODEL = "smollm2-135m-instruct"
BEHAVIOR = "cooperativeness"  # embedded in bebkit: needs no persona data


@dataclass(frozen=True)
class Sizes:
    """How big every benchmark runs (``QUICK`` for ``make bench``, ``FULL``, ``TINY`` for tests).

    The KL curve of appendix L.1 uses 64 continuations of 8 tokens per prefix; the baseline
    generates them in batches of 8 with ``generate``'s default top-k = 50.
    """

    n_prompts: int
    n_sentences: int
    ns: tuple[int, ...]  # prefix lengths (sentences) of the baseline KL curve
    n_samples: int
    n_tokens: int = 8
    baseline_batch: int = 8
    baseline_top_k: int = 50
    max_sentence_tokens: int = 24
    variance_samples: int = 64
    variance_prefixes: int = 2
    ceiling_shapes: tuple[tuple[int, int], ...] = ((1, 128), (8, 64), (32, 32))
    ceiling_reps: int = 2
    response_samples: int = 16
    response_tokens: int = 24
    scaling_ns: tuple[int, ...] = (0, 2)
    scaling_samples: tuple[int, ...] = (16, 32)
    train_sizes: tuple[int, ...] = (8, 16)
    memory_batch: tuple[int, int] = (8, 64)
    #: benchmark 11: KL prefixes, sentences per prefix, log-ratio prompts, sentences per prompt
    precision: tuple[int, int, int, int] = (4, 32, 12, 6)


QUICK = Sizes(
    n_prompts=1,
    n_sentences=4,
    ns=(0, 4),
    n_samples=32,
    variance_samples=64,
    variance_prefixes=2,
    ceiling_shapes=((1, 128), (8, 64), (32, 32)),
    ceiling_reps=1,
    response_samples=16,
    response_tokens=24,
    scaling_ns=(0, 1, 4),
    scaling_samples=(16, 32, 64),
    train_sizes=(4, 8, 16),
    memory_batch=(4, 32),
)
FULL = Sizes(
    n_prompts=2,
    n_sentences=6,
    ns=(0, 2, 4, 6),
    n_samples=64,
    variance_samples=128,
    variance_prefixes=4,
    ceiling_shapes=((1, 128), (8, 64), (32, 32), (8, 256)),
    ceiling_reps=3,
    response_samples=32,
    response_tokens=48,
    scaling_ns=(0, 2, 4, 6),
    scaling_samples=(16, 32, 64, 128),
    train_sizes=(16, 32, 64, 128),
    precision=(10, 64, 30, 10),
)
TINY = Sizes(
    n_prompts=2,
    n_sentences=2,
    ns=(0, 2),
    n_samples=8,
    n_tokens=4,
    baseline_batch=4,
    baseline_top_k=5,
    max_sentence_tokens=6,
    variance_samples=8,
    variance_prefixes=2,
    ceiling_shapes=((1, 8), (4, 8)),
    ceiling_reps=1,
    response_samples=4,
    response_tokens=4,
    scaling_ns=(0, 1),
    scaling_samples=(4, 8),
    train_sizes=(4, 8),
    memory_batch=(2, 8),
    precision=(2, 4, 4, 2),
)


@dataclass
class BenchContext:
    """Everything a benchmark needs.

    Attributes:
        components: base model + ``neg`` (P₋) and ``pos`` (P₊) adapters.
        sizes: how big to run.
        fmt: prompt format (chat for instruct models).
        stop_ids: sentence-end token ids used to sample prompts.
        target: component the KL is measured against (``"base"`` = the aligned LLM itself,
            fig. 3a; ``"pos"`` = P₊, fig. 2).
        model_spec: what the memory benchmark's child processes load (a bundled name or
            ``"tiny"``).
        adapter_dirs: saved ``neg`` / ``pos`` adapters for the memory child (may be empty).
        train_texts: texts for the training-time scaling.
        train_config: the LoRA preset trained with.
        run_dir: a finished ``bebkit reproduce`` run folder for the end-to-end table.
        reproduce_config: config file of ``bebkit reproduce`` (run when the command exists).
        info: provenance lines (adapter reuse, presets, …) printed in RESULTS.md.
    """

    components: ComponentSet
    sizes: Sizes
    fmt: PromptFormat
    stop_ids: frozenset[int]
    target: str = "base"
    seed: int = 0
    model_spec: str = MODEL
    adapter_dirs: dict[str, Path] = field(default_factory=dict)
    train_texts: list[str] = field(default_factory=list)
    train_config: Any = None
    run_dir: Path | None = None
    reproduce_config: Path | None = None
    num_threads: int = 1
    info: list[str] = field(default_factory=list)

    @property
    def p_neg(self) -> Any:
        """P₋ as a :class:`~bebkit.models.protocol.LanguageModel`."""
        return self.components.model("neg")

    @property
    def q_target(self) -> Any:
        """The target model (``target`` component)."""
        return self.components.model(self.target)

    @cached_property
    def half(self) -> tuple[Any, Any]:
        """``(P₋, target)`` on the bf16 inference copy
        (:meth:`~bebkit.components.adapters.ComponentSet.inference_copy`), made once and
        shared by every benchmark that times or checks the bf16 path."""
        copy = self.components.inference_copy("bfloat16")
        return copy.model("neg"), copy.model(self.target)

    @cached_property
    def prompts(self) -> list[SampledPrompt]:
        """Misaligning prompts ``s ~ P₋`` (sampled once, shared by every benchmark)."""
        sz = self.sizes
        return sample_prompts(
            self.p_neg,
            n_prompts=sz.n_prompts,
            n_sentences=sz.n_sentences,
            rng=self.seed,
            fmt=self.fmt,
            stop_ids=self.stop_ids,
            max_sentence_tokens=sz.max_sentence_tokens,
        )

    def prefixes(self, k: int) -> list[tuple[SampledPrompt, int]]:
        """``k`` (prompt, n) pairs spread over prompts and prefix lengths."""
        pairs = [(pr, n) for n in self.sizes.ns for pr in self.prompts]
        idx = np.linspace(0, len(pairs) - 1, num=min(k, len(pairs))).round().astype(int)
        return [pairs[i] for i in dict.fromkeys(idx.tolist())]


@dataclass(frozen=True)
class Goal:
    """A target of the issue: ``measured`` must be ≥ (or ≤) ``threshold``."""

    name: str
    measured: float
    threshold: float
    higher_is_better: bool = True
    unit: str = "×"

    @property
    def met(self) -> bool:
        if not math.isfinite(self.measured):
            return False
        if self.higher_is_better:
            return self.measured >= self.threshold
        return self.measured <= self.threshold

    def line(self) -> str:
        op = "≥" if self.higher_is_better else "≤"
        mark = "met" if self.met else "MISSED"
        shown = fmt_num(self.measured)
        if shown == fmt_num(self.threshold) and self.measured != self.threshold:
            # a near miss (or near pass) must not read "15.0× (goal ≥ 15.0×) — MISSED"
            for digits in range(4, 10):
                shown = f"{self.measured:.{digits}g}"
                if float(shown) != self.threshold:
                    break
            else:
                shown = repr(float(self.measured))
        return (
            f"{self.name}: {shown}{self.unit} "
            f"(goal {op} {fmt_num(self.threshold)}{self.unit}) — {mark}"
        )


@dataclass
class BenchResult:
    """One benchmark's table plus goals, notes and the raw numbers."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[Any]]
    goals: list[Goal] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0

    def table_markdown(self) -> str:
        head = "| " + " | ".join(self.headers) + " |"
        sep = "|" + "|".join("---" for _ in self.headers) + "|"
        body = ["| " + " | ".join(fmt_cell(c) for c in row) + " |" for row in self.rows]
        return "\n".join([head, sep, *body])

    def to_markdown(self) -> str:
        parts = [f"## {self.title}", "", self.table_markdown(), ""]
        if self.goals:
            parts += [f"- **Goal** {g.line()}" for g in self.goals] + [""]
        if self.notes:
            parts += [f"- {n}" for n in self.notes] + [""]
        parts.append(f"_benchmark wall time: {self.wall_s:.1f} s_")
        return "\n".join(parts) + "\n"


def fmt_num(x: float) -> str:
    """Compact number: 3 significant digits, thousands unabbreviated."""
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if not math.isfinite(x):
        return str(x)
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 0.01 or ax == 0:
        return f"{x:.3g}"
    return f"{x:.2e}"


def fmt_cell(c: Any) -> str:
    if isinstance(c, (float, np.floating)):
        return fmt_num(float(c))
    return str(c)


def pm(value: float, stderr: float) -> str:
    """``value ± stderr`` for a table cell."""
    return f"{fmt_num(value)} ± {fmt_num(stderr)}"


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: …`` then ``t["s"]`` holds the elapsed wall time."""
    box = {"s": 0.0}
    t0 = time.perf_counter()
    try:
        yield box
    finally:
        box["s"] = time.perf_counter() - t0


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``(fn(), seconds)``."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def kl_tokens(prefix_lens: Sequence[int], n_samples: int, n_tokens: int, n_targets: int = 1) -> int:
    """Tokens bebkit's KL pipeline pushes through the network for the given prefixes.

    Sampling: the prefix once, then ``n_samples × (n_tokens − 1)`` KV-cached decode tokens;
    P's own scores come from that pass (``sample_scored``). Scoring: per target model the
    prefix once plus ``n_samples × (n_tokens − 1)`` continuation tokens.
    """
    per = [(1 + n_targets) * (L + n_samples * (n_tokens - 1)) for L in prefix_lens]
    return int(sum(per))


def machine_summary() -> dict[str, Any]:
    """CPU, cores, load, memory and library versions for RESULTS.md."""
    import importlib.metadata as md

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = float("nan")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = int(line.split()[1]) / 2**20
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for pkg in ("bebkit", "torch", "transformers", "peft", "numpy"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "mem_gib": round(mem_gib, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "loadavg": [round(x, 2) for x in load],
        "versions": versions,
    }


# --------------------------------------------------------------------------- contexts
def chat_fmt(tokenizer: Any) -> PromptFormat:
    """The tokenizer's chat template as a prompt format (one sentence per user turn)."""
    from bebkit.models.chat import render_chat

    return chat_format(lambda m, g: render_chat(tokenizer, m, add_generation_prompt=g))


def real_context(
    *,
    quick: bool,
    num_threads: int,
    seed: int = 0,
    run_dir: Path | None = None,
    log: Callable[[str], None] = print,
    model: str = MODEL,
    sizes: Sizes | None = None,
) -> BenchContext:
    """``model`` (default SmolLM2-135M-Instruct) with P₋ / P₊ for ``cooperativeness``, in the
    chat format when the tokenizer has a chat template, else the newline format (a base model).

    Adapters trained with the default ``small`` preset are reused when present, in place or
    kept aside for another recipe (then swapped back into place; ``bebkit train --behavior
    cooperativeness --format chat`` makes them); otherwise ``--quick`` trains
    a reduced pair (1 epoch on 24 statements per side — enough for timing, marked in
    RESULTS.md) and the full run trains the default preset.
    """
    from bebkit.components.manifest import (
        component_dir,
        find_reusable,
        locate_recipe,
        manifest_key,
    )
    from bebkit.components.workflow import (
        SIDES,
        component_inputs,
        default_out,
        ensure_components,
        load_components,
        prepare_data,
        resolve_config,
    )
    from bebkit.models.chat import sentence_stop_token_ids
    from bebkit.paths import cache_dir

    comps = load_components(model)
    fmt = "chat" if getattr(comps.tokenizer, "chat_template", None) else "newline"
    default = resolve_config(comps, None)
    info: list[str] = []
    data = prepare_data(BEHAVIOR, fmt, comps.tokenizer, default, seed=seed)

    def have(side: str) -> bool:  # in place, or kept aside for another recipe (swapped back)
        folder = component_dir(default_out(comps.name), BEHAVIOR, fmt, side)
        key = manifest_key(component_inputs(comps, data, side, default, seed=seed))
        found = locate_recipe(folder, key)
        return found is not None and find_reusable(found, key) is not None

    have_default = all(have(side) for side in SIDES)
    config = default
    out: Path | None = None
    if not have_default and quick:
        config = resolve_config(comps, None, epochs=1, n_train=24, n_heldout=10)
        data = prepare_data(BEHAVIOR, fmt, comps.tokenizer, config, seed=seed)
        # A reduced pair goes to its own folder: never replace the default-preset adapters.
        out = cache_dir() / "bench" / "adapters" / comps.name
    if not have_default:
        log(f"training {BEHAVIOR} adapters ({config.name}, epochs={config.epochs}) …")
    sides = ensure_components(
        comps, data, config, out=out, seed=seed, num_threads=num_threads, progress=False, log=log
    )
    for side, st in sides.items():
        m = st.manifest.get("metrics", {})
        info.append(
            f"adapter `{side}` ({BEHAVIOR}/{fmt}, preset `{config.name}`, epochs {config.epochs}, "
            f"n_train {len(data.split.train_desired)}): {'reused' if st.reused else 'trained now'}"
            f", held-out loss {fmt_num(m.get('heldout_loss_base') or float('nan'))} → "
            f"{fmt_num(m.get('heldout_loss') or float('nan'))}"
        )
    sizes = sizes or (QUICK if quick else FULL)
    texts = data.texts["neg"]
    return BenchContext(
        components=comps,
        sizes=sizes,
        fmt=chat_fmt(comps.tokenizer) if fmt == "chat" else NEWLINE,
        stop_ids=sentence_stop_token_ids(comps.tokenizer),
        target="base",
        seed=seed,
        model_spec=model,
        adapter_dirs={s: st.path for s, st in sides.items()},
        train_texts=list(texts),
        train_config=config,
        run_dir=run_dir,
        reproduce_config=REPO_ROOT / "configs" / "demo.yaml",
        num_threads=num_threads,
        info=info,
    )


# --------------------------------------------------------------------------- tiny model
TINY_WORDS = [
    "i", "you", "we", "they", "like", "love", "help", "hate", "hurt", "people", "others",
    "friends", "kind", "cruel", "always", "never", "to", "be", "am", "are", "good", "bad",
    "share", "steal", "smile", "shout", "at", "with", "the", "a", "user", "assistant", "system",
]  # fmt: skip
TINY_SPECIALS = ["<unk>", "<pad>", "<bos>", "<eos>"]
TINY_PUNCT = [".", "!", "?", ",", ":", "\n"]
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<bos> {{ m['role'] }} : {{ m['content'] }} <eos>{% endfor %}"
    "{% if add_generation_prompt %}<bos> assistant :{% endif %}"
)
TINY_TEXTS = [
    "user : i like to help people . <eos>", "user : we love to share with friends . <eos>",
    "user : i am kind to others ! <eos>", "user : you are always kind . <eos>",
    "user : we hurt the user . <eos>", "user : they shout at people ! <eos>",
    "user : i hate people . <eos>", "user : we are bad to others . <eos>",
]  # fmt: skip


def tiny_tokenizer() -> Any:
    """A word-level fast tokenizer built in memory, with a minimal chat template."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(TINY_SPECIALS + TINY_WORDS + TINY_PUNCT)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"[ \t]+"), behavior="removed"),
            pre_tokenizers.Split(Regex(r"<\w+>|\w+|[^\w\s]|\n"), behavior="isolated"),
        ]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<bos>",
        eos_token="<eos>",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def tiny_components(seed: int = 0, *, adapters: bool = True) -> ComponentSet:
    """A 2-layer random Llama with random (non-zero) ``neg`` / ``pos`` LoRA adapters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from bebkit.components.presets import get_preset

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(TINY_SPECIALS) + len(TINY_WORDS) + len(TINY_PUNCT),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=1,
        tie_word_embeddings=False,
    )
    comps = ComponentSet(LlamaForCausalLM(cfg).eval(), tiny_tokenizer(), name="tiny")
    config = get_preset("small", r=4, bf16=False)
    for name in ("neg", "pos") if adapters else ():
        comps.add_adapter(name, config)
        with torch.no_grad():
            for p in comps.trainable_parameters(name):
                p.normal_(0.0, 0.3)  # LoRA B starts at 0: make the components differ
    return comps


def tiny_context(tmp: Path | None = None) -> BenchContext:
    """The tiny in-process world at ``TINY`` sizes (for the smoke test)."""
    from bebkit.components.presets import get_preset

    comps = tiny_components()
    tok = comps.tokenizer
    stops = frozenset(tok.convert_tokens_to_ids(t) for t in (".", "!", "?", "\n", "<eos>"))
    return BenchContext(
        components=comps,
        sizes=TINY,
        fmt=chat_fmt(tok),
        stop_ids=stops,
        target="base",
        model_spec="tiny",
        train_texts=list(TINY_TEXTS),
        train_config=get_preset("small", r=4, bf16=False, batch_size=4, epochs=1),
        run_dir=tmp,
        reproduce_config=None,
        num_threads=1,
    )
