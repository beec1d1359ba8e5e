"""Models: the NNX ResNet family and the one-step / two-step series classifiers."""

from phasejax.models.classifiers import (
    OneStepClassifier,
    Output,
    TwoStepClassifier,
    aggregate_slices,
    build_classifier,
    cross_entropy,
    two_step_log_probs,
    weighted_mean,
)
from phasejax.models.resnet import STAGES, ResNet, count_params, resolve_dtype

__all__ = [
    "STAGES",
    "OneStepClassifier",
    "Output",
    "ResNet",
    "TwoStepClassifier",
    "aggregate_slices",
    "build_classifier",
    "count_params",
    "cross_entropy",
    "resolve_dtype",
    "two_step_log_probs",
    "weighted_mean",
]
