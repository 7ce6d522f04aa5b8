"""Automatic behavior judge B(x) ∈ {−1, +1} for persona behaviors, validated on human labels.

Built from a behavior's persona statements plus bebkit's own generic texts (never from the
human labels, which :mod:`bebkit.judge.evaluation` uses only to validate). torch and
transformers are imported lazily, only when an encoder first runs.
"""

from bebkit.judge.checks import CHECK_BEHAVIORS, label_free_checks
from bebkit.judge.data import (
    BehaviorStatements,
    LabelledResponse,
    load_behavior_statements,
    load_labelled_responses,
)
from bebkit.judge.evaluation import (
    agreement,
    balanced_accuracy,
    cohen_kappa,
    confusion_counts,
    evaluate_predictions,
)
from bebkit.judge.judge import (
    JUDGE_KINDS,
    EnsembleJudge,
    Judge,
    JudgeConfig,
    LikelihoodRatioJudge,
    LinearJudge,
    MixturePosteriorJudge,
    TrainingSet,
    behavior_expectation,
    build_judge,
    build_mixture_judge,
    build_training_set,
    predict,
)
from bebkit.judge.stance import StanceJudge, build_stance_judge, negate
from bebkit.judge.text import first_sentence, text_unit
from bebkit.judge.validation import (
    DEV_CHOICES,
    LOCK_SEED,
    LabelSplit,
    locked_evaluation,
    split_labels,
)

__all__ = [
    "CHECK_BEHAVIORS",
    "DEV_CHOICES",
    "JUDGE_KINDS",
    "LOCK_SEED",
    "BehaviorStatements",
    "EnsembleJudge",
    "Judge",
    "JudgeConfig",
    "LabelSplit",
    "LabelledResponse",
    "LikelihoodRatioJudge",
    "LinearJudge",
    "MixturePosteriorJudge",
    "StanceJudge",
    "TrainingSet",
    "agreement",
    "balanced_accuracy",
    "behavior_expectation",
    "build_judge",
    "build_mixture_judge",
    "build_stance_judge",
    "build_training_set",
    "cohen_kappa",
    "confusion_counts",
    "evaluate_predictions",
    "first_sentence",
    "label_free_checks",
    "load_behavior_statements",
    "load_labelled_responses",
    "locked_evaluation",
    "negate",
    "predict",
    "split_labels",
    "text_unit",
]
