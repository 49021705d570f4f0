"""The validation AUC that training logs, checkpoints and stops on is the evaluate stage's
macro: over the findings that have both positives and negatives."""

import keras
import numpy as np
from sklearn.metrics import roc_auc_score

from cxr.training.fit import compile_model
from cxr.training.metrics import MacroAUC


def _data(seed=0, n=300, labels=5):
    rng = np.random.default_rng(seed)
    y = (rng.random((n, labels)) < 0.3).astype("float32")
    scores = np.clip(0.35 * y + 0.65 * rng.random((n, labels)), 0, 1).astype("float32")
    return y, scores


def _exact_macro(y, scores):
    keep = [i for i in range(y.shape[1]) if 0 < y[:, i].sum() < len(y)]
    return float(np.mean([roc_auc_score(y[:, i], scores[:, i]) for i in keep]))


def test_a_finding_without_positives_is_left_out_not_scored_zero():
    y, scores = _data()
    y[:, 1] = 0   # no positive in validation, as a rare finding on a small real split
    y[:, 3] = 1   # no negative
    ours = MacroAUC(num_labels=5)
    ours.update_state(y, scores)
    keras_auc = keras.metrics.AUC(multi_label=True, num_labels=5)
    keras_auc.update_state(y, scores)
    exact = _exact_macro(y, scores)
    assert abs(float(ours.result()) - exact) < 2e-3
    assert float(keras_auc.result()) < exact - 0.2  # Keras scores them as 0: 3/5 of the macro


def test_with_every_finding_present_it_is_keras_own_value():
    y, scores = _data(1)
    ours, theirs = MacroAUC(num_labels=5), keras.metrics.AUC(multi_label=True, num_labels=5)
    for start in range(0, len(y), 64):  # batch by batch, as fit's validation pass
        ours.update_state(y[start:start + 64], scores[start:start + 64])
        theirs.update_state(y[start:start + 64], scores[start:start + 64])
    assert float(ours.result()) == float(theirs.result())


def test_training_monitors_it_and_it_survives_a_config_round_trip():
    rng = np.random.default_rng(2)
    x = rng.random((200, 3)).astype("float32")
    y = (rng.random((200, 4)) < 0.3).astype("float32")
    y[:, 2] = 0  # a finding with no positive
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="sigmoid")])
    compile_model(model, "binary_crossentropy", 1e-3, jit_compile=False)
    logged = model.evaluate(x, y, batch_size=50, verbose=0, return_dict=True)["auc"]
    assert abs(logged - _exact_macro(y, model.predict(x, verbose=0))) < 2e-3
    config = MacroAUC(num_labels=4).get_config()
    assert MacroAUC.from_config(config).get_config() == config
