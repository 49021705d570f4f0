"""Classification metrics for the evaluate stage. Pure numpy / scikit-learn: no TensorFlow here,
so evaluation, the report and their tests run without it.

Conventions for the whole package:

- `y_true` is (n_images, n_labels) of 0/1; scores and probabilities have the same shape; columns
  follow `labels`.
- A class without positives (or without negatives) has no ROC-AUC or AUPRC: it gets None with a
  reason and is left out of macro averages, instead of a crash or a made-up 0.5.
- An image is called positive at threshold t when score >= t. That is sklearn's `roc_curve`
  convention, so a threshold read off a ROC curve means the same thing when applied.
- Bootstrap resamples patients (`groups`), not images: one patient's images are correlated, and
  resampling them one by one would make the intervals too narrow. A resample gives every image
  the weight "number of times its patient was drawn", and the AUCs of all resamples are then
  computed at once from one sort per class (`fast_auc_batched`).
- Every dict returned is JSON-ready: plain float / int / str / None, never NaN.

Modules: ``discrimination`` (AUC, thresholds), ``bootstrap`` (fast weighted AUC, patient
bootstrap CIs), ``calibration``, ``referral``, ``summary`` (``evaluate``, the stage's one call),
``checks``. ``cxr.evaluation.uncertainty`` (Monte-Carlo dropout) needs Keras and is not
imported here.
"""

from cxr.evaluation.bootstrap import (
    bootstrap_auc,
    fast_auc,
    fast_auc_batched,
    paired_bootstrap_macro_auc,
    patient_bootstrap_weights,
)
from cxr.evaluation.calibration import (
    brier_score,
    calibration_summary,
    expected_calibration_error,
    reliability_curve,
)
from cxr.evaluation.discrimination import (
    FALLBACK_THRESHOLD,
    THRESHOLD_METHODS,
    choose_thresholds,
    macro_auc,
    macro_auprc,
    per_class_auc,
    per_class_auprc,
    sensitivity_specificity,
)
from cxr.evaluation.referral import (
    DEFAULT_REFERRAL_FRACTIONS,
    decision_flip_uncertainty,
    referral_curve,
    referral_gain,
)
from cxr.evaluation.summary import (
    evaluate,
)

__all__ = [
    "DEFAULT_REFERRAL_FRACTIONS",
    "FALLBACK_THRESHOLD",
    "THRESHOLD_METHODS",
    "bootstrap_auc",
    "brier_score",
    "calibration_summary",
    "choose_thresholds",
    "decision_flip_uncertainty",
    "evaluate",
    "expected_calibration_error",
    "fast_auc",
    "fast_auc_batched",
    "macro_auc",
    "macro_auprc",
    "paired_bootstrap_macro_auc",
    "patient_bootstrap_weights",
    "per_class_auc",
    "per_class_auprc",
    "referral_curve",
    "referral_gain",
    "reliability_curve",
    "sensitivity_specificity",
]
