"""Log-likelihood-ratio trajectories of sampled prompts: β̂ₙ increments and σ² (Definitions 2–4).

For a prompt ``s = s₁ ⊕ … ⊕ s_N ~ P_a(·|s₀)`` sampled from the *first* model of a direction
``a‖b`` the trajectory is

    r(n) = log P_a(s₁…sₙ | s₀) − log P_b(s₁…sₙ | s₀′),   n = 0 … N  (r(0) = 0),

where ``log P(s₁…sₙ | s₀)`` sums the log-probs of the SAMPLED tokens only: the format's forced
text between sentences (a chat turn's header / end-of-turn, the truncation suffix of a capped
sentence) is conditioned on, never drawn from P_a, so it is not part of the prompt's
likelihood (``forced="exclude"``, the default; ``"include"`` reproduces the old estimand).
All prefix lengths are read off ONE ``sequence_logprobs`` call per model.

Two estimands come from the same trajectories (:class:`LogRatioTrajectories`):

* the per-sentence KL increment ``β̂ₙ = E[r(n)] − E[r(n−1)]`` (:meth:`~LogRatioTrajectories.increments`),
  estimated by the mean of the paired per-prompt differences ``r(n) − r(n−1)``. By the chain
  rule ``E_{s~P_a}[r(n) − r(n−1)] = E_{s_{<n}~P_a}[KL(P_a(·|s₀ s_{<n}) ‖ P_b(·|s₀′ s_{<n}))]``
  over the n-th sentence: Definition 2's per-sentence quantity (β is a lower bound on it
  for ``neg‖pos``, β′ an upper bound for ``pos‖neg``);
* ``σ²ₙ = Var_{s~P_a}[r(n)]`` (:meth:`~LogRatioTrajectories.variance`); σ-similarity
  (Definition 4, eq. 6) asks ``Var[r(n)] ≤ n σ²`` and :mod:`bebkit.fits.envelopes` reads σ²
  off it (fig. 2b / 8b, appendix L.1).

Which theorem consumes which direction (paper 001; :data:`DIRECTIONS`):

* ``"neg||pos"`` (prompts from P₋): β of Definition 2 (Theorem 1; Definition 3's prompted
  version for Theorems 2–3 via Lemma 4 eq. 52) and σ₋ = Var_{s~P₋}[log P₋/P₊] (Theorem 5,
  eq. 13, Cantelli on prompts sampled from P₋);
* ``"pos||neg"`` (prompts / aligning prefixes s₀ from P₊): β′, the upper bound on
  ``E_{s₀~P₊}[log P₊(s₀)/P₋(s₀)] ≤ β′|s₀|`` (β′-undistinguishability, Lemma 4 eq. 54), and
  σ₊ with ``Var_{s₀~P₊}[log P₊(s₀)/P₋(s₀)] ≤ σ²|s₀|`` (Lemma 4 eq. 55) — the inputs of the
  aligning-prompt term of Theorem 2 and of each model answer's term in Theorem 3;
* ``"neg||model"`` (prompts from P₋): the convergence curve ``KL(P₋ ‖ P_LLM | sₙ)`` of
  Lemma 5 / eq. 7 (fig. 3a, 11) — not a theorem constant.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from bebkit.errors import InputError
from bebkit.estimate import Estimate
from bebkit.estimators.prompts import SampledPrompt
from bebkit.models.protocol import LanguageModel

#: ``"exclude"``: r(n) sums sampled tokens only; ``"include"``: every token after s₀ (old).
Forced = Literal["exclude", "include"]

#: Direction ``"a||b"``: prompts are sampled from model ``a`` and the ratio / KL is ``a‖b``.
#: Value: what it measures and which result of the paper consumes it.
DIRECTIONS: dict[str, str] = {
    "neg||pos": (
        "KL(P-||P+) per sentence over s ~ P-: beta of Definition 2 (Theorem 1; Definition 3 for "
        "Theorems 2-3 via Lemma 4 eq. 52); Var_{s~P-}[log P-/P+] is Theorem 5's sigma"
    ),
    "pos||neg": (
        "KL(P+||P-) per sentence over s0 ~ P+: beta' of Lemma 4 eq. 54 (an upper bound; "
        "Theorems 2, 3); Var_{s0~P+}[log P+/P-] is Lemma 4 eq. 55's sigma (Theorems 2, 3)"
    ),
    "neg||model": (
        "KL(P-||P_LLM) per sentence over s ~ P-: the convergence curve of Lemma 5 / eq. 7 "
        "(fig. 3a, 11); not a theorem constant"
    ),
    "model||neg": "KL(P_LLM||P-) per sentence over s ~ P_LLM (diagnostic)",
    "pos||model": "KL(P+||P_LLM) per sentence over s ~ P+ (diagnostic)",
    "model||pos": "KL(P_LLM||P+) per sentence over s ~ P_LLM (diagnostic)",
}


def parse_direction(direction: str) -> tuple[str, str]:
    """``"a||b"`` → ``("a", "b")``; only the roles of :data:`DIRECTIONS` are accepted."""
    if direction not in DIRECTIONS:
        raise InputError(f"direction must be one of {sorted(DIRECTIONS)}, got {direction!r}")
    a, b = direction.split("||")
    return a, b


def direction_models(
    models: Mapping[str, LanguageModel],
    prompts: Sequence[SampledPrompt],
    direction: str,
    *,
    require_source: bool = True,
) -> tuple[LanguageModel, LanguageModel]:
    """``(P_a, P_b)`` for ``direction = "a||b"`` out of ``models`` (keys ``neg``/``pos``/``model``).

    With ``require_source`` every prompt that records its sampler (``SampledPrompt.source``)
    must have been sampled from ``P_a``: the expectations of Definitions 2–4 are over
    ``s ~ P_a``, so β′ measured on prompts from P₋ would be a different number.
    """
    a, b = parse_direction(direction)
    for role in (a, b):
        if role not in models:
            raise InputError(f"direction {direction!r} needs a {role!r} model")
    first = models[a]
    if require_source:
        bad = [pr.source for pr in prompts if pr.source and pr.source != first.name]
        if bad:
            raise InputError(
                f"direction {direction!r} needs prompts sampled from {first.name!r} "
                f"(the {a!r} model), got prompts from {bad[0]!r}"
            )
    return first, models[b]


def _encoded_len(model: LanguageModel, text: str) -> int:
    return len(model.encode(text)) if text else 0


def sampled_spans(prompt: SampledPrompt, model: LanguageModel) -> list[tuple[int, int]]:
    """Per sentence k: ``(start, end)`` offsets into ``prompt.tokens`` of its SAMPLED tokens.

    ``prompt.spans`` (recorded by the prompt sampler: the unit minus its forced opener,
    closer and truncation suffix; for the newline format the kept ``"\\n"`` stop token is
    sampled, for chat formats the dropped end-of-turn token is re-added by the forced closer
    and so is not counted). Prompts without the field get the spans derived from the
    format's forced pieces, tokenised alone as the sampler does.
    """
    spans = getattr(prompt, "spans", None)
    if spans:
        out = [(int(a), int(b)) for a, b in spans]
        if len(out) != prompt.n_sentences:
            raise InputError("prompt.spans must hold one span per sentence")
        return out
    fmt = prompt.fmt
    trunc_len = _encoded_len(model, fmt.truncation_suffix)
    out = []
    for k in range(prompt.n_sentences):
        opener = fmt.prefix_for(k + 1) if hasattr(fmt, "prefix_for") else fmt.sentence_prefix
        closer = fmt.suffix_for(k + 1) if hasattr(fmt, "suffix_for") else fmt.sentence_suffix
        capped = k < len(prompt.truncated) and prompt.truncated[k]
        a = prompt.boundaries[k] + _encoded_len(model, opener)
        b = prompt.boundaries[k + 1] - _encoded_len(model, closer) - (trunc_len if capped else 0)
        if not prompt.boundaries[k] <= a <= b <= prompt.boundaries[k + 1]:
            raise InputError(f"sentence {k} is shorter than its format's forced text")
        out.append((a, b))
    return out


def prompt_layout(
    prompt: SampledPrompt, model: LanguageModel, system_prompt: str | None
) -> tuple[list[int], tuple[int, ...], list[tuple[int, int]]]:
    """``(tokens, boundaries, sampled spans)`` of the prompt as ``model`` sees it.

    Without ``system_prompt`` the prompt's own tokens — the sampler's and every compared
    model's context are the same text, so a log-ratio or KL compares the models and nothing
    else. With one, the target view where the aligning system turn replaces the format's
    header (``SampledPrompt.target_layout``; the spans move with the tokens).
    """
    if system_prompt is None:
        return list(prompt.tokens), tuple(prompt.boundaries), sampled_spans(prompt, model)
    layout = getattr(prompt, "target_layout", None)
    if callable(layout):
        toks, bounds, spans = layout(model, system_prompt)
        return list(toks), tuple(bounds), [(int(a), int(b)) for a, b in spans]
    head = prompt.target_head(model, system_prompt)
    shift = len(head) - prompt.header_len
    toks = head + list(prompt.tokens[prompt.header_len :])
    bounds = tuple(b + shift for b in prompt.boundaries)
    return toks, bounds, [(a + shift, b + shift) for a, b in sampled_spans(prompt, model)]


def prefix_logprobs(
    model: LanguageModel,
    prompts: Sequence[SampledPrompt],
    *,
    system_prompt: str | None = None,
    n_max: int | None = None,
    forced: Forced = "exclude",
) -> np.ndarray:
    """``[P, n_max+1]``: ``log M(s₁…sₙ | context)`` for every prompt and n, one batched call.

    The context is the prompt's own start (BOS, header, s₀), or — with ``system_prompt`` —
    the target view where the system turn replaces the format header
    (:func:`prompt_layout`). With ``forced="exclude"`` only the sampled tokens of each
    sentence (:func:`sampled_spans`) are summed — the forced format text is context;
    ``"include"`` sums every token between the boundaries.
    """
    if forced not in ("exclude", "include"):
        raise InputError(f"forced must be 'exclude' or 'include', got {forced!r}")
    if not prompts:
        raise InputError("need at least one prompt")
    n_max = min(pr.n_sentences for pr in prompts) if n_max is None else int(n_max)
    seqs: list[list[int]] = []
    offs: list[np.ndarray] = []
    spans: list[list[tuple[int, int]]] = []
    for pr in prompts:
        if n_max > pr.n_sentences:
            raise InputError(f"n_max={n_max} exceeds a prompt with {pr.n_sentences} sentences")
        toks, bounds, sp = prompt_layout(pr, model, system_prompt)
        b = np.asarray(bounds[: n_max + 1], dtype=np.int64)
        if b[0] < 1:
            raise InputError("a prompt needs at least one context token before its first sentence")
        seqs.append(toks[: int(b[-1])])
        offs.append(b)
        spans.append(sp[:n_max])
    out = np.empty((len(prompts), n_max + 1))
    for i, lp in enumerate(model.sequence_logprobs(seqs)):
        # x[j − 1] = log M(token at sequence position j | everything before it)
        x = np.asarray(lp, dtype=np.float64)
        if forced == "include":
            cum = np.concatenate([[0.0], np.cumsum(x)])
            b = offs[i]
            out[i] = cum[b - 1] - cum[b[0] - 1]
            continue
        per = [x[a - 1 : e - 1].sum() for a, e in spans[i]]
        out[i] = np.concatenate([[0.0], np.cumsum(per)])
    return out


@dataclass(frozen=True)
class LogRatioTrajectories:
    """``values[i, n] = log P_a(s⁽ⁱ⁾₁…ₙ) − log P_b(s⁽ⁱ⁾₁…ₙ)`` for prompts i ~ P_a and n = 0 … N.

    Attributes:
        n: ``[K]`` prefix lengths in sentences (0 … N).
        values: ``[P, K]`` trajectories.
        label: free text.
        direction: ``"a||b"`` (:data:`DIRECTIONS`) or ``""`` when not stated.
        forced: whether the format's forced tokens were ``"exclude"``-d (sampled tokens only)
            or ``"include"``-d.
    """

    n: np.ndarray
    values: np.ndarray
    label: str = ""
    direction: str = ""
    forced: str = "exclude"

    @property
    def n_prompts(self) -> int:
        return int(self.values.shape[0])

    def mean(self) -> list[Estimate]:
        """``E_{s~P_a}[r(n)]`` = the n-sentence sequence KL ``KL(P_a‖P_b)`` (≥ nβ under Def. 2)."""
        return [
            Estimate.exact_value(0.0, "logratio_mean")
            if self.n[j] == 0
            else Estimate.from_samples(self.values[:, j], method="logratio_mean")
            for j in range(self.n.size)
        ]

    def increments(self) -> list[Estimate]:
        """Per-sentence ``β̂ₙ = E[r(n)] − E[r(n−1)]`` for n = n[1] … (one per consecutive pair).

        The mean of the paired per-prompt differences ``r(n) − r(n−1)`` (stderr = their sd/√P,
        ``n`` = prompts): the expected log-ratio of the n-th sentence, i.e. the per-sentence
        ``KL(P_a‖P_b)`` at the n-th sentence averaged over prefixes ``s_{<n} ~ P_a``. Needs
        consecutive prefix lengths.
        """
        if self.n.size < 2 or np.any(np.diff(self.n) != 1):
            raise InputError("increments need consecutive prefix lengths n")
        d = np.diff(self.values, axis=1)
        return [
            Estimate.from_samples(d[:, j], method=f"logratio_increment_per_sentence_{self.forced}")
            for j in range(d.shape[1])
        ]

    def variance(
        self,
        *,
        n_boot: int = 2000,
        ci_level: float = 0.95,
        rng: np.random.Generator | int | None = 0,
    ) -> list[Estimate]:
        """``Var_{s~P_a}[r(n)]`` (ddof=1) per n with bootstrap-over-prompts stderr and CI.

        The CI is the percentile interval of the bootstrap variances; ``n`` counts prompts.
        """
        return variance_estimates(self.values, self.n, n_boot=n_boot, ci_level=ci_level, rng=rng)

    def to_dict(self, *, n_boot: int = 2000, rng: int = 0) -> dict[str, Any]:
        consecutive = self.n.size >= 2 and bool(np.all(np.diff(self.n) == 1))
        return {
            "label": self.label,
            "direction": self.direction,
            "uses": DIRECTIONS.get(self.direction, ""),
            "forced_tokens": self.forced,
            "unit": "sentence",
            "n": self.n.tolist(),
            "values": self.values.tolist(),
            "mean": [e.to_dict() for e in self.mean()],
            "increments": [e.to_dict() for e in self.increments()] if consecutive else [],
            "variance": [e.to_dict() for e in self.variance(n_boot=n_boot, rng=rng)],
        }


def variance_estimates(
    values: np.ndarray,
    n: np.ndarray,
    *,
    n_boot: int = 2000,
    ci_level: float = 0.95,
    rng: np.random.Generator | int | None = 0,
) -> list[Estimate]:
    """Column variances of ``values [P, K]`` with bootstrap (rows resampled) stderr / CI."""
    x = np.asarray(values, dtype=np.float64)
    n_units = x.shape[0]
    if n_units < 3:
        raise InputError(f"variance needs at least 3 prompts, got {n_units}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    idx = gen.integers(0, n_units, size=(n_boot, n_units))
    boot = x[idx].var(axis=1, ddof=1)  # [B, K]
    point = x.var(axis=0, ddof=1)
    a = (1.0 - ci_level) / 2.0
    lo, hi = np.quantile(boot, [a, 1.0 - a], axis=0)
    out = []
    for j in range(x.shape[1]):
        if n[j] == 0:
            out.append(Estimate.exact_value(0.0, "logratio_variance"))
            continue
        out.append(
            Estimate(
                float(point[j]),
                float(boot[:, j].std(ddof=1)),
                n_units,
                float(lo[j]),
                float(hi[j]),
                ci_level,
                "logratio_variance_bootstrap",
            )
        )
    return out


def log_ratio_trajectories(
    p: LanguageModel,
    q: LanguageModel,
    prompts: Sequence[SampledPrompt],
    *,
    system_prompt: str | None = None,
    n_max: int | None = None,
    label: str = "",
    forced: Forced = "exclude",
    direction: str = "",
) -> LogRatioTrajectories:
    """``r(n) = log P(s₁…sₙ|s₀) − log Q(s₁…sₙ|s₀′)`` for all prompts and n (one call per model).

    ``s₀′`` is Q's view of the start (``system_prompt`` replacing the format header); the
    prompts should be samples of P (Definitions 2–4 take expectations over s ~ P).
    :func:`directional_log_ratio` names the direction instead of relying on argument order.
    """
    if direction:
        parse_direction(direction)
    lp = prefix_logprobs(p, prompts, n_max=n_max, forced=forced)
    lq = prefix_logprobs(q, prompts, system_prompt=system_prompt, n_max=n_max, forced=forced)
    return LogRatioTrajectories(
        n=np.arange(lp.shape[1]),
        values=lp - lq,
        label=label,
        direction=direction,
        forced=forced,
    )


def directional_log_ratio(
    models: Mapping[str, LanguageModel],
    prompts: Sequence[SampledPrompt],
    *,
    direction: str,
    system_prompt: str | None = None,
    n_max: int | None = None,
    forced: Forced = "exclude",
    require_source: bool = True,
    label: str = "",
) -> LogRatioTrajectories:
    """Log-ratio trajectories in an explicit direction ``"a||b"`` over prompts ``s ~ P_a``.

    ``models`` maps roles (``"neg"``, ``"pos"``, ``"model"``) to models. The result's
    :meth:`~LogRatioTrajectories.increments` are the per-sentence β̂ₙ and its
    :meth:`~LogRatioTrajectories.variance` the σ²ₙ of that direction:

    * ``"neg||pos"`` on prompts from P₋: β (Definition 2, Theorem 1) and Theorem 5's σ²;
    * ``"pos||neg"`` on prompts from P₊: β′ (Lemma 4 eq. 54) and Lemma 4 eq. 55's σ² — the
      inputs Theorems 2 and 3 need for the aligning prompt / the model's answers.

    ``system_prompt`` changes only P_b's view of the start (an aligning prefix).
    """
    first, second = direction_models(models, prompts, direction, require_source=require_source)
    return log_ratio_trajectories(
        first,
        second,
        prompts,
        system_prompt=system_prompt,
        n_max=n_max,
        label=label or direction,
        forced=forced,
        direction=direction,
    )
