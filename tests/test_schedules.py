"""Learning-rate schedules of the two-phase trainer: plateau (ReduceLROnPlateau) and cosine."""

import keras
import numpy as np
import pytest
from test_training import datasets, tiny_backbone_model
from train_configs import train_config

from cxr.training.fit import Phase, cosine_schedule, train_two_phase
from cxr.training.losses import build_loss


def rate_at(schedule, step: int) -> float:
    return float(keras.ops.convert_to_numpy(schedule(step)))


def test_cosine_warms_up_then_decays_to_the_floor():
    phase = Phase("finetune", epochs=5, learning_rate=1e-3, freeze_backbone=False)
    config = train_config(schedule="cosine", warmup_epochs=1, min_learning_rate=1e-5)
    schedule = cosine_schedule(phase, config, steps_per_epoch=10)
    assert rate_at(schedule, 0) == pytest.approx(1e-5)            # 1% of the peak
    assert rate_at(schedule, 5) == pytest.approx(0.5 * (1e-5 + 1e-3), rel=1e-3)
    assert rate_at(schedule, 10) == pytest.approx(1e-3)            # peak after one epoch
    assert rate_at(schedule, 30) == pytest.approx(1e-5 + (1e-3 - 1e-5) / 2, rel=1e-3)
    assert rate_at(schedule, 50) == pytest.approx(1e-5, rel=1e-3)  # floor at the last step
    rates = [rate_at(schedule, s) for s in range(10, 51)]
    assert all(a >= b for a, b in zip(rates, rates[1:], strict=False)), "decay must not rise"


def test_cosine_without_warmup_starts_at_the_peak():
    phase = Phase("head", epochs=2, learning_rate=1e-2, freeze_backbone=False)
    schedule = cosine_schedule(phase, train_config(schedule="cosine", min_learning_rate=1e-4), 4)
    assert rate_at(schedule, 0) == pytest.approx(1e-2)
    assert rate_at(schedule, 8) == pytest.approx(1e-4, rel=1e-3)


def test_unknown_schedule_is_refused_by_name():
    with pytest.raises(ValueError, match="schedule = 'step'; allowed: plateau, cosine"):
        train_config(schedule="step")


def test_training_with_cosine_records_the_decaying_rate_and_learns(tmp_path):
    model = tiny_backbone_model()
    train, val = datasets(n=128)
    config = train_config(head_epochs=6, finetune_epochs=0, head_learning_rate=3e-2, patience=6,
                         schedule="cosine", warmup_epochs=1, min_learning_rate=1e-4)
    history = train_two_phase(model, train, val, build_loss("bce"), config, tmp_path, verbose=0)
    rates = [row["learning_rate"] for row in history["head"]]
    # After epoch 1 the warm-up has reached the peak; then the rate falls to the floor.
    assert rates[0] == pytest.approx(3e-2, rel=1e-3)
    assert rates[-1] == pytest.approx(1e-4, rel=1e-3)
    assert np.all(np.diff(rates) < 0), rates
    assert history["head"][-1]["val_auc"] > 0.6, history["head"]
