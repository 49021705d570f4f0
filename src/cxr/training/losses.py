"""Losses: focal (the study's), plain BCE, and CheXNet-style weighted BCE for comparison.

``build_loss(name, alpha, gamma, train_labels)`` returns a Keras loss. The focal loss is our own
class (alpha weights positives, 1 - alpha negatives; probabilities clipped to [eps, 1 - eps]):
why not Keras' ``BinaryFocalCrossentropy`` (NaN gradients at gamma 0): docs/DESIGN.md.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

LOSS_NAMES = ("focal", "bce", "weighted_bce")


@keras.saving.register_keras_serializable(package="cxr")
class FocalLoss(keras.losses.Loss):
    """Binary focal loss, mean over classes: -alpha_t (1 - p_t)^gamma log(p_t)."""

    def __init__(self, alpha: float = 0.25, gamma: float = 2.0, epsilon: float = 1e-7,
                 name: str = "focal", **kwargs):
        super().__init__(name=name, **kwargs)
        self.alpha, self.gamma, self.epsilon = float(alpha), float(gamma), float(epsilon)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        p = ops.clip(y_pred, self.epsilon, 1.0 - self.epsilon)
        p_t = y_true * p + (1 - y_true) * (1 - p)
        alpha_t = y_true * self.alpha + (1 - y_true) * (1 - self.alpha)
        loss = -alpha_t * ops.power(1 - p_t, self.gamma) * ops.log(p_t)
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {**super().get_config(), "alpha": self.alpha, "gamma": self.gamma,
                "epsilon": self.epsilon}


@keras.saving.register_keras_serializable(package="cxr")
class WeightedBinaryCrossentropy(keras.losses.Loss):
    """Per-class weighted BCE (Rajpurkar et al., CheXNet): positives of class c weigh
    w+ = N-/N, negatives weigh w- = N+/N, computed on the training labels."""

    def __init__(self, positive_weights, negative_weights, epsilon: float = 1e-7,
                 name: str = "weighted_bce", **kwargs):
        super().__init__(name=name, **kwargs)
        self.positive_weights = [float(w) for w in positive_weights]
        self.negative_weights = [float(w) for w in negative_weights]
        self.epsilon = float(epsilon)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        y_pred = ops.clip(y_pred, self.epsilon, 1.0 - self.epsilon)
        w_pos = ops.convert_to_tensor(self.positive_weights, dtype=y_pred.dtype)
        w_neg = ops.convert_to_tensor(self.negative_weights, dtype=y_pred.dtype)
        loss = -(w_pos * y_true * ops.log(y_pred) + w_neg * (1 - y_true) * ops.log(1 - y_pred))
        return ops.mean(loss, axis=-1)

    def get_config(self):
        return {**super().get_config(), "positive_weights": self.positive_weights,
                "negative_weights": self.negative_weights, "epsilon": self.epsilon}


def chexnet_weights(train_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(w+, w-) per class from a (n_images, n_classes) 0/1 matrix."""
    labels = np.asarray(train_labels, dtype=np.float64)
    if labels.ndim != 2 or len(labels) == 0:
        raise ValueError(f"train_labels: expected a non-empty (n_images, n_classes) matrix, "
                         f"got shape {labels.shape}")
    positive_fraction = labels.mean(axis=0)
    return 1.0 - positive_fraction, positive_fraction


def build_loss(name: str, alpha: float = 0.25, gamma: float = 2.0,
               train_labels: np.ndarray | None = None) -> keras.losses.Loss:
    if name == "focal":
        if not 0 <= alpha <= 1 or gamma < 0:
            raise ValueError(f"focal loss: alpha = {alpha}, gamma = {gamma}; expected "
                             "0 <= alpha <= 1 and gamma >= 0")
        return FocalLoss(alpha=alpha, gamma=gamma)
    if name == "bce":
        return keras.losses.BinaryCrossentropy(name="bce")
    if name == "weighted_bce":
        if train_labels is None:
            raise ValueError("loss weighted_bce needs train_labels to compute class weights")
        positive, negative = chexnet_weights(train_labels)
        return WeightedBinaryCrossentropy(positive, negative)
    raise ValueError(f"loss.name = {name!r}; allowed: {', '.join(LOSS_NAMES)}")
