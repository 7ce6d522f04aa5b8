"""bebkit.estimators: misaligning prompts, KL and log-likelihood-ratio estimators (§4, app. L–N).

Every estimator sees only the :class:`~bebkit.models.protocol.LanguageModel` protocol and
returns :class:`~bebkit.estimate.Estimate` values (value ± stderr, n).
"""

from bebkit.estimators.exact import exact_kl_enumerate
from bebkit.estimators.kl import (
    KLCurve,
    KLSamples,
    kl_curve,
    kl_mc,
    kl_rao_blackwell,
    kl_samples,
    kl_samples_grid,
    kl_samples_multi,
    step_kl,
)
from bebkit.estimators.logratio import (
    LogRatioTrajectories,
    log_ratio_trajectories,
    prefix_logprobs,
    variance_estimates,
)
from bebkit.estimators.prompts import (
    DEFAULT_ALIGNING_PROMPT,
    NEWLINE,
    PromptFormat,
    SampledPrompt,
    chat_format,
    load_prompts,
    sample_prompts,
    save_prompts,
    stop_token_ids,
)

__all__ = [
    "DEFAULT_ALIGNING_PROMPT",
    "NEWLINE",
    "KLCurve",
    "KLSamples",
    "LogRatioTrajectories",
    "PromptFormat",
    "SampledPrompt",
    "chat_format",
    "exact_kl_enumerate",
    "kl_curve",
    "kl_mc",
    "kl_rao_blackwell",
    "kl_samples",
    "kl_samples_grid",
    "kl_samples_multi",
    "load_prompts",
    "log_ratio_trajectories",
    "prefix_logprobs",
    "sample_prompts",
    "save_prompts",
    "step_kl",
    "stop_token_ids",
    "variance_estimates",
]
