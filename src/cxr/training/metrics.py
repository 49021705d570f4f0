"""The validation metric that checkpointing and early stopping follow.

Keras' ``AUC(multi_label=True)`` averages over every label, and scores a label with no
positive (or no negative) in the data as 0: on a validation split where a rare finding has no
positive, the logged macro AUC is pulled down by 1/14 per such finding (0.41 logged against a
true 0.54 on a small real-data run). :class:`MacroAUC` averages only over the findings that
have both positives and negatives, the rule the evaluate stage uses for its macro AUC
(``cxr.evaluation.discrimination``). Each finding's AUC is Keras' own (ROC, trapezoids over
``num_thresholds`` thresholds), so where every finding has both classes the value is exactly
Keras' and a run's checkpoints do not move.
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="cxr")
class MacroAUC(keras.metrics.AUC):
    """Macro ROC-AUC over the labels that have both classes in the data seen (multi-label)."""

    def __init__(self, num_labels: int, name: str = "auc", **kwargs):
        kwargs.pop("multi_label", None)
        kwargs.pop("curve", None)
        super().__init__(multi_label=True, num_labels=num_labels, curve="ROC", name=name,
                         **kwargs)

    def result(self):
        tp, fp = self.true_positives, self.false_positives
        fn, tn = self.false_negatives, self.true_negatives
        recall = ops.divide_no_nan(tp, ops.add(tp, fn))
        fp_rate = ops.divide_no_nan(fp, ops.add(fp, tn))
        heights = ops.divide(ops.add(recall[:-1], recall[1:]), 2.0)
        by_label = ops.sum(ops.multiply(ops.subtract(fp_rate[:-1], fp_rate[1:]), heights),
                           axis=0)
        # Threshold 0 sits below every score: there every positive is a TP + FN, every
        # negative an FP + TN, so row 0 counts each label's positives and negatives.
        has_both = ops.logical_and(ops.greater(ops.add(tp[0], fn[0]), 0),
                                   ops.greater(ops.add(fp[0], tn[0]), 0))
        weights = ops.cast(has_both, by_label.dtype)
        return ops.divide_no_nan(ops.sum(ops.multiply(by_label, weights)), ops.sum(weights))

    def get_config(self):
        config = super().get_config()
        for key in ("multi_label", "curve", "label_weights"):
            config.pop(key, None)
        return config
